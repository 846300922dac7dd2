//! The coding-agent sample: one realistic workflow of an agent fixing a bug in a Python
//! billing library, with a decision, forks and a test-watching monitor.
//!
//! Only integer arithmetic and `rand`'s integer sampling feed the output, so the
//! committed `data/sample-coding-agent.jsonl` is the same on every platform.

use rand::Rng;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use arbor_storage::{EdgeKind, PortableEvent, Role, Timestamp, WorkflowStatus};

use super::common::{
    created_event, edge_event, node_event, obj, status_event, v7_id, Clock, Draft, GenRng, Kind,
    Tree, N,
};
use super::sample_text as text;

const SEED: u64 = 0x00A2_B0C0_DE48_2001;
/// 2026-03-12T14:03:27.118204Z
const START: Timestamp = Timestamp(1_773_324_207_118_204);
const USER: &str = "mkovacs";
const CODER: &str = "coder-7";
const GUARD: &str = "test-guardian";
const MODEL: &str = "claude-sonnet-4-5";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Who {
    User,
    Coder,
    Guard,
}

struct Run {
    rng: GenRng,
    clock: Clock,
    tree: Tree,
    wf: Uuid,
    events: Vec<PortableEvent>,
    status: WorkflowStatus,
    /// Tokens of conversation so far, for believable usage metadata.
    context_tokens: u64,
}

impl Run {
    fn new() -> (Run, N) {
        let mut rng = GenRng::new(SEED);
        let clock = Clock::at(START);
        let wf = v7_id(&mut rng, START);
        let root_id = v7_id(&mut rng, START);
        let mut tree = Tree::default();
        let root = tree.reset(root_id);
        let metadata = obj([
            ("repo", json!("acme-fin/ledgerline")),
            ("issue", json!(482)),
            ("base_branch", json!("main")),
            (
                "sandbox",
                json!({"image": "py312-bookworm", "cpus": 2, "memory_mb": 4096}),
            ),
            ("agent", json!(CODER)),
            ("guardian", json!(GUARD)),
        ]);
        let created = created_event(
            wf,
            root_id,
            START,
            "anonymous",
            text::SYSTEM_PROMPT.to_owned(),
            metadata,
            Some(USER.to_owned()),
        );
        let run = Run {
            rng,
            clock,
            tree,
            wf,
            events: vec![created],
            status: WorkflowStatus::Running,
            context_tokens: (text::SYSTEM_PROMPT.len() / 4) as u64,
        };
        (run, root)
    }

    fn id(&self, n: N) -> Uuid {
        self.tree.id(n)
    }

    #[allow(clippy::too_many_arguments)]
    fn node(
        &mut self,
        parent: N,
        kind: Kind,
        node_type: &'static str,
        role: Option<Role>,
        who: Who,
        content: String,
        payload: Value,
        metadata: Map<String, Value>,
        gap_ms: (u64, u64),
    ) -> N {
        let at = self
            .clock
            .tick(&mut self.rng, gap_ms.0 * 1_000, gap_ms.1 * 1_000);
        let id = v7_id(&mut self.rng, at);
        self.context_tokens += (content.len() / 4) as u64 + 3;
        let (agent_id, user_id, actor) = match who {
            Who::User => (None, Some(USER.to_owned()), "anonymous"),
            Who::Coder => (Some(CODER.to_owned()), Some(USER.to_owned()), CODER),
            Who::Guard => (Some(GUARD.to_owned()), None, GUARD),
        };
        let (n, ev) = node_event(
            &mut self.tree,
            self.wf,
            parent,
            id,
            at,
            actor,
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
        self.events.push(ev);
        n
    }

    fn usage(&mut self, output_chars: usize, stop: &str) -> Map<String, Value> {
        let out = (output_chars / 4) as u64 + self.rng.between(8, 60);
        let latency = 400 + out * self.rng.between(9, 16);
        obj([
            ("model", json!(MODEL)),
            ("input_tokens", json!(self.context_tokens)),
            ("output_tokens", json!(out)),
            ("latency_ms", json!(latency)),
            ("stop_reason", json!(stop)),
        ])
    }

    fn user(&mut self, parent: N, content: &str) -> N {
        self.node(
            parent,
            Kind::User,
            "message",
            Some(Role::User),
            Who::User,
            content.to_owned(),
            Value::Null,
            Map::new(),
            (25_000, 170_000),
        )
    }

    fn say(&mut self, parent: N, content: &str) -> N {
        let meta = self.usage(content.len(), "end_turn");
        self.node(
            parent,
            Kind::Assistant,
            "message",
            Some(Role::Assistant),
            Who::Coder,
            content.to_owned(),
            Value::Null,
            meta,
            (2_500, 21_000),
        )
    }

    fn typed(&mut self, parent: N, node_type: &'static str, content: &str) -> N {
        let meta = self.usage(content.len(), "end_turn");
        self.node(
            parent,
            Kind::Other,
            node_type,
            Some(Role::Assistant),
            Who::Coder,
            content.to_owned(),
            Value::Null,
            meta,
            (3_000, 16_000),
        )
    }

    fn call_id(&mut self) -> String {
        const B62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut s = String::from("toolu_01");
        for _ in 0..22 {
            s.push(char::from(B62[self.rng.index(B62.len())]));
        }
        s
    }

    /// A tool call and its result; returns the result node.
    #[allow(clippy::too_many_arguments)]
    fn tool(
        &mut self,
        parent: N,
        tool: &str,
        args: Value,
        shown: String,
        output: String,
        exit: i32,
        ms: u64,
    ) -> N {
        let call_id = self.call_id();
        let meta = self.usage(shown.len() + 40, "tool_use");
        let action = self.node(
            parent,
            Kind::Action,
            "action",
            Some(Role::Assistant),
            Who::Coder,
            shown,
            json!({ "tool": tool, "args": args, "call_id": call_id }),
            meta,
            (1_200, 7_500),
        );
        let mut result_meta = Map::new();
        if output.len() > 4_000 {
            result_meta.insert("bytes".into(), json!(output.len()));
            result_meta.insert("lines".into(), json!(output.lines().count()));
        }
        self.node(
            action,
            Kind::ToolResult,
            "tool_result",
            Some(Role::Tool),
            Who::Coder,
            output,
            json!({ "call_id": call_id, "exit_code": exit, "duration_ms": ms }),
            result_meta,
            (ms.max(40), ms.max(40) + 250),
        )
    }

    fn bash(&mut self, parent: N, cmd: &str, output: String, exit: i32, ms: u64) -> N {
        self.tool(
            parent,
            "bash",
            json!({ "command": cmd, "timeout_s": 600 }),
            format!("$ {cmd}"),
            output,
            exit,
            ms,
        )
    }

    fn read(&mut self, parent: N, path: &str, from: usize, to: usize, body: &str) -> N {
        let ms = self.rng.between(9, 60);
        self.tool(
            parent,
            "read_file",
            json!({ "path": path, "start_line": from, "end_line": to }),
            format!("read_file {path}:{from}-{to}"),
            numbered(body, from),
            0,
            ms,
        )
    }

    fn grep(&mut self, parent: N, pattern: &str, path: &str, hits: String) -> N {
        let ms = self.rng.between(30, 190);
        self.tool(
            parent,
            "grep",
            json!({ "pattern": pattern, "path": path }),
            format!("grep -n {pattern:?} {path}"),
            hits,
            0,
            ms,
        )
    }

    fn edit(&mut self, parent: N, path: &str, old: &str, new: &str, line: usize) -> N {
        let ms = self.rng.between(12, 80);
        let out = format!(
            "Edited {path}: replaced 1 occurrence ({} lines -> {} lines). Result around line {line}:\n{}",
            old.lines().count(),
            new.lines().count(),
            numbered(new, line)
        );
        self.tool(
            parent,
            "edit_file",
            json!({ "path": path, "old_string": old, "new_string": new }),
            format!("edit_file {path}"),
            out,
            0,
            ms,
        )
    }

    fn decision(&mut self, parent: N, content: &str) -> N {
        let meta = self.usage(content.len(), "end_turn");
        self.node(
            parent,
            Kind::Decision,
            "decision",
            Some(Role::Assistant),
            Who::Coder,
            content.to_owned(),
            json!({ "question": "How should we fix add_months?", "asked": USER }),
            meta,
            (4_000, 20_000),
        )
    }

    fn option(&mut self, decision: N, content: &str, payload: Value) -> N {
        self.node(
            decision,
            Kind::Option,
            "option",
            Some(Role::Assistant),
            Who::Coder,
            content.to_owned(),
            payload,
            Map::new(),
            (150, 900),
        )
    }

    fn choose(&mut self, decision: N, option: N) {
        let at = self.clock.tick(&mut self.rng, 20_000_000, 90_000_000);
        let ev = edge_event(
            self.wf,
            EdgeKind::ChosenOption,
            self.id(decision),
            self.id(option),
            at,
            "anonymous",
        );
        self.events.push(ev);
    }

    fn monitor(&mut self, parent: N, content: String, payload: Value, target: N) -> N {
        let m = self.node(
            parent,
            Kind::Monitor,
            "monitor",
            None,
            Who::Guard,
            content,
            payload,
            obj([
                ("rule", json!("pytest-and-diff")),
                ("version", json!("1.4.2")),
            ]),
            (300, 2_500),
        );
        let at = self.clock.tick(&mut self.rng, 5_000, 60_000);
        let ev = edge_event(
            self.wf,
            EdgeKind::Monitors,
            self.id(m),
            self.id(target),
            at,
            GUARD,
        );
        self.events.push(ev);
        m
    }

    fn set_status(&mut self, to: WorkflowStatus, actor: &str) {
        let at = self.clock.tick(&mut self.rng, 200_000, 3_000_000);
        let id = v7_id(&mut self.rng, at);
        let ev = status_event(self.wf, id, at, actor, self.status, to);
        self.status = to;
        self.events.push(ev);
    }
}

/// `cat -n`-style numbering starting at `from`.
fn numbered(body: &str, from: usize) -> String {
    let mut s = String::with_capacity(body.len() + body.lines().count() * 8);
    for (i, line) in body.lines().enumerate() {
        s.push_str(&format!("{:>6}\t{line}\n", from + i));
    }
    s
}

fn banner(inner: &str, fill: char) -> String {
    let inner = format!(" {inner} ");
    let total = 80usize.saturating_sub(inner.chars().count());
    let left = total / 2;
    let right = total - left;
    format!(
        "{}{inner}{}",
        fill.to_string().repeat(left),
        fill.to_string().repeat(right)
    )
}

fn seconds(ms: u64) -> String {
    format!("{}.{:02}s", ms / 1000, (ms % 1000) / 10)
}

const PYTEST_HEAD: &str = "platform linux -- Python 3.12.8, pytest-8.3.4, pluggy-1.5.0\nrootdir: /workspace/ledgerline\nconfigfile: pyproject.toml\nplugins: xdist-3.6.1, hypothesis-6.122.3, cov-6.0.0, freezegun-0.4.2\n";

/// One test file in a pytest run: path and outcome marks (`.`, `F`, `s`).
struct PyFile {
    path: String,
    marks: String,
}

fn pyfile(path: &str, passed: usize, failed_at: &[usize]) -> PyFile {
    let total = passed + failed_at.len();
    let marks = (0..total)
        .map(|i| if failed_at.contains(&i) { 'F' } else { '.' })
        .collect();
    PyFile {
        path: path.to_owned(),
        marks,
    }
}

/// A serial pytest run's output.
fn pytest(files: &[PyFile], failures: &str, ms: u64) -> String {
    let total: usize = files.iter().map(|f| f.marks.len()).sum();
    let failed: usize = files.iter().map(|f| f.marks.matches('F').count()).sum();
    let mut s = banner("test session starts", '=');
    s.push('\n');
    s.push_str(PYTEST_HEAD);
    s.push_str(&format!("collected {total} items\n\n"));
    let mut done = 0;
    for f in files {
        done += f.marks.len();
        let line = format!("{} {}", f.path, f.marks);
        s.push_str(&format!("{line:<73} [{:>3}%]\n", done * 100 / total.max(1)));
    }
    if failed > 0 {
        s.push('\n');
        s.push_str(&banner("FAILURES", '='));
        s.push('\n');
        s.push_str(failures);
        s.push_str(&banner("short test summary info", '='));
        s.push('\n');
        for line in failures.lines().filter(|l| l.starts_with("FAILED ")) {
            s.push_str(line);
            s.push('\n');
        }
        s.push_str(&banner(
            &format!(
                "{failed} failed, {} passed in {}",
                total - failed,
                seconds(ms)
            ),
            '=',
        ));
    } else {
        s.push('\n');
        s.push_str(&banner(&format!("{total} passed in {}", seconds(ms)), '='));
    }
    s.push('\n');
    s
}

/// A `pytest -n auto` run over the whole suite.
fn full_suite(
    rng: &mut GenRng,
    items: usize,
    skipped: usize,
    failure: Option<&str>,
    ms: u64,
) -> String {
    let mut marks: Vec<char> = vec!['.'; items];
    for _ in 0..skipped {
        let i = rng.index(items);
        marks[i] = 's';
    }
    if failure.is_some() {
        let i = items / 2 + rng.index(items / 3);
        marks[i] = 'F';
    }
    let mut s = banner("test session starts", '=');
    s.push('\n');
    s.push_str(PYTEST_HEAD);
    s.push_str(&format!(
        "created: 2/2 workers\n2 workers [{items} items]\n\n"
    ));
    for (i, chunk) in marks.chunks(72).enumerate() {
        let line: String = chunk.iter().collect();
        let done = (i * 72 + chunk.len()) * 100 / items.max(1);
        s.push_str(&format!("{line:<72} [{done:>3}%]\n"));
    }
    let skipped = marks.iter().filter(|c| **c == 's').count();
    match failure {
        Some(detail) => {
            s.push('\n');
            s.push_str(&banner("FAILURES", '='));
            s.push('\n');
            s.push_str(detail);
            s.push_str(&banner("short test summary info", '='));
            s.push('\n');
            for line in detail.lines().filter(|l| l.starts_with("FAILED ")) {
                s.push_str(line);
                s.push('\n');
            }
            s.push_str(&banner(
                &format!(
                    "1 failed, {} passed, {skipped} skipped in {}",
                    items - 1 - skipped,
                    seconds(ms)
                ),
                '=',
            ));
        }
        None => {
            s.push('\n');
            s.push_str(&banner(
                &format!(
                    "{} passed, {skipped} skipped in {}",
                    items - skipped,
                    seconds(ms)
                ),
                '=',
            ));
        }
    }
    s.push('\n');
    s
}

/// A caller of `add_months` that the agent audits.
struct CallSite {
    path: &'static str,
    line: usize,
    code: &'static str,
    verdict: &'static str,
    tests: Option<(&'static str, usize)>,
}

fn call_sites(rng: &mut GenRng) -> Vec<CallSite> {
    let mut at = |base: usize| base + rng.index(9);
    vec![
        CallSite {
            path: "ledgerline/reminders.py",
            line: at(30),
            code: "def reminder_dates(invoice: Invoice, policy: ReminderPolicy) -> list[date]:\n    dates = []\n    if policy.month_before:\n        dates.append(add_months(invoice.due_date, -1))\n    dates.extend(invoice.due_date - timedelta(days=d) for d in policy.days_before)\n    return sorted(d for d in dates if d >= invoice.issued)",
            verdict: "reminders.py: \"one month before due\" is add_months(due, -1). With the clamp a Mar 31 due date now reminds on Feb 28 instead of Mar 3, which is what the policy text promises. No code change; the negative-month tests cover it.",
            tests: Some(("tests/test_reminders.py", 19)),
        },
        CallSite {
            path: "ledgerline/reports/aging.py",
            line: at(18),
            code: "def bucket_bounds(as_of: date, buckets: int = 3) -> list[date]:\n    \"\"\"Lower bounds of the 0-1, 1-2, 2-3 month buckets, newest first.\"\"\"\n    return [add_months(as_of, -i) for i in range(1, buckets + 1)]",
            verdict: "aging.py is interesting: with the old rollover, bucket_bounds(Mar 31) started the 0-1 month bucket on Mar 3, so on the 31st of a month almost every open invoice fell into the 1-2 month bucket. That looks like the cause of #451 (\"aging report wrong at month end\"). The clamp fixes it; I'll add a regression test for as_of = 2025-03-31.",
            tests: Some(("tests/reports/test_aging.py", 23)),
        },
        CallSite {
            path: "ledgerline/reports/revenue.py",
            line: at(44),
            code: "def recognition_schedule(contract: Contract) -> list[RevenueLine]:\n    months = contract.term_months\n    monthly = (contract.amount / months).quantize(CENT)\n    lines = []\n    for i in range(months):\n        start = add_months(contract.start, i)\n        lines.append(RevenueLine(start, add_months(contract.start, i + 1), monthly))\n    lines[-1].amount += contract.amount - monthly * months\n    return lines",
            verdict: "revenue.py already computes every line from the contract start (i months), so it was never drifting; it only inherited the rollover. With the clamp a contract starting Jan 31 recognises Jan 31-Feb 28, Feb 28-Mar 31, … which is what finance expects. No change.",
            tests: Some(("tests/reports/test_revenue.py", 31)),
        },
        CallSite {
            path: "ledgerline/dunning.py",
            line: at(84),
            code: "    def next_attempt(self, last_attempt: date) -> date:\n        if self.policy.monthly:\n            return add_months(last_attempt, 1)\n        return add_business_days(last_attempt, self.policy.retry_days)",
            verdict: "dunning.py steps from the last attempt, not from an anchor, so a retry series that starts on the 31st moves to the 28th after February. That is deliberate here (retries are relative to the previous failure, see the docstring of DunningPolicy), so I'll leave it.",
            tests: None,
        },
        CallSite {
            path: "ledgerline/imports/quickbooks.py",
            line: at(198),
            code: "    if raw.get(\"DueDate\"):\n        due = date.fromisoformat(raw[\"DueDate\"])\n    elif m := NET_MONTHS.match(raw.get(\"SalesTermRef\", {}).get(\"name\", \"\")):\n        due = add_months(issued, int(m.group(1)))\n    else:\n        due = issued + timedelta(days=30)",
            verdict: "quickbooks.py only falls back to add_months when QuickBooks sends no DueDate; same semantics as PaymentTerms, fixed by the helper. No change.",
            tests: Some(("tests/imports/test_quickbooks.py", 14)),
        },
        CallSite {
            path: "ledgerline/trials.py",
            line: at(15),
            code: "def trial_end(started: date, plan: Plan) -> date:\n    if plan.trial_months:\n        return add_months(started, plan.trial_months)\n    return started + timedelta(days=plan.trial_days)",
            verdict: "trials.py: a trial that starts on Jan 31 with one free month now ends Feb 28 instead of Mar 3. Shorter by three days, but that's the correct calendar month; I'll mention it in the PR under behaviour changes.",
            tests: Some(("tests/test_trials.py", 8)),
        },
        CallSite {
            path: "ledgerline/cli.py",
            line: at(137),
            code: "@schedule.command(\"preview\")\n@click.argument(\"start\", type=DATE)\n@click.option(\"--months\", default=12)\ndef preview(start: date, months: int) -> None:\n    for i in range(months):\n        click.echo(add_months(start, i).isoformat())",
            verdict: "cli.py `schedule preview` prints add_months(start, i) for each i, computed from the start, so its output is now exactly the subscription schedule. No change.",
            tests: None,
        },
        CallSite {
            path: "ledgerline/reports/tax.py",
            line: at(61),
            code: "def quarter_bounds(d: date) -> tuple[date, date]:\n    start = date(d.year, 3 * ((d.month - 1) // 3) + 1, 1)\n    return start, add_months(start, 3)",
            verdict: "tax.py only ever passes the 1st of a month, where clamping and rollover agree. No change, no new risk.",
            tests: Some(("tests/reports/test_tax.py", 17)),
        },
        CallSite {
            path: "ledgerline/integrations/stripe_sync.py",
            line: at(152),
            code: "def expected_period_end(sub: Subscription, stripe_sub: StripeSubscription) -> date:\n    # Stripe keeps the billing_cycle_anchor day and clamps in short months.\n    start = date.fromtimestamp(stripe_sub.current_period_start, tz=UTC)\n    return add_months(start, sub.interval_months)",
            verdict: "stripe_sync.py compares our period end with Stripe's. The comment says Stripe clamps and keeps the anchor, which is now exactly our behaviour; before the fix this comparison must have produced mismatch warnings at every month end. It still steps from the current period start rather than from the anchor, so for a Jan 31 anchor it predicts Mar 28 after February. Switching it to sub.next_billing_date(start) makes it agree with Stripe.",
            tests: Some(("tests/integrations/test_stripe_sync.py", 27)),
        },
        CallSite {
            path: "ledgerline/api/schedules.py",
            line: at(33),
            code: "@router.get(\"/subscriptions/{sub_id}/schedule\")\ndef schedule(sub_id: str, count: int = 12, repo: Repo = Depends(repo)) -> list[date]:\n    sub = repo.subscription(sub_id)\n    return [sub.billing_date(n) for n in range(count)] if hasattr(sub, \"billing_date\") else _legacy(sub, count)",
            verdict: "api/schedules.py already feature-detects billing_date (someone started this refactor in #402 and stopped). With billing_date now on Subscription the legacy path is dead; I'll leave its removal for a follow-up to keep this PR focused, and note it.",
            tests: Some(("tests/api/test_schedules_api.py", 9)),
        },
        CallSite {
            path: "ledgerline/imports/xero.py",
            line: at(240),
            code: "def _due_from_terms(issued: date, terms: XeroTerms) -> date:\n    if terms.type == \"OFCURRENTMONTH\":\n        return date(issued.year, issued.month, min(terms.day, end_of_month(issued).day))\n    if terms.type == \"OFFOLLOWINGMONTH\":\n        following = add_months(issued.replace(day=1), 1)\n        return following.replace(day=min(terms.day, end_of_month(following).day))\n    return issued + timedelta(days=terms.day)",
            verdict: "xero.py already clamps by hand and calls add_months only on the 1st of a month, so it was correct before and is unchanged now. The manual clamping could now be simplified, but that's cosmetic; leaving it.",
            tests: Some(("tests/imports/test_xero.py", 21)),
        },
        CallSite {
            path: "ledgerline/contracts.py",
            line: at(97),
            code: "    def renewal_date(self) -> date:\n        \"\"\"The day the contract renews: start + term, then every term.\"\"\"\n        return add_months(self.start, self.term_months * (self.renewals + 1))",
            verdict: "contracts.py computes renewals from the start date (term × (renewals + 1)), so it's anchored already. A contract starting Feb 29, 2024 with a 12-month term now renews Feb 28, 2025 instead of Mar 1, 2025; that's the clamping rule doing what the contract text says (\"on the same day of the month or, if there is none, the last day\").",
            tests: Some(("tests/test_contracts.py", 16)),
        },
        CallSite {
            path: "ledgerline/notifications/digest.py",
            line: at(58),
            code: "def monthly_digest_window(now: date) -> tuple[date, date]:\n    end = now.replace(day=1)\n    return add_months(end, -1), end",
            verdict: "digest.py works on the 1st of the month only. Unaffected.",
            tests: None,
        },
    ]
}

/// The coding-agent sample workflow: an agent fixing issue #482 (month arithmetic at
/// month end) in a Python billing library, 283 events, 269 nodes on 6 branches:
/// - a decision between three fix strategies (A, B, C); the user chooses B while the
///   workflow is `waiting`, and a later two-option decision the agent settles itself;
/// - A's branch holds the agent's feasibility check, C's branch a later exploration of
///   the alternative at the user's request;
/// - a first implementation attempt that fails and is abandoned, and a second attempt
///   forked from the same test run (the branch the work continues on);
/// - a `test-guardian` agent on its own branch with 9 monitors, each MONITORS a node on
///   another branch (test runs, the diff, CI);
/// - status running → waiting → running → completed.
///
/// Deterministic: the same events on every call and every platform.
pub fn coding_agent_sample() -> Vec<PortableEvent> {
    let (mut r, root) = Run::new();
    let request = r.user(root, text::USER_REQUEST);

    let s = r.say(request, "I'll start by getting oriented in the repository: layout, the date helpers and how payment terms compute due dates. Then I'll reproduce the ticket's example with a failing test before changing anything.");
    // The guardian attaches itself on its own branch: a second child of the request.
    let g0 = r.monitor(
        request,
        "test-guardian attached to this run. Watching: pytest exit codes and failure counts, flaky-test list (tests/FLAKY.md), diff size budget (400 changed lines), pushes to protected branches.".to_owned(),
        json!({ "watch": ["pytest", "diff_size", "git_push"], "state": "armed" }),
        request,
    );

    let ms = r.rng.between(40, 120);
    let log = [
        "Bump version to 3.14.0",
        "Add Stripe webhook retries (#476)",
        "Aging report: sort by customer name (#471)",
        "Fix rounding in prorated credits (#468)",
        "CI: cache uv downloads",
    ]
    .iter()
    .map(|subject| format!("{} {subject}\n", hexid(&mut r.rng)))
    .collect::<String>();
    let s = r.bash(
        s,
        "git status -sb && git log --oneline -5",
        format!("## main...origin/main\n{log}"),
        0,
        ms,
    );
    let ms = r.rng.between(2_500, 9_000);
    let resolved = r.rng.between(3, 40);
    let s = r.bash(s, "uv sync --frozen", format!("Resolved 63 packages in {}ms\nInstalled 58 packages in {}ms\n + freezegun==1.5.1\n + hypothesis==6.122.3\n + ledgerline==3.14.0 (from file:///workspace/ledgerline)\n + mypy==1.14.1\n + pytest==8.3.4\n + pytest-cov==6.0.0\n + pytest-xdist==3.6.1\n + python-dateutil==2.9.0.post0\n + ruff==0.8.6\n ...\n", resolved, ms / 3), 0, ms);
    let ms = r.rng.between(30, 90);
    let s = r.bash(s, "ls ledgerline ledgerline/reports tests", "ledgerline:\n__init__.py\napi\ncli.py\nclock.py\ndates.py\ndunning.py\nimports\ninvoices.py\nmoney.py\nreminders.py\nreports\nsubscriptions.py\nterms.py\ntrials.py\n\nledgerline/reports:\n__init__.py\naging.py\nrevenue.py\ntax.py\n\ntests:\nFLAKY.md\n__init__.py\napi\nconftest.py\nimports\nintegrations\nreports\ntest_dates.py\ntest_dunning.py\ntest_invoices.py\ntest_money.py\ntest_reminders.py\ntest_subscriptions.py\ntest_terms.py\ntest_trials.py\n".to_owned(), 0, ms);
    let ms = r.rng.between(20, 60);
    let s = r.bash(s, "grep -n -A6 '^## Payment terms' README.md", "142:## Payment terms\n143-\n144-Terms are set per customer (`Customer.terms`) and can be overridden per invoice.\n145-`NET30`/`NET45` add calendar days; `NET1M`/`NET2M` mean \"due one (two) calendar\n146-month(s) after issue\"; the `-EOM` variants move the due date to the end of that\n147-month. Due dates are computed once, when the invoice is finalized, and stored.\n148-\n".to_owned(), 0, ms);
    let inv_line = 112 + r.rng.index(20);
    let s = r.read(s, "ledgerline/invoices.py", inv_line, inv_line + 9, "    def finalize(self, on: date) -> None:\n        if self.status is not InvoiceStatus.DRAFT:\n            raise InvoiceStateError(self.id, self.status, \"finalize\")\n        self.issued = on\n        self.due_date = self.terms.due_date(on)\n        self.number = self.numbering.next(on.year)\n        self.status = InvoiceStatus.OPEN\n        self.events.append(InvoiceFinalized(self.id, on, self.due_date))\n\n        log.info(\"invoice finalized\", invoice=self.id, due=self.due_date.isoformat())");
    let s = r.say(s, "Invoice.finalize computes the due date once from the customer's terms and stores it, so a fix changes new invoices only; nothing recomputes old ones. Now the terms themselves.");
    let s = r.read(
        s,
        "ledgerline/terms.py",
        1,
        text::TERMS_PY.lines().count(),
        text::TERMS_PY,
    );
    let s = r.say(s, "PaymentTerms.due_date adds net_days, then net_months via add_months, then optionally snaps to the end of the month. For NET1M and an invoice issued on 2025-01-31 that is add_months(2025-01-31, 1). Let me look at add_months.");
    let s = r.read(
        s,
        "ledgerline/dates.py",
        1,
        text::DATES_PY.lines().count(),
        text::DATES_PY,
    );
    let s = r.say(s, "Found it, I think: when the day doesn't exist in the target month, add_months catches the ValueError and rolls the overflow into the following month. Jan 31 + 1 month -> 'Feb 31' -> Feb 1 + 30 days = Mar 3. That matches the ticket exactly (and Mar 2 in 2024, a leap year). Let me confirm in the interpreter.");
    let ms = r.rng.between(180, 420);
    let repl = r.bash(s, "python -c 'from datetime import date; from ledgerline.terms import NET_1M, NET_2M; print(NET_1M.due_date(date(2025,1,31)), NET_1M.due_date(date(2024,1,31)), NET_2M.due_date(date(2024,12,31)))'", "2025-03-03 2024-03-02 2025-03-03\n".to_owned(), 0, ms);
    let s = r.say(repl, "Confirmed: 2025-03-03 and 2024-03-02 as in the ticket, and NET2M from Dec 31 lands on Mar 3 as well (Feb 31 again). Before fixing, let me see whether the current behaviour is intentional: there may be a test or a commit that explains it.");
    let ms = r.rng.between(20, 70);
    let s = r.bash(s, "grep -n 'rolls\\|overflow\\|add_months' tests/test_dates.py", "12:from ledgerline.dates import add_business_days, add_months, end_of_month\n31:def test_add_months_simple():\n38:def test_add_months_across_year():\n44:def test_add_months_overflow_rolls_into_next_month():\n45:    # Jan 31 + 1 month does not exist; we roll over (see #213).\n46:    assert add_months(date(2023, 1, 31), 1) == date(2023, 3, 3)\n".to_owned(), 0, ms);
    let blame_hash = hexid(&mut r.rng);
    let ms = r.rng.between(60, 200);
    let s = r.bash(s, "git log -S'carry the overflow' --format='%h %ad %an%n    %s' --date=short -- ledgerline/dates.py", format!("{blame_hash} 2022-06-14 Tomasz Wrona\n    Handle invalid day in add_months (#213)\n"), 0, ms);
    let ms = r.rng.between(900, 2_400);
    let s = r.bash(s, "gh issue view 213 --json title,body -q '.title + \"\\n\\n\" + .body'", "add_months crashes for Jan 31\n\nadd_months(date(2022, 1, 31), 1) raises ValueError: day is out of range for month. This takes down the invoice PDF job for every invoice issued on the 31st. Quick fix needed today.\n".to_owned(), 0, ms);
    let ms = r.rng.between(500, 1_300);
    let s = r.bash(s, "pytest tests/test_dates.py tests/test_terms.py -q -p no:randomly --cov=ledgerline.dates --cov=ledgerline.terms --cov-report=term-missing | tail -8", format!("---------- coverage: platform linux, python 3.12.8-final-0 -----------\nName                   Stmts   Miss  Cover   Missing\n----------------------------------------------------\nledgerline/dates.py       24      0   100%\nledgerline/terms.py       21      0   100%\n----------------------------------------------------\nTOTAL                     45      0   100%\n25 passed in {}\n", seconds(ms)), 0, ms);
    let s = r.say(s, "Full line coverage, and yet the bug got through: the suite covers the rollover branch with exactly one example and asserts the buggy result. Coverage is not the problem, the expectation is.");
    let s = r.say(s, "So the rollover was a hot fix for a crash (#213), not a deliberate billing rule, and the test pins the side effect rather than a requirement. Nothing in the docs asks for rollover; the README's terms section says \"NET1M: due one calendar month after issue\".");

    // Reproduce with a failing test.
    let s = r.edit(s, "tests/test_dates.py", "def test_add_months_across_year():", "@pytest.mark.parametrize(\n    (\"start\", \"months\", \"expected\"),\n    [\n        (date(2025, 1, 31), 1, date(2025, 2, 28)),\n        (date(2024, 1, 31), 1, date(2024, 2, 29)),\n        (date(2024, 12, 31), 2, date(2025, 2, 28)),\n    ],\n)\ndef test_add_months_clamps_to_month_end(start: date, months: int, expected: date) -> None:\n    assert add_months(start, months) == expected\n\n\ndef test_add_months_across_year():", 38);
    let ms = r.rng.between(260, 520);
    let failures = "_______________ test_add_months_clamps_to_month_end[start0-1-expected0] _______________\n\n    def test_add_months_clamps_to_month_end(start: date, months: int, expected: date) -> None:\n>       assert add_months(start, months) == expected\nE       AssertionError: assert datetime.date(2025, 3, 3) == datetime.date(2025, 2, 28)\nE        +  where datetime.date(2025, 3, 3) = add_months(datetime.date(2025, 1, 31), 1)\n\ntests/test_dates.py:47: AssertionError\n_______________ test_add_months_clamps_to_month_end[start1-1-expected1] _______________\n\nE       AssertionError: assert datetime.date(2024, 3, 2) == datetime.date(2024, 2, 29)\n\ntests/test_dates.py:47: AssertionError\n_______________ test_add_months_clamps_to_month_end[start2-2-expected2] _______________\n\nE       AssertionError: assert datetime.date(2025, 3, 3) == datetime.date(2025, 2, 28)\n\ntests/test_dates.py:47: AssertionError\nFAILED tests/test_dates.py::test_add_months_clamps_to_month_end[start0-1-expected0] - AssertionError: assert datetime.date(2025, 3, 3) == datetime.date(2025, 2, 28)\nFAILED tests/test_dates.py::test_add_months_clamps_to_month_end[start1-1-expected1] - AssertionError: assert datetime.date(2024, 3, 2) == datetime.date(2024, 2, 29)\nFAILED tests/test_dates.py::test_add_months_clamps_to_month_end[start2-2-expected2] - AssertionError: assert datetime.date(2025, 3, 3) == datetime.date(2025, 2, 28)\n";
    let out = pytest(
        &[pyfile("tests/test_dates.py", 14, &[3, 4, 5])],
        failures,
        ms,
    );
    let repro = r.bash(
        s,
        "pytest tests/test_dates.py -q -p no:randomly",
        out,
        1,
        ms,
    );
    let g1 = r.monitor(
        g0,
        "Red, as intended: reproduction test added, tests/test_dates.py 3 failed / 14 passed. Main branch unchanged so far.".to_owned(),
        json!({ "check": "pytest", "state": "red", "failed": 3, "expected": true }),
        repro,
    );

    // Who else depends on add_months?
    let sites = call_sites(&mut r.rng);
    let s = r.say(repro, "The test fails for the right reason. Before picking a fix I want to know who else calls add_months, because changing it changes all of them.");
    let mut hits = String::new();
    hits.push_str(&format!(
        "ledgerline/terms.py:{}:            due = add_months(due, self.net_months)\n",
        25 + r.rng.index(4)
    ));
    let sub_line = 58 + r.rng.index(5);
    hits.push_str(&format!("ledgerline/subscriptions.py:{sub_line}:            current = add_months(current, self.interval_months)\n"));
    hits.push_str(&format!("ledgerline/subscriptions.py:{}:        return billing_date, add_months(billing_date, self.interval_months)\n", sub_line + 5));
    for site in &sites {
        let first = site
            .code
            .lines()
            .find(|l| l.contains("add_months("))
            .unwrap_or("add_months(...)")
            .trim_start();
        let offset = site
            .code
            .lines()
            .position(|l| l.contains("add_months("))
            .unwrap_or(0);
        hits.push_str(&format!(
            "{}:{}:        {first}\n",
            site.path,
            site.line + offset
        ));
    }
    hits.push_str(
        "tests/test_dates.py:46:    assert add_months(date(2023, 1, 31), 1) == date(2023, 3, 3)\n",
    );
    let s = r.grep(s, "add_months\\(", "ledgerline", hits);
    let sub_from = sub_line - 16;
    let s = r.read(
        s,
        "ledgerline/subscriptions.py",
        sub_from,
        sub_from + text::SUBSCRIPTIONS_HEAD.lines().count() - 1,
        text::SUBSCRIPTIONS_HEAD,
    );
    let s = r.say(s, "Subscriptions are the other big consumer, and they have a second problem: next_billing_date steps from one billing date to the next, so whatever add_months does at month end compounds. With the current rollover a subscription started on Jan 31 bills Mar 3, Apr 3, May 3…; with a naive clamp it would bill Feb 28, Mar 28, Apr 28… Neither is right: a customer who signed on the 31st expects the last day of short months and the 31st otherwise.");
    let ms = r.rng.between(250, 600);
    let s = r.bash(s, "python -c 'from datetime import date; from ledgerline.subscriptions import Subscription; from tests.factories import plan; s = Subscription(\"sub_1\", \"cus_1\", plan(), date(2025,1,31)); d = s.started\nfor _ in range(4): d = s.next_billing_date(d); print(d)'", "2025-03-03\n2025-04-03\n2025-05-03\n2025-06-03\n".to_owned(), 0, ms);
    let plan = r.typed(s, "plan", "Findings so far:\n- Root cause: add_months rolls a non-existent day over into the next month (hot fix from #213, 2022).\n- Affected: payment terms (NET1M, NET2M, EOM variants), subscription billing dates and periods, reminders, aging buckets, revenue schedules, trials, QuickBooks import fallback, CLI preview.\n- Subscriptions additionally compound the error because they step from date to date.\n\nThere is more than one reasonable fix, with different blast radius, so I'll lay them out and let you choose.");

    // The decision.
    let d = r.decision(plan, "How should we fix the month-end arithmetic? Three options, from the biggest dependency to the smallest diff:");
    let opt_a = r.option(d, "A. Replace the hand-rolled arithmetic with dateutil.relativedelta(months=n), which clamps to the month end. Least code of our own, well-tested semantics. But python-dateutil becomes a runtime dependency (today it's only pulled in by freezegun in the dev group), which needs the dependency review from CONTRIBUTING §4.2. Subscriptions would still need anchoring.", json!({ "strategy": "dependency", "files_touched": 3, "new_dependency": "python-dateutil~=2.9", "risk": "medium" }));
    let opt_b = r.option(d, "B. Fix add_months itself to clamp to the last day of the target month (calendar.monthrange), and make Subscription compute every billing date from its anchor (start + n × interval) so the 31st doesn't drift. Every caller gets the fix; two modules plus tests change. Behaviour change: dates on the 29th-31st move earlier, which is the contractual date.", json!({ "strategy": "fix-helper-and-anchor", "files_touched": 4, "new_dependency": null, "risk": "low" }));
    let opt_c = r.option(d, "C. Leave add_months alone and special-case PaymentTerms.due_date (compute month-based terms with end-of-month clamping locally). Smallest diff and only invoices change, but subscriptions, reminders, aging buckets and revenue schedules keep the rollover bug.", json!({ "strategy": "terms-only", "files_touched": 2, "new_dependency": null, "risk": "low-now, debt-later" }));

    // Quick feasibility check of A on its own branch.
    let s = r.say(
        opt_a,
        "Checking how heavy option A would be before asking you.",
    );
    let ms = r.rng.between(300, 900);
    let s = r.bash(s, "pip show python-dateutil | head -3 && grep -n dateutil pyproject.toml uv.lock | head", "Name: python-dateutil\nVersion: 2.9.0.post0\nSummary: Extensions to the standard Python datetime module\npyproject.toml:58:    \"freezegun>=1.5\",  # pulls python-dateutil\nuv.lock:412:name = \"python-dateutil\"\nuv.lock:413:version = \"2.9.0.post0\"\n".to_owned(), 0, ms);
    let s = r.read(
        s,
        "CONTRIBUTING.md",
        88,
        88 + text::CONTRIBUTING_DEPS.lines().count() - 1,
        text::CONTRIBUTING_DEPS,
    );
    let ms = r.rng.between(200, 500);
    let s = r.bash(s, "python -c 'from datetime import date; from dateutil.relativedelta import relativedelta as rd; print(date(2025,1,31) + rd(months=1), date(2024,1,31) + rd(months=1), date(2025,3,31) + rd(months=-1))'", "2025-02-28 2024-02-29 2025-02-28\n".to_owned(), 0, ms);
    let a_note = r.say(s, "A is feasible technically (2.9.0 is already in the lock file through freezegun), but it would be a new runtime dependency: two maintainer sign-offs plus a SEC ticket, about a week. It also doesn't remove the need to anchor subscriptions.");
    let ask = r.say(a_note, "Summary: I recommend B. It fixes the root cause for every caller without a new dependency, and anchoring subscriptions is needed in A as well. C is the smallest diff but leaves four other features computing wrong dates. Which one do you want?");
    r.set_status(WorkflowStatus::Waiting, CODER);

    // The user chooses B.
    r.choose(d, opt_b);
    r.set_status(WorkflowStatus::Running, "anonymous");
    let go = r.user(opt_b, "B. Keep the subscription anchoring in the same PR: from the customer's point of view it's the same bug. And please check #451 (aging report weird at month end), might be related.");
    let s = r.typed(go, "plan", "Plan for option B:\n1. Branch fix/482-add-months-clamp.\n2. add_months: clamp the day to the target month's length; doctests for Jan 31 and negative offsets.\n3. Replace the test that pins the rollover (#213) with clamping cases.\n4. Subscription: compute billing dates from the anchor; tests for 29th/30th/31st anchors.\n5. Audit every other caller (reminders, aging, revenue, dunning, QuickBooks import, trials, CLI); check #451.\n6. Property test with Hypothesis.\n7. make check; CHANGELOG; draft PR.");
    let s = r.read(s, "tests/test_subscriptions.py", 60, 70, "def test_next_billing_date_monthly(sub_factory: SubFactory) -> None:\n    sub = sub_factory(started=date(2025, 1, 15))\n    assert sub.next_billing_date(date(2025, 1, 15)) == date(2025, 2, 15)\n    assert sub.next_billing_date(date(2025, 2, 14)) == date(2025, 2, 15)\n    assert sub.next_billing_date(date(2025, 2, 15)) == date(2025, 3, 15)\n\n\ndef test_next_billing_date_with_trial(sub_factory: SubFactory) -> None:\n    sub = sub_factory(started=date(2025, 1, 15), trial_days=14)\n    assert sub.next_billing_date(date(2025, 1, 15)) == date(2025, 1, 29)\n    assert sub.next_billing_date(date(2025, 1, 29)) == date(2025, 2, 28)");
    let s = r.say(s, "The existing subscription tests all start mid-month (the 15th), which is why nobody noticed the drift. The trial case is worth keeping an eye on: a trial ending Jan 29 bills Feb 28, then Mar 29 with anchoring.");
    let ms = r.rng.between(40, 110);
    let s = r.bash(
        s,
        "git switch -c fix/482-add-months-clamp",
        "Switched to a new branch 'fix/482-add-months-clamp'\n".to_owned(),
        0,
        ms,
    );
    let s = r.edit(s, "ledgerline/dates.py", "    try:\n        return d.replace(year=year, month=month)\n    except ValueError:\n        # The day does not exist in the target month (31 -> April):\n        # carry the overflow into the following month.\n        return date(year, month, 1) + timedelta(days=d.day - 1)", "    last_day = calendar.monthrange(year, month)[1]\n    return date(year, month, min(d.day, last_day))", 31);
    let s = r.edit(s, "ledgerline/dates.py", "    >>> add_months(date(2024, 1, 15), 1)\n    datetime.date(2024, 2, 15)\n    \"\"\"", "    When the day does not exist in the target month, the result is clamped to\n    that month's last day (the convention of ISO 8601 durations, dateutil and\n    most ERPs).\n\n    >>> add_months(date(2024, 1, 15), 1)\n    datetime.date(2024, 2, 15)\n    >>> add_months(date(2025, 1, 31), 1)\n    datetime.date(2025, 2, 28)\n    >>> add_months(date(2024, 3, 31), -1)\n    datetime.date(2024, 2, 29)\n    \"\"\"", 22);
    let ms = r.rng.between(280, 560);
    let failures = "_______________ test_add_months_overflow_rolls_into_next_month _______________\n\n    def test_add_months_overflow_rolls_into_next_month():\n        # Jan 31 + 1 month does not exist; we roll over (see #213).\n>       assert add_months(date(2023, 1, 31), 1) == date(2023, 3, 3)\nE       AssertionError: assert datetime.date(2023, 2, 28) == datetime.date(2023, 3, 3)\n\ntests/test_dates.py:57: AssertionError\nFAILED tests/test_dates.py::test_add_months_overflow_rolls_into_next_month - AssertionError: assert datetime.date(2023, 2, 28) == datetime.date(2023, 3, 3)\n";
    let out = pytest(
        &[
            pyfile("tests/test_dates.py", 16, &[9]),
            pyfile("ledgerline/dates.py", 1, &[]),
        ],
        failures,
        ms,
    );
    let s = r.bash(
        s,
        "pytest tests/test_dates.py --doctest-modules ledgerline/dates.py -q -p no:randomly",
        out,
        1,
        ms,
    );
    let s = r.say(s, "The three new cases and the doctests pass. The one failure is the old test that asserted the rollover; it encoded the bug from #213, so I'm replacing it with the clamping expectation rather than keeping both.");
    let s = r.edit(s, "tests/test_dates.py", "def test_add_months_overflow_rolls_into_next_month():\n    # Jan 31 + 1 month does not exist; we roll over (see #213).\n    assert add_months(date(2023, 1, 31), 1) == date(2023, 3, 3)", "def test_add_months_never_raises_for_short_months():\n    # #213: Jan 31 + 1 month used to raise; it now clamps (#482).\n    assert add_months(date(2023, 1, 31), 1) == date(2023, 2, 28)\n    assert add_months(date(2023, 3, 31), 1) == date(2023, 4, 30)", 55);
    let ms = r.rng.between(260, 500);
    let out = pytest(
        &[
            pyfile("tests/test_dates.py", 17, &[]),
            pyfile("ledgerline/dates.py", 1, &[]),
        ],
        "",
        ms,
    );
    let s = r.bash(
        s,
        "pytest tests/test_dates.py --doctest-modules ledgerline/dates.py -q -p no:randomly",
        out,
        0,
        ms,
    );
    let s = r.say(s, "dates.py is green. Now subscriptions: first tests that describe what a customer who signs on the 29th, 30th or 31st should get.");
    let s = r.edit(s, "tests/test_subscriptions.py", "def test_next_billing_date_monthly(", "@pytest.mark.parametrize(\n    (\"started\", \"expected\"),\n    [\n        (date(2025, 1, 31), [date(2025, 2, 28), date(2025, 3, 31), date(2025, 4, 30), date(2025, 5, 31)]),\n        (date(2024, 1, 30), [date(2024, 2, 29), date(2024, 3, 30), date(2024, 4, 30), date(2024, 5, 30)]),\n        (date(2025, 1, 29), [date(2025, 2, 28), date(2025, 3, 29), date(2025, 4, 29), date(2025, 5, 29)]),\n    ],\n)\ndef test_billing_dates_keep_the_anchor_day(started: date, expected: list[date]) -> None:\n    sub = Subscription(\"sub_1\", \"cus_1\", plan(), started)\n    got, d = [], started\n    for _ in expected:\n        d = sub.next_billing_date(d)\n        got.append(d)\n    assert got == expected\n\n\ndef test_next_billing_date_monthly(", 71);
    let ms = r.rng.between(400, 900);
    let failures = "_____________ test_billing_dates_keep_the_anchor_day[started0-expected0] _____________\n\n>       assert got == expected\nE       AssertionError: assert [datetime.date(2025, 2, 28), datetime.date(2025, 3, 28), datetime.date(2025, 4, 28), datetime.date(2025, 5, 28)] == [datetime.date(2025, 2, 28), datetime.date(2025, 3, 31), datetime.date(2025, 4, 30), datetime.date(2025, 5, 31)]\nE         At index 1 diff: datetime.date(2025, 3, 28) != datetime.date(2025, 3, 31)\n\ntests/test_subscriptions.py:86: AssertionError\n_____________ test_billing_dates_keep_the_anchor_day[started1-expected1] _____________\n\nE         At index 1 diff: datetime.date(2024, 3, 29) != datetime.date(2024, 3, 30)\n\ntests/test_subscriptions.py:86: AssertionError\nFAILED tests/test_subscriptions.py::test_billing_dates_keep_the_anchor_day[started0-expected0] - AssertionError: assert [datetime.date(2025, 2, 28), datetime.date(2025, 3, 28), ...\nFAILED tests/test_subscriptions.py::test_billing_dates_keep_the_anchor_day[started1-expected1] - AssertionError: assert [datetime.date(2024, 2, 29), datetime.date(2024, 3, 29), ...\n";
    let sub_tests = 26 + r.rng.index(6);
    let out = pytest(
        &[pyfile("tests/test_subscriptions.py", sub_tests, &[4, 5])],
        failures,
        ms,
    );
    let drift = r.bash(
        s,
        "pytest tests/test_subscriptions.py -q -p no:randomly",
        out,
        1,
        ms,
    );

    // First attempt: patch the loop (abandoned later).
    let s = r.say(drift, "As predicted: with the clamp, the 31st drifts to the 28th after February. Quickest fix: after each step, put the anchor day back (clamped to the month).");
    let s = r.edit(s, "ledgerline/subscriptions.py", "        while current <= after:\n            current = add_months(current, self.interval_months)", "        anchor = self.first_billing_date.day\n        while current <= after:\n            current = add_months(current, self.interval_months)\n            current = current.replace(day=min(anchor, end_of_month(current).day))", sub_line - 2);
    let ms = r.rng.between(400, 900);
    let failures = "__________________ test_prorated_upgrade_mid_period[jan31] __________________\n\n>       assert sub.prorated(Decimal(\"50.00\"), date(2025, 3, 15), date(2025, 3, 31)) == Decimal(\"25.81\")\nE       AssertionError: assert Decimal('28.57') == Decimal('25.81')\n\ntests/test_subscriptions.py:203: AssertionError\n__________________ test_period_matches_next_billing_date[jan31] __________________\n\n>       assert sub.period(date(2025, 2, 28)) == (date(2025, 2, 28), date(2025, 3, 31))\nE       AssertionError: assert (datetime.date(2025, 2, 28), datetime.date(2025, 3, 28)) == (datetime.date(2025, 2, 28), datetime.date(2025, 3, 31))\n\ntests/test_subscriptions.py:219: AssertionError\nFAILED tests/test_subscriptions.py::test_prorated_upgrade_mid_period[jan31] - AssertionError: assert Decimal('28.57') == Decimal('25.81')\nFAILED tests/test_subscriptions.py::test_period_matches_next_billing_date[jan31] - AssertionError: assert (datetime.date(2025, 2, 28), datetime.date(2025, 3, 28)) == ...\n";
    let out = pytest(
        &[pyfile(
            "tests/test_subscriptions.py",
            sub_tests,
            &[sub_tests - 6, sub_tests - 3],
        )],
        failures,
        ms,
    );
    let bad = r.bash(
        s,
        "pytest tests/test_subscriptions.py -q -p no:randomly",
        out,
        1,
        ms,
    );
    let g2 = r.monitor(
        g1,
        "Regression on the working branch: tests/test_subscriptions.py went from 2 expected failures to 2 different ones (test_prorated_upgrade_mid_period, test_period_matches_next_billing_date). The anchor fix in next_billing_date is not applied to period().".to_owned(),
        json!({ "check": "pytest", "state": "red", "failed": 2, "expected": false, "new_failures": ["test_prorated_upgrade_mid_period[jan31]", "test_period_matches_next_billing_date[jan31]"] }),
        bad,
    );
    let s = r.say(bad, "The anchor tests pass now, but period() has its own add_months(billing_date, …) step and computes Mar 28 as the end of the February period, so proration is off. previous_billing_date has a third copy of the loop. Putting the day back in three places is fragile; stepping back to try a different shape.");
    let s = r.typed(s, "thought", "If I keep this shape, the day has to be restored in next_billing_date, period and previous_billing_date, and in every future method that steps through billing dates. The duplication is the bug waiting to happen again. Counting the loops before deciding.");
    let ms = r.rng.between(20, 70);
    let s = r.bash(s, "grep -n 'add_months(current\\|add_months(billing_date' ledgerline/subscriptions.py", format!("{}:            current = add_months(current, self.interval_months)\n{}:        return billing_date, add_months(billing_date, self.interval_months)\n{}:            current = add_months(current, self.interval_months)\n", sub_line + 1, sub_line + 9, sub_line + 25), 0, ms);
    let _ = r.read(s, "ledgerline/subscriptions.py", sub_line + 20, sub_line + 27, "    def previous_billing_date(self, on_or_before: date) -> date:\n        current = self.first_billing_date\n        previous = current\n        while current <= on_or_before:\n            previous = current\n            current = add_months(current, self.interval_months)\n        return previous\n");

    // Second attempt: a new branch from the same failing run.
    let s = r.say(drift, "Second approach, from the same failing test run: compute every billing date from the anchor, billing_date(n) = add_months(first_billing_date, n × interval). Then next_billing_date, previous_billing_date and period() all derive from it and can't disagree. (Resetting the file first: the first attempt's edit is not wanted.)");
    let ms = r.rng.between(30, 80);
    let s = r.bash(
        s,
        "git checkout -- ledgerline/subscriptions.py && git status -s",
        " M ledgerline/dates.py\n M tests/test_dates.py\n M tests/test_subscriptions.py\n"
            .to_owned(),
        0,
        ms,
    );
    let s = r.edit(s, "ledgerline/subscriptions.py", "    def next_billing_date(self, after: date) -> date:\n        \"\"\"First billing date strictly after ``after``.\"\"\"\n        current = self.first_billing_date\n        while current <= after:\n            current = add_months(current, self.interval_months)\n        return current", "    def billing_date(self, n: int) -> date:\n        \"\"\"The ``n``-th billing date (0 = the first), always computed from the\n        anchor so that a subscription started on the 31st bills on the last day\n        of short months and on the 31st again afterwards.\"\"\"\n        return add_months(self.first_billing_date, n * self.interval_months)\n\n    def next_billing_date(self, after: date) -> date:\n        \"\"\"First billing date strictly after ``after``.\"\"\"\n        n = 0\n        while self.billing_date(n) <= after:\n            n += 1\n        return self.billing_date(n)", sub_line - 6);
    let s = r.edit(s, "ledgerline/subscriptions.py", "        return billing_date, add_months(billing_date, self.interval_months)", "        n = self.billing_index(billing_date)\n        return billing_date, self.billing_date(n + 1)\n\n    def billing_index(self, billing_date: date) -> int:\n        n = 0\n        while self.billing_date(n) < billing_date:\n            n += 1\n        if self.billing_date(n) != billing_date:\n            raise ValueError(f\"{billing_date} is not a billing date of {self.id}\")\n        return n", sub_line + 9);
    let s = r.edit(s, "ledgerline/subscriptions.py", "        current = self.first_billing_date\n        previous = current\n        while current <= on_or_before:\n            previous = current\n            current = add_months(current, self.interval_months)\n        return previous", "        n = 0\n        while self.billing_date(n + 1) <= on_or_before:\n            n += 1\n        return self.billing_date(n)", sub_line + 27);
    let ms = r.rng.between(400, 900);
    let out = pytest(
        &[pyfile("tests/test_subscriptions.py", sub_tests + 2, &[])],
        "",
        ms,
    );
    let s = r.bash(
        s,
        "pytest tests/test_subscriptions.py -q -p no:randomly",
        out,
        0,
        ms,
    );
    let s = r.say(s, "All subscription tests pass, including proration and period tests for the 31st: billing dates, periods and proration now come from one function.");
    let ms = r.rng.between(250, 600);
    let s = r.bash(s, "python -c 'from datetime import date; from ledgerline.subscriptions import Subscription; from tests.factories import plan; s = Subscription(\"sub_1\", \"cus_1\", plan(), date(2025,1,31)); print([str(s.billing_date(n)) for n in range(6)])'", "['2025-01-31', '2025-02-28', '2025-03-31', '2025-04-30', '2025-05-31', '2025-06-30']\n".to_owned(), 0, ms);

    // The user chimes in.
    let s = r.user(s, "Nice. Reminders use add_months(due, -1) for the 'one month before' reminder. Make sure negative months clamp the same way (Mar 31 - 1 month).");
    let s = r.say(s, "Good point. The doctest already has Mar 31 - 1 month = Feb 29 (2024); I'll add explicit negative cases, including across a year boundary, to the parametrized test.");
    let s = r.edit(s, "tests/test_dates.py", "        (date(2024, 12, 31), 2, date(2025, 2, 28)),\n    ],", "        (date(2024, 12, 31), 2, date(2025, 2, 28)),\n        (date(2025, 3, 31), -1, date(2025, 2, 28)),\n        (date(2024, 3, 31), -1, date(2024, 2, 29)),\n        (date(2025, 1, 31), -2, date(2024, 11, 30)),\n        (date(2025, 5, 31), -12, date(2024, 5, 31)),\n    ],", 39);
    let ms = r.rng.between(260, 500);
    let out = pytest(
        &[
            pyfile("tests/test_dates.py", 21, &[]),
            pyfile("ledgerline/dates.py", 1, &[]),
        ],
        "",
        ms,
    );
    let mut s = r.bash(
        s,
        "pytest tests/test_dates.py --doctest-modules ledgerline/dates.py -q -p no:randomly",
        out,
        0,
        ms,
    );

    // Audit every other caller.
    s = r.say(s, "Negative offsets clamp as expected. Now the audit of the remaining callers of add_months, one by one.");
    for site in &sites {
        let to = site.line + site.code.lines().count() - 1;
        s = r.read(s, site.path, site.line, to, site.code);
        s = r.say(s, site.verdict);
        if site.path.ends_with("stripe_sync.py") {
            let line = site.line + 3;
            s = r.edit(
                s,
                site.path,
                "    return add_months(start, sub.interval_months)",
                "    return sub.next_billing_date(start)",
                line,
            );
        }
        if site.path.ends_with("aging.py") {
            let line = 40 + r.rng.index(30);
            s = r.edit(s, "tests/reports/test_aging.py", "def test_bucket_bounds_mid_month(", "def test_bucket_bounds_at_month_end() -> None:\n    # #451: on the 31st the 0-1 month bucket started on the 3rd of the month.\n    assert bucket_bounds(date(2025, 3, 31)) == [\n        date(2025, 2, 28),\n        date(2025, 1, 31),\n        date(2024, 12, 31),\n    ]\n\n\ndef test_bucket_bounds_mid_month(", line);
        }
        if let Some((tests, n)) = site.tests {
            let extra = usize::from(site.path.ends_with("aging.py"));
            let ms = r.rng.between(180, 1_400);
            let out = pytest(&[pyfile(tests, n + extra, &[])], "", ms);
            s = r.bash(s, &format!("pytest {tests} -q -p no:randomly"), out, 0, ms);
        }
    }
    let ms = r.rng.between(900, 2_000);
    s = r.bash(
        s,
        "gh issue view 451 --json title,state -q '.title + \" (\" + .state + \")\"'",
        "Aging report: invoices jump to 31-60 bucket on the last day of the month (OPEN)\n"
            .to_owned(),
        0,
        ms,
    );
    s = r.say(
        s,
        "#451 is exactly the aging symptom, so this PR closes it too; I'll reference both issues.",
    );

    // Property test, first wrong, then right.
    s = r.say(s, "Last test addition: a Hypothesis property so the next person who touches add_months gets more than a dozen examples.");
    let prop_v1 = "from datetime import date\n\nfrom hypothesis import given, strategies as st\n\nfrom ledgerline.dates import add_months\n\n\n@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 12, 31)), st.integers(-240, 240))\ndef test_add_months_round_trips(d, months):\n    assert add_months(add_months(d, months), -months) == d\n";
    let ms = r.rng.between(20, 60);
    s = r.bash(
        s,
        &format!("cat > tests/test_dates_properties.py <<'EOF'\n{prop_v1}EOF"),
        String::new(),
        0,
        ms,
    );
    let ms = r.rng.between(1_200, 3_000);
    let failures = "_________________________ test_add_months_round_trips _________________________\n\n    @given(st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 12, 31)), st.integers(-240, 240))\n>   def test_add_months_round_trips(d, months):\n\ntests/test_dates_properties.py:9:\n_ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _\n\n>       assert add_months(add_months(d, months), -months) == d\nE       AssertionError: assert datetime.date(2000, 1, 29) == datetime.date(2000, 1, 31)\nE       Falsifying example: test_add_months_round_trips(\nE           d=datetime.date(2000, 1, 31),\nE           months=1,\nE       )\n\ntests/test_dates_properties.py:10: AssertionError\nFAILED tests/test_dates_properties.py::test_add_months_round_trips - AssertionError: assert datetime.date(2000, 1, 29) == datetime.date(2000, 1, 31)\n";
    let out = pytest(
        &[pyfile("tests/test_dates_properties.py", 0, &[0])],
        failures,
        ms,
    );
    s = r.bash(s, "pytest tests/test_dates_properties.py -q", out, 1, ms);
    s = r.say(s, "My property was wrong, not the code: no clamping implementation can round-trip (Jan 31 + 1 month = Feb 29, and Feb 29 - 1 month = Jan 29). The right properties: the result is in the expected month, and its day is min(original day, length of that month).");
    let prop_v2 = "import calendar\nfrom datetime import date\n\nfrom hypothesis import given, strategies as st\n\nfrom ledgerline.dates import add_months\n\n\n@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 12, 31)), st.integers(-240, 240))\ndef test_add_months_lands_in_the_right_month_and_clamps(d: date, months: int) -> None:\n    got = add_months(d, months)\n    assert (got.year * 12 + got.month) - (d.year * 12 + d.month) == months\n    assert got.day == min(d.day, calendar.monthrange(got.year, got.month)[1])\n";
    let ms = r.rng.between(20, 60);
    s = r.bash(
        s,
        &format!("cat > tests/test_dates_properties.py <<'EOF'\n{prop_v2}EOF"),
        String::new(),
        0,
        ms,
    );
    let ms = r.rng.between(1_500, 3_500);
    let out = pytest(&[pyfile("tests/test_dates_properties.py", 1, &[])], "", ms);
    s = r.bash(s, "pytest tests/test_dates_properties.py -q --hypothesis-show-statistics", format!("{out}tests/test_dates_properties.py::test_add_months_lands_in_the_right_month_and_clamps:\n\n  - during generate phase ({}.{:02} seconds):\n    - Typical runtimes: < 1ms, of which < 1ms in data generation\n    - 100 passing examples, 0 failing examples, 3 invalid examples\n\n  - Stopped because settings.max_examples=100\n", ms / 1000, (ms % 1000) / 10), 0, ms);

    // Changelog, lint, types.
    s = r.edit(s, "CHANGELOG.md", "## Unreleased\n", "## Unreleased\n\n### Fixed\n\n- `add_months` now clamps to the last day of the target month instead of\n  rolling over into the next one: an invoice issued on Jan 31 with NET1M terms\n  is due Feb 28 (Feb 29 in leap years), not Mar 3 (#482).\n- Monthly subscriptions that start on the 29th–31st keep their billing day\n  (Jan 31 → Feb 28 → Mar 31) instead of drifting to the 28th or to the 1st–3rd\n  of the following month (#482).\n", 3);
    let ms = r.rng.between(600, 1_500);
    s = r.bash(s, "ruff check . && ruff format --check .", "tests/test_dates_properties.py:1:1: I001 [*] Import block is un-sorted or un-formatted\nFound 1 error.\n[*] 1 fixable with the `--fix` option.\n".to_owned(), 1, ms);
    let ms = r.rng.between(600, 1_500);
    s = r.bash(
        s,
        "ruff check --fix tests/test_dates_properties.py && ruff format --check .",
        "Found 1 error (1 fixed, 0 remaining).\n87 files already formatted\n".to_owned(),
        0,
        ms,
    );
    let ms = r.rng.between(6_000, 14_000);
    s = r.bash(s, "mypy --strict ledgerline tests", format!("ledgerline/subscriptions.py:{}: error: Returning Any from function declared to return \"int\"  [no-any-return]\nFound 1 error in 1 file (checked 88 source files)\n", sub_line + 18), 1, ms);
    s = r.say(s, "mypy flags billing_index: self.interval_months comes from a Plan attribute typed via a TypedDict with total=False, so n * interval is Any there. An explicit int() on the attribute keeps it honest without a cast.");
    s = r.edit(
        s,
        "ledgerline/subscriptions.py",
        "        return add_months(self.first_billing_date, n * self.interval_months)",
        "        return add_months(self.first_billing_date, n * int(self.interval_months))",
        sub_line - 2,
    );
    let ms = r.rng.between(6_000, 14_000);
    s = r.bash(
        s,
        "mypy --strict ledgerline tests",
        "Success: no issues found in 88 source files\n".to_owned(),
        0,
        ms,
    );

    // The whole suite: a known flake first.
    let items = 1_280 + r.rng.index(40);
    let ms = r.rng.between(41_000, 56_000);
    let flaky = "______________________ test_rates_cached_for_business_day ______________________\n[gw1] linux -- Python 3.12.8 /workspace/ledgerline/.venv/bin/python\n\n    def test_rates_cached_for_business_day(fx_client, frozen_clock):\n        first = fx_client.rate(\"EUR\", \"USD\", on=date(2025, 1, 31))\n        frozen_clock.tick(seconds=1)\n>       assert fx_client.cache_hits == 1\nE       assert 0 == 1\nE        +  where 0 = <ledgerline.integrations.fx.FxClient object at 0x7f3a1c2b9e50>.cache_hits\n\ntests/integrations/test_fx_rates.py:77: AssertionError\nFAILED tests/integrations/test_fx_rates.py::test_rates_cached_for_business_day - assert 0 == 1\n";
    let out = full_suite(&mut r.rng, items, 4, Some(flaky), ms);
    let red = r.bash(s, "pytest -n auto -q", out, 1, ms);
    let g3 = r.monitor(
        g2,
        "Full suite: 1 failure, tests/integrations/test_fx_rates.py::test_rates_cached_for_business_day. Listed in tests/FLAKY.md (#437, cache TTL races the frozen clock under xdist). Not caused by this branch; re-run expected.".to_owned(),
        json!({ "check": "pytest", "state": "flaky", "failed": 1, "known_flaky": "#437" }),
        red,
    );
    s = r.say(red, "One failure, in the FX rate cache, which has nothing to do with dates. It's listed in tests/FLAKY.md (#437). Re-running it alone a few times to be sure.");
    let ms = r.rng.between(2_000, 4_000);
    let out = pytest(
        &[pyfile("tests/integrations/test_fx_rates.py", 1, &[])],
        "",
        ms / 3,
    );
    s = r.bash(s, "for i in 1 2 3; do pytest tests/integrations/test_fx_rates.py::test_rates_cached_for_business_day -q -p no:randomly | tail -1; done", {
        let last = out.lines().last().unwrap_or("");
        format!("{last}\n{last}\n{last}\n")
    }, 0, ms);
    let ms = r.rng.between(41_000, 56_000);
    let out = full_suite(&mut r.rng, items, 4, None, ms);
    let green = r.bash(s, "pytest -n auto -q", out, 0, ms);
    let g4 = r.monitor(
        g3,
        format!("Green: full suite passed on fix/482-add-months-clamp ({} passed, 4 skipped), ruff and mypy clean.", items - 4),
        json!({ "check": "pytest", "state": "green", "passed": items - 4, "skipped": 4 }),
        green,
    );

    // How to ship it: a second, smaller decision the agent takes itself.
    let release = r.decision(green, "How should the behaviour change ship? Due dates on the 29th-31st move earlier for new invoices, and 31st-anchored subscriptions bill on different days.");
    let ship_fix = r.option(release, "Ship as a bug fix in the next patch release (3.14.1) with a \"Behaviour changes\" note in the changelog and the release announcement. The old dates were never contractually right, so there is nothing to keep compatible.", json!({ "strategy": "patch-release", "flag": null }));
    let _ship_flag = r.option(release, "Put the new arithmetic behind a setting (LEDGERLINE_MONTH_ARITHMETIC=clamp|legacy, default clamp) for one minor release, so a customer who reconciles against the old dates can switch back.", json!({ "strategy": "setting", "flag": "LEDGERLINE_MONTH_ARITHMETIC", "remove_in": "3.16" }));
    let at = r.clock.tick(&mut r.rng, 4_000_000, 12_000_000);
    let ev = edge_event(
        r.wf,
        EdgeKind::ChosenOption,
        r.id(release),
        r.id(ship_fix),
        at,
        CODER,
    );
    r.events.push(ev);
    s = r.say(ship_fix, "Going with a plain bug-fix release: a setting would keep a known-wrong code path alive and double the test matrix for dates. The changelog entry already describes the change; I'll add the trial detail to it.");

    // Diff, commit, PR.
    let ms = r.rng.between(40, 120);
    let stat = " CHANGELOG.md                           |  9 +++++++\n ledgerline/dates.py                    | 16 ++++++++-----\n ledgerline/integrations/stripe_sync.py |  2 +-\n ledgerline/subscriptions.py            | 29 ++++++++++++++++++------\n tests/reports/test_aging.py            |  9 +++++++\n tests/test_dates.py                    | 22 +++++++++++++++---\n tests/test_dates_properties.py         | 14 +++++++++++\n tests/test_subscriptions.py            | 19 ++++++++++++++++\n 8 files changed, 104 insertions(+), 16 deletions(-)\n";
    s = r.bash(s, "git diff --stat", stat.to_owned(), 0, ms);
    let ms = r.rng.between(40, 120);
    let diff = r.bash(
        s,
        "git diff -- CHANGELOG.md ledgerline/",
        text::GIT_DIFF.to_owned(),
        0,
        ms,
    );
    let g5 = r.monitor(
        g4,
        "Diff budget OK: 8 files, +104 −16 (budget 400 changed lines). No changes outside ledgerline/, tests/ and CHANGELOG.md; no dependency files touched.".to_owned(),
        json!({ "check": "diff_size", "state": "ok", "files": 8, "insertions": 104, "deletions": 16, "budget": 400 }),
        diff,
    );
    let commit = hexid(&mut r.rng);
    let ms = r.rng.between(150, 400);
    s = r.bash(diff, "git add -A && git commit -q -m 'Clamp add_months to month end; anchor subscription billing dates (#482, #451)' && git log --oneline -1", format!("{commit} Clamp add_months to month end; anchor subscription billing dates (#482, #451)\n"), 0, ms);
    let ms = r.rng.between(1_500, 4_000);
    s = r.bash(s, "git push -u origin fix/482-add-months-clamp", "remote:\nremote: Create a pull request for 'fix/482-add-months-clamp' on GitHub by visiting:\nremote:      https://github.com/acme-fin/ledgerline/pull/new/fix/482-add-months-clamp\nremote:\nTo github.com:acme-fin/ledgerline.git\n * [new branch]      fix/482-add-months-clamp -> fix/482-add-months-clamp\nbranch 'fix/482-add-months-clamp' set up to track 'origin/fix/482-add-months-clamp'.\n".to_owned(), 0, ms);
    let pr = 489 + r.rng.index(6);
    let ms = r.rng.between(1_500, 4_000);
    s = r.tool(s, "bash", json!({ "command": "gh pr create --draft --title 'Clamp add_months to month end (#482)' --body-file -", "stdin": text::PR_BODY, "timeout_s": 600 }), "$ gh pr create --draft --title 'Clamp add_months to month end (#482)' --body-file -".to_owned(), format!("https://github.com/acme-fin/ledgerline/pull/{pr}\n"), 0, ms);
    let ms = r.rng.between(180_000, 260_000);
    let checks = format!("All checks were successful\n0 cancelled, 0 failing, 4 successful, 0 skipped, and 0 pending checks\n\n   NAME                  DESCRIPTION  ELAPSED  URL\n✓  check / lint                       {}s      https://github.com/acme-fin/ledgerline/actions/runs/{}\n✓  check / types                      {}s      https://github.com/acme-fin/ledgerline/actions/runs/{}\n✓  check / test (3.12)                {}m{}s   https://github.com/acme-fin/ledgerline/actions/runs/{}\n✓  check / test (3.13)                {}m{}s   https://github.com/acme-fin/ledgerline/actions/runs/{}\n", r.rng.between(21, 39), 12_400_000_000u64 + r.rng.between(0, 99_999_999), r.rng.between(40, 75), 12_400_000_000u64 + r.rng.between(0, 99_999_999), r.rng.between(2, 3), r.rng.between(10, 59), 12_400_000_000u64 + r.rng.between(0, 99_999_999), r.rng.between(2, 3), r.rng.between(10, 59), 12_400_000_000u64 + r.rng.between(0, 99_999_999));
    let ci = r.bash(
        s,
        &format!("gh pr checks {pr} --watch --interval 20"),
        checks,
        0,
        ms,
    );
    let g6 = r.monitor(
        g5,
        format!("CI on PR #{pr}: 4/4 checks green (lint, types, tests on 3.12 and 3.13)."),
        json!({ "check": "ci", "state": "green", "pr": pr }),
        ci,
    );
    let done = r.say(ci, &format!("Draft PR is up and CI is green: https://github.com/acme-fin/ledgerline/pull/{pr}\n\n- Root cause: add_months rolled non-existent days into the next month (a 2022 hot fix for a crash, #213).\n- Fix: clamp to the month's last day; subscriptions compute billing dates from their anchor; the Stripe period check uses the same schedule.\n- Also fixes #451 (aging buckets at month end) and makes 1-month trials end on the right day.\n- Tests: parametrized month-end and negative cases, a Hypothesis property, 31st-anchored subscriptions, an aging regression test. Full suite green (one known flake, #437, passed on re-run).\n\nBehaviour change to note in the release: new invoices and trials starting on the 29th-31st with month-based terms get earlier (correct) dates. Existing invoices keep their stored due dates."));

    // Review round.
    let review = r.user(done, "Ana reviewed. 1) Add a case for a quarterly subscription started on Nov 30. 2) billing_index loops from 0 every time; fine for monthly, but we have 10-year contracts billed monthly and the aging job calls period() a lot. Can it be computed directly? 3) Mention the trial change in the changelog.");
    s = r.say(review, "All three make sense. For 2): the index is just the number of whole intervals between the anchor and the date, i.e. months_between // interval, then one check that the date really is a billing date. O(1) instead of O(periods).");
    s = r.edit(s, "tests/test_subscriptions.py", "def test_next_billing_date_monthly(", "def test_quarterly_from_november_30() -> None:\n    sub = Subscription(\"sub_q\", \"cus_1\", plan(), date(2024, 11, 30), interval_months=3)\n    assert [sub.billing_date(n) for n in range(5)] == [\n        date(2024, 11, 30),\n        date(2025, 2, 28),\n        date(2025, 5, 30),\n        date(2025, 8, 30),\n        date(2025, 11, 30),\n    ]\n\n\ndef test_next_billing_date_monthly(", 88);
    s = r.edit(s, "ledgerline/subscriptions.py", "        n = 0\n        while self.billing_date(n) < billing_date:\n            n += 1\n        if self.billing_date(n) != billing_date:", "        first = self.first_billing_date\n        months = (billing_date.year - first.year) * 12 + billing_date.month - first.month\n        n = max(months // self.interval_months, 0)\n        if self.billing_date(n) != billing_date:", sub_line + 13);
    let ms = r.rng.between(400, 900);
    let out = pytest(
        &[pyfile("tests/test_subscriptions.py", sub_tests + 3, &[])],
        "",
        ms,
    );
    s = r.bash(
        s,
        "pytest tests/test_subscriptions.py -q -p no:randomly",
        out,
        0,
        ms,
    );
    let ms = r.rng.between(2_000, 5_000);
    let timeit = format!(
        "{} loops, best of 5: {}.{} usec per loop\n",
        100_000 / (1 + r.rng.index(3)),
        r.rng.between(2, 4),
        r.rng.between(10, 99)
    );
    s = r.bash(s, "python -m timeit -s 'from datetime import date; from ledgerline.subscriptions import Subscription; from tests.factories import plan; s = Subscription(\"s\", \"c\", plan(), date(2015, 1, 31))' 's.period(date(2025, 1, 31))'", timeit, 0, ms);
    s = r.edit(s, "CHANGELOG.md", "  of the following month (#482).\n", "  of the following month (#482).\n- Trials of whole months that start on the 29th–31st end on the last day of\n  short months (a one-month trial from Jan 31 ends Feb 28, not Mar 3).\n", 12);
    let ms = r.rng.between(41_000, 56_000);
    let out = full_suite(&mut r.rng, items + 1, 4, None, ms);
    s = r.bash(s, "pytest -n auto -q", out, 0, ms);
    let fixup = hexid(&mut r.rng);
    let ms = r.rng.between(1_500, 4_000);
    s = r.bash(s, "git commit -qam 'Review: O(1) billing_index, quarterly test, trial note' && git push -q && git log --oneline -2", format!("{fixup} Review: O(1) billing_index, quarterly test, trial note\n{commit} Clamp add_months to month end; anchor subscription billing dates (#482, #451)\n"), 0, ms);
    let pushed = r.say(s, "Pushed the review changes. period() no longer walks every earlier period (a 10-year-old monthly subscription took 120 add_months calls per call, now one or two); the quarterly Nov 30 case bills Feb 28, then May 30 again.");

    // Later, on option C's branch: what the smaller fix would have looked like.
    let s = r.user(opt_c, "Before I review: what would option C have looked like? I'd like to put the comparison in the PR discussion.");
    let s = r.say(
        s,
        "I'll build it in a separate worktree off main so the PR branch stays untouched.",
    );
    let ms = r.rng.between(200, 600);
    let s = r.bash(s, "git worktree add -q ../ledgerline-optc main && cd ../ledgerline-optc && git checkout fix/482-add-months-clamp -- tests/ && git status -s", "M  tests/reports/test_aging.py\nM  tests/test_dates.py\nA  tests/test_dates_properties.py\nM  tests/test_subscriptions.py\n".to_owned(), 0, ms);
    let s = r.edit(s, "../ledgerline-optc/ledgerline/terms.py", "        if self.net_months:\n            due = add_months(due, self.net_months)", "        if self.net_months:\n            month = due.month - 1 + self.net_months\n            year, month = due.year + month // 12, month % 12 + 1\n            due = date(year, month, min(due.day, calendar.monthrange(year, month)[1]))", 26);
    let ms = r.rng.between(300, 700);
    let out = pytest(&[pyfile("tests/test_terms.py", 12, &[])], "", ms);
    let s = r.bash(
        s,
        "cd ../ledgerline-optc && pytest tests/test_terms.py -q -p no:randomly",
        out,
        0,
        ms,
    );
    let ms = r.rng.between(1_200, 2_600);
    // The PR's tests against option C: add_months still rolls over.
    let mut failures = String::new();
    for (i, (months, got, want)) in [
        (1, "2025, 3, 3", "2025, 2, 28"),
        (1, "2024, 3, 2", "2024, 2, 29"),
        (2, "2025, 3, 3", "2025, 2, 28"),
        (-1, "2025, 3, 3", "2025, 2, 28"),
        (-1, "2024, 3, 2", "2024, 2, 29"),
        (-2, "2024, 12, 1", "2024, 11, 30"),
    ]
    .iter()
    .enumerate()
    {
        failures.push_str(&format!("FAILED tests/test_dates.py::test_add_months_clamps_to_month_end[start{i}-{months}-expected{i}] - AssertionError: assert datetime.date({got}) == datetime.date({want})\n"));
    }
    failures.push_str("FAILED tests/test_dates.py::test_add_months_never_raises_for_short_months - AssertionError: assert datetime.date(2023, 3, 3) == datetime.date(2023, 2, 28)\n");
    for (i, got) in ["2025, 3, 3", "2024, 3, 1", "2025, 3, 1"]
        .iter()
        .enumerate()
    {
        failures.push_str(&format!("FAILED tests/test_subscriptions.py::test_billing_dates_keep_the_anchor_day[started{i}-expected{i}] - AssertionError: assert [datetime.date({got}), ...\n"));
    }
    failures.push_str("FAILED tests/test_subscriptions.py::test_quarterly_from_november_30 - AssertionError: assert [datetime.date(2024, 11, 30), datetime.date(2025, 3, 2), ...\n");
    failures.push_str("FAILED tests/reports/test_aging.py::test_bucket_bounds_at_month_end - AssertionError: assert [datetime.date(2025, 3, 3), ...\n");
    let out = pytest(
        &[
            pyfile("tests/test_dates.py", 14, &[3, 4, 5, 6, 7, 8, 12]),
            pyfile("tests/test_subscriptions.py", sub_tests - 1, &[4, 5, 6, 9]),
            pyfile("tests/reports/test_aging.py", 23, &[11]),
        ],
        &failures,
        ms,
    );
    let c_red = r.bash(s, "cd ../ledgerline-optc && pytest tests/test_dates.py tests/test_subscriptions.py tests/reports/test_aging.py -q -p no:randomly", out, 1, ms);
    let g7 = r.monitor(
        g6,
        "Red on the option C worktree (../ledgerline-optc): 12 failures with the PR's tests. Expected: this branch is a comparison, not a candidate. PR branch unaffected.".to_owned(),
        json!({ "check": "pytest", "state": "red", "failed": 12, "expected": true, "worktree": "../ledgerline-optc" }),
        c_red,
    );
    let ms = r.rng.between(30, 90);
    let s = r.bash(
        c_red,
        "cd ../ledgerline-optc && git diff --stat -- ledgerline/",
        " ledgerline/terms.py | 5 ++++-\n 1 file changed, 4 insertions(+), 1 deletion(-)\n"
            .to_owned(),
        0,
        ms,
    );
    let s = r.say(s, "Option C in numbers: ledgerline/terms.py +4 −1, and invoice due dates are right. But with the same tests as the PR: 7 failures in test_dates (add_months itself still rolls over), 4 in test_subscriptions (billing dates still spill into the next month) and the #451 aging test fails. So C fixes the ticket's symptom only. I'd keep B.");
    let ms = r.rng.between(80, 200);
    let _ = r.bash(
        s,
        "git worktree remove --force ../ledgerline-optc",
        String::new(),
        0,
        ms,
    );

    // Back on the PR branch: wrap up.
    let thanks = r.user(pushed, "Thanks, the comparison on the C branch is convincing. Ana approved; I'll merge it with the 3.14.1 release.");
    let _ = r.monitor(
        g7,
        "Run finished: PR approved, CI green on the PR branch, no pushes to protected branches. Detaching.".to_owned(),
        json!({ "check": "run", "state": "done" }),
        thanks,
    );
    let _ = ask; // the agent's question stays a leaf on option A's branch
    r.set_status(WorkflowStatus::Completed, CODER);
    r.events
}

fn hexid(rng: &mut GenRng) -> String {
    format!("{:07x}", rng.random::<u32>() >> 4)
}
