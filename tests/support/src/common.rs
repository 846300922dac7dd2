//! Shared machinery of the generators: a portable seeded RNG, v7-shaped ids, a
//! compact tree that applies the branch and depth rules of DESIGN §2, and the
//! constructors of portable events.

use rand::{Rng, RngCore};
use serde_json::{Map, Value};
use uuid::Uuid;

use arbor_storage::{
    edge_event_id, Edge, EdgeKind, EventBody, Node, PortableEvent, Role, StatusChanged, Timestamp,
    WorkflowCreated, WorkflowStatus,
};

/// xoshiro256** seeded through SplitMix64.
///
/// Written out here rather than taken from `rand` because `rand`'s `StdRng` and
/// `SmallRng` do not promise the same stream across versions or platforms, and the
/// committed sample must be reproducible byte for byte. `rand` still provides the
/// sampling helpers (`random_range`, `random_bool`), which are value-stable within
/// a minor version.
#[derive(Clone, Debug)]
pub struct GenRng {
    s: [u64; 4],
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl GenRng {
    /// A generator whose whole stream is determined by `seed`.
    pub fn new(seed: u64) -> GenRng {
        let mut st = seed;
        let mut s = [0u64; 4];
        for w in &mut s {
            *w = splitmix64(&mut st);
        }
        if s == [0; 4] {
            s[0] = 1;
        }
        GenRng { s }
    }

    /// An index in `0..len` (`len` > 0).
    pub fn index(&mut self, len: usize) -> usize {
        if len <= 1 {
            0
        } else {
            self.random_range(0..len)
        }
    }

    /// One element of a non-empty slice (callers pass constants).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let i = self.index(items.len());
        &items[i]
    }

    /// Chance `p` (clamped to 0..=1).
    pub fn chance(&mut self, p: f64) -> bool {
        if p.is_nan() {
            return false;
        }
        self.random_bool(p.clamp(0.0, 1.0))
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            self.random_range(lo..=hi)
        }
    }
}

impl RngCore for GenRng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        rand::rand_core::impls::fill_bytes_via_next(self, dst)
    }
}

/// A UUID shaped like a v7 (48-bit Unix milliseconds, version 7, RFC 4122 variant)
/// whose 74 random bits come from `rng`: ids sort by creation time as server-assigned
/// ones do, and are reproducible from the seed.
pub fn v7_id(rng: &mut GenRng, at: Timestamp) -> Uuid {
    let ms = (at.micros().max(0) / 1_000) as u128 & ((1u128 << 48) - 1);
    let r = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
    let rand_a = (r >> 64) & 0xFFF;
    let rand_b = r & ((1u128 << 62) - 1);
    Uuid::from_u128((ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b)
}

/// A strictly increasing microsecond clock.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    now: i64,
}

impl Clock {
    /// A clock that reads `start`.
    pub fn at(start: Timestamp) -> Clock {
        Clock {
            now: start.micros(),
        }
    }

    /// The current reading.
    pub fn now(&self) -> Timestamp {
        Timestamp(self.now)
    }

    /// Moves on by `lo..=hi` microseconds (at least one) and returns the new time.
    pub fn tick(&mut self, rng: &mut GenRng, lo_us: u64, hi_us: u64) -> Timestamp {
        let step = rng.between(lo_us.max(1), hi_us.max(1));
        self.now = self
            .now
            .saturating_add(i64::try_from(step).unwrap_or(i64::MAX));
        Timestamp(self.now)
    }
}

/// What a node is, as far as the generators' choices are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// The root.
    Root,
    /// `message` from a user.
    User,
    /// `message` from the assistant.
    Assistant,
    /// `action` (a tool call).
    Action,
    /// `tool_result`.
    ToolResult,
    /// `decision`.
    Decision,
    /// `option`.
    Option,
    /// `monitor`.
    Monitor,
    /// Any other type (`thought`, `plan`, `summary`, …).
    Other,
}

/// Per-node state kept by a generator: 32 bytes, nothing else.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    /// Node id.
    pub id: u128,
    /// Slot of the first node of the node's branch.
    pub branch: u32,
    /// Depth (root = 0).
    pub depth: u32,
    /// Kind.
    pub kind: Kind,
    /// Whether a child has been appended.
    pub has_child: bool,
}

/// A handle on a node of a [`Tree`]: its position in creation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct N(pub u32);

/// The shape of one workflow: enough to compute `branch_id` and `depth` of every new
/// node exactly as the store does, and to pick parents and targets.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    slots: Vec<Slot>,
}

impl Tree {
    /// Forgets everything, keeping the allocation, and plants a root.
    pub fn reset(&mut self, root: Uuid) -> N {
        self.slots.clear();
        self.slots.push(Slot {
            id: root.as_u128(),
            branch: 0,
            depth: 0,
            kind: Kind::Root,
            has_child: false,
        });
        N(0)
    }

    /// Appends a child of `parent`; returns it with its branch id and depth.
    pub fn add(&mut self, parent: N, id: Uuid, kind: Kind) -> (N, Uuid, u32) {
        let me = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        let p = &mut self.slots[parent.0 as usize];
        // The first child continues the parent's branch; every later child starts its own.
        let branch = if p.has_child { me } else { p.branch };
        p.has_child = true;
        let depth = p.depth + 1;
        self.slots.push(Slot {
            id: id.as_u128(),
            branch,
            depth,
            kind,
            has_child: false,
        });
        let branch_id = Uuid::from_u128(self.slots[branch as usize].id);
        (N(me), branch_id, depth)
    }

    /// Nodes so far.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// The slot of `n`.
    pub fn slot(&self, n: N) -> Slot {
        self.slots[n.0 as usize]
    }

    /// The id of `n`.
    pub fn id(&self, n: N) -> Uuid {
        Uuid::from_u128(self.slots[n.0 as usize].id)
    }

    /// Bytes held (capacity).
    pub fn footprint(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
    }
}

/// The fields of a node that are not derived from the tree.
#[derive(Clone, Debug)]
pub struct Draft {
    /// What the generators consider the node to be.
    pub kind: Kind,
    /// Type name.
    pub node_type: &'static str,
    /// Role.
    pub role: Option<Role>,
    /// Content.
    pub content: String,
    /// Payload.
    pub payload: Value,
    /// Metadata.
    pub metadata: Map<String, Value>,
    /// Agent.
    pub agent_id: Option<String>,
    /// User.
    pub user_id: Option<String>,
}

/// `workflow.created` for a root built the way the store builds it: type and role
/// `system`, no payload, metadata, agent; the workflow's user on the root.
pub fn created_event(
    workflow_id: Uuid,
    root_id: Uuid,
    at: Timestamp,
    actor: &str,
    system_prompt: String,
    metadata: Map<String, Value>,
    user_id: Option<String>,
) -> PortableEvent {
    let root = Node {
        id: root_id,
        workflow_id,
        parent_id: None,
        node_type: "system".to_owned(),
        role: Some(Role::System),
        content: system_prompt,
        payload: Value::Null,
        metadata: Map::new(),
        agent_id: None,
        user_id: user_id.clone(),
        branch_id: root_id,
        depth: 0,
        seq: 0,
        timestamp: at,
    };
    PortableEvent {
        id: workflow_id,
        workflow_id,
        timestamp: at,
        actor: actor.to_owned(),
        body: EventBody::WorkflowCreated(WorkflowCreated {
            root,
            metadata,
            user_id,
        }),
    }
}

/// `node.created` for a child of `parent`, added to `tree`.
pub fn node_event(
    tree: &mut Tree,
    workflow_id: Uuid,
    parent: N,
    id: Uuid,
    at: Timestamp,
    actor: &str,
    d: Draft,
) -> (N, PortableEvent) {
    let parent_id = tree.id(parent);
    let (n, branch_id, depth) = tree.add(parent, id, d.kind);
    let node = Node {
        id,
        workflow_id,
        parent_id: Some(parent_id),
        node_type: d.node_type.to_owned(),
        role: d.role,
        content: d.content,
        payload: d.payload,
        metadata: d.metadata,
        agent_id: d.agent_id,
        user_id: d.user_id,
        branch_id,
        depth,
        seq: 0,
        timestamp: at,
    };
    let ev = PortableEvent {
        id,
        workflow_id,
        timestamp: at,
        actor: actor.to_owned(),
        body: EventBody::NodeCreated(node),
    };
    (n, ev)
}

/// `edge.created` with its deterministic event id.
pub fn edge_event(
    workflow_id: Uuid,
    kind: EdgeKind,
    from: Uuid,
    to: Uuid,
    at: Timestamp,
    actor: &str,
) -> PortableEvent {
    PortableEvent {
        id: edge_event_id(kind, from, to),
        workflow_id,
        timestamp: at,
        actor: actor.to_owned(),
        body: EventBody::EdgeCreated(Edge { kind, from, to }),
    }
}

/// `workflow.status_changed`.
pub fn status_event(
    workflow_id: Uuid,
    id: Uuid,
    at: Timestamp,
    actor: &str,
    from: WorkflowStatus,
    to: WorkflowStatus,
) -> PortableEvent {
    PortableEvent {
        id,
        workflow_id,
        timestamp: at,
        actor: actor.to_owned(),
        body: EventBody::StatusChanged(StatusChanged { from, to }),
    }
}

/// A JSON object from pairs.
pub fn obj<const K: usize>(pairs: [(&str, Value); K]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}
