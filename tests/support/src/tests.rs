//! Tests of the generators: the sample is valid, seeded output repeats, and the checker catches each broken rule.
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use uuid::Uuid;

use arbor_storage::{
    edge_event_id, Durability, Edge, EdgeKind, EventBody, Intent, Meta, NewNode, NewWorkflow, Node,
    PortableEvent, Store, StoreOptions, WorkflowStatus,
};

use super::*;

fn small_spec(seed: u64) -> SyntheticSpec {
    SyntheticSpec {
        seed,
        workflows: 6,
        nodes_per_workflow: 150,
        ..SyntheticSpec::default()
    }
}

fn nodes(events: &[PortableEvent]) -> Vec<&Node> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::WorkflowCreated(c) => Some(&c.root),
            EventBody::NodeCreated(n) => Some(n),
            _ => None,
        })
        .collect()
}

// ---- determinism ------------------------------------------------------------------

#[test]
fn generate_is_deterministic() {
    assert_eq!(coding_agent_sample(), coding_agent_sample());
    let a: Vec<_> = synthetic(&small_spec(7)).collect();
    let b: Vec<_> = synthetic(&small_spec(7)).collect();
    assert_eq!(a, b);
    let c: Vec<_> = synthetic(&small_spec(8)).collect();
    assert_ne!(a, c, "another seed gives other events");
    let d1: Vec<_> = deep_chain(3, 50).collect();
    let d2: Vec<_> = deep_chain(3, 50).collect();
    assert_eq!(d1, d2);
    assert_ne!(d1, deep_chain(4, 50).collect::<Vec<_>>());
}

#[test]
fn generate_smaller_run_is_a_prefix() {
    let big: Vec<_> = synthetic(&SyntheticSpec {
        workflows: 5,
        ..small_spec(11)
    })
    .collect();
    let small: Vec<_> = synthetic(&SyntheticSpec {
        workflows: 2,
        ..small_spec(11)
    })
    .collect();
    assert!(small.len() < big.len());
    assert_eq!(small[..], big[..small.len()]);
}

// ---- validity ---------------------------------------------------------------------

#[test]
fn generate_synthetic_streams_are_valid() {
    let specs = [
        SyntheticSpec::default(),
        small_spec(1),
        // one chain per workflow
        SyntheticSpec {
            fanout: 0.0,
            decision_ratio: 0.0,
            ..small_spec(2)
        },
        // fork at every node, shallow
        SyntheticSpec {
            fanout: 1.0,
            max_depth: 3,
            ..small_spec(3)
        },
        // a star around the root
        SyntheticSpec {
            max_depth: 1,
            decision_ratio: 0.5,
            monitor_ratio: 0.5,
            ..small_spec(4)
        },
        // decisions and monitors everywhere
        SyntheticSpec {
            decision_ratio: 0.5,
            monitor_ratio: 0.5,
            chosen_ratio: 1.0,
            ..small_spec(5)
        },
        SyntheticSpec {
            nodes_per_workflow: 1,
            ..small_spec(6)
        },
        SyntheticSpec {
            nodes_per_workflow: 3,
            decision_ratio: 1.0,
            ..small_spec(6)
        },
        SyntheticSpec {
            content: ContentSize::Fixed(0),
            ..small_spec(7)
        },
        SyntheticSpec {
            content: ContentSize::Uniform { min: 10, max: 3000 },
            max_open_branches: 1,
            ..small_spec(8)
        },
        // nonsense is clamped
        SyntheticSpec {
            nodes_per_workflow: 0,
            max_depth: 0,
            fanout: f64::NAN,
            decision_ratio: -1.0,
            monitor_ratio: 7.0,
            agents: 0,
            users: 0,
            max_open_branches: 0,
            ..small_spec(9)
        },
    ];
    for spec in &specs {
        let stats =
            check(&synthetic(spec).collect::<Vec<_>>()).unwrap_or_else(|e| panic!("{spec:?}: {e}"));
        assert_eq!(stats.workflows, spec.workflows, "{spec:?}");
        assert_eq!(
            stats.nodes,
            spec.workflows * spec.nodes_per_workflow.max(1),
            "exact node count for {spec:?}"
        );
        assert!(
            stats.max_depth as usize <= spec.max_depth.max(1),
            "{spec:?}"
        );
    }
}

#[test]
fn generate_default_spec_has_the_advertised_shape() {
    let spec = SyntheticSpec {
        workflows: 40,
        ..SyntheticSpec::default()
    };
    let events: Vec<_> = synthetic(&spec).collect();
    let s = check(&events).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.nodes, 40 * 200);
    // ~3 % decisions, each with 2-4 options, most chosen.
    assert!(s.decisions > 100 && s.decisions < 400, "{s:?}");
    assert!(
        s.options >= 2 * s.decisions && s.options <= 4 * s.decisions,
        "{s:?}"
    );
    assert!(
        s.chosen * 100 >= s.decisions * 70 && s.chosen < s.decisions,
        "{s:?}"
    );
    // ~2 % monitors, each with its edge, nearly all across branches.
    assert_eq!(s.monitors, s.monitor_nodes);
    assert!(s.monitors > 80, "{s:?}");
    assert!(s.cross_branch_monitors * 100 >= s.monitors * 90, "{s:?}");
    // Forks from fanout on top of the options' branches.
    assert!(
        s.branches > s.workflows + (s.options - s.decisions),
        "{s:?}"
    );
    // Most workflows finish.
    assert!(s.status_changes >= 30 && s.status_changes <= 40, "{s:?}");
    // Log-normal content around 400 bytes, capped at 16 KiB.
    let mean = s.content_bytes / s.nodes as u64;
    assert!((350..1_000).contains(&mean), "mean content {mean}");
    assert!(s.max_content <= 16 * 1024 && s.max_content > 4_000, "{s:?}");
    // Types and roles as documented.
    let types: HashSet<&str> = nodes(&events)
        .iter()
        .map(|n| n.node_type.as_str())
        .collect();
    for t in [
        "system",
        "message",
        "action",
        "tool_result",
        "decision",
        "option",
        "monitor",
    ] {
        assert!(types.contains(t), "{t} missing from {types:?}");
    }
}

#[test]
fn generate_deep_chain_is_one_branch() {
    for depth in [0, 1, 10, 1_000, 20_000] {
        let events: Vec<_> = deep_chain(9, depth).collect();
        assert_eq!(events.len(), depth + 1);
        let s = check(&events).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.branches, 1);
        assert_eq!(s.max_depth as usize, depth);
        assert_eq!(s.nodes, depth + 1);
    }
    let mut it = deep_chain(1, 5);
    assert_eq!(it.size_hint(), (6, Some(6)));
    it.next();
    assert_eq!(it.size_hint(), (5, Some(5)));
}

/// The streaming generator keeps per-workflow state only: a million events go through
/// with the same footprint as a thousand.
#[test]
fn generate_million_events_in_bounded_memory() {
    let spec = SyntheticSpec {
        seed: 5,
        workflows: usize::MAX,
        nodes_per_workflow: 1_000,
        content: ContentSize::Fixed(16),
        metadata_ratio: 0.0,
        ..SyntheticSpec::default()
    };
    let mut gen = synthetic(&spec);
    let mut count = 0usize;
    let mut max_footprint = 0;
    let mut footprint_at_1k = 0;
    let mut next_probe = 1_000;
    let mut bytes = 0usize;
    while count < 1_000_000 {
        let Some(ev) = gen.next() else { break };
        if let EventBody::NodeCreated(n) = &ev.body {
            bytes += n.content.len();
        }
        count += 1;
        if count == 1_000 {
            footprint_at_1k = gen.footprint();
        }
        if count >= next_probe {
            next_probe += 1_000;
            max_footprint = max_footprint.max(gen.footprint());
        }
    }
    assert_eq!(count, 1_000_000);
    assert!(bytes > 0);
    // 1 000 nodes × 32 bytes (rounded up to the vector's capacity), the 64 KiB corpus and
    // a few queued events.
    assert!(max_footprint < 192 * 1024, "footprint {max_footprint}");
    assert!(
        max_footprint <= footprint_at_1k * 2,
        "{max_footprint} vs {footprint_at_1k}"
    );
    assert!(gen.max_queued() <= 6, "queued {}", gen.max_queued());
}

#[test]
fn generate_portable_exp_is_accurate() {
    for x in [
        -700.0, -30.5, -1.0, -0.25, 0.0, 1e-9, 0.5, 1.0, 2.75, 10.0, 88.7, 700.0,
    ] {
        let (got, want) = (super::synthetic::portable_exp(x), f64::exp(x));
        assert!(
            ((got - want) / want).abs() < 1e-13,
            "exp({x}) = {got}, want {want}"
        );
    }
}

// ---- the checker itself -----------------------------------------------------------

fn tamper(
    events: &[PortableEvent],
    at: usize,
    f: impl FnOnce(&mut PortableEvent),
) -> Vec<PortableEvent> {
    let mut v = events.to_vec();
    f(&mut v[at]);
    v
}

fn position_of(events: &[PortableEvent], pred: impl Fn(&PortableEvent) -> bool) -> usize {
    events
        .iter()
        .position(pred)
        .unwrap_or_else(|| panic!("no such event"))
}

#[test]
fn generate_checker_refuses_broken_streams() {
    let good = coding_agent_sample();
    check(&good).unwrap_or_else(|e| panic!("{e}"));
    let is_node = |e: &PortableEvent| matches!(&e.body, EventBody::NodeCreated(n) if n.depth > 3);
    let first_node = position_of(&good, is_node);
    let fork = position_of(
        &good,
        |e| matches!(&e.body, EventBody::NodeCreated(n) if n.branch_id == n.id),
    );
    let chosen = position_of(
        &good,
        |e| matches!(&e.body, EventBody::EdgeCreated(x) if x.kind == EdgeKind::ChosenOption),
    );
    let monitors = position_of(
        &good,
        |e| matches!(&e.body, EventBody::EdgeCreated(x) if x.kind == EdgeKind::Monitors),
    );
    let set_node = |i: usize, f: &dyn Fn(&mut Node)| {
        tamper(&good, i, |e| {
            if let EventBody::NodeCreated(n) = &mut e.body {
                f(n)
            }
        })
    };
    let set_edge = |i: usize, f: &dyn Fn(&mut Edge)| {
        tamper(&good, i, |e| {
            if let EventBody::EdgeCreated(x) = &mut e.body {
                f(x);
                e.id = edge_event_id(x.kind, x.from, x.to);
            }
        })
    };
    let cases: Vec<(&str, Vec<PortableEvent>)> = vec![
        ("depth", set_node(first_node, &|n| n.depth += 1)),
        ("branch", set_node(first_node, &|n| n.branch_id = n.id)),
        (
            "branch of a fork",
            set_node(fork, &|n| n.branch_id = Uuid::nil()),
        ),
        (
            "unknown parent",
            set_node(first_node, &|n| n.parent_id = Some(Uuid::nil())),
        ),
        (
            "system type",
            set_node(first_node, &|n| n.node_type = "system".into()),
        ),
        (
            "bad type",
            set_node(first_node, &|n| n.node_type = "Tool-Result".into()),
        ),
        ("seq", set_node(first_node, &|n| n.seq = 4)),
        (
            "event id",
            tamper(&good, first_node, |e| e.id = Uuid::nil()),
        ),
        (
            "time",
            tamper(&good, first_node, |e| {
                e.timestamp = arbor_storage::Timestamp(0);
                if let EventBody::NodeCreated(n) = &mut e.body {
                    n.timestamp = e.timestamp;
                }
            }),
        ),
        ("edge id", tamper(&good, chosen, |e| e.id = Uuid::nil())),
        ("chosen non-option", set_edge(chosen, &|x| x.to = x.from)),
        (
            "monitor from non-monitor",
            set_edge(monitors, &|x| std::mem::swap(&mut x.from, &mut x.to)),
        ),
        (
            "parent_of edge",
            set_edge(monitors, &|x| x.kind = EdgeKind::ParentOf),
        ),
        (
            "explicit implied OPTION_OF",
            set_edge(chosen, &|x| x.kind = EdgeKind::OptionOf),
        ),
    ];
    for (what, events) in cases {
        assert!(check(&events).is_err(), "checker accepted: {what}");
    }
    // Duplicates and a node after completion.
    let mut dup = good.clone();
    dup.push(good[first_node].clone());
    assert!(check(&dup).is_err(), "duplicate event");
    let mut late = good.clone();
    let mut extra = good[first_node].clone();
    extra.id = Uuid::from_u128(1);
    extra.timestamp = arbor_storage::Timestamp(i64::MAX / 2);
    if let EventBody::NodeCreated(n) = &mut extra.body {
        n.id = extra.id;
        n.timestamp = extra.timestamp;
    }
    late.push(extra);
    assert!(check(&late).is_err(), "node after completed");
}

// ---- the sample -------------------------------------------------------------------

#[test]
fn generate_sample_has_the_required_features() {
    let events = coding_agent_sample();
    let s = check(&events).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("sample: {s:?}");
    assert_eq!(s.workflows, 1);
    assert!((250..=400).contains(&s.nodes), "nodes {}", s.nodes);
    assert!(s.branches >= 5, "{s:?}");
    let all = nodes(&events);
    let by_id: HashMap<Uuid, &Node> = all.iter().map(|n| (n.id, *n)).collect();
    let mut children: HashMap<Uuid, Vec<&Node>> = HashMap::new();
    for n in &all {
        if let Some(p) = n.parent_id {
            children.entry(p).or_default().push(n);
        }
    }
    // A decision with three options, one chosen.
    // The first decision has three options; a later one has two.
    assert_eq!(s.decisions, 2);
    assert_eq!(s.chosen, 2);
    let decision = all
        .iter()
        .find(|n| n.node_type == "decision")
        .unwrap_or_else(|| panic!("no decision"));
    let options = &children[&decision.id];
    assert_eq!(options.len(), 3);
    assert!(options.iter().all(|o| o.node_type == "option"));
    let chosen: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::EdgeCreated(x) if x.kind == EdgeKind::ChosenOption => Some(*x),
            _ => None,
        })
        .collect();
    assert_eq!(chosen.len(), 2);
    assert_eq!(chosen[0].from, decision.id);
    assert_eq!(chosen[0].to, options[1].id, "option B is chosen");
    // A fork that is not a decision: a later sibling exploring an alternative.
    let forks: Vec<_> = children
        .iter()
        .filter(|(p, c)| c.len() > 1 && by_id[*p].node_type != "decision")
        .collect();
    assert!(!forks.is_empty());
    // Monitors: a MONITORS edge from a monitor node to a node on another branch.
    assert!(
        s.monitors >= 3 && s.cross_branch_monitors == s.monitors,
        "{s:?}"
    );
    // Sensible people and metadata.
    assert!(all.iter().any(|n| n.agent_id.as_deref() == Some("coder-7")));
    assert!(all
        .iter()
        .any(|n| n.agent_id.as_deref() == Some("test-guardian")));
    assert!(all.iter().filter(|n| !n.metadata.is_empty()).count() > 100);
    let actions: Vec<_> = all.iter().filter(|n| n.node_type == "action").collect();
    assert!(actions.len() > 60);
    assert!(actions
        .iter()
        .all(|a| a.payload["tool"].is_string() && a.payload["args"].is_object()));
    let root = all[0];
    assert!(root.content.contains("\n\n") && root.content.len() > 1_000);
    // Ends completed, after a wait for the user's choice.
    let statuses: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::StatusChanged(c) => Some(c.to),
            _ => None,
        })
        .collect();
    assert_eq!(
        statuses,
        [
            WorkflowStatus::Waiting,
            WorkflowStatus::Running,
            WorkflowStatus::Completed
        ]
    );
    assert!(matches!(
        events.last().map(|e| &e.body),
        Some(EventBody::StatusChanged(_))
    ));
}

fn sample_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(SAMPLE_PATH)
}

/// `data/sample-coding-agent.jsonl` is `coding_agent_sample()`, one event per line.
/// `ARBOR_UPDATE_SAMPLES=1` rewrites it.
#[test]
fn generate_sample_file_is_up_to_date() {
    let expected = to_jsonl(&coding_agent_sample()).unwrap_or_else(|e| panic!("{e}"));
    let path = sample_file();
    if std::env::var("ARBOR_UPDATE_SAMPLES").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &expected).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `ARBOR_UPDATE_SAMPLES=1 cargo test -p arbor-testkit sample_file` to create it",
            path.display()
        )
    });
    assert!(
        actual == expected,
        "{} is stale; run `ARBOR_UPDATE_SAMPLES=1 cargo test -p arbor-testkit sample_file` to update it",
        path.display()
    );
    // And it parses back.
    let parsed: Vec<PortableEvent> = actual
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    assert_eq!(parsed, coding_agent_sample());
}

#[test]
fn generate_write_jsonl_matches_to_jsonl() {
    let events: Vec<_> = synthetic(&small_spec(3)).collect();
    let mut buf = Vec::new();
    let n = write_jsonl(&mut buf, events.iter().cloned()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n as usize, events.len());
    assert_eq!(String::from_utf8(buf).ok(), to_jsonl(&events).ok());
}

// ---- through the real store ---------------------------------------------------------

/// The intent `arbor import` submits for a portable event.
fn intent_of(ev: &PortableEvent) -> (Intent, Meta) {
    let meta = Meta {
        actor: ev.actor.clone(),
        event_id: Some(ev.id),
        timestamp: Some(ev.timestamp),
    };
    let intent = match &ev.body {
        EventBody::WorkflowCreated(c) => Intent::CreateWorkflow(NewWorkflow {
            id: Some(ev.workflow_id),
            root_id: Some(c.root.id),
            system_prompt: c.root.content.clone(),
            metadata: c.metadata.clone(),
            user_id: c.user_id.clone(),
        }),
        EventBody::NodeCreated(n) => Intent::AppendNodes {
            workflow_id: ev.workflow_id,
            nodes: vec![NewNode {
                id: Some(n.id),
                parent_id: n.parent_id.unwrap_or_default(),
                node_type: n.node_type.clone(),
                role: n.role,
                content: n.content.clone(),
                payload: n.payload.clone(),
                metadata: n.metadata.clone(),
                agent_id: n.agent_id.clone(),
                user_id: n.user_id.clone(),
                expect_leaf: false,
                timestamp: Some(n.timestamp),
            }],
        },
        EventBody::EdgeCreated(e) => Intent::AddEdge {
            workflow_id: ev.workflow_id,
            edge: *e,
        },
        EventBody::StatusChanged(s) => Intent::SetStatus {
            workflow_id: ev.workflow_id,
            status: s.to,
        },
    };
    (intent, meta)
}

async fn import(store: &Store, events: &[PortableEvent]) {
    for ev in events {
        let (intent, meta) = intent_of(ev);
        store
            .submit(intent, meta)
            .await
            .unwrap_or_else(|e| panic!("store refused {} {}: {e}", ev.body.kind(), ev.id));
    }
}

/// Exports workflow `wf` from the store in portable form.
fn export(store: &Store, wf: &Uuid) -> Vec<PortableEvent> {
    store
        .read_workflow_events(wf, 0, usize::MAX)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("workflow {wf} missing"))
        .iter()
        .map(PortableEvent::from_event)
        .collect()
}

#[tokio::test]
async fn generate_sample_is_accepted_by_the_store() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let events = coding_agent_sample();
    import(&store, &events).await;
    let wf = events[0].workflow_id;
    // Export gives back exactly what was generated.
    assert_eq!(export(&store, &wf), events);

    let view = store
        .workflow(&wf)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no view"));
    assert_eq!(view.status, WorkflowStatus::Completed);
    let stats = check(&events).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(view.node_count, stats.nodes);
    let branches = store.branches(&wf).unwrap_or_else(|| panic!("no branches"));
    assert_eq!(branches.len(), stats.branches);
    assert_eq!(
        branches.iter().map(|b| b.length as usize).sum::<usize>(),
        stats.nodes
    );
    assert_eq!(
        branches.iter().filter(|b| b.fork_node_id.is_none()).count(),
        1
    );

    let decisions = store
        .decisions(&wf)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_default();
    assert_eq!(decisions.len(), 2);
    assert_eq!(decisions[0].options.len(), 3);
    assert_eq!(decisions[1].options.len(), 2);
    assert!(decisions.iter().all(|d| d.chosen.is_some()));
    let chosen = decisions[0]
        .chosen
        .as_ref()
        .unwrap_or_else(|| panic!("nothing chosen"));
    assert_eq!(chosen.id, decisions[0].options[1].id);

    let all = store
        .monitors(&wf, false)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_default();
    let cross = store
        .monitors(&wf, true)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_default();
    assert_eq!(all.len(), stats.monitors);
    assert_eq!(cross.len(), stats.monitors);
    assert!(cross
        .iter()
        .all(|m| m.monitor.node_type == "monitor" && m.monitor.branch_id != m.target.branch_id));

    store.close().await;
}

#[tokio::test]
async fn generate_synthetic_and_deep_chain_are_accepted_by_the_store() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let options = StoreOptions {
        durability: Durability::None,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), options).unwrap_or_else(|e| panic!("{e}"));
    // Left running, so that a second import can replay every event (see below).
    let spec = SyntheticSpec {
        workflows: 4,
        nodes_per_workflow: 120,
        decision_ratio: 0.08,
        monitor_ratio: 0.05,
        finish_ratio: 0.0,
        ..SyntheticSpec::default()
    };
    let mut events: Vec<_> = synthetic(&spec).collect();
    events.extend(deep_chain(17, 300));
    import(&store, &events).await;
    let mut by_wf: HashMap<Uuid, Vec<PortableEvent>> = HashMap::new();
    for ev in &events {
        by_wf.entry(ev.workflow_id).or_default().push(ev.clone());
    }
    assert_eq!(by_wf.len(), 5);
    for (wf, evs) in &by_wf {
        assert_eq!(&export(&store, wf), evs);
        let s = check(evs).unwrap_or_else(|e| panic!("{e}"));
        let branches = store.branches(wf).unwrap_or_default();
        assert_eq!(branches.len(), s.branches);
        let decisions = store
            .decisions(wf)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_default();
        assert_eq!(decisions.len(), s.decisions);
        assert_eq!(
            decisions.iter().filter(|d| d.chosen.is_some()).count(),
            s.chosen
        );
        assert_eq!(
            decisions.iter().map(|d| d.options.len()).sum::<usize>(),
            s.options
        );
        let cross = store
            .monitors(wf, true)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_default();
        assert_eq!(cross.len(), s.cross_branch_monitors);
    }
    // The deep chain's last node has the whole chain as its path.
    let last = events.last().map(|e| e.id).unwrap_or_default();
    let path = store
        .path(&last)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_default();
    assert_eq!(path.len(), 301);
    // Importing again is an identical replay: accepted, nothing new written.
    let head = store.head();
    import(&store, &events).await;
    assert_eq!(store.head(), head);
    store.close().await;
}
