//! The web UI (issue 14, DESIGN §12) in headless Debian chromium, against the real binary:
//! the sample workflow's decisions, branches and monitors as the API reports them; the
//! keyboard; the seq slider; a phone-width layout; nodes appended over HTTP appearing
//! live, followed along their branch, and the page recovering across a `kill -9` and
//! restart with no duplicate or missing node; the token entered once with auth on.
//! Screenshots are kept in `target/test-artifacts/ui-*.png`.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use arbor_testkit::browser::{artifact, Browser};
use common::{arbor, ok, spawn_serve, spawn_serve_at};
use serde_json::{json, Value};

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/sample-coding-agent.jsonl"
);

/// The real binary, killed when the test ends.
use arbor_testkit::serve::KillOnDrop as Serve;

/// A browser page, failing the test with the page's log on any error.
struct Page(Browser);

impl Page {
    fn open(width: u32, height: u32) -> Page {
        Page(Browser::start(width, height).unwrap_or_else(|e| panic!("{e}")))
    }

    fn ok(&mut self, r: Result<Value, arbor_testkit::browser::BrowserError>) -> Value {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    fn goto(&mut self, url: &str) {
        let r = self.0.goto(url);
        self.ok(r);
    }

    fn wait(&mut self, js: &str) -> Value {
        let r = self.0.wait(js, 30);
        self.ok(r)
    }

    fn eval(&mut self, js: &str) -> Value {
        let r = self.0.eval(js);
        self.ok(r)
    }

    fn click(&mut self, selector: &str) {
        let r = self.0.click(selector);
        self.ok(r);
    }

    fn press(&mut self, key: &str) {
        let r = self.0.press(key);
        self.ok(r);
    }

    fn shot(&mut self, name: &str) {
        let r = self.0.screenshot(&artifact(name));
        self.ok(r);
    }

    /// The page's own record of uncaught errors and CSP violations: must stay empty.
    fn assert_clean(&mut self) {
        let errors = self.eval("window.arbor.errors");
        assert_eq!(errors, json!([]), "page errors:\n{}", self.0.log());
    }
}

async fn get(client: &reqwest::Client, url: &str, token: Option<&str>) -> Value {
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("arbor answers");
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.json().await.expect("JSON")
}

async fn post(client: &reqwest::Client, url: &str, body: Value, token: Option<&str>) -> Value {
    let mut req = client.post(url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("arbor answers");
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.json().await.expect("JSON")
}

/// Every node id of workflow `wf`, from the API's event log.
async fn node_ids(client: &reqwest::Client, base: &str, wf: &str) -> BTreeSet<String> {
    let page = get(
        client,
        &format!("{base}/v1/workflows/{wf}/events?limit=10000"),
        None,
    )
    .await;
    let mut ids = BTreeSet::new();
    for e in page["events"].as_array().expect("events") {
        match e["kind"].as_str() {
            Some("workflow.created") => ids.insert(e["body"]["root"]["id"].to_string()),
            Some("node.created") => ids.insert(e["body"]["id"].to_string()),
            _ => false,
        };
    }
    ids
}

fn ids_of(snapshot: &Value) -> Vec<String> {
    snapshot["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(Value::to_string)
        .collect()
}

fn import_sample(dir: &Path) -> String {
    let report: Value = serde_json::from_str(&ok(&arbor(&["import", SAMPLE], dir))).expect("json");
    report["stored_workflows"][0]["workflow_id"]
        .as_str()
        .expect("workflow id")
        .to_owned()
}

/// The sample workflow as the page draws it: every node once; the decisions, their
/// options and the chosen ones, the branches and the cross-branch monitors exactly as the
/// API reports them; keyboard navigation; the slider's replay; a phone-width layout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_sample_workflow_as_the_api_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wf = import_sample(dir.path());
    let (child, base) = spawn_serve(dir.path(), ["--durability", "none"]);
    let _serve = Serve(child);
    let client = reqwest::Client::new();

    let mut page = Page::open(1280, 800);
    page.goto(&format!("{base}/"));
    // The list shows the workflow; a click opens it.
    page.wait(&format!("document.querySelector('a[data-wf=\"{wf}\"]')"));
    page.click(&format!("a[data-wf=\"{wf}\"]"));
    page.wait(&format!("window.arbor.loaded === '{wf}'"));
    let snap = page.eval("window.arbor.snapshot()");
    let want = node_ids(&client, &base, &wf).await;
    let seen: Vec<String> = ids_of(&snap);
    assert_eq!(seen.len(), want.len(), "every node once");
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), want);
    assert_eq!(
        snap["rows"],
        json!(want.len()),
        "nothing folded: a row per node"
    );
    // The rows on screen carry the first line of their node's content (labels are
    // fetched for what is drawn: the page is "loaded" only once they are in).
    let rows = page.eval(
        "[...document.querySelectorAll('#tree .row')]\
           .map(r => [r.dataset.id, r.querySelector('.label').textContent])",
    );
    let rows: Vec<(String, String)> = serde_json::from_value(rows).expect("rows");
    assert!(rows.len() >= 20, "a screenful of rows: {}", rows.len());
    for (id, label) in &rows {
        let node = get(&client, &format!("{base}/v1/nodes/{id}"), None).await;
        let content = node["content"].as_str().expect("content").trim_start();
        let line: String = content
            .split('\n')
            .next()
            .unwrap_or("")
            .chars()
            .take(240)
            .collect();
        let want = if line.is_empty() {
            "(empty)".to_owned()
        } else {
            line
        };
        assert_eq!(label, &want, "row {id}");
    }
    page.shot("ui-sample-tree.png");

    // Decisions: each decision, its options and the chosen one, as the API says.
    let api = get(
        &client,
        &format!("{base}/v1/workflows/{wf}/decisions"),
        None,
    )
    .await;
    let api = api["decisions"].as_array().expect("decisions").clone();
    page.click("#tab-decisions");
    let drawn = page.eval(
        "[...document.querySelectorAll('#decisions .card')].map(c => ({\
           decision: c.querySelector('.jump').dataset.id,\
           options: [...c.querySelectorAll('li .jump')].map(b => b.dataset.id),\
           chosen: [...c.querySelectorAll('li.chosen .jump')].map(b => b.dataset.id)}))",
    );
    let drawn = drawn.as_array().expect("cards").clone();
    assert_eq!(drawn.len(), api.len(), "{drawn:?}");
    assert!(api.len() >= 2, "the sample has decisions");
    for (d, a) in drawn.iter().zip(&api) {
        assert_eq!(d["decision"], a["decision"]["id"]);
        let options: Vec<&Value> = a["options"]
            .as_array()
            .expect("options")
            .iter()
            .map(|o| &o["id"])
            .collect();
        let drawn_options: Vec<&Value> = d["options"].as_array().expect("options").iter().collect();
        assert_eq!(drawn_options, options);
        let chosen: Vec<&Value> = a["chosen"]
            .as_object()
            .map(|c| vec![&c["id"]])
            .unwrap_or_default();
        let drawn_chosen: Vec<&Value> = d["chosen"].as_array().expect("chosen").iter().collect();
        assert_eq!(drawn_chosen, chosen);
    }
    page.shot("ui-sample-decisions.png");

    // Branches: as many as the API's, each with its head.
    let api = get(&client, &format!("{base}/v1/workflows/{wf}/branches"), None).await;
    let mut heads: Vec<String> = api["branches"]
        .as_array()
        .expect("branches")
        .iter()
        .map(|b| b["head_id"].as_str().expect("head").to_owned())
        .collect();
    page.click("#tab-branches");
    let drawn =
        page.eval("[...document.querySelectorAll('#branches .card .jump')].map(b => b.dataset.id)");
    let mut drawn: Vec<String> = serde_json::from_value(drawn).expect("heads");
    heads.sort();
    drawn.sort();
    assert_eq!(drawn, heads, "one card per branch, with its head");

    // Monitors: every MONITORS edge, and the cross-branch ones marked.
    let all = get(&client, &format!("{base}/v1/workflows/{wf}/monitors"), None).await;
    let cross = get(
        &client,
        &format!("{base}/v1/workflows/{wf}/monitors?cross_branch=true"),
        None,
    )
    .await;
    page.click("#tab-monitors");
    let cards = page.eval("document.querySelectorAll('#monitors .card').length");
    let marked = page.eval(
        "[...document.querySelectorAll('#monitors .card')]\
           .filter(c => c.textContent.includes('across branches')).length",
    );
    assert_eq!(
        cards,
        json!(all["monitors"].as_array().expect("monitors").len())
    );
    assert_eq!(
        marked,
        json!(cross["monitors"].as_array().expect("monitors").len())
    );
    assert!(
        marked.as_u64() > Some(0),
        "the sample has cross-branch monitors"
    );
    page.shot("ui-sample-monitors.png");

    // The keyboard: the tree has focus; Down moves the selection, Enter opens the node
    // with its path as messages (from the API), End goes to the last row.
    page.click("#tab-tree");
    page.wait("document.activeElement && document.activeElement.id === 'tree'");
    let first = page.eval("document.querySelector('#tree [aria-selected=\"true\"]').dataset.seq");
    page.press("ArrowDown");
    page.press("ArrowDown");
    let third = page.eval("document.querySelector('#tree [aria-selected=\"true\"]').dataset.seq");
    assert_ne!(first, third, "the arrows move the selection");
    let active = page.eval("document.getElementById('tree').getAttribute('aria-activedescendant')");
    let selected_id = page.eval("document.querySelector('#tree [aria-selected=\"true\"]').id");
    assert_eq!(
        active, selected_id,
        "the tree names its active row for assistive tech"
    );
    page.press("Enter");
    let count = page.wait("document.querySelector('#d-path[data-count]')?.dataset.count");
    let node = page.eval("document.querySelector('#tree [aria-selected=\"true\"]').dataset.id");
    let path = get(
        &client,
        &format!(
            "{base}/v1/nodes/{}/path?format=messages",
            node.as_str().expect("id")
        ),
        None,
    )
    .await;
    assert_eq!(
        count,
        json!(path["messages"]
            .as_array()
            .expect("messages")
            .len()
            .to_string())
    );
    // The node panel shows the node's whole content, fetched when it opened.
    let node = get(
        &client,
        &format!("{base}/v1/nodes/{}", node.as_str().expect("id")),
        None,
    )
    .await;
    let shown = page.wait(
        "(() => { const c = document.querySelector('#d-body pre.content'); \
           return c && c.textContent !== 'loading…' ? c.textContent : null; })()",
    );
    assert_eq!(shown, node["content"], "the panel shows the node's content");
    page.shot("ui-sample-detail.png");
    page.press("Escape");
    page.press("End");
    let last = page.eval("document.querySelector('#tree [aria-selected=\"true\"]') !== null");
    assert_eq!(
        last,
        json!(true),
        "End selects the last row and scrolls to it"
    );

    // The slider replays the tree as it grew: at the workflow's first seq, one node.
    page.eval(
        "(() => { const s = document.getElementById('seq'); s.value = s.min; \
           s.dispatchEvent(new Event('input')); })()",
    );
    page.wait("window.arbor.snapshot().rows === 1");
    let text = page.eval("document.getElementById('seq-out').textContent");
    assert!(
        text.as_str()
            .is_some_and(|t| t.contains(&format!("1 of {}", want.len()))),
        "{text}"
    );
    page.shot("ui-sample-seq-start.png");
    page.click("#live");
    page.wait(&format!("window.arbor.snapshot().rows === {}", want.len()));

    // A phone: the list folds away behind a button, the tree still reads.
    let r = page.0.viewport(390, 844);
    page.ok(r);
    let hidden = page.eval(
        "getComputedStyle(document.getElementById('menu')).display !== 'none' && \
         document.getElementById('sidebar').getBoundingClientRect().right <= 0",
    );
    assert_eq!(hidden, json!(true), "the list is behind the menu button");
    let fits = page.eval("document.documentElement.scrollWidth <= window.innerWidth");
    assert_eq!(fits, json!(true), "no sideways scrolling at phone width");
    page.shot("ui-phone.png");
    page.assert_clean();
}

/// Nodes appended over HTTP appear live; "follow" keeps the newest node of the branch
/// selected; after `kill -9` and a restart on the same port the page resumes its stream
/// (Last-Event-ID) and ends with every node exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_nodes_appear_live_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (child, base) = spawn_serve(dir.path(), std::iter::empty::<&str>());
    let mut serve = Serve(child);
    let client = reqwest::Client::new();
    let created = post(
        &client,
        &format!("{base}/v1/workflows"),
        json!({"system_prompt": "watch me grow", "metadata": {"title": "live test"}}),
        None,
    )
    .await;
    let wf = created["workflow_id"].as_str().expect("wf").to_owned();
    let root = created["root_id"].as_str().expect("root").to_owned();
    let append = |parent: String, content: String| {
        let (client, base, wf) = (client.clone(), base.clone(), wf.clone());
        async move {
            let n = post(
                &client,
                &format!("{base}/v1/workflows/{wf}/nodes"),
                json!({"parent_id": parent, "type": "message", "role": "assistant", "content": content}),
                None,
            )
            .await;
            n["id"].as_str().expect("id").to_owned()
        }
    };

    let mut page = Page::open(1280, 800);
    page.goto(&format!("{base}/#/w/{wf}"));
    page.wait(&format!("window.arbor.loaded === '{wf}'"));
    page.wait("document.getElementById('conn').dataset.state === 'live'");

    // Live: ten nodes on a chain, then a fork with two branches.
    let mut head = root.clone();
    for i in 0..10 {
        head = append(head, format!("step {i}")).await;
    }
    let fork = head.clone();
    let a = append(fork.clone(), "branch A".into()).await;
    let b = append(fork.clone(), "branch B".into()).await;
    page.wait("window.arbor.snapshot().nodes === 13");
    page.wait(&format!("document.getElementById('r-{b}') !== null"));
    let indent = page.eval(&format!(
        "[document.getElementById('r-{a}').getAttribute('aria-level'), \
          document.getElementById('r-{fork}').getAttribute('aria-level')]"
    ));
    assert_eq!(indent, json!(["2", "1"]), "a fork indents its branches");
    page.shot("ui-live.png");

    // Follow branch A: new nodes below it are selected as they arrive.
    page.click(&format!("#r-{a} .label"));
    page.click("#follow");
    let mut a_head = a.clone();
    for i in 0..3 {
        a_head = append(a_head, format!("A{i}")).await;
    }
    page.wait(&format!(
        "document.querySelector('#tree [aria-selected=\"true\"]')?.dataset.id === '{a_head}'"
    ));
    let _other = append(b.clone(), "B0".into()).await;
    page.wait("window.arbor.snapshot().nodes === 17");
    let still = page.eval("document.querySelector('#tree [aria-selected=\"true\"]').dataset.id");
    assert_eq!(
        still,
        json!(a_head),
        "a node on another branch does not move the follow"
    );

    // kill -9, appends while the page cannot reach arbor are impossible (arbor is down),
    // so restart on the same port and append: the page resumes and draws each node once.
    let port = base.rsplit(':').next().expect("port").to_owned();
    serve.kill().expect("kill -9 the server");
    page.wait("document.getElementById('conn').dataset.state === 'reconnecting'");
    let (child, base2) = spawn_serve_at(
        dir.path(),
        &format!("127.0.0.1:{port}"),
        std::iter::empty::<&str>(),
    );
    serve = Serve(child);
    assert_eq!(base2, base, "the same origin after the restart");
    page.wait("document.getElementById('conn').dataset.state === 'live'");
    for i in 0..5 {
        a_head = append(a_head, format!("after restart {i}")).await;
    }
    page.wait("window.arbor.snapshot().nodes === 22");
    page.wait(&format!(
        "document.querySelector('#tree [aria-selected=\"true\"]')?.dataset.id === '{a_head}'"
    ));
    let snap = page.eval("window.arbor.snapshot()");
    let seen = ids_of(&snap);
    let want = node_ids(&client, &base, &wf).await;
    assert_eq!(seen.len(), want.len(), "no duplicate: {snap}");
    assert_eq!(
        seen.into_iter().collect::<BTreeSet<_>>(),
        want,
        "no node missing"
    );
    page.shot("ui-after-restart.png");
    page.assert_clean();
    drop(serve);
}

/// With auth on the page asks for a token once (kept for the tab), then lists, opens and
/// follows a workflow with it; the stream authenticates with `?access_token=`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_on_the_token_is_entered_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wf = import_sample(dir.path());
    let created = ok(&arbor(
        &["token", "create", "--name", "ui", "--role", "writer"],
        dir.path(),
    ));
    let token: Value =
        serde_json::from_str(created.lines().next().expect("a line")).expect("token json");
    let token = token["token"].as_str().expect("secret").to_owned();
    let (child, base) = spawn_serve(dir.path(), std::iter::empty::<&str>());
    let _serve = Serve(child);
    let client = reqwest::Client::new();

    let mut page = Page::open(1280, 800);
    page.goto(&format!("{base}/"));
    page.wait("document.getElementById('token-dialog').open");
    page.shot("ui-token.png");
    let r = page.0.fill("#token-input", "arbor_wrong");
    page.ok(r);
    page.click("#token-save");
    page.wait("!document.getElementById('token-error').hidden");
    let r = page.0.fill("#token-input", &token);
    page.ok(r);
    page.click("#token-save");
    page.wait("!document.getElementById('token-dialog').open");
    page.wait(&format!("document.querySelector('a[data-wf=\"{wf}\"]')"));
    // A running workflow, made with the token, found with the list's reload button.
    let created = post(
        &client,
        &format!("{base}/v1/workflows"),
        json!({"system_prompt": "with a token", "metadata": {"title": "guarded"}}),
        Some(&token),
    )
    .await;
    let live = created["workflow_id"].as_str().expect("wf").to_owned();
    page.click("#refresh");
    page.click(&format!("a[data-wf=\"{live}\"]"));
    page.wait(&format!("window.arbor.loaded === '{live}'"));
    page.wait("document.getElementById('conn').dataset.state === 'live'");

    // Live through the token-authenticated stream.
    let n = post(
        &client,
        &format!("{base}/v1/workflows/{live}/nodes"),
        json!({"parent_id": created["root_id"], "type": "message", "role": "user", "content": "seen with a token"}),
        Some(&token),
    )
    .await;
    let id = n["id"].as_str().expect("id");
    page.wait(&format!("window.arbor.snapshot().ids.includes('{id}')"));
    // Once per tab: a reload asks for nothing.
    page.goto(&format!("{base}/#/w/{wf}"));
    page.wait(&format!("window.arbor.loaded === '{wf}'"));
    page.shot("ui-token-sample.png");
    let open = page.eval("document.getElementById('token-dialog').open");
    assert_eq!(open, json!(false), "the token is kept for the tab");
    page.assert_clean();
}

/// The outline's flatten (a walk over the model's typed arrays, built for speed) draws
/// exactly what a naive recursive outline draws: random trees, loaded as an outline or
/// grown by live events, at random seqs, with folds and "only this branch" anchors; and
/// so do live nodes placed one by one without a flatten (`Outline.insert`).
#[test]
fn the_outline_flatten_matches_a_naive_recursive_outline() {
    let out = std::process::Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/browser/outline_check.mjs"
        ))
        .output()
        .expect("node (installed on the machine) runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("ok 240 cases, "), "{stdout}");
}
