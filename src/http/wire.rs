//! Wire types of the HTTP API: request bodies (unknown fields rejected) and the
//! JSON body extractor that turns every malformed body into a problem+json 400
//! (or 413 when over the body limit).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use arbor_storage::{NewNode, Role};

use super::problem::Problem;
use super::schemas;

/// A JSON request body, parsed strictly: a JSON object (never a positional array), with
/// every error naming the offending field in the API's words.
pub struct JsonBody<T>(pub T);

/// A request body type: a JSON object, and the fields that hold lists of objects (whose
/// items must be objects too: serde's derived `Deserialize` would take an array for a
/// struct, field by position).
pub trait Body: DeserializeOwned {
    /// Fields whose value is an array of objects.
    const OBJECT_LISTS: &'static [&'static str] = &[];
    /// Whether a body may be parsed straight into `Self` when it is well formed: true only
    /// for a type with no `OBJECT_LISTS` and no field of a derived struct type (serde would
    /// take an array for one, field by position). The answers are the same; a body that
    /// fails that way is parsed again the careful way, for the error message.
    const DIRECT: bool = false;
}

impl<S: Send + Sync, T: Body> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::too_large(format!("request body too large: {}", r.body_text()))
            } else {
                Problem::bad_request(format!("could not read the body: {}", r.body_text()))
            }
        })?;
        parse_body(&bytes)
            .map(JsonBody)
            .map_err(Problem::bad_request)
    }
}

/// Parses a request body: JSON text (a syntax error names where it is), an object at the
/// top and in each of `T::OBJECT_LISTS`, then the fields of `T`.
pub fn parse_body<T: Body>(bytes: &[u8]) -> Result<T, String> {
    if T::DIRECT && T::OBJECT_LISTS.is_empty() && opens_an_object(bytes) {
        if let Ok(body) = serde_json::from_slice::<T>(bytes) {
            return match big_integer(bytes) {
                None => Ok(body),
                Some((path, literal)) => Err(beyond_64_bits(&path, &literal)),
            };
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: Value =
        serde_path_to_error::deserialize(&mut de).map_err(|e| match e.path().to_string() {
            path if path == "." => format!("invalid JSON: {}", e.inner()),
            path => format!("{path}: invalid JSON: {}", e.inner()),
        })?;
    de.end().map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(fields) = &value else {
        return Err(format!(
            "the body must be a JSON object, not {}",
            kind_of(&value)
        ));
    };
    if let Some((path, literal)) = big_integer(bytes) {
        return Err(beyond_64_bits(&path, &literal));
    }
    for list in T::OBJECT_LISTS {
        if let Some(Value::Array(items)) = fields.get(*list) {
            if let Some((i, v)) = items.iter().enumerate().find(|(_, v)| !v.is_object()) {
                return Err(format!(
                    "{list}[{i}]: expected an object, not {}",
                    kind_of(v)
                ));
            }
        }
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let what = api_words(&e.inner().to_string());
        match e.path().to_string().as_str() {
            "." => what,
            path => format!("{path}: {what}"),
        }
    })
}

/// Whether the first byte after any white space is `{`.
fn opens_an_object(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{')
}

/// The refusal of an integer literal beyond i64 and u64.
fn beyond_64_bits(path: &str, literal: &str) -> String {
    format!(
        "{path}: integer {literal} is beyond the 64-bit range (JSON numbers are 64-bit \
         integers or doubles here); send it as a string"
    )
}

/// The path and text of the first integer literal in `json` (valid JSON) that fits
/// neither i64 nor u64. serde_json (without `arbitrary_precision`) would turn it into
/// the nearest double, so the API would store and echo another number than it was
/// sent: such input is refused instead. Decimal fractions and exponents are doubles by
/// definition and pass.
fn big_integer(json: &[u8]) -> Option<(String, String)> {
    if !has_long_digit_run(json) {
        return None;
    }
    enum Frame {
        Object { key: String, want_key: bool },
        Array { index: usize },
    }
    let path = |stack: &[Frame]| {
        let mut p = String::new();
        for f in stack {
            match f {
                Frame::Object { key, .. } => {
                    if !p.is_empty() {
                        p.push('.');
                    }
                    p.push_str(key);
                }
                Frame::Array { index } => p.push_str(&format!("[{index}]")),
            }
        }
        p
    };
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'{' => stack.push(Frame::Object {
                key: String::new(),
                want_key: true,
            }),
            b'[' => stack.push(Frame::Array { index: 0 }),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Frame::Array { index }) => *index += 1,
                Some(Frame::Object { want_key, .. }) => *want_key = true,
                None => {}
            },
            b'"' => {
                let start = i;
                i += 1;
                while i < json.len() && json[i] != b'"' {
                    i += if json[i] == b'\\' { 2 } else { 1 };
                }
                if let Some(Frame::Object { key, want_key }) = stack.last_mut() {
                    if *want_key {
                        *key = serde_json::from_slice(&json[start..=i.min(json.len() - 1)])
                            .unwrap_or_default();
                        *want_key = false;
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i + 1 < json.len()
                    && matches!(json[i + 1], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                let literal = String::from_utf8_lossy(&json[start..=i]).into_owned();
                let integer = !literal.contains(['.', 'e', 'E']);
                if integer && literal.parse::<i64>().is_err() && literal.parse::<u64>().is_err() {
                    return Some((path(&stack), literal));
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Whether `json` holds 19 or more ASCII digits in a row. An integer literal beyond both
/// i64 and u64 needs that many (JSON allows no leading zeros, and every integer of up to
/// 18 digits fits i64), so without such a run [`big_integer`] has nothing to find and
/// skips its scan: one pass over the bytes with no allocation, for nearly every body.
///
/// Such a run covers at least one whole aligned 8-byte word (19 = 7 + 8 + 4), so the
/// pass looks at words first and counts digits byte by byte only when some word is all
/// digits (a UUID's group of eight may be; prose and keys are not).
fn has_long_digit_run(json: &[u8]) -> bool {
    let any_digit_word = json.chunks_exact(8).any(|w| {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        all_digits(u64::from_le_bytes(word))
    });
    any_digit_word && has_long_digit_run_bytewise(json)
}

/// Whether all eight bytes of `w` are ASCII digits: each high nibble is 3, and adding 6
/// to each low nibble carries into no high nibble (so each is at most 9).
fn all_digits(w: u64) -> bool {
    const HIGH: u64 = 0xf0f0_f0f0_f0f0_f0f0;
    const LOW: u64 = 0x0f0f_0f0f_0f0f_0f0f;
    w & HIGH == 0x3030_3030_3030_3030 && ((w & LOW) + 0x0606_0606_0606_0606) & HIGH == 0
}

/// [`has_long_digit_run`], one byte at a time.
fn has_long_digit_run_bytewise(json: &[u8]) -> bool {
    let mut run = 0;
    for b in json {
        if b.is_ascii_digit() {
            run += 1;
            if run >= 19 {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

/// What kind of JSON value `v` is, in the API's words.
fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Rewrites a serde error message in the API's words: JSON kinds instead of Rust types,
/// no struct names or arities.
fn api_words(msg: &str) -> String {
    if msg.starts_with("UUID parsing failed") || msg.contains("expected UUID") {
        return "invalid UUID".to_owned();
    }
    if let Some(field) = msg
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        return format!("missing field {field:?}");
    }
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or_default();
        return format!("unknown field {field:?}");
    }
    let Some(rest) = msg.strip_prefix("invalid type: ") else {
        return msg.to_owned();
    };
    let (got, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
    let expected = match expected {
        e if e.starts_with("struct ") || e == "a map" => "an object",
        "a sequence" => "an array",
        "a borrowed string" => "a string",
        e if e.contains("UUID") => "a UUID string",
        e if e.starts_with('u') || e.starts_with('i') || e.starts_with('f') => "a number",
        e => e,
    };
    let got = match got {
        "map" => "an object".to_owned(),
        "sequence" => "an array".to_owned(),
        "unit value" => "null".to_owned(),
        g => g
            .replace("integer", "number")
            .replace("floating point", "number"),
    };
    format!("expected {expected}, not {got}")
}

/// `POST /v1/workflows`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkflow {
    /// Client-chosen id (idempotency key).
    pub id: Option<Uuid>,
    /// The system prompt (root content).
    #[schema(pattern = "^[^\\u0000]*$")]
    pub system_prompt: String,
    /// Workflow metadata (an object; no U+0000 in its strings).
    pub metadata: Option<Map<String, Value>>,
    /// Owner.
    #[schema(pattern = "^[^\\u0000]*$")]
    pub user_id: Option<String>,
}

impl Body for CreateWorkflow {}

/// `POST /v1/workflows/{wf}/nodes` and each item of a batch.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNode {
    /// Client-chosen id (idempotency key).
    pub id: Option<Uuid>,
    /// Parent node.
    pub parent_id: Uuid,
    /// Node type: `message`, `action`, `decision`, `option`, `monitor` or any lowercase
    /// word (`system` is the root's alone: 400).
    #[serde(rename = "type")]
    #[schema(pattern = "^[a-z][a-z0-9_]{0,31}$")]
    pub node_type: String,
    /// Conversation role.
    #[schema(value_type = Option<schemas::Role>)]
    pub role: Option<Role>,
    /// Content.
    #[schema(pattern = "^[^\\u0000]*$")]
    pub content: String,
    /// Payload: any JSON (no U+0000 in its strings).
    pub payload: Option<Value>,
    /// Metadata (an object; no U+0000 in its strings).
    pub metadata: Option<Map<String, Value>>,
    /// Agent.
    #[schema(pattern = "^[^\\u0000]*$")]
    pub agent_id: Option<String>,
    /// User.
    #[schema(pattern = "^[^\\u0000]*$")]
    pub user_id: Option<String>,
    /// Only append if the parent has no child yet (continue a branch, never fork by
    /// accident): else 409.
    #[serde(default)]
    pub expect_leaf: bool,
}

impl Body for CreateNode {
    // Its fields are strings, UUIDs, an enum, `Value`s and a `Map`: no derived struct.
    const DIRECT: bool = true;
}

impl CreateNode {
    /// The storage intent for this node.
    pub fn into_new_node(self) -> NewNode {
        NewNode {
            id: self.id,
            parent_id: self.parent_id,
            node_type: self.node_type,
            role: self.role,
            content: self.content,
            payload: self.payload.unwrap_or(Value::Null),
            metadata: self.metadata.unwrap_or_default(),
            agent_id: self.agent_id,
            user_id: self.user_id,
            expect_leaf: self.expect_leaf,
            timestamp: None,
        }
    }
}

/// `POST /v1/workflows/{wf}/nodes/batch`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBatch {
    /// The nodes, in order (at least one).
    #[schema(min_items = 1)]
    pub nodes: Vec<CreateNode>,
}

impl Body for CreateBatch {
    const OBJECT_LISTS: &'static [&'static str] = &["nodes"];
}

/// `POST /v1/workflows/{wf}/edges`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEdge {
    /// MONITORS, OPTION_OF or CHOSEN_OPTION.
    #[serde(rename = "type")]
    #[schema(value_type = schemas::NewEdgeKind)]
    pub kind: String,
    /// Source.
    pub from: Uuid,
    /// Target.
    pub to: Uuid,
}

impl Body for CreateEdge {}

/// `POST /v1/nodes/{id}/choose`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Choose {
    /// The option to choose.
    pub option_id: Uuid,
}

impl Body for Choose {}

/// `PATCH /v1/workflows/{wf}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchWorkflow {
    /// New status (none from a terminal one: 409).
    #[schema(value_type = schemas::WorkflowStatus)]
    pub status: String,
}

impl Body for PatchWorkflow {}

/// `201 {workflow_id, root_id, seq}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WorkflowCreated {
    /// Workflow id.
    pub workflow_id: Uuid,
    /// Root node id.
    pub root_id: Uuid,
    /// Seq of `workflow.created`.
    pub seq: u64,
}

/// An edge as returned by `POST …/edges` and `choose`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EdgeCreated {
    /// Edge type.
    #[serde(rename = "type")]
    #[schema(value_type = schemas::EdgeKind)]
    pub kind: String,
    /// Source.
    pub from: Uuid,
    /// Target.
    pub to: Uuid,
    /// Seq of the event that records it.
    pub seq: u64,
}

/// Query of `GET /v1/workflows`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page size (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Cursor from the previous page's `next_cursor`.
    #[param(pattern = "^[1-9][0-9]*$")]
    pub cursor: Option<String>,
    /// Status filter.
    #[param(value_type = Option<schemas::WorkflowStatus>)]
    pub status: Option<String>,
    /// Owner filter.
    pub user_id: Option<String>,
}

/// Query of `GET …/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Start after this seq (default 0).
    pub after: Option<u64>,
    /// Page size (default 1000).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<usize>,
}

/// Query of `GET /v1/nodes/{id}/path`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PathQuery {
    /// `nodes` (default) or `messages`.
    #[param(value_type = Option<schemas::PathFormat>)]
    pub format: Option<String>,
}

/// Query of `GET /v1/nodes/{id}/subtree`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SubtreeQuery {
    /// Levels below the node (unbounded when absent).
    pub max_depth: Option<u32>,
}

/// Query of `GET …/labels`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LabelsQuery {
    /// Node ids, comma-separated (1 to 500).
    pub ids: String,
}

/// Query of `GET …/monitors`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MonitorsQuery {
    /// Only monitors whose target is on another branch.
    #[serde(default)]
    pub cross_branch: bool,
}

/// Query of the SSE endpoints.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Resume after this seq (0 = whole history first; beyond the log's head: 400). The
    /// `Last-Event-ID` header, when sent, wins.
    pub after: Option<u64>,
}

/// Query of every route that takes no parameters: any parameter is unknown.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

/// A query string, parsed strictly: the one extractor of every route's query, so an
/// unknown parameter or a malformed value is a 400 problem naming the parameter.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for QueryParams<T> {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| QueryParams(q.0))
            .map_err(|e| Problem::bad_request(query_words(&e.body_text())))
    }
}

/// axum's query rejection (`Failed to deserialize query string: <param>: <error>`) in
/// the API's words: `query parameter "<param>": <error>`.
fn query_words(text: &str) -> String {
    let msg = text
        .strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(text);
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let param = rest.split('`').next().unwrap_or_default();
        return format!("unknown query parameter {param:?}");
    }
    match msg.split_once(": ") {
        Some((param, err)) if !param.contains(' ') => {
            format!("query parameter {param:?}: {}", api_words(err))
        }
        _ => format!("invalid query: {}", api_words(msg)),
    }
}

/// A path parameter, parsed strictly (a malformed id is a 400 problem).
pub struct PathParam<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> axum::extract::FromRequestParts<S>
    for PathParam<T>
{
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| PathParam(p.0))
            .map_err(|e| Problem::bad_request(format!("invalid path: {}", e.body_text())))
    }
}

/// The path parameter of the routes under `/v1/workflows/{wf}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct WorkflowPath {
    /// Workflow id.
    pub wf: Uuid,
}

/// The path parameters of `/v1/workflows/{wf}/branches/{branch_id}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct BranchPath {
    /// Workflow id.
    pub wf: Uuid,
    /// Branch id: the id of the branch's first node.
    pub branch_id: Uuid,
}

/// The path parameter of the routes under `/v1/nodes/{id}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct NodePath {
    /// Node id.
    pub id: Uuid,
}

/// The path parameter of `/v1/tokens/{id}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TokenPath {
    /// Token id (the `<id>` of `arbor_<id>_<secret>`).
    pub id: Uuid,
}

/// The `Last-Event-ID` header of the SSE routes.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct ResumeHeader {
    /// Resume after this seq (what a browser's EventSource sends when it reconnects);
    /// wins over `?after=`. Beyond the log's head, or not a seq: 400.
    #[param(rename = "Last-Event-ID")]
    pub last_event_id: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `CreateNode` parsed only the careful way.
    #[derive(Debug, Deserialize)]
    #[serde(transparent)]
    struct Careful(CreateNode);
    impl Body for Careful {}

    #[test]
    fn the_direct_parse_answers_as_the_careful_one() {
        let p = "00000000-0000-4000-8000-000000000001";
        let bodies = [
            format!(
                r#"{{"parent_id":"{p}","type":"message","role":"assistant","content":"hi","payload":{{"a":[1,2.5,-0.0,null]}},"metadata":{{"k":"v"}},"agent_id":"a","expect_leaf":true}}"#
            ),
            format!(r#"  {{"parent_id":"{p}","type":"message","content":"x","payload":null}}"#),
            format!(r#"{{"parent_id":"{p}","type":"message","content":"x","content":"y"}}"#),
            format!(r#"{{"parent_id":"{p}","type":"message","content":"x","nope":1}}"#),
            format!(
                r#"{{"parent_id":"{p}","type":"message","content":"x","payload":{{"n":18446744073709551616}}}}"#
            ),
            format!(
                r#"{{"parent_id":"{p}","type":"message","content":"x","payload":{{"n":18446744073709551615}}}}"#
            ),
            format!(r#"{{"parent_id":"{p}","type":"message","content":5}}"#),
            format!(r#"{{"parent_id":"{p}","type":"message","content":"x","metadata":[]}}"#),
            format!(r#"["{p}","message"]"#),
            format!(r#"{{"parent_id":"{p}","type":"message","content":"x"}} trailing"#),
            r#"{"parent_id":"x","type":"message","content":"x"}"#.to_owned(),
        ];
        for body in bodies {
            let direct = format!("{:?}", parse_body::<CreateNode>(body.as_bytes()));
            let careful = format!(
                "{:?}",
                parse_body::<Careful>(body.as_bytes()).map(|Careful(n)| n)
            );
            assert_eq!(direct, careful, "{body}");
        }
    }

    #[test]
    fn only_a_run_of_19_digits_can_hold_an_integer_beyond_64_bits() {
        assert!(!has_long_digit_run(br#"{"n": 999999999999999999}"#));
        assert!(has_long_digit_run(br#"{"n": 9223372036854775807}"#));
        // The longest integers that fit still pass the full scan.
        assert_eq!(big_integer(br#"{"n": 9223372036854775807}"#), None);
        assert_eq!(big_integer(br#"{"n": -9223372036854775808}"#), None);
        assert_eq!(big_integer(br#"{"n": 18446744073709551615}"#), None);
        // Digits inside a string are not a number.
        assert_eq!(big_integer(br#"{"s": "18446744073709551616"}"#), None);
        // Those beyond both are found, with their path.
        assert_eq!(
            big_integer(br#"{"a": [1, {"n": 18446744073709551616}]}"#),
            Some(("a[1].n".to_owned(), "18446744073709551616".to_owned()))
        );
        assert_eq!(
            big_integer(br#"{"m": -9223372036854775809}"#),
            Some(("m".to_owned(), "-9223372036854775809".to_owned()))
        );
    }

    #[test]
    fn a_word_of_eight_digits_is_told_from_its_neighbours() {
        for b in 0..=255u8 {
            let mut w = *b"01234567";
            w[3] = b;
            assert_eq!(all_digits(u64::from_le_bytes(w)), b.is_ascii_digit(), "{b}");
        }
    }

    proptest::proptest! {
        #[test]
        fn the_word_pass_finds_every_run_the_byte_pass_finds(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![9 => b'0'..=b'9', 1 => proptest::prelude::any::<u8>()], 0..120),
            offset in 0usize..8,
        ) {
            // Every alignment of the same bytes.
            let json = &bytes[offset.min(bytes.len())..];
            proptest::prop_assert_eq!(
                has_long_digit_run(json),
                has_long_digit_run_bytewise(json)
            );
        }
    }
}
