// The outline's flatten (src/http/ui/outline.js, which walks the model's typed arrays)
// against a naive recursive outline over the records' children, on random trees, at
// random seqs (the slider), with random folds and "only this branch" anchors; then live
// growth: nodes appended one by one and placed by `Outline.insert` (or a flatten when it
// declines), checked against the naive outline after every node. Run by tests/ui.rs:
// `node tests/browser/outline_check.mjs`; prints a summary line and exits 1 on the
// first difference.
import { Workflow } from '../../src/http/ui/model.js';

globalThis.requestAnimationFrame = () => 0;
globalThis.cancelAnimationFrame = () => {};
globalThis.ResizeObserver = class { observe() {} };
const { Outline } = await import('../../src/http/ui/outline.js');

let state = 1;
const rand = (n) => {
  state = (state * 1103515245 + 12345) % 2147483648;
  return Math.floor((state / 2147483648) * n);
};

function naive(wf, seq, folded, anchor) {
  const keep = new Set();
  for (let n = anchor; n; n = n.parent) keep.add(n);
  const out = [];
  const walk = (n, ind) => {
    out.push(`${n.id}:${ind}`);
    if (folded.has(n)) return;
    const ch = n.children.filter((c) => c.seq <= seq);
    const ci = ch.length >= 2 ? ind + 1 : ind;
    for (const c of ch) {
      if (anchor && keep.has(n) && n !== anchor && !keep.has(c)) continue;
      walk(c, ci);
    }
  };
  if (wf.root.seq <= seq) walk(wf.root, 0);
  return out;
}

const el = { addEventListener() {}, scrollTop: 0, clientHeight: 800, setAttribute() {}, removeAttribute() {} };
let cases = 0;
for (let t = 0; t < 40; t++) {
  state = t + 1;
  const n = 1 + rand(t < 10 ? 12 : 3000); // small trees find edge cases, big ones grow the arrays
  const id = [], parent = [], type = [], role = [], seq = [];
  let s = 0;
  for (let i = 0; i < n; i++) {
    s += 1 + rand(3); // gaps: other events take seqs too
    id.push(`n${i}`);
    seq.push(s);
    type.push(i ? 1 : 0);
    role.push(null);
    parent.push(i === 0 ? null : rand(4) === 0 ? rand(i) : i - 1);
  }
  const wf = new Workflow('w');
  // Half the trees arrive as an outline, half as live events (the other growth path).
  if (t % 2 === 0) {
    wf.loadOutline({ head: s, types: ['system', 'message'], nodes: { seq, id, parent, type, role }, events: [] });
  } else {
    for (let i = 0; i < n; i++) {
      const body = { id: id[i], parent_id: parent[i] === null ? null : id[parent[i]], type: 'message', content: 'x' };
      wf.apply(i === 0 ? { seq: seq[i], kind: 'workflow.created', body: { root: body } } : { seq: seq[i], kind: 'node.created', body });
    }
  }
  const o = new Outline(el, { replaceChildren() {} }, { style: {} }, {});
  o.setWorkflow(wf);
  for (let k = 0; k < 6; k++) {
    const at = k === 0 ? s : rand(s + 2);
    const folded = new Set();
    for (let f = rand(4); f > 0; f--) folded.add(wf.nodes[rand(n)]);
    const anchor = rand(3) === 0 ? wf.nodes[rand(n)] : null;
    o.collapsed = folded;
    o.anchor = anchor;
    o.seq = at;
    o.flatten();
    const got = o.rows.map((r, i) => `${r.id}:${o.indents[i]}`);
    const want = naive(wf, at, folded, anchor);
    cases++;
    if (got.join(',') !== want.join(',')) {
      console.log(`DIFFERENT tree ${t} (${n} nodes) seq ${at} folded ${folded.size} anchor ${anchor && anchor.id}`);
      console.log(`  got  ${got.slice(0, 20).join(' ')}`);
      console.log(`  want ${want.slice(0, 20).join(' ')}`);
      process.exit(1);
    }
    for (const r of o.rows) {
      if (o.rows[o.rowIndex(r)] !== r) {
        console.log(`row index wrong for ${r.id} in tree ${t}`);
        process.exit(1);
      }
    }
  }
}
function same(o, wf, what) {
  const got = o.rows.map((r, i) => `${r.id}:${o.indents[i]}`);
  const want = naive(wf, o.seq, o.collapsed, o.anchor);
  if (got.join(',') !== want.join(',')) {
    console.log(`DIFFERENT after ${what}`);
    console.log(`  got  ${got.slice(0, 30).join(' ')}`);
    console.log(`  want ${want.slice(0, 30).join(' ')}`);
    process.exit(1);
  }
  for (const r of o.rows) {
    if (o.rows[o.rowIndex(r)] !== r) {
      console.log(`row index wrong for ${r.id} after ${what}`);
      process.exit(1);
    }
  }
}

// Live growth.
let inserted = 0;
let declined = 0;
for (let t = 0; t < 30; t++) {
  state = 1000 + t;
  const wf = new Workflow('w');
  let s = 1;
  wf.apply({ seq: s, kind: 'workflow.created', body: { root: { id: 'r', parent_id: null, type: 'system', content: 'x' } } });
  const o = new Outline(el, { replaceChildren() {} }, { style: {} }, {});
  o.setWorkflow(wf);
  o.flatten();
  const grow = 1 + rand(t < 10 ? 15 : 2500);
  for (let i = 0; i < grow; i++) {
    // Now and then a fold or "only this branch" comes and goes (insert declines then).
    if (rand(50) === 0) {
      o.collapsed = rand(2) ? new Set([wf.nodes[rand(wf.nodes.length)]]) : new Set();
      o.anchor = rand(3) === 0 ? wf.nodes[rand(wf.nodes.length)] : null;
      o.flatten();
    }
    s += 1 + rand(2);
    const parent = rand(3) === 0 ? wf.nodes[rand(wf.nodes.length)] : wf.nodes[wf.nodes.length - 1 - rand(Math.min(5, wf.nodes.length))];
    const id = `l${t}_${i}`;
    wf.apply({ seq: s, kind: 'node.created', body: { id, parent_id: parent.id, type: 'message', content: id } });
    o.seq = wf.lastSeq;
    const rec = wf.byId.get(id);
    if (rand(3)) o.insertsThisFrame = 0; // a new animation frame (flush resets it)
    const plain = !o.anchor && o.collapsed.size === 0 && rec.idx < o.rowOf.length && o.insertsThisFrame < 4;
    if (o.insert(rec)) inserted++;
    else {
      declined++;
      // Without a filter, with room and under the frame's quota, a live node is always
      // placed directly.
      if (plain) {
        console.log(`insert declined a plain live node: tree ${t} node ${i}`);
        process.exit(1);
      }
      o.flatten();
    }
    if (t < 10 || i % 97 === 0 || i === grow - 1) same(o, wf, `tree ${t} node ${i}`);
  }
}
console.log(`ok ${cases} cases, ${inserted} live nodes placed (${declined} by a flatten)`);
