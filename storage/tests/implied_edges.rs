//! The OPTION_OF edge the log records nowhere (an `option` node under a `decision`), as
//! `Store::implied_option_of` tells replicas of it: exactly for that pair, whatever the
//! other node types around it.

mod common;

use arbor_storage::{Durability, EventBody, Intent, Meta, NewNode, Store, StoreOptions};
use uuid::Uuid;

/// A node of type `ty` under `parent`, with its id.
fn node(parent: Uuid, ty: &str) -> (Uuid, NewNode) {
    let id = Uuid::now_v7();
    let mut n = NewNode::new(parent, ty, format!("a {ty}"));
    n.id = Some(id);
    (id, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_option_under_a_decision_implies_option_of(
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(
        dir.path(),
        StoreOptions {
            durability: Durability::None,
            ..StoreOptions::default()
        },
    )?;
    let (workflow_id, root_id) = common::new_workflow(&store).await?;
    let (decision, d) = node(root_id, "decision");
    let (option, o) = node(decision, "option");
    let (message, m) = node(decision, "message");
    let (other_decision, d2) = node(message, "decision");
    let (option_under_message, o2) = node(message, "option");
    let (option_under_root, o3) = node(root_id, "option");
    store
        .submit(
            Intent::AppendNodes {
                workflow_id,
                nodes: vec![d, o, m, d2, o2, o3],
            },
            Meta::default(),
        )
        .await?;
    let mut implied = Vec::new();
    for event in store.read_events(0, 100)? {
        if let EventBody::NodeCreated(n) = &event.body {
            implied.push((n.id, store.implied_option_of(&event)));
        }
    }
    assert_eq!(
        implied,
        vec![
            (decision, None),
            (option, Some(decision)),
            (message, None),
            (other_decision, None),
            (option_under_message, None),
            (option_under_root, None),
        ]
    );
    Ok(())
}
