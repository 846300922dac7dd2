// A workflow's tree, built from its outline (`/outline`: every node's place, type and
// role from the server's index, plus the events that create no node) and then from live
// events in log order. Every record keeps the seq that made it, so the tree "as it was
// at seq N" (the slider) is a filter, not a rebuild.
//
// A node from the outline has no content yet: its row label is fetched with the labels
// of the rows on screen (`wanted`, `setLabels`) and its full body when its panel opens.
//
// The event kinds drawn are listed in KINDS; a kind this page does not know yet (drafts,
// jobs) is counted in `other` and reaches the node it names through `decorate`, so new
// kinds slot in as badges and panels without touching the tree.

/** The event kinds this page understands. */
export const KINDS = ['workflow.created', 'node.created', 'edge.created', 'workflow.status_changed'];

/** The first line of `content` after leading blanks, at most 240 characters. */
export function firstLine(content) {
  const c = typeof content === 'string' ? content.trimStart() : '';
  const nl = c.indexOf('\n');
  return (nl >= 0 ? c.slice(0, nl) : c).slice(0, 240);
}

/** The children or edges of a node that has none: shared, so that 100 000 leaves cost no
 * arrays (fewer objects make the garbage collector's pauses shorter). Never pushed to. */
const NONE = Object.freeze([]);

/** One node of the tree. */
export class NodeRec {
  /**
   * `body` is the node as the API sends it (a live event, `/v1/nodes/{id}`), or null for
   * a node from the outline until its panel fetches it.
   */
  constructor(id, seq, type, role, parent, body) {
    this.id = id;
    this.seq = seq;
    this.type = type;
    this.role = role;
    this.body = body;
    this.full = body !== null && body.content !== undefined;
    /** The row label: null until known. */
    this.text = this.full ? firstLine(body.content) : null;
    this.parent = parent;
    /** Children in seq order (NONE until the first). */
    this.children = NONE;
    this.depth = parent ? parent.depth + 1 : 0;
    // A node continues its parent's branch iff it is the parent's first child (the
    // children list does not hold it yet); otherwise it starts a branch named after it.
    this.branch = (body && body.branch_id) || (parent && parent.children.length === 0 ? parent.branch : id);
    /** Edges out of and into this node, other than the parent's: {type, from, to, seq}. */
    this.out = NONE;
    this.in = NONE;
    /** Position in `Workflow.nodes` (and in its typed arrays). */
    this.idx = -1;
    // Fetch state, set here so every record keeps one shape (the flatten loop stays
    // monomorphic): a label request in flight, a body request, a body that failed.
    this.asked = false;
    this.loading = null;
    this.loadError = null;
  }

  /** The first line of the content, short ('…' while it is being fetched). */
  label() {
    if (this.text === null) return '…';
    return this.text || '(empty)';
  }

  /** Takes the full node (from `/v1/nodes/{id}`). */
  setBody(node) {
    this.body = node;
    this.full = true;
    this.text = firstLine(node.content);
  }

  /** Children that exist at `seq` (children are kept in seq order). */
  childrenAt(seq) {
    const ch = this.children;
    if (ch.length === 0 || ch[ch.length - 1].seq <= seq) return ch.length;
    let n = 0;
    while (n < ch.length && ch[n].seq <= seq) n++;
    return n;
  }
}

/** The tree of one workflow. */
export class Workflow {
  constructor(id) {
    this.id = id;
    this.byId = new Map();
    /** Nodes in seq order. */
    this.nodes = [];
    this.root = null;
    this.firstSeq = 0;
    this.lastSeq = 0;
    /** [{seq, status}] in order. */
    this.statuses = [];
    this.edges = [];
    /** Event counts by kind, for kinds not drawn yet. */
    this.other = new Map();
    /** Nodes whose label a drawing asked for and that nobody is fetching yet. */
    this.wanted = new Set();
    // The tree again as typed arrays indexed by a node's `idx`: what the outline's
    // flatten walks. Walking 100 000 records and their children arrays costs a cache
    // miss per hop (~25 ms here); these arrays stay in cache. Children in seq order.
    this.t = { cap: 0, parent: null, firstChild: null, lastChild: null, nextSibling: null, seq: null };
    this.grow(1024);
    /** Running totals at the newest seq (the slider's past counts them on demand). */
    this.branchIds = new Set();
    this.decisions = 0;
    this.monitors = 0;
  }

  /** Branches, decisions and MONITORS edges at `seq`. */
  totalsAt(seq) {
    if (seq >= this.lastSeq) {
      return { branches: this.branchIds.size, decisions: this.decisions, monitors: this.monitors };
    }
    const count = this.countAt(seq);
    const branches = new Set();
    let decisions = 0;
    for (let i = 0; i < count; i++) {
      const n = this.nodes[i];
      branches.add(n.branch);
      if (n.type === 'decision') decisions++;
    }
    return { branches: branches.size, decisions, monitors: this.monitorsAt(seq).length };
  }

  /**
   * Loads an outline (`GET /v1/workflows/{wf}/outline`): its nodes, then its other
   * events, both in seq order. Must come first, on an empty workflow.
   */
  loadOutline(o) {
    const { seq, id, parent, type, role } = o.nodes;
    const recs = new Array(id.length);
    for (let i = 0; i < id.length; i++) {
      const p = parent[i] === null ? null : recs[parent[i]];
      recs[i] = this.addRec(id[i], seq[i], o.types[type[i]], role[i], p, null);
    }
    if (this.root) this.statuses.push({ seq: this.root.seq, status: 'running' });
    for (const ev of o.events) {
      if (ev.kind === 'edge.created') this.addEdge(ev.body, ev.seq);
      else if (ev.kind === 'workflow.status_changed') this.statuses.push({ seq: ev.seq, status: ev.body.to });
      else this.other.set(ev.kind, (this.other.get(ev.kind) || 0) + 1);
    }
    if (recs.length) this.firstSeq = recs[0].seq;
    this.lastSeq = Math.max(o.head, this.lastSeq);
  }

  /** Asks for `rec`'s label (drawn rows and panels call this; see app.js's loader). */
  want(rec) {
    if (rec.text === null && !rec.asked) this.wanted.add(rec);
  }

  /** Takes `labels` (id → first line) for the nodes `asked`. */
  setLabels(asked, labels) {
    for (const rec of asked) {
      rec.asked = false;
      if (rec.text !== null) continue;
      // A node left out is one the token does not see: it gets an empty label.
      rec.text = labels[rec.id] ?? '';
    }
  }

  /** Applies one event; false when it was already applied (a resumed stream). */
  apply(ev) {
    if (ev.seq <= this.lastSeq) return false;
    this.lastSeq = ev.seq;
    if (!this.firstSeq) this.firstSeq = ev.seq;
    const b = ev.body;
    switch (ev.kind) {
      case 'workflow.created':
        this.statuses.push({ seq: ev.seq, status: 'running' });
        this.addNode(b.root, ev.seq);
        break;
      case 'node.created':
        this.addNode(b, ev.seq);
        break;
      case 'edge.created':
        this.addEdge(b, ev.seq);
        break;
      case 'workflow.status_changed':
        this.statuses.push({ seq: ev.seq, status: b.to });
        break;
      default:
        this.other.set(ev.kind, (this.other.get(ev.kind) || 0) + 1);
    }
    return true;
  }

  /** Makes room for `cap` nodes in the typed arrays. */
  grow(cap) {
    const t = this.t;
    const more = (a, Kind) => {
      const b = new Kind(cap).fill(-1);
      if (a) b.set(a);
      return b;
    };
    t.parent = more(t.parent, Int32Array);
    t.firstChild = more(t.firstChild, Int32Array);
    t.lastChild = more(t.lastChild, Int32Array);
    t.nextSibling = more(t.nextSibling, Int32Array);
    t.seq = more(t.seq, Float64Array);
    t.cap = cap;
  }

  addNode(body, seq) {
    if (!body) return null;
    const parent = body.parent_id ? this.byId.get(body.parent_id) ?? null : null;
    return this.addRec(body.id, seq, body.type, body.role ?? null, parent, body);
  }

  /** Adds a node under `parent` (null: the root); null if it cannot be drawn. */
  addRec(id, seq, type, role, parent, body) {
    if (this.byId.has(id)) return null;
    if (!parent && this.root) return null; // a second root, or a parent not in the tree
    const rec = new NodeRec(id, seq, type, role, parent, body);
    rec.idx = this.nodes.length;
    if (rec.idx >= this.t.cap) this.grow(this.t.cap * 2);
    const t = this.t;
    t.seq[rec.idx] = seq;
    if (parent) {
      const p = parent.idx;
      t.parent[rec.idx] = p;
      if (t.lastChild[p] < 0) t.firstChild[p] = rec.idx;
      else t.nextSibling[t.lastChild[p]] = rec.idx;
      t.lastChild[p] = rec.idx;
      if (parent.children === NONE) parent.children = [rec];
      else parent.children.push(rec);
    } else {
      this.root = rec;
    }
    this.byId.set(rec.id, rec);
    this.nodes.push(rec);
    this.branchIds.add(rec.branch);
    if (rec.type === 'decision') this.decisions++;
    return rec;
  }

  addEdge(body, seq) {
    const from = this.byId.get(body.from);
    const to = this.byId.get(body.to);
    if (!from || !to) return;
    const e = { type: body.type, from, to, seq };
    if (from.out === NONE) from.out = [e];
    else from.out.push(e);
    if (to.in === NONE) to.in = [e];
    else to.in.push(e);
    this.edges.push(e);
    if (e.type === 'MONITORS') this.monitors++;
  }

  /** The status at `seq`. */
  statusAt(seq) {
    let s = null;
    for (const x of this.statuses) {
      if (x.seq > seq) break;
      s = x.status;
    }
    return s;
  }

  /** Nodes that exist at `seq`. */
  countAt(seq) {
    const ns = this.nodes;
    if (ns.length === 0 || ns[ns.length - 1].seq <= seq) return ns.length;
    let lo = 0;
    let hi = ns.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (ns[mid].seq <= seq) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** A decision's options at `seq`: option children, and OPTION_OF targets. */
  optionsOf(d, seq) {
    const opts = d.children.filter((c) => c.type === 'option' && c.seq <= seq);
    for (const e of d.out) {
      if (e.type === 'OPTION_OF' && e.seq <= seq && !opts.includes(e.to)) opts.push(e.to);
    }
    return opts;
  }

  /** The option chosen for decision `d` at `seq`, or null. */
  chosenOf(d, seq) {
    const e = d.out.find((x) => x.type === 'CHOSEN_OPTION' && x.seq <= seq);
    return e ? e.to : null;
  }

  /** Whether option `o` is an option of a decision that has chosen another one. */
  passedOver(o, seq) {
    const d = o.parent;
    if (!d || d.type !== 'decision') return false;
    const c = this.chosenOf(d, seq);
    return c !== null && c !== o;
  }

  /** Decision nodes at `seq`, in seq order. */
  decisionsAt(seq) {
    return this.nodes.filter((n) => n.type === 'decision' && n.seq <= seq);
  }

  /** MONITORS edges at `seq`. */
  monitorsAt(seq) {
    return this.edges.filter((e) => e.type === 'MONITORS' && e.seq <= seq);
  }

  /** Whether `a` is `b` or one of its ancestors. */
  static isAncestor(a, b) {
    for (let n = b; n; n = n.parent) if (n === a) return true;
    return false;
  }

  /**
   * The branches at `seq`, as arbor counts them (a node's branch): for each, the
   * fork it leaves from, its newest node and its length; oldest branch first.
   */
  branchesAt(seq) {
    const by = new Map();
    for (const n of this.nodes) {
      if (n.seq > seq) break;
      const id = n.branch;
      let b = by.get(id);
      if (!b) {
        b = { id, first: n, head: n, length: 0 };
        by.set(id, b);
      }
      b.head = n;
      b.length++;
    }
    return [...by.values()].map((b) => ({ ...b, fork: b.first.parent }));
  }

  /** The newest node at or below `n` at `seq`, along the newest child each time. */
  newestBelow(n, seq) {
    let cur = n;
    for (;;) {
      const k = cur.childrenAt(seq);
      if (k === 0) return cur;
      cur = cur.children[k - 1];
    }
  }
}
