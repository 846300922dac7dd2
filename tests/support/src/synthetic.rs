//! Streaming synthetic workflows for load tests and benches: [`synthetic`] and
//! [`deep_chain`].

use std::collections::VecDeque;

use rand::Rng;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use arbor_storage::{EdgeKind, PortableEvent, Role, Timestamp, WorkflowStatus};

use super::common::{
    created_event, edge_event, node_event, obj, status_event, v7_id, Clock, Draft, GenRng, Kind,
    Tree, N,
};

/// How many bytes of content a node gets.
#[derive(Clone, Debug, PartialEq)]
pub enum ContentSize {
    /// Always this many bytes.
    Fixed(usize),
    /// Uniform in `min..=max`.
    Uniform {
        /// Smallest size.
        min: usize,
        /// Largest size.
        max: usize,
    },
    /// Log-normal: half the nodes are below `median`; `sigma` is the standard deviation
    /// of the size's natural log (1.0 gives a long tail: about 1 node in 20 is over
    /// 5 × the median); sizes are cut to `1..=max`.
    LogNormal {
        /// The median size.
        median: usize,
        /// Spread (standard deviation of ln(size)).
        sigma: f64,
        /// Largest size.
        max: usize,
    },
}

impl ContentSize {
    /// Draws a size.
    pub(crate) fn sample(&self, rng: &mut GenRng) -> usize {
        match *self {
            ContentSize::Fixed(n) => n,
            ContentSize::Uniform { min, max } => rng.between(min as u64, max as u64) as usize,
            ContentSize::LogNormal { median, sigma, max } => {
                // A standard normal from 12 uniforms (Irwin–Hall; tails cut at ±6σ) and a
                // hand-rolled exp: only +, −, ×, ÷ and rounding, which IEEE 754 fixes
                // exactly, so sizes are the same on every platform and C library.
                let z: f64 = (0..12).map(|_| rng.random::<f64>()).sum::<f64>() - 6.0;
                let size = (median as f64) * portable_exp(sigma.max(0.0) * z);
                if size.is_finite() {
                    (size.round() as usize).clamp(1, max.max(1))
                } else {
                    max.max(1)
                }
            }
        }
    }
}

/// e^x from basic arithmetic only (range reduction by ln 2 and a Taylor series), so the
/// result does not depend on the platform's libm. Relative error below 1e-15 for
/// |x| ≤ 700; x is clamped to that range.
pub(crate) fn portable_exp(x: f64) -> f64 {
    const LN2: f64 = std::f64::consts::LN_2;
    if x.is_nan() {
        return 1.0;
    }
    let x = x.clamp(-700.0, 700.0);
    let k = (x / LN2).round();
    let r = x - k * LN2; // |r| <= ln2 / 2
    let (mut term, mut sum) = (1.0f64, 1.0f64);
    for i in 1..=18 {
        term *= r / f64::from(i);
        sum += term;
    }
    // 2^k, |k| <= 1010: build the exponent bits directly.
    let two_k = f64::from_bits(((k as i64 + 1023) as u64) << 52);
    sum * two_k
}

/// What [`synthetic`] generates. Out-of-range values are clamped (see each field), so
/// every spec yields a valid stream.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticSpec {
    /// Seed: the same spec always gives the same events, byte for byte. Workflow `i`
    /// does not depend on `workflows`, so a smaller run is a prefix of a larger one.
    pub seed: u64,
    /// Number of workflows, generated one after the other (not interleaved).
    pub workflows: usize,
    /// Nodes per workflow, root included (at least 1). Exact.
    pub nodes_per_workflow: usize,
    /// Deepest allowed node (root = 0; at least 1). A branch whose tip reaches it stops
    /// growing and work forks elsewhere, so small values give bushy trees.
    pub max_depth: usize,
    /// Probability (0..=1) that a new node forks: it is appended under a random earlier
    /// node (half the time one of the last 64), preferring nodes that already have a
    /// child so that it starts a new branch, instead of extending the tip of an open
    /// branch. 0 gives one chain per workflow (plus the branches that decision options
    /// make); 0.05 gives about one fork every 20 nodes.
    pub fanout: f64,
    /// Most branch tips being extended at once (at least 1). Forks beyond it abandon
    /// a random open tip, as agents abandon a line of work.
    pub max_open_branches: usize,
    /// Size of each node's content.
    pub content: ContentSize,
    /// Probability (0..=1) that a new node is a `decision`. Each decision is followed at
    /// once by 2–4 `option` children (each option after the first starts a branch).
    pub decision_ratio: f64,
    /// Probability (0..=1) that a decision gets a CHOSEN_OPTION edge; work continues
    /// under the chosen option (under the first one when none is chosen).
    pub chosen_ratio: f64,
    /// Probability (0..=1) that a new node is a `monitor`, followed by a MONITORS edge to
    /// an earlier node on another branch (on the same branch only while the workflow
    /// has a single branch).
    pub monitor_ratio: f64,
    /// Probability (0..=1) that an assistant, action or tool node carries metadata
    /// (model, token counts, latency).
    pub metadata_ratio: f64,
    /// Distinct agent ids (`agent-000`…; at least 1); each workflow has one main agent.
    pub agents: usize,
    /// Distinct user ids (`user-0000`…; at least 1); each workflow has one owner.
    pub users: usize,
    /// Probability (0..=1) that a workflow ends with a status change to a terminal status
    /// (completed 85 %, failed 10 %, cancelled 5 %); the others stay `running`.
    pub finish_ratio: f64,
    /// Time of the first event.
    pub start: Timestamp,
    /// Mean gap between two events of a workflow, in milliseconds (gaps are uniform in
    /// 1 µs ..= 2 × mean; at least 1 µs). Timestamps strictly increase over the whole
    /// stream.
    pub mean_step_ms: u64,
}

impl Default for SyntheticSpec {
    /// Ten workflows of 200 nodes: realistic agent runs (mostly chains, a fork every
    /// 20 nodes, a decision every 33 nodes, a monitor every 50), content log-normal
    /// around 400 bytes up to 16 KiB.
    fn default() -> SyntheticSpec {
        SyntheticSpec {
            seed: 42,
            workflows: 10,
            nodes_per_workflow: 200,
            max_depth: 256,
            fanout: 0.05,
            max_open_branches: 4,
            content: ContentSize::LogNormal {
                median: 400,
                sigma: 1.0,
                max: 16 * 1024,
            },
            decision_ratio: 0.03,
            chosen_ratio: 0.85,
            monitor_ratio: 0.02,
            metadata_ratio: 0.3,
            agents: 4,
            users: 8,
            finish_ratio: 0.9,
            // 2026-01-05T09:00:00Z
            start: Timestamp(1_767_603_600_000_000),
            mean_step_ms: 1_500,
        }
    }
}

impl SyntheticSpec {
    fn normalized(&self) -> SyntheticSpec {
        let p = |x: f64| if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) };
        let mut s = self.clone();
        s.nodes_per_workflow = s.nodes_per_workflow.max(1);
        s.max_depth = s.max_depth.clamp(1, u32::MAX as usize - 1);
        s.fanout = p(s.fanout);
        s.max_open_branches = s.max_open_branches.max(1);
        s.decision_ratio = p(s.decision_ratio);
        s.chosen_ratio = p(s.chosen_ratio);
        s.monitor_ratio = p(s.monitor_ratio);
        s.metadata_ratio = p(s.metadata_ratio);
        s.finish_ratio = p(s.finish_ratio);
        s.agents = s.agents.max(1);
        s.users = s.users.max(1);
        s
    }
}

/// Streams the workflows of `spec` as portable events, in an order `arbor import`
/// accepts. Memory is bounded by one workflow: 32 bytes per node of the current
/// workflow plus a 64 KiB text corpus and a handful of queued events, however many
/// events are generated.
pub fn synthetic(spec: &SyntheticSpec) -> Synthetic {
    let spec = spec.normalized();
    let mut rng = GenRng::new(spec.seed);
    let corpus = corpus(&mut rng, 64 * 1024);
    Synthetic {
        clock: Clock::at(spec.start),
        spec,
        rng,
        corpus,
        done: 0,
        wf: None,
        tree: Tree::default(),
        heads: Vec::new(),
        queue: VecDeque::new(),
        max_queue: 0,
    }
}

struct WfState {
    id: Uuid,
    agent: String,
    user: String,
}

/// The iterator of [`synthetic`].
pub struct Synthetic {
    spec: SyntheticSpec,
    rng: GenRng,
    clock: Clock,
    corpus: String,
    done: usize,
    wf: Option<WfState>,
    tree: Tree,
    heads: Vec<N>,
    queue: VecDeque<PortableEvent>,
    max_queue: usize,
}

impl Iterator for Synthetic {
    type Item = PortableEvent;

    fn next(&mut self) -> Option<PortableEvent> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Some(ev);
            }
            match &self.wf {
                None if self.done >= self.spec.workflows => return None,
                None => self.start_workflow(),
                Some(_) if self.tree.len() < self.spec.nodes_per_workflow => self.step(),
                Some(_) => self.finish_workflow(),
            }
            self.max_queue = self.max_queue.max(self.queue.len());
        }
    }
}

impl Synthetic {
    /// Bytes of generator state held right now (per-node slots, open tips, corpus and
    /// the capacity of the event queue), not counting the events handed out.
    pub fn footprint(&self) -> usize {
        self.tree.footprint()
            + self.heads.capacity() * std::mem::size_of::<N>()
            + self.corpus.capacity()
            + self.queue.capacity() * std::mem::size_of::<PortableEvent>()
    }

    /// Most events ever queued at once (a decision with its options and choice).
    pub fn max_queued(&self) -> usize {
        self.max_queue
    }

    fn tick(&mut self) -> Timestamp {
        let hi = self.spec.mean_step_ms.saturating_mul(2_000);
        self.clock.tick(&mut self.rng, 1, hi)
    }

    fn start_workflow(&mut self) {
        // Workflows start a little apart.
        let gap = self.spec.mean_step_ms.saturating_mul(20_000);
        let at = self.clock.tick(&mut self.rng, 1, gap);
        let id = v7_id(&mut self.rng, at);
        let root = v7_id(&mut self.rng, at);
        let agent = format!("agent-{:03}", self.rng.index(self.spec.agents));
        let user = format!("user-{:04}", self.rng.index(self.spec.users));
        let mut metadata = Map::new();
        if self.rng.chance(0.7) {
            metadata = obj([
                (
                    "project",
                    json!(format!("project-{:02}", self.rng.index(40))),
                ),
                ("agent", json!(agent)),
                ("run", json!(self.done)),
            ]);
        }
        let prompt_len = self.spec.content.sample(&mut self.rng).max(40);
        let prompt = self.text(Kind::Root, prompt_len);
        self.queue.push_back(created_event(
            id,
            root,
            at,
            "anonymous",
            prompt,
            metadata,
            Some(user.clone()),
        ));
        self.tree.reset(root);
        self.heads.clear();
        self.heads.push(N(0));
        self.wf = Some(WfState { id, agent, user });
    }

    fn finish_workflow(&mut self) {
        if let Some(wf) = self.wf.take() {
            if self.rng.chance(self.spec.finish_ratio) {
                let r = self.rng.random_range(0..100u32);
                let to = match r {
                    0..85 => WorkflowStatus::Completed,
                    85..95 => WorkflowStatus::Failed,
                    _ => WorkflowStatus::Cancelled,
                };
                let at = self.tick();
                let id = v7_id(&mut self.rng, at);
                self.queue.push_back(status_event(
                    wf.id,
                    id,
                    at,
                    &wf.agent,
                    WorkflowStatus::Running,
                    to,
                ));
            }
            self.done += 1;
        }
    }

    fn step(&mut self) {
        let remaining = self.spec.nodes_per_workflow - self.tree.len();
        let r: f64 = self.rng.random();
        if r < self.spec.decision_ratio && remaining >= 3 && self.spec.max_depth >= 2 {
            self.decision(remaining);
        } else if r < self.spec.decision_ratio + self.spec.monitor_ratio && self.tree.len() >= 2 {
            self.monitor();
        } else {
            self.regular();
        }
    }

    /// A parent for a node that needs `need` more levels below the parent, and the
    /// open tip it extends (None for a fork).
    fn place(&mut self, need: usize) -> (N, Option<usize>) {
        let max = self.spec.max_depth;
        let fits = |s: &super::common::Slot| s.depth as usize + need <= max;
        if !self.heads.is_empty() && !self.rng.chance(self.spec.fanout) {
            let h = self.rng.index(self.heads.len());
            let s = self.tree.slot(self.heads[h]);
            if fits(&s) {
                return (self.heads[h], Some(h));
            }
            if s.depth as usize >= max {
                self.heads.swap_remove(h);
            }
        }
        let n = self.tree.len();
        for attempt in 0..16 {
            let i = if self.rng.chance(0.5) {
                n - 1 - self.rng.index(n.min(64))
            } else {
                self.rng.index(n)
            };
            let s = self.tree.slot(N(i as u32));
            // Decisions only get options; prefer nodes that already have a child so the
            // new node really starts a branch.
            if fits(&s) && s.kind != Kind::Decision && (s.has_child || attempt >= 8) {
                return (N(i as u32), None);
            }
        }
        (N(0), None)
    }

    fn open_tip(&mut self, node: N, extended: Option<usize>) {
        match extended {
            Some(h) => self.heads[h] = node,
            None if self.heads.len() < self.spec.max_open_branches => self.heads.push(node),
            None => {
                let h = self.rng.index(self.heads.len());
                self.heads[h] = node;
            }
        }
    }

    fn regular(&mut self) {
        let (parent, tip) = self.place(1);
        let kind = self.next_kind(self.tree.slot(parent).kind);
        let n = self.emit(parent, kind, None);
        self.open_tip(n, tip);
    }

    fn next_kind(&mut self, parent: Kind) -> Kind {
        let r = self.rng.random_range(0..100u32);
        match parent {
            Kind::Root => Kind::User,
            Kind::Action if r < 92 => Kind::ToolResult,
            Kind::Action => Kind::Assistant,
            Kind::User if r < 65 => Kind::Assistant,
            Kind::User => Kind::Action,
            Kind::Assistant => match r {
                0..20 => Kind::User,
                20..75 => Kind::Action,
                75..90 => Kind::Assistant,
                _ => Kind::Other,
            },
            Kind::ToolResult => match r {
                0..45 => Kind::Assistant,
                45..90 => Kind::Action,
                _ => Kind::Other,
            },
            _ if r < 60 => Kind::Assistant,
            _ => Kind::Action,
        }
    }

    fn decision(&mut self, remaining: usize) {
        let (parent, tip) = self.place(2);
        let d = self.emit(parent, Kind::Decision, None);
        let k = self.rng.random_range(2..=4usize).min(remaining - 1);
        let mut options = Vec::with_capacity(k);
        for i in 0..k {
            options.push(self.emit(d, Kind::Option, Some(i)));
        }
        let chosen = if self.rng.chance(self.spec.chosen_ratio) {
            let c = options[self.rng.index(k)];
            let at = self.tick();
            let wf = self.wf_id();
            let actor = if self.rng.chance(0.7) {
                "anonymous".to_owned()
            } else {
                self.agent()
            };
            self.queue.push_back(edge_event(
                wf,
                EdgeKind::ChosenOption,
                self.tree.id(d),
                self.tree.id(c),
                at,
                &actor,
            ));
            c
        } else {
            options[0]
        };
        self.open_tip(chosen, tip);
        for o in options {
            if o != chosen
                && self.heads.len() < self.spec.max_open_branches
                && self.rng.chance(0.25)
            {
                self.heads.push(o);
            }
        }
    }

    fn monitor(&mut self) {
        let (parent, tip) = self.place(1);
        let m = self.emit(parent, Kind::Monitor, None);
        let mine = self.tree.slot(m).branch;
        let n = self.tree.len() - 1; // candidates: every node before the monitor
        let mut target = parent;
        for _ in 0..16 {
            let i = N(self.rng.index(n) as u32);
            if self.tree.slot(i).branch != mine {
                target = i;
                break;
            }
        }
        let at = self.tick();
        let wf = self.wf_id();
        let actor = self.monitor_agent();
        self.queue.push_back(edge_event(
            wf,
            EdgeKind::Monitors,
            self.tree.id(m),
            self.tree.id(target),
            at,
            &actor,
        ));
        self.open_tip(m, tip);
    }

    fn wf_id(&self) -> Uuid {
        self.wf.as_ref().map_or(Uuid::nil(), |w| w.id)
    }

    fn agent(&self) -> String {
        self.wf
            .as_ref()
            .map_or_else(String::new, |w| w.agent.clone())
    }

    fn monitor_agent(&self) -> String {
        self.wf
            .as_ref()
            .map_or_else(String::new, |w| format!("{}-watch", w.agent))
    }

    /// Appends one node of `kind` under `parent` and queues its event.
    fn emit(&mut self, parent: N, kind: Kind, option_index: Option<usize>) -> N {
        let at = self.tick();
        let id = v7_id(&mut self.rng, at);
        let (agent, user) = match &self.wf {
            Some(w) => (w.agent.clone(), w.user.clone()),
            None => (String::new(), String::new()),
        };
        let len = self.spec.content.sample(&mut self.rng);
        let content = self.text(kind, len);
        let with_meta = self.rng.chance(self.spec.metadata_ratio);
        let (node_type, role, payload) = match kind {
            Kind::User => ("message", Some(Role::User), Value::Null),
            Kind::Assistant | Kind::Root => ("message", Some(Role::Assistant), Value::Null),
            Kind::Action => ("action", Some(Role::Assistant), self.tool_call()),
            Kind::ToolResult => (
                "tool_result",
                Some(Role::Tool),
                json!({
                    "exit_code": if self.rng.chance(0.85) { 0 } else { 1 },
                    "duration_ms": self.rng.between(3, 90_000),
                }),
            ),
            Kind::Decision => ("decision", Some(Role::Assistant), Value::Null),
            Kind::Option => (
                "option",
                Some(Role::Assistant),
                json!({ "index": option_index.unwrap_or(0) }),
            ),
            Kind::Monitor => (
                "monitor",
                None,
                json!({
                    "watch": *self.rng.pick(&["tests", "cost", "latency", "errors", "diff_size"]),
                    "threshold": self.rng.between(1, 1_000),
                }),
            ),
            Kind::Other => (
                *self
                    .rng
                    .pick(&["thought", "plan", "summary", "observation"]),
                Some(Role::Assistant),
                Value::Null,
            ),
        };
        let metadata =
            if with_meta && matches!(kind, Kind::Assistant | Kind::Action | Kind::ToolResult) {
                obj([
                    ("model", json!(*self.rng.pick(&MODELS))),
                    ("input_tokens", json!(self.rng.between(200, 120_000))),
                    ("output_tokens", json!(self.rng.between(5, 4_000))),
                    ("latency_ms", json!(self.rng.between(150, 40_000))),
                ])
            } else {
                Map::new()
            };
        let (agent_id, user_id, actor) = match kind {
            Kind::User => (None, Some(user), "anonymous".to_owned()),
            Kind::Monitor => {
                let a = format!("{agent}-watch");
                (Some(a.clone()), None, a)
            }
            _ => (Some(agent.clone()), Some(user), agent),
        };
        let wf = self.wf_id();
        let (n, ev) = node_event(
            &mut self.tree,
            wf,
            parent,
            id,
            at,
            &actor,
            Draft {
                kind,
                node_type,
                role,
                content,
                payload,
                metadata,
                agent_id,
                user_id,
            },
        );
        self.queue.push_back(ev);
        n
    }

    fn tool_call(&mut self) -> Value {
        let tool = *self
            .rng
            .pick(&["bash", "read_file", "write_file", "grep", "http_get"]);
        let file = format!("src/{}/{}.rs", self.rng.pick(&WORDS), self.rng.pick(&WORDS));
        let args = match tool {
            "bash" => {
                json!({ "command": format!("cargo test -p {} {}", self.rng.pick(&WORDS), self.rng.pick(&WORDS)), "timeout_s": 600 })
            }
            "read_file" => json!({ "path": file, "start_line": self.rng.between(1, 400) }),
            "write_file" => json!({ "path": file, "bytes": self.rng.between(20, 9_000) }),
            "grep" => json!({ "pattern": self.rng.pick(&WORDS), "path": "src/" }),
            _ => json!({ "url": format!("https://docs.example.com/{}", self.rng.pick(&WORDS)) }),
        };
        json!({ "tool": tool, "args": args })
    }

    /// `len` bytes of text: a phrase fitting the kind, then corpus text.
    fn text(&mut self, kind: Kind, len: usize) -> String {
        let head = match kind {
            Kind::Root => "You are a careful software agent. ",
            Kind::User => *self.rng.pick(&[
                "Can you look into this? ",
                "That did not work. ",
                "Please try again with ",
                "Why does ",
                "Let's go with ",
            ]),
            Kind::Assistant => *self.rng.pick(&[
                "Looking at the output, ",
                "The failure comes from ",
                "Next I will check ",
                "Done. Summary: ",
            ]),
            Kind::Action => {
                *self
                    .rng
                    .pick(&["$ cargo test ", "$ rg -n ", "read_file ", "apply_patch "])
            }
            Kind::ToolResult => {
                *self
                    .rng
                    .pick(&["ok: ", "error[E0308]: ", "test result: ", "diff --git "])
            }
            Kind::Decision => "Which approach should we take? ",
            Kind::Option => "Option: ",
            Kind::Monitor => "watching: ",
            Kind::Other => "Thinking: ",
        };
        let mut s = String::with_capacity(len);
        s.push_str(&head[..head.len().min(len)]);
        while s.len() < len {
            let start = self.rng.index(self.corpus.len());
            let end = (start + (len - s.len())).min(self.corpus.len());
            // The corpus is ASCII, so any byte offset is a char boundary.
            s.push_str(self.corpus.get(start..end).unwrap_or(" "));
        }
        s.truncate(len);
        s
    }
}

const MODELS: [&str; 4] = [
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
    "gpt-4.1",
    "gpt-4.1-mini",
];

const WORDS: [&str; 64] = [
    "index",
    "parser",
    "token",
    "branch",
    "cursor",
    "writer",
    "reader",
    "config",
    "router",
    "handler",
    "session",
    "buffer",
    "schema",
    "ledger",
    "invoice",
    "payment",
    "retry",
    "backoff",
    "timeout",
    "stream",
    "codec",
    "frame",
    "header",
    "payload",
    "checksum",
    "snapshot",
    "compaction",
    "migration",
    "tenant",
    "account",
    "billing",
    "report",
    "export",
    "import",
    "queue",
    "worker",
    "scheduler",
    "cache",
    "eviction",
    "lease",
    "lock",
    "mutex",
    "channel",
    "future",
    "runtime",
    "pool",
    "connection",
    "query",
    "planner",
    "executor",
    "segment",
    "offset",
    "partition",
    "replica",
    "leader",
    "follower",
    "vote",
    "term",
    "commit",
    "rollback",
    "savepoint",
    "journal",
    "audit",
    "metric",
];

/// ASCII text of `len` bytes made of `WORDS` and punctuation.
fn corpus(rng: &mut GenRng, len: usize) -> String {
    let mut s = String::with_capacity(len + 16);
    while s.len() < len {
        let word: &&str = rng.pick(&WORDS);
        s.push_str(word);
        s.push_str(match rng.random_range(0..20u32) {
            0 => ". ",
            1 => ", ",
            2 => "\n",
            3 => "(); ",
            _ => " ",
        });
    }
    s.truncate(len);
    s
}

/// One workflow with a single branch: the root, then `depth` nodes each the child of
/// the previous one (user → assistant → action → tool_result → assistant → …), so the
/// last node is at depth `depth`. `depth + 1` events, O(1) memory; for path-to-root
/// benches (10, 1 000, 100 000).
pub fn deep_chain(seed: u64, depth: usize) -> DeepChain {
    let mut rng = GenRng::new(seed);
    let mut clock = Clock::at(SyntheticSpec::default().start);
    let at = clock.tick(&mut rng, 1, 1_000_000);
    let wf = v7_id(&mut rng, at);
    let root = v7_id(&mut rng, at);
    DeepChain {
        rng,
        clock,
        wf,
        root,
        prev: root,
        emitted: 0,
        depth,
    }
}

/// The iterator of [`deep_chain`].
pub struct DeepChain {
    rng: GenRng,
    clock: Clock,
    wf: Uuid,
    root: Uuid,
    prev: Uuid,
    emitted: usize,
    depth: usize,
}

impl Iterator for DeepChain {
    type Item = PortableEvent;

    fn next(&mut self) -> Option<PortableEvent> {
        if self.emitted > self.depth {
            return None;
        }
        let i = self.emitted;
        self.emitted += 1;
        if i == 0 {
            return Some(created_event(
                self.wf,
                self.root,
                self.clock.now(),
                "anonymous",
                format!(
                    "You are a long-running agent. This workflow is one chain of {} steps (deep_chain bench).",
                    self.depth
                ),
                obj([("bench", json!("deep_chain")), ("depth", json!(self.depth))]),
                Some("user-0000".to_owned()),
            ));
        }
        let at = self.clock.tick(&mut self.rng, 1, 3_000_000);
        let id = v7_id(&mut self.rng, at);
        let (kind, node_type, role, content, payload) = match (i - 1) % 4 {
            0 if i == 1 => (
                Kind::User,
                "message",
                Role::User,
                "Start the long task.".to_owned(),
                Value::Null,
            ),
            0 | 3 => (
                Kind::Assistant,
                "message",
                Role::Assistant,
                format!(
                    "Step {i}: looked at the last result; continuing with part {}.",
                    i / 4 + 1
                ),
                Value::Null,
            ),
            1 => (
                Kind::Action,
                "action",
                Role::Assistant,
                format!("$ ./step.sh {i}"),
                json!({ "tool": "bash", "args": { "command": format!("./step.sh {i}") } }),
            ),
            _ => (
                Kind::ToolResult,
                "tool_result",
                Role::Tool,
                format!("step {i} ok ({} items)", self.rng.between(1, 999)),
                json!({ "exit_code": 0 }),
            ),
        };
        let user = kind == Kind::User;
        let node = arbor_storage::Node {
            id,
            workflow_id: self.wf,
            parent_id: Some(self.prev),
            node_type: node_type.to_owned(),
            role: Some(role),
            content,
            payload,
            metadata: Map::new(),
            agent_id: (!user).then(|| "agent-000".to_owned()),
            user_id: Some("user-0000".to_owned()),
            branch_id: self.root,
            depth: u32::try_from(i).unwrap_or(u32::MAX),
            seq: 0,
            timestamp: at,
        };
        self.prev = id;
        Some(PortableEvent {
            id,
            workflow_id: self.wf,
            timestamp: at,
            actor: if user { "anonymous" } else { "agent-000" }.to_owned(),
            body: arbor_storage::EventBody::NodeCreated(node),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.depth + 1).saturating_sub(self.emitted);
        (left, Some(left))
    }
}
