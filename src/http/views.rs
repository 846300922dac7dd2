//! Response bodies of the read routes: the JSON shapes of DESIGN §4, mapped from the
//! plain results the store returns.
//!
//! Each view borrows the store's result and is serialized by type, so a node's fields
//! and every object's keys come out in their documented order. Lists are objects with
//! a named array, never a bare array.

use std::sync::Arc;

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use arbor_storage::{
    BranchInfo, BranchNodes, Decision, Edge, EdgeKind, Event, Monitor, Node, NodeWithEdges,
    Outline, RenderedNode, Role, Seq, Timestamp, WorkflowStatus, WorkflowSummary,
};

use super::schemas;

/// `GET /v1/workflows/{wf}` (and each item of `GET /v1/workflows`).
#[derive(Serialize, ToSchema)]
#[schema(as = Workflow)]
pub struct WorkflowView<'a> {
    workflow_id: Uuid,
    #[schema(value_type = schemas::WorkflowStatus)]
    status: WorkflowStatus,
    root_id: Uuid,
    /// Nodes (that the token sees).
    node_count: usize,
    /// Branches (that the token sees).
    branch_count: usize,
    /// The head (last node) of each branch.
    #[schema(value_type = Vec<Uuid>)]
    heads: &'a [Uuid],
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    updated_at: Timestamp,
    /// Seq of the workflow's last event.
    #[schema(value_type = u64)]
    last_seq: Seq,
    /// The user who started the workflow.
    #[schema(value_type = Option<String>, required = true)]
    user_id: Option<&'a str>,
    #[schema(value_type = Object)]
    metadata: &'a Map<String, Value>,
}

impl<'a> From<&'a WorkflowSummary> for WorkflowView<'a> {
    fn from(w: &'a WorkflowSummary) -> WorkflowView<'a> {
        WorkflowView {
            workflow_id: w.workflow_id,
            status: w.status,
            root_id: w.root_id,
            node_count: w.node_count,
            branch_count: w.branch_count,
            heads: &w.heads,
            created_at: w.created_at,
            updated_at: w.updated_at,
            last_seq: w.last_seq,
            user_id: w.user_id.as_deref(),
            metadata: &w.metadata,
        }
    }
}

/// `GET /v1/nodes/{id}`: the node's own fields, then `edges: {out, in}`.
#[derive(Serialize, ToSchema)]
#[schema(as = NodeWithEdges)]
pub struct NodeView<'a> {
    #[serde(flatten)]
    #[schema(value_type = schemas::Node)]
    node: &'a Node,
    edges: EdgesView,
}

#[derive(Serialize, ToSchema)]
#[schema(as = NodeEdges)]
struct EdgesView {
    /// Edges from this node.
    out: Vec<OutEdge>,
    /// Edges to this node.
    #[serde(rename = "in")]
    incoming: Vec<InEdge>,
}

#[derive(Serialize, ToSchema)]
struct OutEdge {
    #[serde(rename = "type")]
    #[schema(value_type = schemas::EdgeKind)]
    kind: EdgeKind,
    to: Uuid,
}

#[derive(Serialize, ToSchema)]
struct InEdge {
    #[serde(rename = "type")]
    #[schema(value_type = schemas::EdgeKind)]
    kind: EdgeKind,
    from: Uuid,
}

impl<'a> From<&'a NodeWithEdges> for NodeView<'a> {
    fn from(n: &'a NodeWithEdges) -> NodeView<'a> {
        let out = |e: &Edge| OutEdge {
            kind: e.kind,
            to: e.to,
        };
        let inc = |e: &Edge| InEdge {
            kind: e.kind,
            from: e.from,
        };
        NodeView {
            node: &n.node,
            edges: EdgesView {
                out: n.outgoing.iter().map(out).collect(),
                incoming: n.incoming.iter().map(inc).collect(),
            },
        }
    }
}

/// `{nodes:[…]}`.
#[derive(Serialize, ToSchema)]
#[schema(as = NodeList)]
pub struct Nodes<'a> {
    /// The nodes.
    #[schema(value_type = Vec<schemas::Node>)]
    pub nodes: &'a [Arc<Node>],
}

/// One node (an append's answer) or `{nodes:[…]}` (a batch's), written by
/// [`arbor_storage::write_node_json`]: the bytes [`Nodes`] and `Json(node)` serialize
/// to, without `serde_json`'s byte-by-byte scan of the content.
pub enum NodeJson<'a> {
    /// A single node.
    One(&'a Node),
    /// `{nodes:[…]}`.
    List(&'a [Node]),
}

impl NodeJson<'_> {
    /// The JSON text.
    pub fn to_vec(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::new();
        match self {
            NodeJson::One(n) => arbor_storage::write_node_json(&mut out, n)?,
            NodeJson::List(nodes) => {
                out.extend_from_slice(RenderedNodes::OPEN);
                for (i, n) in nodes.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    arbor_storage::write_node_json(&mut out, n)?;
                }
                out.extend_from_slice(RenderedNodes::CLOSE);
            }
        }
        Ok(out)
    }
}

impl IntoResponse for NodeJson<'_> {
    fn into_response(self) -> Response {
        match self.to_vec() {
            Ok(text) => {
                let json = HeaderValue::from_static("application/json");
                ([(CONTENT_TYPE, json)], Body::from(text)).into_response()
            }
            Err(e) => super::problem::Problem::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("rendering a node: {e}"),
            )
            .into_response(),
        }
    }
}

/// `{nodes:[…]}` from nodes whose JSON the node cache rendered once: the same bytes
/// [`Nodes`] serializes to, joined without encoding a node again (`GET …/path`,
/// `…/children`, `…/subtree`).
pub struct RenderedNodes<'a>(pub &'a [RenderedNode]);

impl RenderedNodes<'_> {
    const OPEN: &'static [u8] = b"{\"nodes\":[";
    const CLOSE: &'static [u8] = b"]}";

    /// The JSON text, built in one buffer of its exact length.
    pub fn to_vec(&self) -> Vec<u8> {
        let texts = self.0.iter().map(|r| &*r.json);
        let commas = self.0.len().saturating_sub(1);
        let len = Self::OPEN.len()
            + texts.clone().map(<[u8]>::len).sum::<usize>()
            + commas
            + Self::CLOSE.len();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(Self::OPEN);
        for (i, text) in texts.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(text);
        }
        out.extend_from_slice(Self::CLOSE);
        out
    }
}

impl IntoResponse for RenderedNodes<'_> {
    fn into_response(self) -> Response {
        let json = HeaderValue::from_static("application/json");
        ([(CONTENT_TYPE, json)], Body::from(self.to_vec())).into_response()
    }
}

/// `GET /v1/workflows/{wf}/decisions`.
#[derive(Serialize, ToSchema)]
pub struct Decisions<'a> {
    decisions: Vec<DecisionView<'a>>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Decision)]
struct DecisionView<'a> {
    /// The decision node.
    #[schema(value_type = schemas::Node)]
    decision: &'a Node,
    /// Its options (OPTION_OF targets).
    #[schema(value_type = Vec<schemas::Node>)]
    options: &'a [Arc<Node>],
    /// The chosen option; null until chosen.
    #[schema(value_type = Option<schemas::Node>, required = true)]
    chosen: Option<&'a Node>,
}

impl<'a> From<&'a [Decision]> for Decisions<'a> {
    fn from(ds: &'a [Decision]) -> Decisions<'a> {
        let view = |d: &'a Decision| DecisionView {
            decision: &d.decision,
            options: &d.options,
            chosen: d.chosen.as_deref(),
        };
        Decisions {
            decisions: ds.iter().map(view).collect(),
        }
    }
}

/// `GET /v1/workflows/{wf}/monitors`.
#[derive(Serialize, ToSchema)]
pub struct Monitors<'a> {
    monitors: Vec<MonitorView<'a>>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Monitor)]
struct MonitorView<'a> {
    /// The monitor node.
    #[schema(value_type = schemas::Node)]
    monitor: &'a Node,
    /// What it monitors.
    #[schema(value_type = schemas::Node)]
    target: &'a Node,
}

impl<'a> From<&'a [Monitor]> for Monitors<'a> {
    fn from(ms: &'a [Monitor]) -> Monitors<'a> {
        let view = |m: &'a Monitor| MonitorView {
            monitor: &m.monitor,
            target: &m.target,
        };
        Monitors {
            monitors: ms.iter().map(view).collect(),
        }
    }
}

/// `GET /v1/workflows/{wf}/branches`.
#[derive(Serialize, ToSchema)]
pub struct Branches {
    branches: Vec<BranchSummary>,
}

#[derive(Serialize, ToSchema)]
struct BranchSummary {
    /// The id of the branch's first node.
    branch_id: Uuid,
    /// The node the branch forks from; null for the root's branch.
    #[schema(required = true)]
    fork_node_id: Option<Uuid>,
    /// The branch's last node.
    head_id: Uuid,
    /// Nodes on the branch.
    length: u32,
}

impl From<Vec<BranchInfo>> for Branches {
    fn from(bs: Vec<BranchInfo>) -> Branches {
        let view = |b: BranchInfo| BranchSummary {
            branch_id: b.branch_id,
            fork_node_id: b.fork_node_id,
            head_id: b.head_id,
            length: b.length,
        };
        Branches {
            branches: bs.into_iter().map(view).collect(),
        }
    }
}

/// `GET /v1/workflows/{wf}/branches/{branch_id}`.
#[derive(Serialize, ToSchema)]
#[schema(as = Branch)]
pub struct BranchView<'a> {
    branch_id: Uuid,
    /// Null for the root's branch.
    #[schema(required = true)]
    fork_node_id: Option<Uuid>,
    /// The branch's nodes in seq order.
    #[schema(value_type = Vec<schemas::Node>)]
    nodes: &'a [Arc<Node>],
}

impl<'a> From<&'a BranchNodes> for BranchView<'a> {
    fn from(b: &'a BranchNodes) -> BranchView<'a> {
        BranchView {
            branch_id: b.branch_id,
            fork_node_id: b.fork_node_id,
            nodes: &b.nodes,
        }
    }
}

/// `GET /v1/workflows/{wf}/events`.
#[derive(Serialize, ToSchema)]
#[schema(as = EventPage)]
pub struct Events<'a> {
    /// The page of events.
    #[schema(value_type = Vec<schemas::Event>)]
    pub events: &'a [Event],
    /// Where the next page starts.
    #[schema(value_type = u64)]
    pub next_after: Seq,
}

/// `GET /v1/workflows/{wf}/outline`: the whole tree for drawing it, from the index.
/// Nodes come as columns (one array per field, in seq order) to keep a 100 000-node
/// tree a few megabytes; content is not included (see `GET …/labels`).
#[derive(Serialize, ToSchema)]
#[schema(as = Outline)]
pub struct OutlineView<'a> {
    workflow_id: Uuid,
    /// The log position the outline reflects: a live stream resumes after it.
    #[schema(value_type = u64)]
    head: Seq,
    /// Node type names; `nodes.type` holds positions in this list.
    types: &'a [String],
    nodes: OutlineColumns,
    /// The workflow's events that create no node (edges, status changes), in seq order.
    #[schema(value_type = Vec<schemas::Event>)]
    events: &'a [Event],
}

/// The outline's nodes, one array per field, all of the same length, in seq order.
#[derive(Default, Serialize, ToSchema)]
struct OutlineColumns {
    /// Seq of the creating event.
    #[schema(value_type = Vec<u64>)]
    seq: Vec<Seq>,
    /// Node id.
    id: Vec<Uuid>,
    /// Position of the parent in these arrays (null for the root).
    parent: Vec<Option<u32>>,
    /// Position of the type name in `types`.
    #[serde(rename = "type")]
    node_type: Vec<u32>,
    /// Role (null when not a message).
    #[schema(value_type = Vec<Option<schemas::Role>>)]
    role: Vec<Option<Role>>,
}

impl<'a> OutlineView<'a> {
    /// The view of `o`, keeping the nodes `seen` says (parents of seen nodes are
    /// seen: scopes see ancestors) and the events `event_seen` says.
    pub fn new(
        wf: Uuid,
        o: &'a Outline,
        events: &'a [Event],
        seen: impl Fn(&Uuid, u32) -> bool,
    ) -> OutlineView<'a> {
        let mut cols = OutlineColumns::default();
        let mut at = vec![u32::MAX; o.nodes.len()];
        for (i, n) in o.nodes.iter().enumerate() {
            if !seen(&n.branch_id, n.depth) {
                continue;
            }
            let parent = n.parent.and_then(|p| at.get(p as usize).copied());
            if n.parent.is_some() && parent.is_none_or(|p| p == u32::MAX) {
                continue; // defensive: an unseen parent hides its subtree
            }
            at[i] = cols.seq.len() as u32;
            cols.seq.push(n.seq);
            cols.id.push(n.id);
            cols.parent.push(parent);
            cols.node_type.push(n.node_type);
            cols.role.push(n.role);
        }
        OutlineView {
            workflow_id: wf,
            head: o.head,
            types: &o.types,
            nodes: cols,
            events,
        }
    }
}

/// Longest label `GET …/labels` returns, in characters.
pub const LABEL_CHARS: usize = 240;

/// `GET /v1/workflows/{wf}/labels`: node id → the first line of its content.
#[derive(Serialize, ToSchema)]
pub struct Labels {
    /// Node id → the first non-blank line of its content (leading blanks dropped), at
    /// most 240 characters; empty for empty content. Ids the token does not see, or
    /// of no node of the workflow, are left out.
    labels: std::collections::BTreeMap<Uuid, String>,
}

impl Labels {
    /// The labels of `nodes`.
    pub fn of<'n>(nodes: impl Iterator<Item = &'n Node>) -> Labels {
        Labels {
            labels: nodes.map(|n| (n.id, label_of(&n.content))).collect(),
        }
    }
}

/// The first line of `content` after leading whitespace, at most [`LABEL_CHARS`]
/// characters (what the web UI shows on a row).
pub fn label_of(content: &str) -> String {
    let c = content.trim_start();
    let line = c.split('\n').next().unwrap_or("");
    line.chars().take(LABEL_CHARS).collect()
}

/// `GET /v1/nodes/{id}/path`: `{nodes}`, or `{messages}` with `format=messages`.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum PathView<'a> {
    /// The path's nodes, root first.
    Nodes(Nodes<'a>),
    /// The path's nodes that have a role, as messages.
    Messages(Messages<'a>),
}

/// `GET /v1/nodes/{id}/path?format=messages`: the path's nodes that have a role.
#[derive(Serialize, ToSchema)]
pub struct Messages<'a> {
    messages: Vec<Message<'a>>,
}

#[derive(Serialize, ToSchema)]
struct Message<'a> {
    #[schema(value_type = schemas::Role)]
    role: &'static str,
    content: &'a str,
}

impl<'a> From<&'a [Arc<Node>]> for Messages<'a> {
    fn from(path: &'a [Arc<Node>]) -> Messages<'a> {
        let message = |n: &'a Arc<Node>| {
            n.role.map(|r| Message {
                role: r.as_str(),
                content: &n.content,
            })
        };
        Messages {
            messages: path.iter().filter_map(message).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_is_the_first_line_after_blanks_cut_at_240_characters() {
        assert_eq!(label_of("  \n\n  hello\nworld"), "hello");
        assert_eq!(label_of(""), "");
        assert_eq!(label_of("\n\n"), "");
        let long = "é".repeat(300);
        assert_eq!(label_of(&long), "é".repeat(240), "characters, not bytes");
    }

    fn node(n: u64, node_type: &str) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "id": Uuid::from_u64_pair(0, n),
                "workflow_id": Uuid::from_u64_pair(1, 0),
                "parent_id": null,
                "type": node_type,
                "role": null,
                "content": "c",
                "payload": null,
                "metadata": {},
                "agent_id": null,
                "user_id": null,
                "branch_id": Uuid::from_u64_pair(0, 1),
                "depth": 0,
                "seq": n,
                "timestamp": "2026-11-23T18:00:00.123456Z",
            }))
            .expect("a valid node"),
        )
    }

    fn keys(v: &impl Serialize) -> String {
        // The key order of the serialized text, without the values' details.
        let text = serde_json::to_string(v).expect("json");
        let mut out = Vec::new();
        for (i, _) in text.match_indices("\":") {
            let start = text[..i].rfind('"').map_or(0, |s| s + 1);
            out.push(&text[start..i]);
        }
        out.join(",")
    }

    const NODE_KEYS: &str = "id,workflow_id,parent_id,type,role,content,payload,metadata,\
                             agent_id,user_id,branch_id,depth,seq,timestamp";

    /// `{nodes}` joined from rendered texts is byte for byte what serializing the
    /// nodes gives (as `GET …/path`, `…/children` and `…/subtree` answered before),
    /// with escapes, non-ASCII text, payload and metadata, for 0 to 3 nodes.
    #[tokio::test]
    async fn rendered_nodes_are_the_bytes_nodes_serializes_to() {
        for count in 0..4u64 {
            let nodes: Vec<Arc<Node>> = (1..=count)
                .map(|i| {
                    let mut n = (*node(i, "message")).clone();
                    n.content = format!("\"{i}\"\n\té 😀 \u{7f} </script>");
                    n.payload = serde_json::json!({"args": [i, 0.5, null], "x": {}});
                    n.metadata.insert("k".into(), Value::from(i));
                    Arc::new(n)
                })
                .collect();
            let rendered = nodes
                .iter()
                .cloned()
                .map(RenderedNode::render)
                .collect::<Result<Vec<_>, _>>()
                .expect("render");
            let want = serde_json::to_vec(&PathView::Nodes(Nodes { nodes: &nodes })).expect("json");
            assert_eq!(
                want,
                serde_json::to_vec(&Nodes { nodes: &nodes }).expect("json")
            );
            let got = RenderedNodes(&rendered).to_vec();
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want)
            );
            assert_eq!(
                got.capacity(),
                got.len(),
                "built in one buffer of its length"
            );
            let res = RenderedNodes(&rendered).into_response();
            assert_eq!(
                res.headers().get(CONTENT_TYPE).map(HeaderValue::as_bytes),
                Some(&b"application/json"[..])
            );
            let body = axum::body::to_bytes(res.into_body(), usize::MAX)
                .await
                .expect("body");
            assert_eq!(&body[..], &want[..]);
        }
    }

    /// The documented shapes, key by key and in order (DESIGN §4).
    #[test]
    fn views_keep_the_documented_key_order() {
        let d = node(1, "decision");
        let o = node(2, "option");
        let with_edges = NodeWithEdges {
            node: d.clone(),
            outgoing: vec![Edge {
                kind: EdgeKind::OptionOf,
                from: d.id,
                to: o.id,
            }],
            incoming: vec![Edge {
                kind: EdgeKind::ParentOf,
                from: o.id,
                to: d.id,
            }],
        };
        assert_eq!(
            keys(&NodeView::from(&with_edges)),
            format!("{NODE_KEYS},edges,out,type,to,in,type,from")
        );
        let decisions = [Decision {
            decision: d.clone(),
            options: vec![o.clone()],
            chosen: Some(o.clone()),
        }];
        assert_eq!(
            keys(&Decisions::from(&decisions[..])),
            format!("decisions,decision,{NODE_KEYS},options,{NODE_KEYS},chosen,{NODE_KEYS}")
        );
        let text = serde_json::to_string(&Decisions::from(
            &[Decision {
                chosen: None,
                ..decisions[0].clone()
            }][..],
        ))
        .expect("json");
        assert!(text.ends_with(",\"chosen\":null}]}"), "{text}");
        let monitors = [Monitor {
            monitor: d.clone(),
            target: o.clone(),
        }];
        assert_eq!(
            keys(&Monitors::from(&monitors[..])),
            format!("monitors,monitor,{NODE_KEYS},target,{NODE_KEYS}")
        );
        let branch = BranchNodes {
            branch_id: d.branch_id,
            fork_node_id: None,
            nodes: vec![d.clone()],
        };
        assert_eq!(
            keys(&BranchView::from(&branch)),
            format!("branch_id,fork_node_id,nodes,{NODE_KEYS}")
        );
        let branches = Branches::from(vec![BranchInfo {
            branch_id: d.branch_id,
            fork_node_id: None,
            head_id: d.id,
            length: 1,
        }]);
        assert_eq!(
            keys(&branches),
            "branches,branch_id,fork_node_id,head_id,length"
        );
        let summary = WorkflowSummary {
            workflow_id: d.workflow_id,
            status: WorkflowStatus::Running,
            root_id: d.id,
            node_count: 1,
            branch_count: 1,
            heads: vec![d.id],
            created_at: d.timestamp,
            updated_at: d.timestamp,
            last_seq: 1,
            user_id: None,
            metadata: Map::new(),
        };
        assert_eq!(
            keys(&WorkflowView::from(&summary)),
            "workflow_id,status,root_id,node_count,branch_count,heads,created_at,\
             updated_at,last_seq,user_id,metadata"
        );
    }
}
