//! Token scope (DESIGN §8 "Scope"): which workflows and which nodes a [`Principal`] sees
//! and may append to. An unscoped token (no `workflows`, no `branches`) pays nothing:
//! every check below returns at once.
//!
//! - **Workflows**: a token limited to `workflows` sees only those. Any other workflow
//!   answers exactly what a workflow that does not exist answers (404, same
//!   problem+json), on every per-workflow route and every node route (a node of
//!   another workflow is a node that does not exist); lists, replays and streams leave
//!   it out. A scoped token may not create workflows (403): the new id could not be in
//!   its scope.
//! - **Branches**: a token limited to `branches` sees, in each workflow of its scope,
//!   the nodes of those branches and their ancestors up to the root
//!   ([`BranchScope`], from the index in microseconds); a workflow where none of its
//!   branches exists is out of scope. Every read is filtered: a node it cannot see is
//!   404, lists leave such nodes out, an edge is seen when both its ends are, a
//!   decision's `chosen` it cannot see reads `null`, a branch it sees only as an
//!   ancestor reports its seen part (head = the fork point, length = nodes seen), the
//!   workflow view counts only what it sees. Events are filtered by the same rule
//!   ([`EventScope`]): a `workflow.status_changed` is seen with the workflow.
//! - **Appends under branch scope**: a new node's parent must be seen (else 404), and
//!   the node must land on a branch in scope: either its parent's branch is in scope
//!   and it continues that branch (the append is made with `expect_leaf`, so a race
//!   that would fork is 409, never a node outside the scope), or its own id is listed
//!   in `branches` (a fork the token was given in advance). A parent seen only as an
//!   ancestor is read-only: 403. Edges and choices need both ends seen (404) and their
//!   source (`from`, the decision) on a branch in scope (403). Changing the workflow's
//!   status is for tokens that see the whole workflow (403).

use std::collections::HashMap;

use axum::http::StatusCode;
use uuid::Uuid;

use arbor_storage::{BranchInfo, BranchScope, Event, EventBody, Node, NodePlace, Store};

use super::auth::Principal;
use super::problem::Problem;

/// What a principal sees of one workflow.
#[derive(Clone, Debug)]
pub enum Seen {
    /// Every node.
    All,
    /// Only what a branch scope sees.
    Branches(BranchScope),
}

impl Seen {
    /// Whether node `n` is seen.
    pub fn node(&self, n: &Node) -> bool {
        self.at(&n.branch_id, n.depth)
    }

    /// Whether a node of branch `branch_id` at `depth` is seen.
    pub fn at(&self, branch_id: &Uuid, depth: u32) -> bool {
        match self {
            Seen::All => true,
            Seen::Branches(s) => s.sees(branch_id, depth),
        }
    }

    /// Whether the node at `p` is seen.
    pub fn place(&self, p: &NodePlace) -> bool {
        match self {
            Seen::All => true,
            Seen::Branches(s) => s.sees(&p.branch_id, p.depth),
        }
    }
}

/// The 404 of a workflow that does not exist (or is out of scope: the same answer).
pub fn workflow_missing(wf: &Uuid) -> Problem {
    Problem::not_found(format!("workflow {wf} not found"))
}

/// The 404 of a node that does not exist (or is out of scope: the same answer).
pub fn node_missing(id: &Uuid) -> Problem {
    Problem::not_found(format!("node {id} not found"))
}

/// A 403 naming what the scope forbids.
pub fn forbidden(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::FORBIDDEN, "forbidden", detail)
}

impl Principal {
    /// Whether the token sees everything (no `workflows`, no `branches`).
    pub fn unscoped(&self) -> bool {
        self.workflows.is_empty() && self.branches.is_empty()
    }

    fn in_workflows(&self, wf: &Uuid) -> bool {
        self.workflows.is_empty() || self.workflows.contains(wf)
    }

    /// What the principal sees of workflow `wf`: 404 if it is out of scope. Without a
    /// branch scope, whether `wf` exists is left to the caller.
    pub fn workflow(&self, store: &Store, wf: &Uuid) -> Result<Seen, Problem> {
        if !self.in_workflows(wf) {
            return Err(workflow_missing(wf));
        }
        if self.branches.is_empty() {
            return Ok(Seen::All);
        }
        match store.branch_scope(wf, &self.branches) {
            Some(s) if !s.is_empty() => Ok(Seen::Branches(s)),
            _ => Err(workflow_missing(wf)),
        }
    }

    /// What the principal sees of the workflow of node `id`: 404 (as for a node that
    /// does not exist) if the node is not seen. For an unscoped principal, whether
    /// `id` exists is left to the caller.
    pub fn node(&self, store: &Store, id: &Uuid) -> Result<Seen, Problem> {
        if self.unscoped() {
            return Ok(Seen::All);
        }
        let place = store.place(id).ok_or_else(|| node_missing(id))?;
        let seen = self
            .workflow(store, &place.workflow_id)
            .map_err(|_| node_missing(id))?;
        if seen.place(&place) {
            Ok(seen)
        } else {
            Err(node_missing(id))
        }
    }

    /// The workflows a list may show (`None`: all).
    pub fn listable(&self, store: &Store) -> Option<Vec<Uuid>> {
        if self.branches.is_empty() {
            return (!self.workflows.is_empty()).then(|| self.workflows.clone());
        }
        let mut out: Vec<Uuid> = self
            .branches
            .iter()
            .filter_map(|b| store.place(b).filter(|p| p.branch_id == *b))
            .map(|p| p.workflow_id)
            .filter(|wf| self.in_workflows(wf))
            .collect();
        out.sort_unstable();
        out.dedup();
        Some(out)
    }

    /// Whether `id` is listed in the token's `branches` (a fork given in advance).
    fn lists_branch(&self, id: Option<Uuid>) -> bool {
        id.is_some_and(|id| self.branches.contains(&id))
    }

    /// Checks the nodes of an append in a workflow seen as `seen` (see the module docs)
    /// and sets `expect_leaf` where the node must continue its parent's branch. `nodes`
    /// are (id, parent_id, expect_leaf) in batch order.
    pub fn check_append<'a>(
        &self,
        store: &Store,
        seen: &Seen,
        nodes: impl Iterator<Item = (Option<Uuid>, Uuid, &'a mut bool)>,
    ) -> Result<(), Problem> {
        let Seen::Branches(scope) = seen else {
            return Ok(());
        };
        // Ids of the batch so far: each lands on a branch in scope (checked below).
        let mut batch: Vec<Uuid> = Vec::new();
        for (id, parent, expect_leaf) in nodes {
            let owned = if batch.contains(&parent) {
                true
            } else {
                let p = store
                    .place(&parent)
                    .filter(|p| seen.place(p))
                    .ok_or_else(|| node_missing(&parent))?;
                scope.owns(&p.branch_id)
            };
            if !self.lists_branch(id) {
                if !owned {
                    return Err(forbidden(format!(
                        "node {parent} is outside this token's branches (seen only as an \
                         ancestor): it cannot take children"
                    )));
                }
                *expect_leaf = true;
            }
            batch.extend(id);
        }
        Ok(())
    }

    /// Checks an edge (or a choice) from `from` to `to` in a workflow seen as `seen`:
    /// both ends seen (else 404), `from` on a branch in scope (else 403).
    pub fn check_edge(
        &self,
        store: &Store,
        seen: &Seen,
        from: &Uuid,
        to: &Uuid,
    ) -> Result<(), Problem> {
        let Seen::Branches(scope) = seen else {
            return Ok(());
        };
        let place = |id: &Uuid| {
            store
                .place(id)
                .filter(|p| seen.place(p))
                .ok_or_else(|| node_missing(id))
        };
        let f = place(from)?;
        place(to)?;
        if scope.owns(&f.branch_id) {
            Ok(())
        } else {
            Err(forbidden(format!(
                "node {from} is outside this token's branches (seen only as an ancestor)"
            )))
        }
    }
}

/// What a branch scope shows of a workflow's branches (None: the workflow is gone).
pub fn branches_seen(store: &Store, wf: &Uuid, seen: &Seen) -> Option<Vec<BranchInfo>> {
    match seen {
        Seen::All => store.branches(wf),
        Seen::Branches(s) => store.branches_seen(wf, s),
    }
}

/// Which events a scoped principal's replays and streams carry (see the module docs).
/// Keeps the branch scope of each workflow it met, recomputed when a listed branch is
/// created (its ancestors come into view).
pub struct EventScope {
    workflows: Vec<Uuid>,
    branches: Vec<Uuid>,
    seen: HashMap<Uuid, BranchScope>,
}

impl EventScope {
    /// The filter for `p`; `None` when it sees every event.
    pub fn of(p: &Principal) -> Option<EventScope> {
        (!p.unscoped()).then(|| EventScope {
            workflows: p.workflows.clone(),
            branches: p.branches.clone(),
            seen: HashMap::new(),
        })
    }

    /// Whether event `e` is seen.
    pub fn sees(&mut self, store: &Store, e: &Event) -> bool {
        let wf = e.workflow_id;
        if !self.workflows.is_empty() && !self.workflows.contains(&wf) {
            return false;
        }
        if self.branches.is_empty() {
            return true;
        }
        if let EventBody::NodeCreated(n) = &e.body {
            if self.branches.contains(&n.id) {
                self.seen.remove(&wf);
            }
        }
        let branches = &self.branches;
        let scope = self
            .seen
            .entry(wf)
            .or_insert_with(|| store.branch_scope(&wf, branches).unwrap_or_default());
        match &e.body {
            EventBody::WorkflowCreated(w) => scope.sees(&w.root.branch_id, w.root.depth),
            EventBody::NodeCreated(n) => scope.sees(&n.branch_id, n.depth),
            EventBody::EdgeCreated(edge) => [edge.from, edge.to].iter().all(|id| {
                store
                    .place(id)
                    .is_some_and(|p| scope.sees(&p.branch_id, p.depth))
            }),
            EventBody::StatusChanged(_) => !scope.is_empty(),
        }
    }
}
