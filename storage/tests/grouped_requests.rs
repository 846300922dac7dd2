//! Requests that share one writer group: each is validated against the ones accepted
//! before it in the group (the group's overlay), and a refused one, a batch refused
//! halfway included, must leave nothing there for the ones after it.
//!
//! The requests are queued behind a large batch, so that the writer takes them together
//! as one group when it is done with the batch; the group sizes it reports show it did.

mod common;

use std::sync::{Arc, Mutex};

use arbor_storage::{
    verify_store, AppendError, Durability, GroupStats, Intent, Meta, NewNode, Outcome, Store,
    StoreOptions,
};
use futures_util::future::join_all;
use uuid::Uuid;

/// A node of the test: `content` under `parent`, with a fixed id.
fn node(id: Uuid, parent: Uuid, content: &str) -> NewNode {
    let mut n = NewNode::new(parent, "message", content);
    n.id = Some(id);
    n
}

/// A request of the group: one node, or an atomic batch.
fn request(workflow_id: Uuid, nodes: Vec<NewNode>) -> Intent {
    Intent::AppendNodes { workflow_id, nodes }
}

/// What each request of the group must get.
#[derive(Debug, PartialEq)]
enum Expect {
    Appended,
    Replayed,
    Conflict,
    Unprocessable,
}

fn outcome(res: &Result<Outcome, AppendError>) -> Result<Expect, String> {
    match res {
        Ok(Outcome::Nodes {
            replayed: false, ..
        }) => Ok(Expect::Appended),
        Ok(Outcome::Nodes { replayed: true, .. }) => Ok(Expect::Replayed),
        Err(AppendError::Conflict(_)) => Ok(Expect::Conflict),
        Err(AppendError::Unprocessable(_)) => Ok(Expect::Unprocessable),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_inside_a_group_leave_nothing_behind() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let groups: Arc<Mutex<Vec<GroupStats>>> = Arc::default();
    let seen = groups.clone();
    let store = Store::open(
        dir.path(),
        StoreOptions {
            durability: Durability::None,
            on_group: Some(Arc::new(move |g: GroupStats| {
                if let Ok(mut v) = seen.lock() {
                    v.push(g);
                }
            })),
            ..StoreOptions::default()
        },
    )?;
    let (workflow_id, root_id) = common::new_workflow(&store).await?;

    let [a, b, c, d, e, stray] = [(); 6].map(|()| Uuid::now_v7());
    let mut leaf_of_a = node(c, a, "c continues a");
    leaf_of_a.expect_leaf = true;
    let mut b_expects_leaf = node(b, a, "b continues a");
    b_expects_leaf.expect_leaf = true;
    let mut d_expects_leaf = node(d, stray, "d continues stray");
    d_expects_leaf.expect_leaf = true;
    let mut e_expects_leaf = node(e, d, "e continues d");
    e_expects_leaf.expect_leaf = true;
    let singles: Vec<(Vec<NewNode>, Expect)> = vec![
        // Refused: the parent is unknown. Its id stays free.
        (
            vec![node(stray, Uuid::now_v7(), "orphan")],
            Expect::Unprocessable,
        ),
        (vec![node(a, root_id, "a")], Expect::Appended),
        // The same id and body again: a replay of a node of this very group.
        (vec![node(a, root_id, "a")], Expect::Replayed),
        // The same id, another body.
        (vec![node(a, root_id, "not a")], Expect::Conflict),
        // `a` is a leaf so far: accepted, and `a` has a child from here on.
        (vec![b_expects_leaf], Expect::Appended),
        // Refused: `a` is no longer a leaf (its child is in this group).
        (vec![leaf_of_a], Expect::Conflict),
        // The id the refused orphan asked for is free.
        (
            vec![node(stray, b, "stray, properly parented")],
            Expect::Appended,
        ),
        // And `c`, refused above, can be appended without the leaf condition.
        (vec![node(c, a, "c forks a")], Expect::Appended),
        // Refused late, after its parent was checked: the id is the workflow's. Its
        // parent must not be taken for one with a child.
        (
            vec![node(workflow_id, stray, "takes the workflow's id")],
            Expect::Conflict,
        ),
        (vec![d_expects_leaf], Expect::Appended),
        // A batch refused at its second node (unknown parent): its first node, `e`
        // under `d`, must not stay behind, neither its id nor `d`'s having a child.
        (
            vec![
                node(e, d, "e"),
                node(Uuid::now_v7(), Uuid::now_v7(), "orphan"),
            ],
            Expect::Unprocessable,
        ),
        (vec![e_expects_leaf], Expect::Appended),
    ];

    // A batch large enough to keep the writer busy while the singles queue up behind it.
    let batch: Vec<NewNode> = (0..3000)
        .map(|i| NewNode::new(root_id, "message", format!("filler {i}")))
        .collect();
    let mut requests = vec![store.submit(request(workflow_id, batch), Meta::default())];
    let mut expected = Vec::new();
    for (nodes, expect) in singles {
        expected.push(expect);
        requests.push(store.submit(request(workflow_id, nodes), Meta::default()));
    }
    let answers = join_all(requests).await;
    outcome(&answers[0])?;
    for (i, (res, expect)) in answers[1..].iter().zip(&expected).enumerate() {
        assert_eq!(&outcome(res)?, expect, "request {i}: {res:?}");
    }
    let biggest = groups
        .lock()
        .map_err(|_| "poisoned")?
        .iter()
        .map(|g| g.requests)
        .max()
        .unwrap_or(0);
    assert!(
        biggest >= expected.len(),
        "the requests never shared a group (largest: {biggest} requests)"
    );

    // What the store holds: the batch and the six accepted requests, nothing else.
    let stored = store.read_events(0, 10_000)?;
    assert_eq!(stored.len(), 1 + 3000 + 6);
    let children = |id: &Uuid| -> Result<Vec<Uuid>, Box<dyn std::error::Error>> {
        let nodes = store.children(id)?.ok_or("no such node")?;
        Ok(nodes.iter().map(|n| n.id).collect())
    };
    assert_eq!(children(&a)?, vec![b, c]);
    assert_eq!(children(&b)?, vec![stray]);
    assert_eq!(children(&stray)?, vec![d]);
    assert_eq!(children(&d)?, vec![e]);
    let a_node = store.node(&a)?.ok_or("a is missing")?;
    assert_eq!(a_node.node.content, "a");
    verify_store(&store)?;

    // The same after a restart, from the log alone.
    store.close().await;
    drop(store);
    let store = Store::open(dir.path(), StoreOptions::default())?;
    assert_eq!(store.read_events(0, 10_000)?.len(), 1 + 3000 + 6);
    assert_eq!(
        store
            .children(&a)?
            .ok_or("no a")?
            .iter()
            .map(|n| n.id)
            .collect::<Vec<_>>(),
        vec![b, c]
    );
    verify_store(&store)?;
    Ok(())
}
