//! A workflow imported at a past time, straight into a [`Store`]: what `arbor import`
//! does with old events (they keep their original time while they arrive now). The
//! fixture of the tests of sync lag, which must be the age of arrival, not of an
//! event's own time.

use arbor_storage::{
    AppendError, Intent, Meta, NewNode, NewWorkflow, Outcome, StorageError, Store, Timestamp,
};
use uuid::Uuid;

/// Imports into `store` a workflow of six events (its root and five messages under it)
/// all dated `age_secs` seconds before now. Returns `(workflow_id, root_id)`.
pub async fn import_past_workflow(
    store: &Store,
    age_secs: i64,
) -> Result<(Uuid, Uuid), AppendError> {
    let at = Timestamp(Timestamp::now().micros() - age_secs * 1_000_000);
    let meta = Meta {
        timestamp: Some(at),
        ..Meta::default()
    };
    let created = store
        .submit(Intent::CreateWorkflow(NewWorkflow::default()), meta.clone())
        .await?;
    let Outcome::WorkflowCreated {
        workflow_id,
        root_id,
        ..
    } = created
    else {
        return Err(
            StorageError::Corrupt(format!("creating a workflow answered {created:?}")).into(),
        );
    };
    let nodes = (0..5)
        .map(|i| NewNode {
            timestamp: Some(at),
            ..NewNode::new(root_id, "message", format!("imported {i}"))
        })
        .collect();
    store
        .submit(Intent::AppendNodes { workflow_id, nodes }, meta)
        .await?;
    Ok((workflow_id, root_id))
}
