// Shared helpers for FleetDeck pages: JSON fetching with the error banner, formatters,
// health badges, relative times, sparklines and the live (SSE) connection.
// Plain ES2020 modules, no build step; no inline scripts or handlers (CSP-ready).

export const HEALTH_STATES = ["OK", "WARNING", "CRITICAL", "STALE", "OFFLINE"];
export const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

// ---- error banner -------------------------------------------------------------------

const banner = document.getElementById("error-banner");
banner?.querySelector(".error-close")?.addEventListener("click", clearError);

export function showError(message) {
  if (!banner) return;
  banner.querySelector(".error-text").textContent = message;
  banner.hidden = false;
}

export function clearError() {
  if (banner) banner.hidden = true;
}

// GET a JSON document. Returns the parsed body, or null after showing the failure in the
// error banner (API errors are {"error": {"code", "message"}}). Aborts are silent.
export async function getJSON(url, { signal } = {}) {
  let response;
  try {
    response = await fetch(url, { signal, headers: { Accept: "application/json" } });
  } catch (err) {
    if (err.name !== "AbortError") showError(`Network error while loading ${url}: ${err.message}`);
    return null;
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: reported below if the status is bad, or as a malformed reply
  }
  if (!response.ok) {
    const e = body?.error;
    showError(e ? `${e.code}: ${e.message}` : `HTTP ${response.status} ${response.statusText} for ${url}`);
    return null;
  }
  if (body === null) showError(`Malformed JSON from ${url}`);
  return body;
}

// ---- formatters ---------------------------------------------------------------------

const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);

export function fmtNum(v) {
  v = num(v);
  if (v === null) return "–";
  return Math.abs(v) >= 100 ? Math.round(v).toString() : String(Number(v.toPrecision(3)));
}

export const fmtPct = (v) => (num(v) === null ? "–" : `${v.toFixed(1)}%`);

const RATE_UNITS = ["B/s", "kB/s", "MB/s", "GB/s", "TB/s"];

// Bytes per second in SI units (1 kB = 1000 B), so axis ticks stay round numbers.
export function fmtRate(v) {
  v = num(v);
  if (v === null) return "–";
  let i = 0;
  while (Math.abs(v) >= 1000 && i < RATE_UNITS.length - 1) {
    v /= 1000;
    i += 1;
  }
  return `${fmtNum(v)} ${RATE_UNITS[i]}`;
}

export const fmtMiB = (bytes) => (num(bytes) === null ? "–" : (bytes / 1048576).toFixed(1));

export function fmtUnit(v, unit) {
  if (unit === "B/s") return fmtRate(v);
  if (unit === "%") return num(v) === null ? "–" : `${fmtNum(v)}%`;
  return fmtNum(v);
}

export function fmtAgo(ms) {
  if (ms === null || Number.isNaN(ms)) return "never";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 120) return `${s} s ago`;
  if (s < 7200) return `${Math.floor(s / 60)} min ago`;
  if (s < 172800) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

// ---- health badges and relative times ----------------------------------------------

// Sets a badge to `state`. `reasons` (array) replaces the tooltip; when omitted the old
// tooltip is kept unless the state changed (a sample carries the state but no reasons).
export function setBadge(el, state, reasons) {
  if (!el || !state) return;
  const changed = el.dataset.health !== state;
  el.className = `badge badge-${state}`;
  el.dataset.health = state;
  el.textContent = state;
  if (Array.isArray(reasons)) el.title = reasons.length ? reasons.join("\n") : state;
  else if (changed) el.title = state;
}

// `<time class="last-seen">` elements show their `datetime` relative to now.
export function setLastSeen(el, iso) {
  if (!el || iso === undefined) return;
  const ms = iso === null ? null : Date.parse(iso);
  el.dateTime = iso ?? "";
  el.title = ms === null || Number.isNaN(ms) ? "" : new Date(ms).toLocaleString();
  el.textContent = fmtAgo(ms);
}

export function refreshLastSeen(root = document) {
  for (const el of root.querySelectorAll("time.last-seen[datetime]")) {
    if (el.dateTime) el.textContent = fmtAgo(Date.parse(el.dateTime));
  }
}

// ---- sparklines ---------------------------------------------------------------------

// Draws `values` (newest last) right-aligned on a canvas, `slots` points wide, 0..max.
export function drawSparkline(canvas, values, { max = 100, slots = 60, color = "#2563eb" } = {}) {
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (!w || !h) return; // hidden row: drawn again when shown
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(w * dpr)) canvas.width = Math.round(w * dpr);
  if (canvas.height !== Math.round(h * dpr)) canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  canvas.dataset.points = String(values.length);
  const step = w / (slots - 1);
  const x0 = w - (values.length - 1) * step;
  const y = (v) => h - 1 - (Math.min(Math.max(v, 0), max) / max) * (h - 2);
  const line = new Path2D();
  let first = null;
  let last = null;
  values.forEach((v, i) => {
    if (num(v) === null) return;
    const x = x0 + i * step;
    if (first === null) {
      line.moveTo(x - (values.length === 1 ? 2 : 0), y(v)); // a lone point gets a short tick
      first = x;
    }
    line.lineTo(x, y(v));
    last = x;
  });
  if (first === null) return;
  const area = new Path2D(line);
  area.lineTo(last, h);
  area.lineTo(first, h);
  area.closePath();
  ctx.fillStyle = color;
  ctx.globalAlpha = 0.15;
  ctx.fill(area);
  ctx.globalAlpha = 1;
  ctx.strokeStyle = color;
  ctx.lineWidth = 1.25;
  ctx.stroke(line);
}

// ---- live stream --------------------------------------------------------------------

// Opens an EventSource on `url` and calls handlers[eventName](parsedJson) per event.
// The browser reconnects by itself (sending Last-Event-ID). If it gives up (an HTTP error),
// a new EventSource is made after a back-off; it resumes with the `last_event_id` query
// parameter, or, when no event was received yet, calls `onResync` once it is open.
export function openStream(url, handlers, onResync) {
  const status = document.getElementById("conn-status");
  const show = (state, text) => {
    if (!status) return;
    status.hidden = false;
    status.dataset.state = state;
    status.textContent = text;
  };
  let retryMs = 1000;
  let lastId = "";
  const connect = (again) => {
    const target = new URL(url, location.href);
    if (lastId) target.searchParams.set("last_event_id", lastId);
    let resync = again && !lastId;
    const es = new EventSource(target);
    show("connecting", again ? "reconnecting…" : "connecting…");
    es.addEventListener("open", () => {
      retryMs = 1000;
      show("live", "live");
      if (resync) onResync?.();
      resync = false;
    });
    es.addEventListener("error", () => {
      show("reconnecting", "reconnecting…");
      if (es.readyState !== EventSource.CLOSED) return;
      setTimeout(() => connect(true), retryMs);
      retryMs = Math.min(retryMs * 2, 30000);
    });
    for (const [name, handle] of Object.entries(handlers)) {
      es.addEventListener(name, (ev) => {
        if (ev.lastEventId) lastId = ev.lastEventId;
        let data;
        try {
          data = JSON.parse(ev.data);
        } catch {
          console.warn(`ignoring malformed ${name} event`, ev.data);
          return;
        }
        handle(data);
      });
    }
  };
  connect(false);
}
