//! Handlers of the DESIGN §4 table (everything but SSE and health).
//!
//! Reads that may touch sled (a node-cache miss, a record, a page of the log) run on
//! tokio's blocking pool through one helper, `read`, so a slow disk never holds a
//! worker thread. Reads answered by the in-memory index alone (`has_workflow`,
//! `branches`) stay inline. Responses are the views of [`super::views`].

use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use arbor_storage::{
    BranchInfo, Edge, EdgeKind, Intent, ListFilter, Meta, NewWorkflow, Outcome, RenderedNode, Seq,
    StorageError, Store, WorkflowStatus, WorkflowSummary,
};

use super::auth::Principal;
use super::openapi::{NodeMissing, WorkflowMissing};
use super::problem::Problem;
use super::schemas;
use super::scope::{self, forbidden, node_missing, workflow_missing, EventScope, Seen};
use super::views::{
    BranchView, Branches, Decisions, Events, Labels, Messages, Monitors, NodeJson, NodeView, Nodes,
    OutlineView, PathView, RenderedNodes, WorkflowView,
};
use super::wire::{
    BranchPath, Choose, CreateBatch, CreateEdge, CreateNode, CreateWorkflow, EdgeCreated,
    EventsQuery, JsonBody, LabelsQuery, ListQuery, MonitorsQuery, NoQuery, NodePath, PatchWorkflow,
    PathParam, PathQuery, QueryParams, SubtreeQuery, WorkflowCreated, WorkflowPath,
};
use super::AppState;

type ApiResult = Result<Response, Problem>;

/// Runs the store read `f` on tokio's blocking pool and waits for it.
///
/// `spawn_blocking` rather than `block_in_place`: it works on every runtime flavour
/// (`block_in_place` panics on a current-thread runtime, which tests use) and costs one
/// handoff of a few µs per request.
pub(super) async fn read<T, F>(store: &Store, f: F) -> Result<T, Problem>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T, StorageError> + Send + 'static,
{
    let store = store.clone();
    match tokio::task::spawn_blocking(move || f(&store)).await {
        Ok(res) => Ok(res?),
        Err(e) => Err(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("store read task failed: {e}"),
        )),
    }
}

/// `in_place`, an answer memory gave (the index, the node cache), or else the store
/// read `f` on the blocking pool (see [`read`]), whose hop there and back costs more
/// than a cached read itself (issue 13).
async fn in_place_or_read<T, F>(
    store: &Store,
    in_place: Option<T>,
    f: F,
) -> Result<Option<T>, Problem>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<Option<T>, StorageError> + Send + 'static,
{
    match in_place {
        Some(found) => Ok(Some(found)),
        None => read(store, f).await,
    }
}

/// 201 for a new write, 200 for an identical replay.
fn created(replayed: bool) -> StatusCode {
    if replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    }
}

impl AppState {
    /// Submits an intent, timing it for the append-latency histogram.
    async fn submit(&self, intent: Intent) -> Result<Outcome, Problem> {
        let started = Instant::now();
        let meta = Meta {
            actor: super::auth::actor(),
            ..Meta::default()
        };
        let res = self.store.submit(intent, meta).await;
        self.metrics
            .append_latency
            .observe(started.elapsed().as_secs_f64());
        Ok(res?)
    }

    /// 413 naming the field (`at` prefixes it, e.g. `nodes[3].`) when a text or JSON
    /// field is over its limit.
    fn check_sizes(
        &self,
        at: &str,
        content: (&str, &str),
        payload: Option<&serde_json::Value>,
        metadata: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<(), Problem> {
        let l = &self.limits;
        let sizes = [
            (content.0, Some(content.1.len()), l.max_content_bytes),
            ("payload", payload.map(json_len), l.max_payload_bytes),
            ("metadata", metadata.map(json_len), l.max_metadata_bytes),
        ];
        for (field, size, limit) in sizes {
            if let Some(size) = size.filter(|s| *s > limit) {
                return Err(Problem::too_large(format!(
                    "{at}{field} is {size} bytes; the limit is {limit}"
                )));
            }
        }
        Ok(())
    }

    fn check_node(&self, at: &str, n: &CreateNode) -> Result<(), Problem> {
        self.check_sizes(
            at,
            ("content", &n.content),
            n.payload.as_ref(),
            n.metadata.as_ref(),
        )
    }
}

/// The length of `v` serialized as JSON, without building the text.
fn json_len<T: serde::Serialize + ?Sized>(v: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Serializing a `Value` into a writer that never fails cannot fail.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// Creates a workflow and its root node.
///
/// The root is a `system` node whose content is the system prompt. With an `id`, the
/// request is idempotent: the same body again answers 200 with what was stored.
#[utoipa::path(post, path = "/v1/workflows", tag = "workflows",
    request_body = CreateWorkflow,
    responses(
        (status = 201, description = "Created", body = WorkflowCreated),
        (status = 200, description = "An identical replay of `id`: what was stored",
            body = WorkflowCreated),
        (status = 400, description = "A malformed body or an unknown field"),
        (status = 403, description = "A token scoped to workflows or branches may not create \
            workflows"),
        (status = 409, description = "`id` exists with another body"),
        (status = 413, description = "The system prompt or the metadata is over its limit"),
    ))]
pub async fn create_workflow(
    State(app): State<AppState>,
    Extension(p): Extension<Principal>,
    _: QueryParams<NoQuery>,
    JsonBody(req): JsonBody<CreateWorkflow>,
) -> ApiResult {
    if !p.unscoped() {
        return Err(forbidden(
            "a token scoped to workflows or branches cannot create workflows (the new one \
             would be outside its scope)",
        ));
    }
    app.check_sizes(
        "",
        ("system_prompt", &req.system_prompt),
        None,
        req.metadata.as_ref(),
    )?;
    let intent = Intent::CreateWorkflow(NewWorkflow {
        id: req.id,
        root_id: None,
        system_prompt: req.system_prompt,
        metadata: req.metadata.unwrap_or_default(),
        user_id: req.user_id,
    });
    match app.submit(intent).await? {
        Outcome::WorkflowCreated {
            workflow_id,
            root_id,
            seq,
            replayed,
        } => Ok((
            created(replayed),
            Json(WorkflowCreated {
                workflow_id,
                root_id,
                seq,
            }),
        )
            .into_response()),
        other => Err(unexpected(&other)),
    }
}

fn unexpected(o: &Outcome) -> Problem {
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("unexpected outcome {o:?}"),
    )
}

fn parse_status(s: &str) -> Result<WorkflowStatus, Problem> {
    WorkflowStatus::parse(s).ok_or_else(|| {
        Problem::bad_request(format!(
            "status {s:?} is not one of running, waiting, completed, failed, cancelled"
        ))
    })
}

/// `{workflows:[…], next_cursor}`: a page of `GET /v1/workflows`.
#[derive(Serialize, ToSchema)]
#[schema(as = WorkflowList)]
pub struct WorkflowList<'a> {
    /// The page, newest first.
    workflows: Vec<WorkflowView<'a>>,
    /// The `cursor` of the next page; null on the last.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// Lists workflows, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/workflows", tag = "workflows",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of workflows (those the token sees)",
            body = WorkflowList),
        (status = 400, description = "`limit` out of range, a malformed `cursor`, an unknown \
            `status` or an unknown parameter"),
    ))]
pub async fn list_workflows(
    State(app): State<AppState>,
    Extension(p): Extension<Principal>,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult {
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(Problem::bad_request("limit must be between 1 and 1000"));
    }
    let before = q
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<u64>()
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| Problem::bad_request(format!("invalid cursor {c:?}")))
        })
        .transpose()?;
    let filter = ListFilter {
        status: q.status.as_deref().map(parse_status).transpose()?,
        user_id: q.user_id,
        within: p.listable(&app.store),
    };
    // A short unfiltered page whose workflows have no metadata comes from the index
    // alone, without the hop to the blocking pool; filters may scan many workflows.
    let unfiltered = filter.status.is_none() && filter.user_id.is_none() && filter.within.is_none();
    let in_place = (unfiltered && limit <= IN_PLACE_PAGE)
        .then(|| app.store.list_workflows_in_memory(&filter, before, limit))
        .flatten();
    let (mut workflows, next) = match in_place {
        Some(page) => page,
        None => {
            read(&app.store, move |s| {
                s.list_workflows(&filter, before, limit)
            })
            .await?
        }
    };
    if !p.branches.is_empty() {
        for w in &mut workflows {
            let seen = p.workflow(&app.store, &w.workflow_id)?;
            narrow(w, &app.store, &seen);
        }
    }
    Ok(Json(WorkflowList {
        workflows: workflows.iter().map(WorkflowView::from).collect(),
        next_cursor: next.map(|s| s.to_string()),
    })
    .into_response())
}

/// A workflow: status, root, counts, branch heads, times, last seq.
#[utoipa::path(get, path = "/v1/workflows/{wf}", tag = "workflows",
    params(WorkflowPath),
    responses(
        (status = 200, description = "The workflow (counted as far as the token sees)",
            body = WorkflowView),
        WorkflowMissing,
    ))]
pub async fn get_workflow(
    State(app): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(wf): PathParam<Uuid>,
    _: QueryParams<NoQuery>,
) -> ApiResult {
    let seen = p.workflow(&app.store, &wf)?;
    // Most workflows have no metadata: memory answers, without the blocking pool.
    let in_place = app.store.workflow_in_memory(&wf);
    match in_place_or_read(&app.store, in_place, move |s| s.workflow(&wf)).await? {
        Some(mut w) => {
            narrow(&mut w, &app.store, &seen);
            Ok(Json(WorkflowView::from(&w)).into_response())
        }
        None => Err(workflow_missing(&wf)),
    }
}

/// Counts, in a workflow's summary, only what a branch scope sees.
fn narrow(w: &mut WorkflowSummary, store: &Store, seen: &Seen) {
    if let Seen::Branches(_) = seen {
        let branches: Vec<BranchInfo> =
            scope::branches_seen(store, &w.workflow_id, seen).unwrap_or_default();
        w.node_count = branches.iter().map(|b| b.length as usize).sum();
        w.branch_count = branches.len();
        w.heads = branches.iter().map(|b| b.head_id).collect();
    }
}

/// Sets a workflow's status.
///
/// `running` and `waiting` may change; `completed`, `failed` and `cancelled` are final.
#[utoipa::path(patch, path = "/v1/workflows/{wf}", tag = "workflows",
    params(WorkflowPath),
    request_body = PatchWorkflow,
    responses(
        (status = 200, description = "The workflow, with its new status", body = WorkflowView),
        (status = 400, description = "A malformed body, an unknown field or status"),
        (status = 403, description = "A token scoped to branches may not change the status"),
        WorkflowMissing,
        (status = 409, description = "The workflow's status is final"),
    ))]
pub async fn patch_workflow(
    State(app): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(wf): PathParam<Uuid>,
    _: QueryParams<NoQuery>,
    JsonBody(req): JsonBody<PatchWorkflow>,
) -> ApiResult {
    if let Seen::Branches(_) = p.workflow(&app.store, &wf)? {
        return Err(forbidden(
            "a token scoped to branches cannot change the workflow's status",
        ));
    }
    let status = parse_status(&req.status)?;
    app.submit(Intent::SetStatus {
        workflow_id: wf,
        status,
    })
    .await?;
    get_workflow(
        State(app),
        Extension(p),
        PathParam(wf),
        QueryParams(NoQuery {}),
    )
    .await
}

/// Appends one node.
///
/// With `expect_leaf: true` only if the parent has no child yet (continue a branch,
/// never fork by accident). With an `id`, the request is idempotent.
#[utoipa::path(post, path = "/v1/workflows/{wf}/nodes", tag = "nodes",
    params(WorkflowPath),
    request_body = CreateNode,
    responses(
        (status = 201, description = "The node, appended", body = schemas::Node),
        (status = 200, description = "An identical replay of `id`: the stored node",
            body = schemas::Node),
        (status = 400, description = "A malformed body, an unknown field, an invalid type or \
            role"),
        (status = 403, description = "Under a branch scope: the parent is read-only to the token"),
        (status = 404, description = "No such workflow, or a parent the token does not see"),
        (status = 409, description = "`id` exists with another body, or `expect_leaf` and the \
            parent has a child"),
        (status = 413, description = "The content, payload or metadata is over its limit"),
        (status = 422, description = "The parent is unknown or in another workflow"),
    ))]
pub async fn create_node(
    State(app): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(wf): PathParam<Uuid>,
    _: QueryParams<NoQuery>,
    JsonBody(mut req): JsonBody<CreateNode>,
) -> ApiResult {
    app.check_node("", &req)?;
    let seen = p.workflow(&app.store, &wf)?;
    p.check_append(
        &app.store,
        &seen,
        std::iter::once((req.id, req.parent_id, &mut req.expect_leaf)),
    )?;
    let intent = Intent::AppendNodes {
        workflow_id: wf,
        nodes: vec![req.into_new_node()],
    };
    match app.submit(intent).await? {
        Outcome::Nodes { nodes, replayed } if nodes.len() == 1 => {
            Ok((created(replayed), NodeJson::One(&nodes[0])).into_response())
        }
        other => Err(unexpected(&other)),
    }
}

/// Appends nodes atomically: all or none.
///
/// A node's parent may be an earlier item of the batch.
#[utoipa::path(post, path = "/v1/workflows/{wf}/nodes/batch", tag = "nodes",
    params(WorkflowPath),
    request_body = CreateBatch,
    responses(
        (status = 201, description = "The nodes, appended, in order", body = Nodes),
        (status = 200, description = "An identical replay: the stored nodes", body = Nodes),
        (status = 400, description = "A malformed body or item, an unknown field, an invalid \
            type or role"),
        (status = 403, description = "Under a branch scope: a parent is read-only to the token"),
        (status = 404, description = "No such workflow, or a parent the token does not see"),
        (status = 409, description = "An `id` exists with another body, or `expect_leaf` and \
            the parent has a child"),
        (status = 413, description = "Too many nodes, or an item's content, payload or \
            metadata over its limit"),
        (status = 422, description = "A parent is unknown or in another workflow"),
    ))]
pub async fn create_batch(
    State(app): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(wf): PathParam<Uuid>,
    _: QueryParams<NoQuery>,
    JsonBody(mut req): JsonBody<CreateBatch>,
) -> ApiResult {
    if req.nodes.len() > app.limits.max_batch_nodes {
        return Err(Problem::too_large(format!(
            "batch of {} nodes; the limit is {}",
            req.nodes.len(),
            app.limits.max_batch_nodes
        )));
    }
    for (i, n) in req.nodes.iter().enumerate() {
        app.check_node(&format!("nodes[{i}]."), n)?;
    }
    let seen = p.workflow(&app.store, &wf)?;
    p.check_append(
        &app.store,
        &seen,
        req.nodes
            .iter_mut()
            .map(|n| (n.id, n.parent_id, &mut n.expect_leaf)),
    )?;
    let intent = Intent::AppendNodes {
        workflow_id: wf,
        nodes: req
            .nodes
            .into_iter()
            .map(CreateNode::into_new_node)
            .collect(),
    };
    match app.submit(intent).await? {
        Outcome::Nodes { nodes, replayed } => {
            Ok((created(replayed), NodeJson::List(&nodes)).into_response())
        }
        other => Err(unexpected(&other)),
    }
}

fn edge_response(edge: Edge, seq: u64) -> EdgeCreated {
    EdgeCreated {
        kind: edge.kind.as_str().to_owned(),
        from: edge.from,
        to: edge.to,
        seq,
    }
}

/// Records a MONITORS, OPTION_OF or CHOSEN_OPTION edge.
#[utoipa::path(post, path = "/v1/workflows/{wf}/edges", tag = "nodes",
    params(WorkflowPath),
    request_body = CreateEdge,
    responses(
        (status = 201, description = "The edge, recorded", body = EdgeCreated),
        (status = 200, description = "The edge was there already", body = EdgeCreated),
        (status = 400, description = "A malformed body, an unknown field or edge type"),
        (status = 403, description = "Under a branch scope: `from` is read-only to the token"),
        (status = 404, description = "No such workflow, or an end the token does not see"),
        (status = 409, description = "The decision chose another option already"),
        (status = 422, description = "An end is not a node of the workflow, or the edge breaks \
            its type's rule (MONITORS from a monitor, OPTION_OF from a decision to an option, \
            CHOSEN_OPTION to an option of the decision)"),
    ))]
pub async fn create_edge(
    State(app): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(wf): PathParam<Uuid>,
    _: QueryParams<NoQuery>,
    JsonBody(req): JsonBody<CreateEdge>,
) -> ApiResult {
    let kind = EdgeKind::parse(&req.kind).ok_or_else(|| {
        Problem::bad_request(format!(
            "edge type {:?} is not one of MONITORS, OPTION_OF, CHOSEN_OPTION",
            req.kind
        ))
    })?;
    let seen = p.workflow(&app.store, &wf)?;
    p.check_edge(&app.store, &seen, &req.from, &req.to)?;
    let edge = Edge {
        kind,
        from: req.from,
        to: req.to,
    };
    match app
        .submit(Intent::AddEdge {
            workflow_id: wf,
            edge,
        })
        .await?
    {
        Outcome::Edge {
            edge,
            seq,
            replayed,
        } => Ok((created(replayed), Json(edge_response(edge, seq))).into_response()),
        other => Err(unexpected(&other)),
    }
}

/// Records a decision's choice (CHOSEN_OPTION).
#[utoipa::path(post, path = "/v1/nodes/{id}/choose", tag = "nodes",
    params(NodePath),
    request_body = Choose,
    responses(
        (status = 200, description = "The CHOSEN_OPTION edge", body = EdgeCreated),
        (status = 400, description = "A malformed body or an unknown field"),
        (status = 403, description = "Under a branch scope: the decision is read-only to the \
            token"),
        (status = 404, description = "No such node, or one the token does not see"),
        (status = 409, description = "The decision chose another option already"),
        (status = 422, description = "The node is not a decision, or the option not one of its \
            options"),
    ))]
pub async fn choose(
    State(app): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam<Uuid>,
    _: QueryParams<NoQuery>,
    JsonBody(req): JsonBody<Choose>,
) -> ApiResult {
    let seen = p.node(&app.store, &id)?;
    p.check_edge(&app.store, &seen, &id, &req.option_id)?;
    let intent = Intent::Choose {
        decision_id: id,
        option_id: req.option_id,
    };
    match app.submit(intent).await? {
        Outcome::Edge { edge, seq, .. } => Ok(Json(edge_response(edge, seq)).into_response()),
        other => Err(unexpected(&other)),
    }
}

/// The branch-scoped read of node `id`: checks that `p` sees the node, then answers
/// from `in_place` (memory only, on the runtime worker) when it has the answer, else
/// runs the store read `f` on the blocking pool, and answers 404 when `f` finds no
/// node. Returns what `p` sees of the node's workflow, for narrowing the answer.
async fn read_node<T, F>(
    app: &AppState,
    p: &Principal,
    id: Uuid,
    in_place: impl FnOnce(&Store, &Uuid) -> Option<T>,
    f: F,
) -> Result<(Seen, T), Problem>
where
    T: Send + 'static,
    F: FnOnce(&Store, &Uuid) -> Result<Option<T>, StorageError> + Send + 'static,
{
    let seen = p.node(&app.store, &id)?;
    let found = in_place_or_read(&app.store, in_place(&app.store, &id), move |s| f(s, &id))
        .await?
        .ok_or_else(|| node_missing(&id))?;
    Ok((seen, found))
}

/// The `{nodes}` response of the nodes of `nodes` that `seen` sees.
fn seen_nodes(seen: &Seen, mut nodes: Vec<RenderedNode>) -> Response {
    nodes.retain(|r| seen.node(&r.node));
    RenderedNodes(&nodes).into_response()
}

/// Most workflows a list answers in place on a runtime worker (see `list_workflows`).
const IN_PLACE_PAGE: usize = 100;

/// Most nodes an answer joins in place on a runtime worker (from the node cache);
/// larger answers are built on the blocking pool, so a worker is never held for long.
const IN_PLACE_NODES: usize = 2048;

/// The nodes at the seqs `seqs_of` finds in the index for node `id` (which `p` must
/// see), each with its JSON text. When the node cache holds every one already rendered
/// (the common case for a hot tree) they are taken in place, with no hop to the
/// blocking pool and back; otherwise they are read there (and rendered once, and
/// cached).
async fn rendered_nodes(
    app: &AppState,
    p: &Principal,
    id: Uuid,
    seqs_of: impl FnOnce(&Store, &Uuid) -> Option<Vec<Seq>>,
) -> Result<(Seen, Vec<RenderedNode>), Problem> {
    let seen = p.node(&app.store, &id)?;
    let seqs = seqs_of(&app.store, &id).ok_or_else(|| node_missing(&id))?;
    if seqs.len() <= IN_PLACE_NODES {
        if let Some(nodes) = app.store.rendered_cached(&seqs) {
            return Ok((seen, nodes));
        }
    }
    let nodes = read(&app.store, move |s| s.rendered(&seqs)).await?;
    Ok((seen, nodes))
}

/// A node, with its edges.
#[utoipa::path(get, path = "/v1/nodes/{id}", tag = "nodes",
    params(NodePath),
    responses(
        (status = 200, description = "The node and `edges: {out, in}` (those the token sees)",
            body = NodeView),
        NodeMissing,
    ))]
pub async fn get_node(
    State(app): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam<Uuid>,
    _: QueryParams<NoQuery>,
) -> ApiResult {
    let (seen, mut node) = read_node(&app, &p, id, Store::node_cached, Store::node).await?;
    if let Seen::Branches(_) = seen {
        let sees = |other: &Uuid| app.store.place(other).is_some_and(|p| seen.place(&p));
        node.outgoing.retain(|e| sees(&e.to));
        node.incoming.retain(|e| sees(&e.from));
    }
    Ok(Json(NodeView::from(&node)).into_response())
}

/// The path from the root to a node, root first.
///
/// With `format=messages`: the path's nodes that have a role, as `{role, content}`,
/// ready for an LLM call (the root's role is `system`).
#[utoipa::path(get, path = "/v1/nodes/{id}/path", tag = "nodes",
    params(NodePath, PathQuery),
    responses(
        (status = 200, description = "`{nodes}` or, with `format=messages`, `{messages}`",
            body = PathView),
        NodeMissing,
    ))]
pub async fn get_path(
    State(app): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam<Uuid>,
    QueryParams(q): QueryParams<PathQuery>,
) -> ApiResult {
    // The ancestors of a node seen are seen.
    match q.format.as_deref().unwrap_or("nodes") {
        "nodes" => {
            let (_, nodes) = rendered_nodes(&app, &p, id, Store::path_seqs).await?;
            Ok(RenderedNodes(&nodes).into_response())
        }
        "messages" => {
            let in_place = |s: &Store, id: &Uuid| s.path_cached(id, IN_PLACE_NODES);
            let (_, nodes) = read_node(&app, &p, id, in_place, Store::path).await?;
            Ok(Json(PathView::Messages(Messages::from(&nodes[..]))).into_response())
        }
        other => {
            // A node that is not there (or not seen) is a 404 before a bad format.
            read_node(&app, &p, id, Store::place, |s, id| Ok(s.place(id))).await?;
            Err(Problem::bad_request(format!(
                "format {other:?} is not one of nodes, messages"
            )))
        }
    }
}

/// A node's children, in seq order.
#[utoipa::path(get, path = "/v1/nodes/{id}/children", tag = "nodes",
    params(NodePath),
    responses(
        (status = 200, description = "The children (those the token sees)", body = Nodes),
        NodeMissing,
    ))]
pub async fn get_children(
    State(app): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam<Uuid>,
    _: QueryParams<NoQuery>,
) -> ApiResult {
    let (seen, nodes) = rendered_nodes(&app, &p, id, Store::children_seqs).await?;
    Ok(seen_nodes(&seen, nodes))
}

/// A node and those below it, breadth-first.
#[utoipa::path(get, path = "/v1/nodes/{id}/subtree", tag = "nodes",
    params(NodePath, SubtreeQuery),
    responses(
        (status = 200, description = "The subtree (the nodes the token sees)", body = Nodes),
        NodeMissing,
    ))]
pub async fn get_subtree(
    State(app): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(id): PathParam<Uuid>,
    QueryParams(q): QueryParams<SubtreeQuery>,
) -> ApiResult {
    let (seen, nodes) =
        rendered_nodes(&app, &p, id, |s, id| s.subtree_seqs(id, q.max_depth)).await?;
    Ok(seen_nodes(&seen, nodes))
}

/// A workflow's decisions, their options and the chosen one.
#[utoipa::path(get, path = "/v1/workflows/{wf}/decisions", tag = "workflows",
    params(WorkflowPath),
    responses(
        (status = 200, description = "The decisions (as far as the token sees)",
            body = Decisions),
        WorkflowMissing,
    ))]
pub async fn get_decisions(
    State(app): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(wf): PathParam<Uuid>,
    _: QueryParams<NoQuery>,
) -> ApiResult {
    let seen = p.workflow(&app.store, &wf)?;
    let in_place = app.store.decisions_cached(&wf, IN_PLACE_NODES);
    let mut decisions = in_place_or_read(&app.store, in_place, move |s| s.decisions(&wf))
        .await?
        .ok_or_else(|| workflow_missing(&wf))?;
    if let Seen::Branches(_) = seen {
        decisions.retain(|d| seen.node(&d.decision));
        for d in &mut decisions {
            d.options.retain(|o| seen.node(o));
            d.chosen = d.chosen.take().filter(|c| seen.node(c));
        }
    }
    Ok(Json(Decisions::from(&decisions[..])).into_response())
}

/// A workflow's branches: fork point, head, length (from the index alone).
#[utoipa::path(get, path = "/v1/workflows/{wf}/branches", tag = "workflows",
    params(WorkflowPath),
    responses(
        (status = 200, description = "The branches (as far as the token sees)",
            body = Branches),
        WorkflowMissing,
    ))]
pub async fn get_branches(
    State(app): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(wf): PathParam<Uuid>,
    _: QueryParams<NoQuery>,
) -> ApiResult {
    let seen = p.workflow(&app.store, &wf)?;
    let branches =
        scope::branches_seen(&app.store, &wf, &seen).ok_or_else(|| workflow_missing(&wf))?;
    Ok(Json(Branches::from(branches)).into_response())
}

/// A branch and its nodes, in seq order.
#[utoipa::path(get, path = "/v1/workflows/{wf}/branches/{branch_id}", tag = "workflows",
    params(BranchPath),
    responses(
        (status = 200, description = "The branch (the nodes the token sees)", body = BranchView),
        (status = 404, description = "No such workflow or branch (or not in the token's scope)"),
    ))]
pub async fn get_branch(
    State(app): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam((wf, branch)): PathParam<(Uuid, Uuid)>,
    _: QueryParams<NoQuery>,
) -> ApiResult {
    let seen = p.workflow(&app.store, &wf)?;
    if !app.store.has_workflow(&wf) {
        return Err(workflow_missing(&wf));
    }
    let branch_missing =
        || Problem::not_found(format!("branch {branch} not found in workflow {wf}"));
    let in_place = app.store.branch_cached(&wf, &branch, IN_PLACE_NODES);
    let mut nodes = in_place_or_read(&app.store, in_place, move |s| s.branch(&wf, &branch))
        .await?
        .ok_or_else(branch_missing)?;
    nodes.nodes.retain(|n| seen.node(n));
    if nodes.nodes.is_empty() {
        return Err(branch_missing());
    }
    Ok(Json(BranchView::from(&nodes)).into_response())
}

/// A workflow's MONITORS edges, with both ends.
#[utoipa::path(get, path = "/v1/workflows/{wf}/monitors", tag = "workflows",
    params(WorkflowPath, MonitorsQuery),
    responses(
        (status = 200, description = "The monitors (both ends seen by the token)",
            body = Monitors),
        WorkflowMissing,
    ))]
pub async fn get_monitors(
    State(app): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(wf): PathParam<Uuid>,
    QueryParams(q): QueryParams<MonitorsQuery>,
) -> ApiResult {
    let seen = p.workflow(&app.store, &wf)?;
    let in_place = app
        .store
        .monitors_cached(&wf, q.cross_branch, IN_PLACE_NODES);
    let mut monitors = in_place_or_read(&app.store, in_place, move |s| {
        s.monitors(&wf, q.cross_branch)
    })
    .await?
    .ok_or_else(|| workflow_missing(&wf))?;
    monitors.retain(|m| seen.node(&m.monitor) && seen.node(&m.target));
    Ok(Json(Monitors::from(&monitors[..])).into_response())
}

/// A workflow's whole tree for drawing it (the web UI's first paint): every node's
/// place, type and role from the in-memory index, and the events that create no node.
#[utoipa::path(get, path = "/v1/workflows/{wf}/outline", tag = "workflows",
    params(WorkflowPath),
    responses(
        (status = 200, description = "The outline (what the token sees)", body = OutlineView),
        WorkflowMissing,
    ))]
pub async fn get_outline(
    State(app): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(wf): PathParam<Uuid>,
    _: QueryParams<NoQuery>,
) -> ApiResult {
    let seen = p.workflow(&app.store, &wf)?;
    let mut outline = read(&app.store, move |s| s.outline(&wf))
        .await?
        .ok_or_else(|| workflow_missing(&wf))?;
    let mut events = std::mem::take(&mut outline.events);
    if let Some(mut scope) = EventScope::of(&p) {
        events.retain(|e| scope.sees(&app.store, e));
    }
    let view = OutlineView::new(wf, &outline, &events, |b, d| seen.at(b, d));
    Ok(Json(view).into_response())
}

/// Most ids one `GET …/labels` may ask for.
const MAX_LABELS: usize = 500;

/// The first line of the content of some nodes of a workflow: what a drawn row shows,
/// fetched for the rows on screen.
#[utoipa::path(get, path = "/v1/workflows/{wf}/labels", tag = "workflows",
    params(WorkflowPath, LabelsQuery),
    responses(
        (status = 200, description = "Labels of the nodes asked for that the token sees",
            body = Labels),
        (status = 400, description = "`ids` empty, too many, or not node ids"),
        WorkflowMissing,
    ))]
pub async fn get_labels(
    State(app): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(wf): PathParam<Uuid>,
    QueryParams(q): QueryParams<LabelsQuery>,
) -> ApiResult {
    let seen = p.workflow(&app.store, &wf)?;
    let ids = q
        .ids
        .split(',')
        .map(|s| {
            Uuid::parse_str(s.trim())
                .map_err(|_| Problem::bad_request(format!("ids: {s:?} is not a node id")))
        })
        .collect::<Result<Vec<Uuid>, Problem>>()?;
    if !(1..=MAX_LABELS).contains(&ids.len()) {
        return Err(Problem::bad_request(format!(
            "ids: between 1 and {MAX_LABELS} node ids, comma-separated"
        )));
    }
    let nodes = read(&app.store, move |s| s.nodes_of(&wf, &ids))
        .await?
        .ok_or_else(|| workflow_missing(&wf))?;
    Ok(Json(Labels::of(
        nodes.iter().map(|n| &**n).filter(|n| seen.node(n)),
    ))
    .into_response())
}

/// Replays a workflow's events from the log, in order, a page at a time.
#[utoipa::path(get, path = "/v1/workflows/{wf}/events", tag = "workflows",
    params(WorkflowPath, EventsQuery),
    responses(
        (status = 200, description = "A page of events (those the token sees)", body = Events),
        WorkflowMissing,
    ))]
pub async fn get_events(
    State(app): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(wf): PathParam<Uuid>,
    QueryParams(q): QueryParams<EventsQuery>,
) -> ApiResult {
    p.workflow(&app.store, &wf)?;
    let limit = q.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(Problem::bad_request("limit must be between 1 and 10000"));
    }
    let after = q.after.unwrap_or(0);
    let mut events = read(&app.store, move |s| {
        s.read_workflow_events(&wf, after, limit)
    })
    .await?
    .ok_or_else(|| workflow_missing(&wf))?;
    // Past what the scope leaves out too: a filtered page is not the end.
    let next_after = events.last().map_or(after, |e| e.seq);
    if let Some(mut scope) = EventScope::of(&p) {
        events.retain(|e| scope.sees(&app.store, e));
    }
    Ok(Json(Events {
        events: &events,
        next_after,
    })
    .into_response())
}
