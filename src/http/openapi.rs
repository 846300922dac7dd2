//! The API's OpenAPI 3.1 description (`GET /openapi.json`) and a page that renders it
//! (`GET /docs`), both public and both embedded in the binary.
//!
//! The description is generated from the code: each handler carries
//! `#[utoipa::path(...)]` (method, path, parameters, body, its own responses) and each
//! wire type derives `ToSchema`. What holds for every route is added here, once, by
//! [`Conventions`], from the very functions the middleware uses: the security of a
//! route and its 401/403/429 come from `auth::action_of`; every route can answer 400
//! (a malformed or unknown parameter), 408, 415, 500 and 503; one with a body 413; and
//! every error is `application/problem+json`. The document is rendered once per process.
//!
//! `/docs` is a self-contained page (`docs.html`: HTML, CSS and a plain ES module) that
//! fetches `/openapi.json` and lists each operation. It loads nothing from elsewhere:
//! its Content-Security-Policy is `default-src 'self'`, with a fresh nonce for its own
//! inline script and style.
//!
//! `tests/openapi.rs` checks that the description names every route of the router and
//! nothing else, that it is valid OpenAPI 3.1, and runs schemathesis against a live
//! server.

use std::sync::OnceLock;

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::Response as ApiResponse;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{Components, Content, Header, Ref, RefOr};
use utoipa::{IntoResponses, Modify, OpenApi};

use super::auth::{action_of, takes_query_token};
use super::problem::Problem;
use super::wire::{NoQuery, QueryParams};
use super::{audit, health, routes, sse, tokens};
use crate::auth::role::Action;

/// The media type of every error.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The security scheme of `Authorization: Bearer <token>`.
const BEARER: &str = "bearer";

/// The security scheme of `?access_token=` (GET streams only).
const QUERY_TOKEN: &str = "access_token";

/// The description of the API, generated from the handlers and the wire types.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "arbor",
        description = "An append-only store for branching AI-agent workflows: workflows, \
            their node trees, branches, decisions and monitors, an event log to replay, and \
            live Server-Sent Events. Errors are `application/problem+json` \
            `{type, title, status, detail}`; unknown JSON fields and query parameters are \
            refused (400).\n\nAccess: `Authorization: Bearer <token>` (`arbor token create`, \
            `POST /v1/tokens`). A store that has never had a token runs open (loopback \
            only): no token is needed then. `/healthz`, `/readyz`, `/openapi.json` and \
            `/docs` are public.",
        license(name = "Apache-2.0"),
    ),
    paths(
        routes::create_workflow,
        routes::list_workflows,
        routes::get_workflow,
        routes::patch_workflow,
        routes::create_node,
        routes::create_batch,
        routes::create_edge,
        routes::get_decisions,
        routes::get_branches,
        routes::get_branch,
        routes::get_monitors,
        routes::get_events,
        routes::get_outline,
        routes::get_labels,
        sse::workflow_stream,
        sse::global_stream,
        routes::get_node,
        routes::choose,
        routes::get_path,
        routes::get_children,
        routes::get_subtree,
        health::healthz,
        health::readyz,
        health::health,
        health::metrics,
        tokens::create_token,
        tokens::list_tokens,
        tokens::revoke_token,
        audit::audit,
        openapi_json,
        docs,
        super::ui::index,
        super::ui::file,
    ),
    // What only parameters name (utoipa collects the schemas of bodies by itself).
    components(schemas(
        super::problem::ProblemJson,
        super::schemas::PathFormat,
        super::schemas::WorkflowStatus,
    )),
    modifiers(&Conventions),
    tags(
        (name = "workflows", description = "Workflows and what they hold"),
        (name = "nodes", description = "Nodes: appends, edges, choices and tree reads"),
        (name = "streams", description = "Server-Sent Events, live, resumable without loss"),
        (name = "health", description = "Probes, component health, metrics"),
        (name = "tokens", description = "Access tokens (admin)"),
        (name = "audit", description = "The admin log (admin)"),
        (name = "description", description = "This description and its page"),
        (name = "ui", description = "The web UI: a page and its files, embedded"),
    ),
)]
pub struct ApiDoc;

/// A response every route of a kind can give, kept once in `components.responses`.
struct Common {
    /// Status code.
    status: u16,
    /// Its name under `components.responses`.
    name: &'static str,
    /// What it means.
    description: &'static str,
    /// A header it carries: (name, JSON type, description).
    header: Option<(&'static str, Type, &'static str)>,
}

/// The responses of [`Common`], by status.
const COMMON: &[Common] = &[
    Common {
        status: 400,
        name: "BadRequest",
        description: "A malformed or unknown path or query parameter, or one out of range",
        header: None,
    },
    Common {
        status: 401,
        name: "Unauthorized",
        description: "No token, or a malformed, unknown, expired or revoked one",
        header: Some(("WWW-Authenticate", Type::String, "`Bearer realm=\"arbor\"`")),
    },
    Common {
        status: 403,
        name: "Forbidden",
        description: "The token's role is below the route's (tokens and the audit log also \
            need an admin token without workflow or branch scope)",
        header: None,
    },
    Common {
        status: 408,
        name: "RequestTimeout",
        description: "The request body did not arrive within `--request-timeout`",
        header: None,
    },
    Common {
        status: 413,
        name: "TooLarge",
        description: "The body is over `--max-body-bytes`",
        header: None,
    },
    Common {
        status: 415,
        name: "UnsupportedMediaType",
        description: "A body not sent as `Content-Type: application/json`, or compressed",
        header: None,
    },
    Common {
        status: 429,
        name: "RateLimited",
        description: "The token is over its rate, or this address failed to authenticate \
            too often",
        header: Some((
            "Retry-After",
            Type::Integer,
            "Seconds to wait before trying again",
        )),
    },
    Common {
        status: 500,
        name: "InternalError",
        description: "The store failed to read",
        header: None,
    },
    Common {
        status: 503,
        name: "Unavailable",
        description: "The store takes no writes since a write or flush failed (a restart \
            rebuilds it), or no answer within `--request-timeout`",
        header: None,
    },
];

/// The 404 of the routes of one workflow, for their `responses(...)`.
#[derive(IntoResponses)]
#[response(
    status = 404,
    description = "No such workflow (or not in the token's scope: the same answer)"
)]
pub struct WorkflowMissing;

/// The 404 of the routes of one node, for their `responses(...)`.
#[derive(IntoResponses)]
#[response(
    status = 404,
    description = "No such node (or one the token does not see: the same answer)"
)]
pub struct NodeMissing;

/// Adds what holds for every route (see the module docs).
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Components::new);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("arbor_<id>_<secret>")
                    .description(Some(
                        "An access token (`arbor token create`, `POST /v1/tokens`). Not \
                         needed while the store has never had a token (open mode, loopback \
                         only).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            QUERY_TOKEN,
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                QUERY_TOKEN,
                "The access token as a query parameter, on the GET stream routes only \
                 (EventSource cannot send headers); refused (400) anywhere else.",
            ))),
        );
        for c in COMMON {
            components
                .responses
                .insert(c.name.to_owned(), RefOr::T(common_response(c)));
        }
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, op) in operations(item) {
                apply(path, &method, op);
            }
        }
    }
}

/// The response of `c`: problem+json, and its header.
fn common_response(c: &Common) -> ApiResponse {
    let mut r = ApiResponse::new(c.description);
    r.content.insert(PROBLEM_JSON.to_owned(), problem_content());
    if let Some((name, ty, description)) = &c.header {
        let schema = ObjectBuilder::new().schema_type(ty.clone()).build();
        let mut header = Header::new(schema);
        header.description = Some((*description).to_owned());
        r.headers.insert((*name).to_owned(), header);
    }
    r
}

fn problem_content() -> Content {
    Content::new(Some(Ref::from_schema_name("Problem")))
}

/// The operations of a path item, with their methods.
fn operations(item: &mut PathItem) -> Vec<(Method, &mut Operation)> {
    [
        (Method::GET, &mut item.get),
        (Method::PUT, &mut item.put),
        (Method::POST, &mut item.post),
        (Method::DELETE, &mut item.delete),
        (Method::OPTIONS, &mut item.options),
        (Method::HEAD, &mut item.head),
        (Method::PATCH, &mut item.patch),
        (Method::TRACE, &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.as_mut().map(|op| (m, op)))
    .collect()
}

/// Applies the conventions to the operation `method path`.
fn apply(path: &str, method: &Method, op: &mut Operation) {
    let action = action_of(method, path);
    let access = match action {
        None => {
            op.security = Some(Vec::new());
            "Public: no token needed.".to_owned()
        }
        Some(action) => {
            let mut alternatives = vec![SecurityRequirement::new(BEARER, Vec::<String>::new())];
            if takes_query_token(method, path) {
                alternatives.push(SecurityRequirement::new(QUERY_TOKEN, Vec::<String>::new()));
            }
            op.security = Some(alternatives);
            format!("Needs a token of role `{}` or above.", action.least_role())
        }
    };
    op.description = Some(match op.description.take() {
        Some(d) if !d.is_empty() => format!("{d}\n\n{access}"),
        _ => access,
    });
    let applies = |status: u16| match status {
        401 | 429 => action.is_some(),
        403 => action.is_some_and(|a| a != Action::Read),
        413 => op.request_body.is_some(),
        _ => true,
    };
    let wanted: Vec<&Common> = COMMON.iter().filter(|c| applies(c.status)).collect();
    let responses = &mut op.responses.responses;
    for c in wanted {
        responses
            .entry(c.status.to_string())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(c.name)));
    }
    // Every error is problem+json, whatever else the route may send with its status.
    for (status, response) in responses.iter_mut() {
        if let RefOr::T(r) = response {
            if status.parse::<u16>().is_ok_and(|s| s >= 400) {
                r.content
                    .entry(PROBLEM_JSON.to_owned())
                    .or_insert_with(problem_content);
            }
        }
    }
}

/// The description as JSON, rendered once.
pub fn document() -> &'static Result<Bytes, String> {
    static DOC: OnceLock<Result<Bytes, String>> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .map(Bytes::from)
            .map_err(|e| format!("the OpenAPI description did not render: {e}"))
    })
}

/// This description: OpenAPI 3.1, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "description",
    responses((status = 200, description = "The OpenAPI 3.1 description of this API",
        body = Object)))]
pub async fn openapi_json(_: QueryParams<NoQuery>) -> Response {
    match document() {
        Ok(json) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            json.clone(),
        )
            .into_response(),
        Err(e) => {
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.clone()).into_response()
        }
    }
}

/// The page that renders `docs.html` with `{nonce}` replaced.
const DOCS_PAGE: &str = include_str!("docs.html");

/// A page that renders this description: every operation, its parameters, body and
/// responses.
///
/// Self-contained (no external asset); it reads `/openapi.json`.
#[utoipa::path(get, path = "/docs", tag = "description",
    responses((status = 200, description = "The HTML page", body = String,
        content_type = "text/html")))]
pub async fn docs(_: QueryParams<NoQuery>) -> Response {
    let nonce = match nonce() {
        Ok(n) => n,
        Err(e) => {
            return Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
                .into_response()
        }
    };
    let csp = format!(
        "default-src 'self'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    let page = DOCS_PAGE.replace("{nonce}", &nonce);
    let mut resp = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        page,
    )
        .into_response();
    let headers = resp.headers_mut();
    match HeaderValue::from_str(&csp) {
        Ok(v) => {
            headers.insert(header::CONTENT_SECURITY_POLICY, v);
        }
        Err(e) => {
            return Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
                .into_response()
        }
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// 128 random bits in hex: the page's CSP nonce.
fn nonce() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use serde_json::{json, Value};
    use uuid::Uuid;

    use arbor_storage::{
        BranchInfo, BranchNodes, Decision, Edge, EdgeKind, Event, EventBody, Monitor, Node,
        NodeWithEdges, Outline, OutlineNode, Role, StatusChanged, Timestamp, TokenSpec,
        WorkflowCreated, WorkflowStatus, WorkflowSummary,
    };
    use arbor_sync::{AuditStatus, Divergence, SinkState, SinkStatus};

    use super::super::views::{
        BranchView, Branches, Decisions, Events, Labels, Messages, Monitors, NodeView, Nodes,
        OutlineView, PathView, WorkflowView,
    };
    use super::*;
    use crate::auth::token::TokenView;

    fn doc() -> Value {
        let bytes = document().as_ref().expect("the document renders");
        serde_json::from_slice(bytes).expect("the document is JSON")
    }

    /// Checks `v` against `schema` (resolved in `doc`), strictly: an object may hold only
    /// the keys its schema names (unless it allows others with `additionalProperties`).
    /// Covers the part of JSON Schema the generated document uses.
    fn check(doc: &Value, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let name = r.trim_start_matches("#/components/schemas/");
            match doc["components"]["schemas"].get(name) {
                Some(s) => check(doc, s, v, at, errs),
                None => errs.push(format!("{at}: unresolved {r}")),
            }
            return;
        }
        if let Some(types) = schema.get("type") {
            let types: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            let fits = |t: &str| match t {
                "null" => v.is_null(),
                "boolean" => v.is_boolean(),
                "object" => v.is_object(),
                "array" => v.is_array(),
                "string" => v.is_string(),
                "integer" => v.is_i64() || v.is_u64(),
                "number" => v.is_number(),
                _ => false,
            };
            if !types.iter().any(|t| fits(t)) {
                errs.push(format!("{at}: {v} is not {types:?}"));
                return;
            }
        }
        if let Some(values) = schema.get("enum").and_then(Value::as_array) {
            if !values.contains(v) {
                errs.push(format!("{at}: {v} is not one of {values:?}"));
            }
        }
        if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Value::as_f64), v.as_f64()) {
            if n < min {
                errs.push(format!("{at}: {n} < {min}"));
            }
        }
        if schema.get("format").and_then(Value::as_str) == Some("uuid") {
            if let Some(s) = v.as_str() {
                if Uuid::parse_str(s).is_err() {
                    errs.push(format!("{at}: {s:?} is not a UUID"));
                }
            }
        }
        if schema.get("format").and_then(Value::as_str) == Some("date-time") {
            if let Some(s) = v.as_str() {
                if Timestamp::parse(s).is_none() {
                    errs.push(format!("{at}: {s:?} is not an RFC 3339 time"));
                }
            }
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for s in all {
                check(doc, &without_closure(doc, s), v, at, errs);
            }
        }
        for (key, want) in [("oneOf", Some(1)), ("anyOf", None)] {
            if let Some(options) = schema.get(key).and_then(Value::as_array) {
                let fits = options
                    .iter()
                    .filter(|s| {
                        let mut e = Vec::new();
                        check(doc, s, v, at, &mut e);
                        e.is_empty()
                    })
                    .count();
                if want.map_or(fits == 0, |w| fits != w) {
                    errs.push(format!("{at}: {fits} of the {key} schemas fit {v}"));
                }
            }
        }
        if let (Some(items), Some(vs)) = (schema.get("items"), v.as_array()) {
            for (i, item) in vs.iter().enumerate() {
                check(doc, items, item, &format!("{at}[{i}]"), errs);
            }
        }
        let Some(obj) = v.as_object() else { return };
        let props = schema.get("properties").and_then(Value::as_object);
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(k) = req.as_str() {
                if !obj.contains_key(k) {
                    errs.push(format!("{at}: required {k:?} is missing"));
                }
            }
        }
        for (k, val) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => check(doc, s, val, &format!("{at}.{k}"), errs),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(true)) => {}
                    Some(s @ Value::Object(_)) => check(doc, s, val, &format!("{at}.{k}"), errs),
                    _ if schema.get("allOf").is_some() && known(doc, schema).contains(k) => {}
                    _ if props.is_none() && schema.get("allOf").is_none() => {}
                    _ => errs.push(format!("{at}: {k:?} is not described")),
                },
            }
        }
    }

    /// The property names a schema (with its `allOf` parts) describes.
    fn known(doc: &Value, schema: &Value) -> BTreeSet<String> {
        let schema = resolve(doc, schema);
        let mut names: BTreeSet<String> = schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        for s in schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            names.extend(known(doc, s));
        }
        names
    }

    fn resolve(doc: &Value, schema: &Value) -> Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.trim_start_matches("#/components/schemas/");
                resolve(doc, &doc["components"]["schemas"][name])
            }
            None => schema.clone(),
        }
    }

    /// A part of an `allOf`: checked for its own keys only (the whole object is checked
    /// against the union of the parts' keys).
    fn without_closure(doc: &Value, schema: &Value) -> Value {
        let mut s = resolve(doc, schema);
        if let Some(o) = s.as_object_mut() {
            o.insert("additionalProperties".into(), Value::Bool(true));
        }
        s
    }

    /// Checks the serialized `value` against component schema `name`.
    fn fits(doc: &Value, name: &str, value: &impl serde::Serialize) {
        let v = serde_json::to_value(value).expect("serializes");
        let mut errs = Vec::new();
        let schema = json!({ "$ref": format!("#/components/schemas/{name}") });
        check(doc, &schema, &v, name, &mut errs);
        assert!(
            errs.is_empty(),
            "{name} does not describe {v}:\n{}",
            errs.join("\n")
        );
    }

    fn node(n: u64, node_type: &str, parent: Option<Uuid>) -> Node {
        Node {
            id: Uuid::from_u64_pair(0, n),
            workflow_id: Uuid::from_u64_pair(1, 0),
            parent_id: parent,
            node_type: node_type.to_owned(),
            role: parent.is_none().then_some(arbor_storage::Role::System),
            content: "c".to_owned(),
            payload: json!({"k": [1, 2]}),
            metadata: serde_json::Map::from_iter([("m".to_owned(), json!(true))]),
            agent_id: Some("agent".to_owned()),
            user_id: None,
            branch_id: Uuid::from_u64_pair(0, 1),
            depth: u32::from(parent.is_some()),
            seq: n,
            timestamp: Timestamp(1_795_000_000_000_001),
        }
    }

    fn event(seq: u64, body: EventBody) -> Event {
        Event {
            seq,
            id: Uuid::from_u64_pair(2, seq),
            workflow_id: Uuid::from_u64_pair(1, 0),
            timestamp: Timestamp(1_795_000_000_000_001),
            actor: "anonymous".to_owned(),
            body,
            prev_hash: "00".repeat(32),
            hash: "ab".repeat(32),
        }
    }

    fn spec() -> TokenSpec {
        TokenSpec {
            id: Uuid::from_u64_pair(3, 0),
            name: "ci".to_owned(),
            role: "writer".to_owned(),
            workflows: vec![Uuid::from_u64_pair(1, 0)],
            branches: Vec::new(),
            expires_at: Some(Timestamp(1_795_000_000_000_001)),
            rate: Some(2.5),
        }
    }

    /// The schemas of the storage and sync types (`schemas`) describe what those types
    /// serialize to: every field, and no other.
    #[test]
    fn the_mirrored_schemas_describe_the_storage_and_sync_types() {
        let doc = doc();
        let root = node(1, "system", None);
        let child = node(2, "decision", Some(root.id));
        fits(&doc, "Node", &root);
        fits(&doc, "Node", &child);
        let edge = Edge {
            kind: EdgeKind::Monitors,
            from: root.id,
            to: child.id,
        };
        let events = [
            event(
                1,
                EventBody::WorkflowCreated(WorkflowCreated {
                    root: root.clone(),
                    metadata: serde_json::Map::new(),
                    user_id: Some("u".to_owned()),
                }),
            ),
            event(2, EventBody::NodeCreated(child.clone())),
            event(3, EventBody::EdgeCreated(edge)),
            event(
                4,
                EventBody::StatusChanged(StatusChanged {
                    from: WorkflowStatus::Running,
                    to: WorkflowStatus::Cancelled,
                }),
            ),
        ];
        for e in &events {
            fits(&doc, "Event", e);
        }
        fits(
            &doc,
            "EventPage",
            &Events {
                events: &events,
                next_after: 4,
            },
        );
        let view = TokenView {
            token: spec(),
            created_at: Timestamp(1_795_000_000_000_001),
            created_by: "cli".to_owned(),
            revoked_at: None,
        };
        fits(&doc, "Token", &view);
        let anti_entropy = AuditStatus {
            last_divergence: Some(Divergence {
                workflow_id: root.workflow_id,
                what: "nodes".to_owned(),
                missing: 3,
                repaired: true,
                found_at: "2026-11-23T18:00:00.123456Z".to_owned(),
            }),
            ..AuditStatus::default()
        };
        let sink = SinkStatus {
            name: "redis".to_owned(),
            state: SinkState::Degraded,
            cursor: 7,
            lag_events: 2,
            lag_seconds: 0.5,
            last_error: Some("connection refused".to_owned()),
            batches: 1,
            events: 7,
            retries: 3,
            errors: 3,
            dead_letters: 0,
            reasons: vec!["lag".to_owned()],
            anti_entropy,
        };
        fits(&doc, "SinkStatus", &sink);
    }

    /// The views of the reads are described as they serialize.
    #[test]
    fn the_views_fit_their_schemas() {
        let doc = doc();
        let d = Arc::new(node(1, "decision", None));
        let o = Arc::new(node(2, "option", Some(d.id)));
        let with_edges = NodeWithEdges {
            node: d.clone(),
            outgoing: vec![Edge {
                kind: EdgeKind::OptionOf,
                from: d.id,
                to: o.id,
            }],
            incoming: Vec::new(),
        };
        fits(&doc, "NodeWithEdges", &NodeView::from(&with_edges));
        let outline = Outline {
            head: 9,
            types: vec!["decision".to_owned(), "option".to_owned()],
            nodes: vec![
                OutlineNode {
                    seq: 1,
                    id: d.id,
                    parent: None,
                    node_type: 0,
                    role: None,
                    branch_id: d.id,
                    depth: 0,
                },
                OutlineNode {
                    seq: 2,
                    id: o.id,
                    parent: Some(0),
                    node_type: 1,
                    role: Some(Role::Assistant),
                    branch_id: d.id,
                    depth: 1,
                },
            ],
            events: Vec::new(),
        };
        let view = OutlineView::new(d.workflow_id, &outline, &outline.events, |_, _| true);
        fits(&doc, "Outline", &view);
        let v = serde_json::to_value(&view).expect("json");
        assert_eq!(v["nodes"]["parent"], json!([null, 0]));
        assert_eq!(v["nodes"]["role"], json!([null, "assistant"]));
        fits(&doc, "Labels", &Labels::of([&*d, &*o].into_iter()));
        let path = [d.clone(), o.clone()];
        fits(&doc, "PathView", &PathView::Nodes(Nodes { nodes: &path }));
        fits(
            &doc,
            "PathView",
            &PathView::Messages(Messages::from(&path[..])),
        );
        for chosen in [Some(o.clone()), None] {
            let decisions = [Decision {
                decision: d.clone(),
                options: vec![o.clone()],
                chosen,
            }];
            fits(&doc, "Decisions", &Decisions::from(&decisions[..]));
        }
        let monitors = [Monitor {
            monitor: d.clone(),
            target: o.clone(),
        }];
        fits(&doc, "Monitors", &Monitors::from(&monitors[..]));
        let branches = vec![BranchInfo {
            branch_id: d.branch_id,
            fork_node_id: None,
            head_id: o.id,
            length: 2,
        }];
        fits(&doc, "Branches", &Branches::from(branches));
        let branch = BranchNodes {
            branch_id: d.branch_id,
            fork_node_id: Some(d.id),
            nodes: vec![o.clone()],
        };
        fits(&doc, "Branch", &BranchView::from(&branch));
        let summary = WorkflowSummary {
            workflow_id: d.workflow_id,
            status: WorkflowStatus::Waiting,
            root_id: d.id,
            node_count: 2,
            branch_count: 1,
            heads: vec![o.id],
            created_at: d.timestamp,
            updated_at: o.timestamp,
            last_seq: 2,
            user_id: Some("u".to_owned()),
            metadata: serde_json::Map::new(),
        };
        fits(&doc, "Workflow", &WorkflowView::from(&summary));
    }

    /// The checker itself: it refuses what it must.
    #[test]
    fn the_checker_refuses_undescribed_keys_and_wrong_types() {
        let doc = doc();
        let mut n = serde_json::to_value(node(1, "system", None)).expect("json");
        n["extra"] = json!(1);
        let mut errs = Vec::new();
        let schema = json!({"$ref": "#/components/schemas/Node"});
        check(&doc, &schema, &n, "Node", &mut errs);
        assert!(
            errs.iter()
                .any(|e| e.contains("\"extra\" is not described")),
            "{errs:?}"
        );
        let mut n = serde_json::to_value(node(1, "system", None)).expect("json");
        n["depth"] = json!("deep");
        n.as_object_mut().expect("object").remove("seq");
        let mut errs = Vec::new();
        check(&doc, &schema, &n, "Node", &mut errs);
        assert_eq!(errs.len(), 2, "{errs:?}");
    }

    /// The document's own rules: 3.1, every `$ref` resolves, every path parameter is
    /// declared, every error is problem+json, every route says who may call it.
    #[test]
    fn the_document_is_whole() {
        let doc = doc();
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1")),
            "{}",
            doc["openapi"]
        );
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in &refs {
            let mut at = &doc;
            for part in r.trim_start_matches("#/").split('/') {
                at = &at[part];
            }
            assert!(!at.is_null(), "{r} does not resolve");
        }
        let mut ids = BTreeSet::new();
        let paths = doc["paths"].as_object().expect("paths");
        for (path, item) in paths {
            for (method, op) in item.as_object().expect("path item") {
                let what = format!("{method} {path}");
                assert!(
                    ids.insert(op["operationId"].to_string()),
                    "{what}: operationId"
                );
                assert!(op["summary"].is_string(), "{what}: no summary");
                let params: BTreeSet<&str> = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "path")
                    .filter_map(|p| {
                        assert_eq!(p["required"], true, "{what}: {p}");
                        p["name"].as_str()
                    })
                    .collect();
                let template: BTreeSet<&str> = path
                    .split('/')
                    .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                    .collect();
                assert_eq!(params, template, "{what}: path parameters");
                let responses = op["responses"].as_object().expect("responses");
                assert!(
                    responses.keys().any(|s| s.starts_with('2')),
                    "{what}: no 2xx"
                );
                for (status, r) in responses {
                    let r = match r["$ref"].as_str() {
                        Some(name) => {
                            &doc["components"]["responses"]
                                [name.trim_start_matches("#/components/responses/")]
                        }
                        None => r,
                    };
                    if status.as_str() >= "400" {
                        assert!(
                            r["content"][PROBLEM_JSON]["schema"].is_object(),
                            "{what} {status}: not problem+json"
                        );
                    }
                }
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
                let security = op["security"].as_array().expect("security");
                match action_of(&method, path) {
                    None => assert!(security.is_empty(), "{what}: public"),
                    Some(_) => {
                        assert!(security.iter().any(|s| s.get(BEARER).is_some()), "{what}");
                        assert!(responses.contains_key("401") && responses.contains_key("429"));
                    }
                }
                if op.get("requestBody").is_some() {
                    let body = &op["requestBody"]["content"]["application/json"]["schema"];
                    let body = resolve(&doc, body);
                    assert_eq!(body["additionalProperties"], false, "{what}: {body}");
                    assert!(responses.contains_key("413"), "{what}");
                }
            }
        }
        assert!(paths.len() >= 25, "{} paths", paths.len());
    }

    fn collect_refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                for (k, x) in o {
                    match (k.as_str(), x) {
                        ("$ref", Value::String(r)) => out.push(r.clone()),
                        _ => collect_refs(x, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
            _ => {}
        }
    }
}
