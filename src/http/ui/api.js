// The API as the page uses it: fetch with the bearer token, problem+json errors, and a
// live event stream that resumes without loss or duplicates.

const TOKEN_KEY = 'arbor.token';

/** An answer other than 2xx, with the server's problem+json detail when it sent one. */
export class ApiError extends Error {
  constructor(status, title, detail) {
    super(detail || title || `HTTP ${status}`);
    this.status = status;
    this.title = title;
  }
}

/** The token of this tab (sessionStorage: gone when the tab closes). */
export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (t) => sessionStorage.setItem(TOKEN_KEY, t),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

function headers() {
  const t = token.get();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

/** GET `path` as JSON; throws ApiError on any other status. */
export async function get(path, { signal } = {}) {
  let resp;
  try {
    resp = await fetch(path, { headers: headers(), signal });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'unreachable', 'arbor did not answer');
  }
  if (!resp.ok) {
    let title = resp.statusText;
    let detail = '';
    try {
      const p = await resp.json();
      title = p.title || title;
      detail = p.detail || '';
    } catch (_) { /* not problem+json */ }
    throw new ApiError(resp.status, title, detail);
  }
  return resp.json();
}

/**
 * The live stream of workflow `wf` after seq `after`, for the event `kinds` the page
 * draws. `onEvent(ev)` gets each event once,
 * in order: the browser resumes a dropped stream with Last-Event-ID, and when it gives
 * up (the server was gone and answered an error) the stream is reopened here from the
 * last seq seen. `onState` hears 'live', 'reconnecting' and 'unauthorized'.
 */
export class LiveStream {
  constructor(wf, after, kinds, onEvent, onState) {
    this.wf = wf;
    this.kinds = kinds;
    this.last = after;
    this.onEvent = onEvent;
    this.onState = onState;
    this.source = null;
    this.timer = null;
    this.backoff = 500;
    this.closed = false;
    /** Events received again after a resume and dropped (seq already delivered). */
    this.dropped = 0;
    this.open();
  }

  url() {
    const q = new URLSearchParams({ after: String(this.last) });
    const t = token.get();
    if (t) q.set('access_token', t);
    return `/v1/workflows/${this.wf}/stream?${q}`;
  }

  open() {
    if (this.closed) return;
    const es = new EventSource(this.url());
    this.source = es;
    const deliver = (msg) => {
      let ev;
      try { ev = JSON.parse(msg.data); } catch (_) { return; }
      if (typeof ev.seq !== 'number') return;
      if (ev.seq <= this.last) {
        this.dropped++; // already delivered
        return;
      }
      this.last = ev.seq;
      this.onEvent(ev);
    };
    for (const kind of this.kinds) es.addEventListener(kind, deliver);
    es.addEventListener('gap', () => this.onState('gap'));
    es.onopen = () => { this.backoff = 500; this.onState('live'); };
    es.onerror = () => {
      if (this.closed) return;
      if (es.readyState === EventSource.CONNECTING) { this.onState('reconnecting'); return; }
      // Closed for good: an HTTP error (401 after a revoked token, 503 while starting).
      es.close();
      this.onState('reconnecting');
      get(`/v1/workflows/${this.wf}`).then(
        () => this.retry(),
        (e) => (e.status === 401 ? this.onState('unauthorized') : this.retry()),
      );
    };
  }

  retry() {
    if (this.closed) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.open(), this.backoff);
    this.backoff = Math.min(this.backoff * 2, 8000);
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.source) this.source.close();
  }
}
