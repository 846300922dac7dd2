// The tree laid out as an outline and drawn virtually.
//
// Layout: depth-first, children in seq order. A straight chain (one child) stays in its
// column; a fork (two or more children at the current seq) indents all its children one
// level, with a guide line per level. A conversation of 1 000 turns is one column, and
// the indentation counts forks, not depth.
//
// Drawing: the rows are flattened into an array once per change of shape (seq, fold,
// branch filter, a new node), at most once per animation frame; only the rows in the
// viewport (plus a margin) exist in the DOM, absolutely placed over a spacer as tall as
// all rows. Keyboard navigation follows the WAI-ARIA tree pattern, with the focused
// container pointing at the selected row through aria-activedescendant.

const ROW = 26;
const OVERSCAN = 12;
const MAX_INDENT = 40;
/** Live nodes placed directly per frame; past that, one flatten takes the burst. */
const INSERTS_PER_FRAME = 4;

export class Outline {
  /**
   * `el` is the scrolling container (role=tree); `rowsEl` holds the drawn rows;
   * `spacerEl` gives the container its full height. `on.select(rec)` hears selection
   * changes, `on.open(rec)` Enter or a click, `on.drawn()` every redraw.
   */
  constructor(el, rowsEl, spacerEl, on) {
    this.el = el;
    this.rowsEl = rowsEl;
    this.spacerEl = spacerEl;
    this.on = on;
    this.wf = null;
    this.seq = 0;
    this.rows = [];
    this.indents = new Int32Array(0);
    this.rowOf = new Int32Array(0); // node idx → row, valid where rows[row] is the node
    this.rowNode = new Int32Array(0); // row → node idx
    this.indentOf = new Int32Array(0);
    this.collapsed = new Set();
    this.anchor = null; // only this node's branch: its ancestors and its subtree
    this.selected = null;
    this.onPath = new Set();
    this.dirtyShape = false;
    this.dirtyDraw = false;
    this.frame = 0;
    this.nextFlatten = 0;
    this.pendingScroll = null;
    this.inserts = 0; // live nodes placed without a flatten
    this.insertsThisFrame = 0;
    /** Flatten costs in ms (for the benchmark): count, last, max. */
    this.flattens = { count: 0, last: 0, max: 0 };
    el.addEventListener('scroll', () => this.schedule(false));
    el.addEventListener('keydown', (e) => this.key(e));
    el.addEventListener('click', (e) => this.click(e));
    new ResizeObserver(() => this.schedule(false)).observe(el);
  }

  setWorkflow(wf) {
    this.wf = wf;
    this.seq = wf ? wf.lastSeq : 0;
    this.collapsed.clear();
    this.anchor = null;
    this.selected = null;
    this.onPath.clear();
    this.rows = [];
    this.el.scrollTop = 0;
    this.schedule(true);
  }

  setSeq(seq) {
    if (seq === this.seq) return;
    this.seq = seq;
    if (this.selected && this.selected.seq > seq) {
      // The selected node does not exist yet at this seq: select its newest ancestor that does.
      let n = this.selected;
      while (n && n.seq > seq) n = n.parent;
      this.select(n, { scroll: false });
    }
    this.schedule(true);
  }

  /** Shows only `anchor`'s branch (its ancestors and its subtree), or everything (null). */
  setAnchor(anchor) {
    this.anchor = anchor;
    this.schedule(true);
  }

  /**
   * Something changed: the shape (re-flatten) or only how rows look (redraw). A live
   * change of shape in a big tree waits for the next flatten slot (see `flush`).
   */
  schedule(shape, live = false) {
    if (shape) {
      this.dirtyShape = true;
      if (!live) this.nextFlatten = 0;
    }
    this.dirtyDraw = true;
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush(true));
  }

  /**
   * Does now what is scheduled (a test or the first paint may call it directly). From an
   * animation frame, a big tree is re-flattened at most every `flattenEvery` ms, a slot
   * four times its last flatten's cost (so flattening takes at most a fifth of the time
   * whatever the rate of events); rows are redrawn every frame meanwhile.
   */
  flush(fromFrame = false) {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.insertsThisFrame = 0;
    const now = performance.now();
    if (this.dirtyShape) {
      if (fromFrame && now < this.nextFlatten) {
        this.frame = requestAnimationFrame(() => this.flush(true));
      } else {
        this.flatten();
        const cost = performance.now() - now;
        this.flattens.count++;
        this.flattens.last = cost;
        this.flattens.max = Math.max(this.flattens.max, cost);
        this.nextFlatten = performance.now() + Math.min(1000, 4 * cost);
      }
    }
    const target = this.pendingScroll;
    if (target && !this.dirtyShape) {
      this.pendingScroll = null;
      this.scrollTo(target);
      this.dirtyDraw = true;
    }
    if (this.dirtyDraw) this.draw();
  }

  flatten() {
    this.dirtyShape = false;
    const wf = this.wf;
    const rows = this.rows;
    rows.length = 0;
    if (!wf || !wf.root || wf.root.seq > this.seq) {
      this.spacerEl.style.height = '0px';
      return;
    }
    // Preorder over the model's typed arrays (first child / next sibling / parent), with
    // no allocation in the steady state: a live re-flatten of a big tree is one short
    // task. Children are in seq order, so the first child past `seq` ends a sibling run.
    const need = wf.t.cap;
    if (this.indents.length < need) {
      this.indents = new Int32Array(need);
      this.rowOf = new Int32Array(need);
      this.rowNode = new Int32Array(need);
      this.indentOf = new Int32Array(need);
    }
    const rowNode = this.rowNode;
    const { parent, firstChild, nextSibling } = wf.t;
    const seqOf = wf.t.seq;
    const nodes = wf.nodes;
    const indents = this.indents;
    const rowOf = this.rowOf;
    const indentOf = this.indentOf;
    const seq = this.seq;
    const folded = this.collapsed.size ? this.collapsed : null;
    const keep = this.anchor ? ancestorsOf(this.anchor) : null;
    const anchor = this.anchor;
    // Whether child `c` of `p` is drawn: it exists at `seq`, and above the anchor only
    // the way down to it is.
    const admit = (c, p) => !keep || !keep.has(nodes[p]) || nodes[p] === anchor || keep.has(nodes[c]);
    // The first drawn child of `p` from `c` on, or -1.
    const from = (c, p) => {
      for (; c >= 0 && seqOf[c] <= seq; c = nextSibling[c]) if (admit(c, p)) return c;
      return -1;
    };
    const root = wf.root.idx;
    let i = root;
    let count = 0;
    indentOf[root] = 0;
    for (;;) {
      rowOf[i] = count;
      rowNode[count] = i;
      rows.push(nodes[i]);
      indents[count++] = indentOf[i];
      // Down to the first drawn child, if any and not folded.
      const c1 = firstChild[i];
      if (c1 >= 0 && seqOf[c1] <= seq && !(folded && folded.has(nodes[i]))) {
        const c2 = nextSibling[c1];
        const fork = c2 >= 0 && seqOf[c2] <= seq;
        const c = from(c1, i);
        if (c >= 0) {
          indentOf[c] = indentOf[i] + (fork ? 1 : 0);
          i = c;
          continue;
        }
      }
      // Else to the next drawn sibling of the nearest ancestor that has one.
      let next = -1;
      while (i !== root) {
        const p = parent[i];
        next = from(nextSibling[i], p);
        if (next >= 0) {
          indentOf[next] = indentOf[i];
          break;
        }
        i = p;
      }
      if (next < 0) break;
      i = next;
    }
    this.spacerEl.style.height = `${count * ROW}px`;
    if (this.selected && !this.visible(this.selected)) this.selected = rows[0] || null;
  }

  /**
   * Places a node just appended live (`rec`, the newest child of its parent) into the
   * flattened rows without re-flattening: its row is the end of its parent's subtree,
   * and when it makes its parent a fork, its older sibling's subtree moves one level in.
   * Costs a shift of the rows after it (typed arrays), not a walk of the tree: the way
   * for a trickle of events. Returns false when a full flatten is the better way (more
   * than `INSERTS_PER_FRAME` this frame: a burst costs less as one flatten in its next
   * slot) or the only one (a flatten pending, the slider in the past, "only this
   * branch", a folded or hidden parent, arrays full); the caller schedules one then.
   */
  insert(rec) {
    const wf = this.wf;
    const p = rec.parent;
    if (!wf || !p || this.dirtyShape || this.anchor || rec.seq > this.seq) return false;
    if (this.insertsThisFrame >= INSERTS_PER_FRAME) return false;
    if (!this.visible(p) || this.collapsed.has(p) || this.visible(rec)) return false;
    const n = this.rows.length;
    if (n + 1 > this.indents.length || rec.idx >= this.rowOf.length) return false;
    const t = wf.t;
    if (t.lastChild[p.idx] !== rec.idx) return false; // not the newest child
    // The end of p's subtree: the row of the next node in preorder after it.
    let at = n;
    for (let i = p.idx; i !== wf.root.idx; i = t.parent[i]) {
      const s = t.nextSibling[i];
      if (s >= 0) {
        at = this.rowOf[s];
        break;
      }
    }
    const indents = this.indents;
    const pRow = this.rowOf[p.idx];
    const first = t.firstChild[p.idx];
    let ind;
    if (first === rec.idx) {
      ind = indents[pRow]; // an only child continues its parent's column
    } else if (t.nextSibling[first] === rec.idx) {
      // The second child makes a fork: the first child's subtree moves one level in.
      ind = indents[pRow] + 1;
      for (let r = this.rowOf[first]; r < at; r++) indents[r]++;
    } else {
      ind = indents[this.rowOf[first]];
    }
    indents.copyWithin(at + 1, at, n);
    this.rowNode.copyWithin(at + 1, at, n);
    indents[at] = ind;
    this.rowNode[at] = rec.idx;
    this.rows.splice(at, 0, rec);
    const rowOf = this.rowOf;
    const rowNode = this.rowNode;
    for (let r = at; r <= n; r++) rowOf[rowNode[r]] = r;
    this.spacerEl.style.height = `${(n + 1) * ROW}px`;
    this.inserts++;
    this.insertsThisFrame++;
    this.schedule(false);
    return true;
  }

  /** Row of `rec` in the outline (-1 when not drawn). */
  rowIndex(rec) {
    return this.visible(rec) ? this.rowOf[rec.idx] : -1;
  }

  visible(rec) {
    return rec.idx >= 0 && rec.idx < this.rowOf.length && this.rows[this.rowOf[rec.idx]] === rec;
  }

  draw() {
    this.dirtyDraw = false;
    const top = this.el.scrollTop;
    const height = this.el.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / ROW) - OVERSCAN);
    const last = Math.min(this.rows.length, Math.ceil((top + height) / ROW) + OVERSCAN);
    const wf = this.wf;
    const frag = document.createDocumentFragment();
    for (let i = first; i < last; i++) frag.appendChild(this.rowEl(this.rows[i], this.indents[i], i, wf));
    this.rowsEl.replaceChildren(frag);
    if (this.selected && this.visible(this.selected)) {
      this.el.setAttribute('aria-activedescendant', rowId(this.selected));
    } else {
      this.el.removeAttribute('aria-activedescendant');
    }
    this.on.drawn?.();
  }

  rowEl(n, ind, i, wf) {
    const seq = this.seq;
    const row = document.createElement('div');
    row.className = `row t-${cssType(n.type)}`;
    row.id = rowId(n);
    row.dataset.id = n.id;
    row.dataset.seq = n.seq;
    row.setAttribute('role', 'treeitem');
    row.setAttribute('aria-level', String(ind + 1));
    row.setAttribute('aria-selected', n === this.selected ? 'true' : 'false');
    row.style.top = `${i * ROW}px`;
    if (this.onPath.has(n) && n !== this.selected) row.classList.add('on-path');

    const indent = document.createElement('span');
    indent.className = 'indent';
    indent.style.width = `${Math.min(ind, MAX_INDENT) * 16}px`;
    row.appendChild(indent);

    const k = n.childrenAt(seq);
    const fold = document.createElement('span');
    fold.className = 'fold';
    if (k >= 2 || (k >= 1 && this.collapsed.has(n))) {
      const open = !this.collapsed.has(n);
      fold.textContent = open ? '▾' : '▸';
      fold.dataset.fold = '1';
      row.setAttribute('aria-expanded', open ? 'true' : 'false');
    }
    row.appendChild(fold);
    if (ind > MAX_INDENT) row.appendChild(badge(`+${ind - MAX_INDENT} levels`, ''));

    const type = document.createElement('span');
    type.className = 'type';
    type.textContent = n.type;
    row.appendChild(type);
    const role = document.createElement('span');
    role.className = 'role';
    role.textContent = n.role || '';
    row.appendChild(role);
    const label = document.createElement('span');
    label.className = 'label';
    label.textContent = n.label();
    wf.want(n);
    row.appendChild(label);

    for (const [text, cls] of badgesOf(n, wf, seq)) row.appendChild(badge(text, cls));
    if (wf.passedOver(n, seq)) row.classList.add('dim');
    if (this.collapsed.has(n)) row.appendChild(badge(`${countBelow(n, seq)} folded`, ''));

    const s = document.createElement('span');
    s.className = 'seqno';
    s.textContent = `#${n.seq}`;
    row.appendChild(s);
    return row;
  }

  /**
   * Selects `rec` (a node record or null), scrolling it into view unless told not to:
   * at once, or (`now: false`, for live events) when the next flatten has placed it.
   */
  select(rec, { scroll = true, now = true } = {}) {
    this.selected = rec;
    this.onPath = rec ? ancestorsOf(rec) : new Set();
    if (rec && !this.visible(rec) && !this.dirtyShape) {
      // Hidden in a folded subtree: unfold the way to it.
      for (let n = rec.parent; n; n = n.parent) this.collapsed.delete(n);
      this.dirtyShape = true;
    }
    if (scroll && rec) {
      this.pendingScroll = rec;
      if (now) this.flush();
    }
    this.schedule(false);
    this.on.select?.(rec);
  }

  scrollTo(rec) {
    if (!this.visible(rec)) return;
    const y = this.rowIndex(rec) * ROW;
    const h = this.el.clientHeight;
    if (y < this.el.scrollTop) this.el.scrollTop = y;
    else if (y + ROW > this.el.scrollTop + h) this.el.scrollTop = y + ROW - h;
  }

  toggle(rec) {
    if (this.collapsed.has(rec)) this.collapsed.delete(rec);
    else if (rec.childrenAt(this.seq) > 0) this.collapsed.add(rec);
    this.schedule(true);
  }

  moveBy(delta) {
    if (!this.rows.length) return;
    const at = this.selected ? this.rowIndex(this.selected) : -1;
    const to = Math.max(0, Math.min(this.rows.length - 1, at + delta));
    this.select(this.rows[to]);
  }

  key(e) {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    const page = Math.max(1, Math.floor(this.el.clientHeight / ROW) - 1);
    const n = this.selected;
    switch (e.key) {
      case 'ArrowDown': this.moveBy(1); break;
      case 'ArrowUp': this.moveBy(-1); break;
      case 'PageDown': this.moveBy(page); break;
      case 'PageUp': this.moveBy(-page); break;
      case 'Home': this.moveBy(-Infinity); break;
      case 'End': this.moveBy(Infinity); break;
      case 'ArrowRight':
        if (!n) break;
        if (this.collapsed.has(n)) this.toggle(n);
        else if (n.childrenAt(this.seq) > 0) this.select(n.children[0]);
        break;
      case 'ArrowLeft':
        if (!n) break;
        if (n.childrenAt(this.seq) >= 2 && !this.collapsed.has(n)) this.toggle(n);
        else if (n.parent) this.select(n.parent);
        break;
      case 'Enter':
      case ' ':
        if (n) this.on.open?.(n);
        break;
      default:
        return;
    }
    e.preventDefault();
  }

  click(e) {
    const rowEl = e.target.closest('.row');
    if (!rowEl || !this.wf) return;
    const rec = this.wf.byId.get(rowEl.dataset.id);
    if (!rec) return;
    if (e.target.dataset.fold) {
      this.toggle(rec);
      return;
    }
    this.select(rec, { scroll: false });
    this.on.open?.(rec);
  }
}

function rowId(rec) {
  return `r-${rec.id}`;
}

function cssType(t) {
  return String(t).replace(/[^a-z0-9_-]/gi, '_');
}

function badge(text, cls) {
  const b = document.createElement('span');
  b.className = `badge ${cls}`;
  b.textContent = text;
  return b;
}

/** The node and its ancestors. */
function ancestorsOf(rec) {
  const s = new Set();
  for (let n = rec; n; n = n.parent) s.add(n);
  return s;
}

function countBelow(n, seq) {
  let c = 0;
  const stack = [n];
  while (stack.length) {
    const x = stack.pop();
    const k = x.childrenAt(seq);
    for (let i = 0; i < k; i++) stack.push(x.children[i]);
    c += k;
  }
  return c;
}

/**
 * The badges of a row: [text, class] pairs. Decisions, options and MONITORS edges now;
 * drafts and jobs (DESIGN §10, §11) will add theirs here, from the events they bring.
 */
export function badgesOf(n, wf, seq) {
  const out = [];
  if (n.type === 'decision') {
    const opts = wf.optionsOf(n, seq).length;
    const chosen = wf.chosenOf(n, seq);
    out.push([`${opts} option${opts === 1 ? '' : 's'}`, '']);
    out.push(chosen ? ['chosen', 'chosen'] : ['open', '']);
  } else if (n.parent && n.parent.type === 'decision' && n.type === 'option') {
    const chosen = wf.chosenOf(n.parent, seq);
    if (chosen === n) out.push(['✓ chosen', 'chosen']);
    else if (chosen) out.push(['not chosen', 'not-chosen']);
  }
  let watches = 0;
  for (const e of n.out) if (e.type === 'MONITORS' && e.seq <= seq) watches++;
  if (watches) out.push([`watches ${watches}`, 'watch']);
  let watched = 0;
  for (const e of n.in) if (e.type === 'MONITORS' && e.seq <= seq) watched++;
  if (watched) out.push([`watched by ${watched}`, 'watch']);
  return out;
}
