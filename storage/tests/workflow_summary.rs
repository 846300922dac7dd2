//! A workflow's summary from memory: `Store::workflow_in_memory` answers for a workflow
//! created without metadata exactly what `Store::workflow` answers, and never for one
//! with metadata (which stays in its creation record) or one that does not exist; the
//! same holds after a restart, when the index was rebuilt from the log's records
//! decoded in part (`decode_index_event`), not from the records as written. The same
//! for a page of the list (`Store::list_workflows_in_memory`).

use arbor_storage::{
    Durability, Intent, Meta, NewNode, NewWorkflow, Outcome, Store, StoreOptions, WorkflowStatus,
};
use serde_json::{json, Map, Value};
use uuid::Uuid;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn options() -> StoreOptions {
    StoreOptions {
        durability: Durability::None,
        cache_mb: 8,
        ..StoreOptions::default()
    }
}

/// Creates a workflow with `metadata` and one child of its root: its id.
async fn workflow(store: &Store, metadata: Map<String, Value>) -> Result<Uuid, String> {
    let intent = Intent::CreateWorkflow(NewWorkflow {
        system_prompt: "sys".into(),
        metadata,
        user_id: Some("ana".into()),
        ..NewWorkflow::default()
    });
    let (wf, root) = match store.submit(intent, Meta::default()).await {
        Ok(Outcome::WorkflowCreated {
            workflow_id,
            root_id,
            ..
        }) => (workflow_id, root_id),
        other => return Err(format!("not a workflow: {other:?}")),
    };
    let child = Intent::AppendNodes {
        workflow_id: wf,
        nodes: vec![NewNode::new(root, "message", "hello")],
    };
    store
        .submit(child, Meta::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(wf)
}

/// Checks every workflow's two answers against each other.
fn check(store: &Store, plain: Uuid, with: Uuid, metadata: &Map<String, Value>) -> TestResult {
    let full = store.workflow(&plain)?.ok_or("plain workflow missing")?;
    assert!(full.metadata.is_empty());
    assert_eq!(full.node_count, 2, "the summary is the live one");
    assert_eq!(
        store.workflow_in_memory(&plain),
        Some(full),
        "a workflow without metadata is answered from memory, the same as from the log"
    );

    let full = store
        .workflow(&with)?
        .ok_or("workflow with metadata missing")?;
    assert_eq!(&full.metadata, metadata, "metadata comes from the log");
    assert_eq!(
        store.workflow_in_memory(&with),
        None,
        "memory does not hold metadata, so it must not answer without it"
    );

    let missing = Uuid::from_u128(42);
    assert_eq!(store.workflow(&missing)?, None);
    assert_eq!(store.workflow_in_memory(&missing), None);

    // Listing reads metadata only where there is some, and still shows all of it.
    let (page, _) = store.list_workflows(&Default::default(), None, 10)?;
    let listed = |id: Uuid| page.iter().find(|w| w.workflow_id == id).cloned();
    assert_eq!(
        listed(with).map(|w| w.metadata),
        Some(metadata.clone()),
        "the list shows the metadata"
    );
    assert_eq!(listed(plain).map(|w| w.metadata), Some(Map::new()));

    // The list from memory: never a page with metadata on it, else the same page and
    // cursor as the list from the log. Newest first: `with`, then `plain`.
    let all = Default::default();
    let (first, cursor) = store.list_workflows(&all, None, 1)?;
    assert_eq!(first.first().map(|w| w.workflow_id), Some(with));
    assert_eq!(store.list_workflows_in_memory(&all, None, 1), None);
    assert_eq!(store.list_workflows_in_memory(&all, None, 10), None);
    let second = store.list_workflows(&all, cursor, 1)?;
    assert_eq!(second.0.first().map(|w| w.workflow_id), Some(plain));
    assert_eq!(
        store.list_workflows_in_memory(&all, cursor, 1),
        Some(second),
        "a page without metadata comes from memory, cursor and all"
    );
    Ok(())
}

#[tokio::test]
async fn a_summary_without_metadata_comes_from_memory_live_and_after_a_restart() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), options())?;
    let plain = workflow(&store, Map::new()).await?;
    let metadata = json!({"project": "arbor", "n": 1})
        .as_object()
        .cloned()
        .ok_or("not an object")?;
    let with = workflow(&store, metadata.clone()).await?;
    check(&store, plain, with, &metadata)?;

    // The status moves in memory too.
    store
        .submit(
            Intent::SetStatus {
                workflow_id: plain,
                status: WorkflowStatus::Completed,
            },
            Meta::default(),
        )
        .await?;
    assert_eq!(
        store.workflow_in_memory(&plain).map(|w| w.status),
        Some(WorkflowStatus::Completed)
    );
    store.close().await;
    drop(store);

    let store = Store::open(dir.path(), options())?;
    check(&store, plain, with, &metadata)?;
    store.close().await;
    Ok(())
}
