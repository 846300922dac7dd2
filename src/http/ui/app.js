// arbor's page: the workflow list, a workflow's live tree, the node panel, the token.
//
// Data flow: opening a workflow loads its outline (`/outline`: every node's place, type
// and role from the server's in-memory index, and the few events that create no node)
// into a Workflow model, paints, fetches the labels of the rows on screen (`/labels`,
// 200 at a time, as rows and panels ask for them), then follows
// `/stream?after=<outline head>`. Every live event goes through `Workflow.apply`, which
// ignores a seq it has seen — so a stream resumed after a restart can neither duplicate
// nor skip a node. A node's full body is fetched when its panel opens.

import { get, LiveStream, token, ApiError } from './api.js';
import { Workflow, KINDS } from './model.js';
import { Outline, badgesOf } from './outline.js';

const $ = (id) => document.getElementById(id);

const state = {
  wf: null, // the open workflow's model
  stream: null,
  load: null, // AbortController of the outline load in progress
  live: true, // the slider follows the newest event
  follow: false, // the selection follows the newest node below the anchor
  anchor: null,
  tab: 'tree',
  detailFor: null,
  pathTimer: 0,
  list: { cursor: null, items: [] },
};

// What tests and benchmarks read: readiness, load and paint times, frame times.
/** The longest run, in ms, of each of the page's own tasks (see `timed`). */
const slowest = {};

/** `fn` measured: its longest run is kept in `slowest[name]` (a long task that none of
 * these explains is the browser's: garbage collection, layout, the network). */
function timed(name, fn) {
  return (...args) => {
    const t = performance.now();
    try {
      return fn(...args);
    } finally {
      const d = performance.now() - t;
      if (!(slowest[name] >= d)) slowest[name] = d;
    }
  };
}

const probe = {
  /** The longest run of each of the page's tasks since `startFrames`, ms. */
  slowest() {
    return { ...slowest };
  },
  loaded: null, // the workflow id once painted
  perf: {},
  longTasks: [],
  errors: [], // uncaught errors and Content-Security-Policy violations
  frames: null,
  /** Nodes in the open workflow's model (cheap, unlike `snapshot`). */
  nodeCount() {
    return state.wf ? state.wf.nodes.length : 0;
  },
  /** Outline flatten costs (count, last and max ms) and live nodes placed without one. */
  flattens() {
    return { ...outline.flattens, inserts: outline.inserts };
  },
  snapshot() {
    const wf = state.wf;
    return wf
      ? { workflow: wf.id, lastSeq: wf.lastSeq, nodes: wf.nodes.length, ids: wf.nodes.map((n) => n.id), rows: outline.rows.length, dropped: state.stream ? state.stream.dropped || 0 : 0 }
      : null;
  },
  /** Starts recording frame gaps (requestAnimationFrame to requestAnimationFrame). */
  startFrames() {
    outline.flattens = { count: 0, last: 0, max: 0 };
    for (const k of Object.keys(slowest)) delete slowest[k];
    const f = { count: 0, max: 0, over100: 0, running: true, last: performance.now() };
    probe.frames = f;
    const tick = (t) => {
      if (!f.running) return;
      const d = t - f.last;
      f.last = t;
      f.count++;
      f.max = Math.max(f.max, d);
      if (d > 100) f.over100++;
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  },
  stopFrames() {
    const f = probe.frames;
    if (f) f.running = false;
    return f && { count: f.count, max: f.max, over100: f.over100 };
  },
};
window.arbor = probe;
window.addEventListener('error', (e) => probe.errors.push(`error: ${e.message}`));
window.addEventListener('unhandledrejection', (e) => probe.errors.push(`rejection: ${e.reason}`));
document.addEventListener('securitypolicyviolation', (e) => probe.errors.push(`csp: ${e.violatedDirective} ${e.blockedURI}`));
try {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) probe.longTasks.push({ start: e.startTime, duration: e.duration });
  }).observe({ type: 'longtask', buffered: true });
} catch (_) { /* no long-task timing in this browser */ }

const outline = new Outline($('tree'), $('tree-rows'), $('tree-spacer'), {
  select: (rec) => onSelect(rec),
  open: (rec) => showDetail(rec, true),
  drawn: timed('panels+labels', () => { drawPanels(); loadLabels(); }),
});
outline.flush = timed('frame', outline.flush.bind(outline));

// ---- labels: fetched for what is drawn ---------------------------------------------

const labels = { busy: null, retryAt: 0 };

/**
 * Fetches the labels the drawn rows and panels asked for (`Workflow.want`), 200 per
 * request, one request at a time; resolves when none is wanted any more. After an error
 * the next try waits two seconds.
 */
function loadLabels() {
  const wf = state.wf;
  if (labels.busy) return labels.busy;
  if (!wf || wf.wanted.size === 0) return Promise.resolve();
  const wait = labels.retryAt - performance.now();
  if (wait > 0) {
    setTimeout(loadLabels, wait);
    return Promise.resolve();
  }
  const asked = [];
  for (const rec of wf.wanted) {
    asked.push(rec);
    rec.asked = true;
    if (asked.length === 200) break;
  }
  for (const rec of asked) wf.wanted.delete(rec);
  const ids = asked.map((r) => r.id).join(',');
  labels.busy = get(`/v1/workflows/${wf.id}/labels?ids=${ids}`).then(
    timed('labels', (r) => { wf.setLabels(asked, r.labels); }),
    (e) => {
      for (const rec of asked) rec.asked = false;
      labels.retryAt = performance.now() + 2000;
      if (e instanceof ApiError && e.status === 401) askToken();
    },
  ).then(() => {
    labels.busy = null;
    if (state.wf !== wf) return undefined;
    outline.schedule(false);
    if (state.tab !== 'tree') drawPanels(true);
    if (state.detailFor) refreshDetailLabels();
    return wf.wanted.size && performance.now() >= labels.retryAt ? loadLabels() : undefined;
  });
  return labels.busy;
}

// ---- connection state -------------------------------------------------------------

function setConn(s, text) {
  const el = $('conn');
  el.dataset.state = s;
  el.textContent = text || s;
}

function fail(where, e) {
  if (e && e.name === 'AbortError') return;
  if (e instanceof ApiError && e.status === 401) {
    askToken();
    return;
  }
  const el = $(where);
  el.textContent = e instanceof ApiError ? `${e.title}: ${e.message}` : String(e);
  el.hidden = false;
}

// ---- the token ---------------------------------------------------------------------

function askToken(message) {
  const dlg = $('token-dialog');
  $('token-error').hidden = !message;
  $('token-error').textContent = message || '';
  $('token-input').value = '';
  if (!dlg.open) dlg.showModal();
}

$('token-button').addEventListener('click', () => askToken());
$('token-forget').addEventListener('click', () => {
  token.clear();
  $('token-dialog').close();
  refreshList();
});
$('token-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const t = $('token-input').value.trim();
  if (!t) return;
  token.set(t);
  try {
    await get('/v1/workflows?limit=1');
  } catch (err) {
    if (err instanceof ApiError && (err.status === 401 || err.status === 429)) {
      token.clear();
      askToken(err.status === 401 ? 'That token was not accepted.' : err.message);
      return;
    }
  }
  $('token-dialog').close();
  refreshList();
  const w = route().wf;
  if (w) openWorkflow(w, route().node, true);
});

// ---- the workflow list -------------------------------------------------------------

function titleOf(w) {
  const m = w.metadata || {};
  for (const k of ['title', 'name', 'task', 'repo']) if (typeof m[k] === 'string' && m[k]) return m[k];
  return w.workflow_id;
}

async function refreshList(more = false) {
  const cursor = more ? state.list.cursor : null;
  const q = new URLSearchParams({ limit: '100' });
  if (cursor) q.set('cursor', cursor);
  try {
    const page = await get(`/v1/workflows?${q}`);
    state.list.items = more ? state.list.items.concat(page.workflows) : page.workflows;
    state.list.cursor = page.next_cursor;
    $('wf-error').hidden = true;
    drawList();
  } catch (e) {
    fail('wf-error', e);
  }
}

function drawList() {
  const f = $('wf-filter').value.trim().toLowerCase();
  const ul = $('wf-list');
  const frag = document.createDocumentFragment();
  for (const w of state.list.items) {
    const hay = `${w.workflow_id} ${w.user_id || ''} ${w.status} ${JSON.stringify(w.metadata || {})}`.toLowerCase();
    if (f && !hay.includes(f)) continue;
    const li = document.createElement('li');
    const a = document.createElement('a');
    a.href = `#/w/${w.workflow_id}`;
    a.dataset.wf = w.workflow_id;
    if (state.wf && state.wf.id === w.workflow_id) a.setAttribute('aria-current', 'page');
    const name = document.createElement('div');
    name.className = 'wf-name';
    name.textContent = titleOf(w);
    const meta = document.createElement('div');
    meta.className = 'wf-meta';
    const st = document.createElement('span');
    st.className = 'status';
    st.dataset.status = w.status;
    st.textContent = w.status;
    meta.append(st, text(`${w.node_count} nodes`), text(`${w.branch_count} branches`));
    if (w.user_id) meta.append(text(w.user_id));
    meta.append(text(when(w.updated_at)));
    a.append(name, meta);
    li.appendChild(a);
    frag.appendChild(li);
  }
  ul.replaceChildren(frag);
  $('wf-more').hidden = !state.list.cursor;
}

function text(s) {
  const span = document.createElement('span');
  span.textContent = s;
  return span;
}

function when(ts) {
  if (!ts) return '';
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? ts : d.toLocaleString();
}

$('wf-filter').addEventListener('input', drawList);
$('refresh').addEventListener('click', () => refreshList());
$('wf-more').addEventListener('click', () => refreshList(true));
$('menu').addEventListener('click', () => {
  const open = $('sidebar').classList.toggle('open');
  $('menu').setAttribute('aria-expanded', String(open));
});
$('wf-list').addEventListener('click', () => {
  $('sidebar').classList.remove('open');
  $('menu').setAttribute('aria-expanded', 'false');
});

// ---- routing: #/w/{workflow}[/n/{node}] ---------------------------------------------

function route() {
  const m = /^#\/w\/([0-9a-fA-F-]{36})(?:\/n\/([0-9a-fA-F-]{36}))?$/.exec(location.hash);
  return m ? { wf: m[1].toLowerCase(), node: m[2] ? m[2].toLowerCase() : null } : { wf: null, node: null };
}

function onRoute() {
  const r = route();
  if (!r.wf) {
    closeWorkflow();
    return;
  }
  if (!state.wf || state.wf.id !== r.wf) {
    openWorkflow(r.wf, r.node);
  } else if (r.node && (!outline.selected || outline.selected.id !== r.node)) {
    const rec = state.wf.byId.get(r.node);
    if (rec) outline.select(rec);
  }
}
window.addEventListener('hashchange', onRoute);

// ---- a workflow --------------------------------------------------------------------

function closeWorkflow() {
  if (state.stream) state.stream.close();
  if (state.load) state.load.abort();
  state.stream = null;
  state.wf = null;
  outline.setWorkflow(null);
  $('workflow').hidden = true;
  $('empty').hidden = false;
  $('detail').hidden = true;
  setConn('idle');
  drawList();
}

async function openWorkflow(id, nodeId, reopen = false) {
  closeWorkflow();
  const t0 = performance.now();
  const wf = new Workflow(id);
  state.wf = wf;
  state.live = true;
  state.follow = false;
  state.anchor = null;
  probe.loaded = null;
  $('only-branch').checked = false;
  $('empty').hidden = true;
  $('workflow').hidden = false;
  $('wf-error-main').hidden = true;
  $('wf-title').textContent = id;
  drawList();
  const abort = new AbortController();
  state.load = abort;
  setConn('loading', 'loading…');
  let after;
  const timing = {};
  try {
    const summary = get(`/v1/workflows/${id}`, { signal: abort.signal });
    const tFetch = performance.now();
    const o = await get(`/v1/workflows/${id}/outline`, { signal: abort.signal });
    timing.fetchMs = performance.now() - tFetch;
    if (state.wf !== wf) return;
    const tApply = performance.now();
    wf.loadOutline(o);
    timing.applyMs = performance.now() - tApply;
    after = o.head;
    const s = await summary;
    $('wf-title').textContent = titleOf(s);
    $('wf-title').title = id;
  } catch (e) {
    if (state.wf !== wf) return;
    setConn('error', 'error');
    fail('wf-error-main', e);
    return;
  }
  if (state.wf !== wf) return; // another workflow was opened meanwhile
  const tLoaded = performance.now();
  outline.setWorkflow(wf);
  outline.seq = wf.lastSeq;
  syncSlider();
  const start = (nodeId && wf.byId.get(nodeId)) || wf.root;
  outline.flush();
  if (start) outline.select(start);
  outline.flush();
  timing.firstRowsMs = performance.now();
  // The rows on screen asked for their labels while drawing: painted once they are in.
  await loadLabels();
  if (state.wf !== wf) return;
  outline.flush();
  performance.mark('arbor:painted');
  const tPainted = performance.now();
  probe.perf = { nodes: wf.nodes.length, loadMs: tLoaded - t0, drawMs: tPainted - tLoaded, paintMs: tPainted, ...timing };
  probe.loaded = id;
  document.body.dataset.loaded = id;
  state.stream = new LiveStream(id, Math.max(after || 0, wf.lastSeq), KINDS, timed('event', onEvent), onStream);
  if (nodeId && start && !reopen) showDetail(start, false);
}

function onStream(s) {
  if (s === 'live') setConn('live', 'live');
  else if (s === 'reconnecting') setConn('reconnecting', 'reconnecting…');
  else if (s === 'unauthorized') { setConn('error', 'token refused'); askToken('The token was refused.'); }
  else if (s === 'gap') { setConn('reconnecting', 'history pruned: reloading'); openWorkflow(state.wf.id); }
}

function onEvent(ev) {
  const wf = state.wf;
  if (!wf || !wf.apply(ev)) return;
  if (state.live) {
    outline.seq = wf.lastSeq;
  }
  const shape = ev.kind === 'node.created' || ev.kind === 'workflow.created';
  if (shape) {
    // A live node is placed into the drawn rows directly; otherwise (slider in the
    // past, a filter, a fold) the outline re-flattens in its next slot.
    const rec = wf.byId.get(ev.kind === 'node.created' ? ev.body.id : ev.body.root?.id);
    if (!rec || !outline.insert(rec)) outline.schedule(true, true);
    if (rec && state.follow && state.anchor && state.live && Workflow.isAncestor(state.anchor, rec)) {
      outline.select(rec, { now: false });
    }
  } else {
    outline.schedule(false); // edges and statuses change how rows look, not the rows
  }
  if (state.detailFor && ev.kind === 'edge.created' && (ev.body.from === state.detailFor.id || ev.body.to === state.detailFor.id)) {
    showDetail(state.detailFor, false);
  }
  sliderDirty = true;
}

// ---- toolbar -----------------------------------------------------------------------

let sliderDirty = false;

function syncSlider() {
  sliderDirty = false;
  const wf = state.wf;
  if (!wf) return;
  const s = $('seq');
  s.min = String(wf.firstSeq);
  s.max = String(wf.lastSeq);
  if (state.live) s.value = String(wf.lastSeq);
  const seq = Number(s.value);
  const count = wf.countAt(seq);
  $('seq-out').textContent = `seq ${seq} · ${count} of ${wf.nodes.length} nodes`;
  const status = wf.statusAt(seq) || 'unknown';
  $('wf-status').textContent = status;
  $('wf-status').dataset.status = status;
  const t = wf.totalsAt(seq);
  $('wf-counts').textContent = `${count} nodes · ${t.branches} branches · ${t.decisions} decisions · ${t.monitors} monitors`;
  $('live').setAttribute('aria-pressed', String(state.live));
}

$('seq').addEventListener('input', () => {
  const wf = state.wf;
  if (!wf) return;
  const v = Number($('seq').value);
  state.live = v >= wf.lastSeq;
  outline.setSeq(v);
  syncSlider();
});
$('live').addEventListener('click', () => {
  if (!state.wf) return;
  state.live = true;
  outline.setSeq(state.wf.lastSeq);
  syncSlider();
});

function setFollow(on) {
  const rec = outline.selected;
  state.follow = on && !!rec;
  state.anchor = state.follow ? rec : null;
  $('follow').setAttribute('aria-pressed', String(state.follow));
  if (state.follow) {
    state.live = true;
    outline.setSeq(state.wf.lastSeq);
    outline.select(state.wf.newestBelow(rec, state.wf.lastSeq));
    syncSlider();
  }
  if ($('only-branch').checked) outline.setAnchor(state.anchor || outline.selected);
}
$('follow').addEventListener('click', () => setFollow(!state.follow));
$('only-branch').addEventListener('change', () => {
  outline.setAnchor($('only-branch').checked ? state.anchor || outline.selected : null);
});
$('tree').addEventListener('keydown', (e) => {
  if (e.key === 'f' && !e.ctrlKey && !e.metaKey && !e.altKey) {
    setFollow(!state.follow);
    e.preventDefault();
  }
});

for (const t of ['tree', 'decisions', 'branches', 'monitors']) {
  $(`tab-${t}`).addEventListener('click', () => showTab(t));
}

function showTab(t) {
  state.tab = t;
  for (const x of ['tree', 'decisions', 'branches', 'monitors']) {
    $(`tab-${x}`).setAttribute('aria-selected', String(x === t));
    $(x).hidden = x !== t;
  }
  drawPanels(true);
  if (t === 'tree') {
    outline.schedule(false);
    $('tree').focus();
  }
}

// ---- the panels: decisions, branches, monitors ---------------------------------------

let panelKey = '';

function drawPanels(force) {
  if (sliderDirty) syncSlider();
  const wf = state.wf;
  if (!wf || state.tab === 'tree') return;
  const key = `${state.tab}:${wf.lastSeq}:${outline.seq}`;
  if (!force && key === panelKey) return;
  panelKey = key;
  const seq = outline.seq;
  const el = $(state.tab);
  const frag = document.createDocumentFragment();
  if (state.tab === 'decisions') {
    for (const d of wf.decisionsAt(seq)) {
      const card = div('card decision');
      card.append(jump(d));
      const chosen = wf.chosenOf(d, seq);
      const ul = document.createElement('ul');
      for (const o of wf.optionsOf(d, seq)) {
        const li = document.createElement('li');
        if (o === chosen) li.className = 'chosen';
        li.append(jump(o), text(o === chosen ? ' ✓ chosen' : ''));
        ul.appendChild(li);
      }
      card.append(ul, text(chosen ? '' : 'not chosen yet'));
      frag.appendChild(card);
    }
    if (!frag.childNodes.length) frag.appendChild(text('No decisions at this seq.'));
  } else if (state.tab === 'branches') {
    for (const b of wf.branchesAt(seq)) {
      const card = div('card branch');
      if (b.fork) wf.want(b.fork);
      const from = b.fork ? `from #${b.fork.seq} ${b.fork.label()}` : 'the main line';
      card.append(text(`${b.length} nodes, ${from} → `), jump(b.head, `#${b.head.seq} `));
      const f = document.createElement('button');
      f.type = 'button';
      f.textContent = 'Follow';
      f.addEventListener('click', () => {
        showTab('tree');
        outline.select(b.head);
        setFollow(true);
      });
      card.append(text(' '), f);
      frag.appendChild(card);
    }
  } else if (state.tab === 'monitors') {
    for (const e of wf.monitorsAt(seq)) {
      const card = div('card monitor');
      const cross = e.from.branch !== e.to.branch;
      card.append(jump(e.from, `#${e.from.seq} `), text(' watches '), jump(e.to, `#${e.to.seq} `), text(cross ? ' (across branches)' : ''));
      frag.appendChild(card);
    }
    if (!frag.childNodes.length) frag.appendChild(text('No MONITORS edges at this seq.'));
  }
  el.replaceChildren(frag);
}

function div(cls) {
  const d = document.createElement('div');
  d.className = cls;
  return d;
}

/** A button naming `rec` (`prefix` + its label) that selects it. */
function jump(rec, prefix = '') {
  state.wf?.want(rec);
  const b = document.createElement('button');
  b.type = 'button';
  b.className = 'jump';
  b.textContent = prefix + rec.label();
  b.dataset.id = rec.id;
  b.dataset.prefix = prefix;
  if (rec.text === null) b.dataset.pending = '1';
  b.addEventListener('click', () => {
    if (state.tab !== 'tree') showTab('tree');
    outline.select(rec);
    showDetail(rec, false);
  });
  return b;
}

/** Fills in the labels that have arrived on the jump buttons of the node panel. */
function refreshDetailLabels() {
  const wf = state.wf;
  for (const b of $('d-body').querySelectorAll('.jump[data-pending]')) {
    const rec = wf && wf.byId.get(b.dataset.id);
    if (!rec || rec.text === null) continue;
    b.textContent = b.dataset.prefix + rec.label();
    delete b.dataset.pending;
  }
}

// ---- the node panel ----------------------------------------------------------------

function onSelect(rec) {
  if (!rec || !state.wf) return;
  history.replaceState(null, '', `#/w/${state.wf.id}/n/${rec.id}`);
  if (!$('detail').hidden) showDetail(rec, false);
}

$('d-close').addEventListener('click', () => {
  $('detail').hidden = true;
  state.detailFor = null;
  $('tree').focus();
});
document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && !$('detail').hidden && !$('token-dialog').open) {
    $('detail').hidden = true;
    state.detailFor = null;
    $('tree').focus();
  }
});

function showDetail(rec, focus) {
  const wf = state.wf;
  if (!wf) return;
  state.detailFor = rec;
  if (!rec.full && !rec.loading && !rec.loadError) {
    // A node from the outline: its content, payload and metadata come with the node.
    rec.loading = get(`/v1/nodes/${rec.id}`).then(
      (n) => { rec.setBody(n); },
      (e) => {
        if (e instanceof ApiError && e.status === 401) askToken();
        else rec.loadError = e.message;
      },
    ).then(() => {
      rec.loading = null;
      if (state.detailFor === rec && state.wf === wf) showDetail(rec, false);
      outline.schedule(false);
    });
  }
  const seq = outline.seq;
  $('detail').hidden = false;
  $('d-title').textContent = `${rec.type}${rec.role ? ` · ${rec.role}` : ''} #${rec.seq}`;
  const body = $('d-body');
  const frag = document.createDocumentFragment();

  const actions = div('detail-actions');
  const follow = document.createElement('button');
  follow.type = 'button';
  follow.textContent = 'Follow this branch';
  follow.addEventListener('click', () => {
    outline.select(rec);
    setFollow(true);
  });
  actions.append(follow);
  if (rec.parent) {
    const up = document.createElement('button');
    up.type = 'button';
    up.textContent = 'Parent';
    up.addEventListener('click', () => { outline.select(rec.parent); showDetail(rec.parent, false); });
    actions.append(up);
  }
  frag.appendChild(actions);

  const b = rec.body || {};
  const kv = document.createElement('dl');
  kv.className = 'kv';
  const row = (k, v) => { if (v === null || v === undefined || v === '') return; const dt = document.createElement('dt'); dt.textContent = k; const dd = document.createElement('dd'); if (v instanceof Node) dd.append(v); else dd.textContent = String(v); kv.append(dt, dd); };
  row('id', b.id);
  row('seq', rec.seq);
  row('time', when(b.timestamp));
  row('depth', rec.depth);
  row('branch', rec.branch);
  row('agent', b.agent_id);
  row('user', b.user_id);
  row('children', rec.childrenAt(seq));
  const badges = badgesOf(rec, wf, seq).map((x) => x[0]).join(' · ');
  row('marks', badges);
  frag.appendChild(kv);

  frag.appendChild(heading('Content'));
  const content = document.createElement('pre');
  content.className = 'content';
  if (!rec.full) content.textContent = rec.loadError ? `could not load the node: ${rec.loadError}` : 'loading…';
  else content.textContent = typeof b.content === 'string' ? b.content : JSON.stringify(b.content, null, 2);
  frag.appendChild(content);
  if (b.payload !== null && b.payload !== undefined) {
    frag.appendChild(heading('Payload'));
    frag.appendChild(pre(b.payload));
  }
  if (b.metadata && Object.keys(b.metadata).length) {
    frag.appendChild(heading('Metadata'));
    frag.appendChild(pre(b.metadata));
  }

  if (rec.type === 'decision') {
    frag.appendChild(heading('Options'));
    const chosen = wf.chosenOf(rec, seq);
    const ul = document.createElement('ul');
    for (const o of wf.optionsOf(rec, seq)) {
      const li = document.createElement('li');
      li.append(jump(o), text(o === chosen ? ' ✓ chosen' : ''));
      ul.appendChild(li);
    }
    frag.appendChild(ul);
  }
  const links = [
    ['Watches', rec.out.filter((e) => e.type === 'MONITORS' && e.seq <= seq).map((e) => e.to)],
    ['Watched by', rec.in.filter((e) => e.type === 'MONITORS' && e.seq <= seq).map((e) => e.from)],
  ];
  for (const [title, recs] of links) {
    if (!recs.length) continue;
    frag.appendChild(heading(title));
    const ul = document.createElement('ul');
    for (const r of recs) {
      const li = document.createElement('li');
      li.append(jump(r, `#${r.seq} ${r.type}: `));
      ul.appendChild(li);
    }
    frag.appendChild(ul);
  }

  frag.appendChild(heading('Path as messages'));
  const path = document.createElement('ol');
  path.className = 'messages';
  path.id = 'd-path';
  path.setAttribute('aria-busy', 'true');
  frag.appendChild(path);
  body.replaceChildren(frag);
  if (focus) $('d-close').focus();

  // The path as the LLM sees it, from the server; debounced so that holding an arrow key
  // does not send a request per row.
  clearTimeout(state.pathTimer);
  state.pathTimer = setTimeout(async () => {
    try {
      const p = await get(`/v1/nodes/${rec.id}/path?format=messages`);
      if (state.detailFor !== rec) return;
      const frag2 = document.createDocumentFragment();
      for (const m of p.messages) {
        const li = document.createElement('li');
        const who = div('who');
        who.textContent = m.role;
        const what = div('what');
        what.textContent = typeof m.content === 'string' ? m.content : JSON.stringify(m.content);
        li.append(who, what);
        li.addEventListener('click', () => li.classList.toggle('open'));
        frag2.appendChild(li);
      }
      path.replaceChildren(frag2);
      path.dataset.count = String(p.messages.length);
      path.removeAttribute('aria-busy');
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) askToken();
      path.replaceChildren(text(`could not load the path: ${e.message}`));
      path.removeAttribute('aria-busy');
    }
  }, 120);
}

function heading(t) {
  const h = document.createElement('h3');
  h.textContent = t;
  return h;
}

function pre(v) {
  const p = document.createElement('pre');
  p.className = 'json';
  p.textContent = JSON.stringify(v, null, 2);
  return p;
}

// ---- start -------------------------------------------------------------------------

refreshList();
onRoute();
setInterval(() => { if (!document.hidden && !state.list.cursor) refreshList(); }, 10000);
