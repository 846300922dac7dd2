// A workflow's tree, built from its events in log order. Every record keeps the seq that
// made it, so the tree "as it was at seq N" (the slider) is a filter, not a rebuild.
//
// The event kinds drawn are listed in KINDS; a kind this page does not know yet (drafts,
// jobs) is counted in `other` and reaches the node it names through `decorate`, so new
// kinds slot in as badges and panels without touching the tree.

/** The event kinds this page understands. */
export const KINDS = ['workflow.created', 'node.created', 'edge.created', 'workflow.status_changed'];

/** One node of the tree. */
export class NodeRec {
  constructor(body, seq, parent) {
    this.id = body.id;
    this.seq = seq;
    this.type = body.type;
    this.role = body.role ?? null;
    this.body = body;
    this.parent = parent;
    this.children = [];
    this.depth = parent ? parent.depth + 1 : 0;
    /** Edges out of and into this node, other than the parent's: {type, from, to, seq}. */
    this.out = [];
    this.in = [];
    /** Row of this node in the last flattened outline (valid when gen matches). */
    this.row = -1;
    this.gen = 0;
  }

  /** The first line of the content, short. */
  label() {
    const c = typeof this.body.content === 'string' ? this.body.content.trimStart() : '';
    const nl = c.indexOf('\n');
    const line = (nl >= 0 ? c.slice(0, nl) : c).slice(0, 240);
    return line || '(empty)';
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
    /** Bumped by every change of shape (a node), and of decoration (an edge, a status). */
    this.shape = 0;
    this.decor = 0;
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
      branches.add(n.body.branch_id);
      if (n.type === 'decision') decisions++;
    }
    return { branches: branches.size, decisions, monitors: this.monitorsAt(seq).length };
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
        this.meta = b.metadata || {};
        this.userId = b.user_id ?? null;
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
        this.decor++;
        break;
      default:
        this.other.set(ev.kind, (this.other.get(ev.kind) || 0) + 1);
    }
    return true;
  }

  addNode(body, seq) {
    if (!body || this.byId.has(body.id)) return;
    const parent = body.parent_id ? this.byId.get(body.parent_id) ?? null : null;
    const rec = new NodeRec(body, seq, parent);
    if (parent) parent.children.push(rec);
    else if (!this.root) this.root = rec;
    this.byId.set(rec.id, rec);
    this.nodes.push(rec);
    this.branchIds.add(body.branch_id);
    if (rec.type === 'decision') this.decisions++;
    this.shape++;
  }

  addEdge(body, seq) {
    const from = this.byId.get(body.from);
    const to = this.byId.get(body.to);
    if (!from || !to) return;
    const e = { type: body.type, from, to, seq };
    from.out.push(e);
    to.in.push(e);
    this.edges.push(e);
    if (e.type === 'MONITORS') this.monitors++;
    this.decor++;
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
   * The branches at `seq`, as arbor counts them (a node's `branch_id`): for each, the
   * fork it leaves from, its newest node and its length; oldest branch first.
   */
  branchesAt(seq) {
    const by = new Map();
    for (const n of this.nodes) {
      if (n.seq > seq) break;
      const id = n.body.branch_id || this.root?.id;
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
