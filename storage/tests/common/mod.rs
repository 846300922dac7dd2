//! Helpers shared by the storage crate's integration tests.

use arbor_storage::{Intent, Meta, NewWorkflow, Outcome, Store};
use uuid::Uuid;

/// Creates a workflow with system prompt "sys": its id and its root's.
pub async fn new_workflow(store: &Store) -> Result<(Uuid, Uuid), Box<dyn std::error::Error>> {
    let intent = Intent::CreateWorkflow(NewWorkflow {
        system_prompt: "sys".into(),
        ..NewWorkflow::default()
    });
    match store.submit(intent, Meta::default()).await? {
        Outcome::WorkflowCreated {
            workflow_id,
            root_id,
            ..
        } => Ok((workflow_id, root_id)),
        other => Err(format!("not a workflow: {other:?}").into()),
    }
}
