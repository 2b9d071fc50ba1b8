// One server: uPlot timelines loaded from .../series, extended live from the SSE stream.
// Alerts: the server's active alerts above the charts, and a vertical mark on every chart
// where one of its alerts fired, was acknowledged or resolved (.../alert-events, then live
// from /api/v1/alerts/stream).
import {
  fmtAgo, fmtMiB, fmtNum, fmtPct, fmtUnit, getJSON, openStream, refreshLastSeen, setBadge, setLastSeen,
} from "./app.js";
import {
  SEVERITY_RANK, fmtDateTime, isActive, parseAlert, parseAlerts, parseTime,
} from "./alerts-common.js";

const page = document.getElementById("page");
const serverId = page.dataset.serverId;
const RANGES = { "15m": 900, "1h": 3600, "6h": 21600, "24h": 86400 };
const COLORS = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#0891b2", "#db2777", "#65a30d", "#dc2626"];
const HEIGHT = 200;

// Fixed charts plot the series of these channels with no labels (the totals);
// `byLabel` charts plot one series per value of a label.
const CHARTS = [
  { id: "chart-cpu", unit: "%", max: 100, series: [
    ["cpu.total", "total", (s) => s.cpu?.total],
    ["cpu.user", "user", (s) => s.cpu?.user],
    ["cpu.system", "system", (s) => s.cpu?.system],
    ["cpu.iowait", "iowait", (s) => s.cpu?.iowait],
  ] },
  { id: "chart-mem", unit: "%", max: 100, series: [
    ["mem.used_pct", "memory", (s) => s.memory?.used_pct],
    ["swap.used_pct", "swap", (s) => s.memory?.swap_used_pct],
  ] },
  { id: "chart-disk", unit: "B/s", floor: 1000, series: [
    ["disk.read_bps", "read", (s) => s.disk?.read_bps],
    ["disk.write_bps", "write", (s) => s.disk?.write_bps],
  ] },
  { id: "chart-net", unit: "B/s", floor: 1000, series: [
    ["net.rx_bps", "rx", (s) => s.net?.rx_bps],
    ["net.tx_bps", "tx", (s) => s.net?.tx_bps],
  ] },
  { id: "chart-proc", unit: "%", floor: 1, byLabel: {
    channel: "proc.cpu_pct", label: "process",
    live: (s) => (s.processes ?? []).map((p) => [p.name, p.cpu_pct]),
  } },
];
const CHANNELS = CHARTS.flatMap((c) => (c.byLabel ? [c.byLabel.channel] : c.series.map(([ch]) => ch)));

// ---- alert marks ---------------------------------------------------------------------

const css = getComputedStyle(document.documentElement);
const MARK_COLORS = {
  firing: css.getPropertyValue("--mark-firing").trim() || "#cf222e",
  acknowledged: css.getPropertyValue("--mark-acknowledged").trim() || "#d97706",
  resolved: css.getPropertyValue("--mark-resolved").trim() || "#1f883d",
};
const marks = new Map(); // "alert_id:seq" -> {key, t (s), state}; the selected range
const liveMarks = new Map(); // marks from the stream since the page opened (last 24 h)
let markList = []; // marks sorted by time, what the charts draw

// The mark of an alert event, or null: only changes into firing, acknowledged or resolved
// are marked (not flag changes such as silenced, nor a pending alert that never fired).
function markOf(a) {
  if (!Object.hasOwn(MARK_COLORS, a.state)) return null;
  if (a.previous === a.state) return null;
  if (a.state === "resolved" && a.previous === "pending") return null;
  const ms = parseTime(a.ts);
  if (ms === null) return null;
  return { key: `${a.alert_id}:${a.seq}`, t: ms / 1000, state: a.state };
}

function marksChanged() {
  markList = [...marks.values()].sort((x, y) => x.t - y.t);
  for (const chart of charts) {
    if (chart.plot) chart.plot.redraw(false);
    else chart.el.dataset.alertMarks = "0";
  }
}

// uPlot plugin: thin vertical lines over the plot area, one per mark inside the x range.
function alertMarks(chart) {
  const draw = (u) => {
    const { left, top, width, height } = u.bbox;
    const ctx = u.ctx;
    let drawn = 0;
    ctx.save();
    ctx.lineWidth = Math.max(1, Math.round(window.uPlot?.pxRatio ?? window.devicePixelRatio ?? 1));
    for (const m of markList) {
      const x = Math.round(u.valToPos(m.t, "x", true));
      if (!Number.isFinite(x) || x < left || x > left + width) continue;
      ctx.strokeStyle = MARK_COLORS[m.state];
      ctx.beginPath();
      ctx.moveTo(x + 0.5, top);
      ctx.lineTo(x + 0.5, top + height);
      ctx.stroke();
      drawn += 1;
    }
    ctx.restore();
    const count = String(drawn);
    if (chart.el.dataset.alertMarks !== count) chart.el.dataset.alertMarks = count;
  };
  return { hooks: { draw: [draw] } };
}

const finite = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
const noLabels = (labels) => !labels || Object.keys(labels).length === 0;

// Merges series with their own timestamps onto one sorted x axis. A series has `undefined`
// at x values it lacks (uPlot draws across those) and null where its value is missing (a gap).
function merge(list) {
  const xs = [...new Set(list.flatMap((s) => s.timestamps))].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const ys = list.map((s) => {
    const y = new Array(xs.length).fill(undefined);
    s.timestamps.forEach((t, i) => { y[index.get(t)] = finite(s.values[i]); });
    return y;
  });
  return [xs, ...ys];
}

class Chart {
  constructor(def) {
    this.def = def;
    this.el = document.getElementById(def.id);
    this.keys = def.byLabel ? [] : def.series.map(([ch]) => ch);
    this.data = [[], ...this.keys.map(() => [])];
    this.span = RANGES["1h"];
    this.end = Date.now() / 1000;
    this.plot = null;
    new ResizeObserver(() => this.resize()).observe(this.el);
  }

  load(body, span) {
    const { byLabel } = this.def;
    const mine = body.series.filter((s) => (byLabel
      ? s.channel === byLabel.channel && s.labels?.[byLabel.label] != null
      : this.keys.includes(s.channel) && noLabels(s.labels)));
    if (byLabel) {
      this.keys = [...new Set(mine.map((s) => s.labels[byLabel.label]))].sort();
    }
    const keyOf = (s) => (byLabel ? s.labels[byLabel.label] : s.channel);
    const ordered = this.keys.map((k) => mine.find((s) => keyOf(s) === k) ?? { timestamps: [], values: [] });
    this.data = merge(ordered);
    this.span = span;
    this.end = finite(body.end) ?? this.data[0].at(-1) ?? Date.now() / 1000;
    this.render(true);
  }

  append(t, sample) {
    const { byLabel } = this.def;
    const values = new Map(byLabel ? byLabel.live(sample) : this.def.series.map(([k, , get]) => [k, get(sample)]));
    const xs = this.data[0];
    const last = xs.length - 1;
    if (last >= 0 && t < xs[last]) return; // late or replayed sample
    let rebuild = false;
    for (const k of values.keys()) {
      if (this.keys.includes(k)) continue;
      this.keys.push(k); // a process seen for the first time gets its own series
      this.data.push(new Array(xs.length).fill(null));
      rebuild = true;
    }
    const i = last >= 0 && t === xs[last] ? last : xs.push(t) - 1;
    this.keys.forEach((k, j) => { this.data[j + 1][i] = finite(values.get(k)); });
    const old = xs.findIndex((x) => x >= t - this.span);
    if (old > 0) for (const column of this.data) column.splice(0, old);
    this.end = Math.max(this.end, t);
    this.render(rebuild);
  }

  render(rebuild = false) {
    this.el.dataset.points = String(this.data[0].length);
    if (!window.uPlot) return;
    if (rebuild || !this.plot) {
      this.plot?.destroy();
      this.plot = new window.uPlot(this.options(), this.data, this.el);
    } else {
      this.plot.setData(this.data);
    }
  }

  names() {
    return this.def.byLabel ? this.keys : this.def.series.map(([, name]) => name);
  }

  resize() {
    const width = this.el.clientWidth;
    if (this.plot && width && width !== this.plot.width) this.plot.setSize({ width, height: HEIGHT });
  }

  options() {
    const { unit, max, floor = 1 } = this.def;
    const fmt = (u, v) => (v == null ? "–" : fmtUnit(v, unit));
    const axis = { stroke: "#4b5563", grid: { stroke: "#e5e7eb", width: 1 }, ticks: { stroke: "#d1d5db", width: 1 } };
    return {
      width: this.el.clientWidth || 600,
      height: HEIGHT,
      cursor: { drag: { x: false, y: false }, sync: { key: "fd" } },
      plugins: [alertMarks(this)],
      scales: {
        x: { time: true, range: () => [this.end - this.span, this.end] },
        y: { range: (u, lo, hi) => (max ? [0, max] : window.uPlot.rangeNum(0, Math.max(hi ?? 0, floor), 0.1, true)) },
      },
      axes: [
        axis,
        { ...axis, size: unit === "B/s" ? 76 : 50, values: (u, splits) => splits.map((v) => fmtUnit(v, unit)) },
      ],
      series: [
        {},
        ...this.names().map((label, i) => ({ label, stroke: COLORS[i % COLORS.length], width: 1.5, value: fmt })),
      ],
    };
  }
}

// ---- header and watched processes ---------------------------------------------------

const badge = document.getElementById("server-health");
const lastSeen = document.getElementById("server-last-seen");
const hostname = document.getElementById("server-hostname");
const procRows = document.getElementById("proc-rows");
const procEmpty = document.getElementById("proc-empty");
const procTemplate = document.getElementById("proc-row-template");

function setHostname(name) {
  if (!name || hostname.textContent === name) return;
  hostname.textContent = name;
  document.title = `${name} · FleetDeck`;
}

function renderProcesses(processes) {
  const seen = new Set();
  for (const p of [...processes].sort((a, b) => a.name.localeCompare(b.name))) {
    let tr = [...procRows.children].find((row) => row.dataset.process === p.name);
    if (!tr) tr = procTemplate.content.firstElementChild.cloneNode(true);
    tr.dataset.process = p.name;
    tr.classList.toggle("down", !p.up);
    tr.querySelector(".pname").textContent = p.name;
    const state = tr.querySelector(".pstate");
    state.className = `pstate ${p.up ? "up" : "down"}`;
    state.textContent = p.up ? "up" : "down";
    const set = (field, text) => { tr.querySelector(`[data-field="${field}"]`).textContent = text; };
    set("instances", fmtNum(p.instances));
    set("cpu_pct", fmtPct(p.cpu_pct).replace("%", ""));
    set("rss_mib", fmtMiB(p.rss_bytes));
    set("restarts", fmtNum(p.restarts));
    set("zombies", fmtNum(p.zombies));
    procRows.append(tr); // re-appending keeps the rows in name order
    seen.add(tr);
  }
  for (const tr of [...procRows.children]) if (!seen.has(tr)) tr.remove();
  procEmpty.hidden = seen.size > 0;
  procEmpty.textContent = "No watched processes.";
}

// ---- data flow ----------------------------------------------------------------------

const charts = CHARTS.map((def) => new Chart(def));
const asked = new URLSearchParams(location.search).get("range");
let range = Object.hasOwn(RANGES, asked ?? "") ? asked : "1h";
let loading = null; // AbortController of the series request in flight
let pending = []; // [t, sample] received while loading, appended after it

// GET /api/v1/servers/{id} -> {server: summary, sample: latest full sample or null}
async function loadInfo() {
  const body = await getJSON(`/api/v1/servers/${encodeURIComponent(serverId)}`);
  const s = body?.server;
  if (!s) return;
  setHostname(s.hostname);
  setBadge(badge, s.health, s.reasons ?? []);
  setLastSeen(lastSeen, s.last_seen ?? null);
  if (Array.isArray(body.sample?.processes)) renderProcesses(body.sample.processes);
}

async function loadSeries() {
  loading?.abort();
  const mine = (loading = new AbortController());
  const url = `/api/v1/servers/${encodeURIComponent(serverId)}/series` +
    `?channels=${CHANNELS.join(",")}&range=${encodeURIComponent(range)}`;
  const body = await getJSON(url, { signal: mine.signal });
  if (mine !== loading) return; // superseded by a newer request
  loading = null;
  for (const chart of charts) {
    if (body?.series) chart.load(body, RANGES[range]);
    else {
      chart.span = RANGES[range];
      chart.render(); // keep the axes (and any live points) on screen after a failure
    }
  }
  for (const [t, s] of pending) for (const chart of charts) chart.append(t, s);
  pending = [];
}

function applySample(s) {
  if (s.server_id && s.server_id !== serverId) return;
  setHostname(s.hostname);
  setBadge(badge, s.health);
  setLastSeen(lastSeen, s.ts);
  if (Array.isArray(s.processes)) renderProcesses(s.processes);
  const t = Date.parse(s.ts) / 1000;
  if (!Number.isFinite(t)) return;
  if (!loading) for (const chart of charts) chart.append(t, s);
  else if (pending.length < 600) pending.push([t, s]);
}

function applyHealth(h) {
  if (h.server_id && h.server_id !== serverId) return;
  setHostname(h.hostname);
  setBadge(badge, h.state, h.reasons ?? []);
  if (h.last_seen !== undefined) setLastSeen(lastSeen, h.last_seen);
}

// ---- alerts of this server -----------------------------------------------------------

const alertList = document.getElementById("server-alert-list");
const alertsBox = document.getElementById("server-alerts");
const alertsEmpty = document.getElementById("server-alerts-empty");
const alertCount = document.getElementById("server-alert-count");
const alertTemplate = document.getElementById("server-alert-template");
const activeAlerts = new Map(); // alert_id -> alert, active ones only
const alertSeqs = new Map(); // alert_id -> newest seq applied
let alertBuffer = null; // stream events received while the snapshot loads
let alertLoad = 0;
let marksLoading = null; // AbortController of the alert-events request in flight

function renderAlerts() {
  const list = [...activeAlerts.values()].sort((x, y) =>
    (SEVERITY_RANK[y.severity] ?? 0) - (SEVERITY_RANK[x.severity] ?? 0) ||
    (parseTime(y.started_at) ?? 0) - (parseTime(x.started_at) ?? 0) || x.alert_id.localeCompare(y.alert_id));
  alertList.replaceChildren(...list.map((a) => {
    const li = alertTemplate.content.firstElementChild.cloneNode(true);
    li.dataset.alertId = a.alert_id;
    li.dataset.state = a.state;
    li.dataset.severity = a.severity;
    const sev = li.querySelector(".severity");
    sev.className = `severity severity-${a.severity}`;
    sev.textContent = a.severity;
    const name = li.querySelector(".rule-name");
    name.href = `/alerts?server=${encodeURIComponent(serverId)}`;
    name.textContent = a.rule_name || a.rule_id;
    name.title = a.summary ?? "";
    const item = li.querySelector(".rule-item");
    item.textContent = a.item ? `[${a.item}]` : "";
    item.hidden = !a.item;
    li.querySelector(".condition").textContent = a.condition ?? "";
    const state = li.querySelector(".alert-state");
    state.className = `alert-state state-${a.state}`;
    state.textContent = a.state;
    li.querySelector(".marker-silenced").hidden = a.silenced_by.length === 0;
    li.querySelector(".marker-flapping").hidden = !a.flapping;
    const since = li.querySelector(".since");
    const ms = parseTime(a.started_at);
    since.dateTime = ms === null ? "" : a.started_at;
    since.title = fmtDateTime(a.started_at);
    since.textContent = ms === null ? "–" : fmtAgo(ms);
    const acked = li.querySelector(".acked-by");
    acked.textContent = a.state === "acknowledged" && a.acked_by ? `acknowledged by ${a.acked_by}` : "";
    acked.title = a.state === "acknowledged" ? a.ack_comment ?? "" : "";
    return li;
  }));
  alertsBox.dataset.count = String(list.length);
  alertCount.textContent = list.length ? `(${list.length})` : "";
  alertsEmpty.textContent = "No active alerts.";
  alertsEmpty.hidden = list.length > 0;
}

function takeAlert(a) {
  if ((alertSeqs.get(a.alert_id) ?? 0) >= a.seq) return false; // stale or replayed
  alertSeqs.set(a.alert_id, a.seq);
  if (isActive(a)) activeAlerts.set(a.alert_id, a);
  else activeAlerts.delete(a.alert_id);
  return true;
}

async function loadAlerts() {
  const mine = ++alertLoad;
  alertBuffer ??= [];
  const body = await getJSON(`/api/v1/alerts?server=${encodeURIComponent(serverId)}&state=firing,acknowledged`);
  if (mine !== alertLoad) return; // superseded: the newer request takes the buffer
  const events = alertBuffer ?? [];
  alertBuffer = null;
  if (Array.isArray(body?.alerts)) {
    activeAlerts.clear();
    alertSeqs.clear();
    for (const a of parseAlerts(body.alerts)) if (a.server_id === serverId) takeAlert(a);
  } else if (body) {
    console.warn("malformed alert list", body);
  }
  for (const a of events) takeAlert(a);
  renderAlerts();
  if (!body) alertsEmpty.textContent = "The alerts could not be loaded.";
}

async function loadMarks() {
  marksLoading?.abort();
  const mine = (marksLoading = new AbortController());
  const url = `/api/v1/servers/${encodeURIComponent(serverId)}/alert-events?range=${encodeURIComponent(range)}`;
  const body = await getJSON(url, { signal: mine.signal });
  if (mine !== marksLoading) return; // superseded by a newer range
  marksLoading = null;
  if (!Array.isArray(body?.events)) {
    if (body) console.warn("malformed alert events", body);
    return;
  }
  marks.clear();
  for (const e of parseAlerts(body.events)) {
    const m = e.server_id === serverId ? markOf(e) : null;
    if (m) marks.set(m.key, m);
  }
  for (const m of liveMarks.values()) marks.set(m.key, m);
  marksChanged();
}

function applyAlert(raw) {
  const a = parseAlert(raw);
  if (!a || a.server_id !== serverId) return;
  const m = markOf(a);
  if (m && !marks.has(m.key)) {
    const horizon = Date.now() / 1000 - RANGES["24h"];
    for (const [key, old] of liveMarks) if (old.t < horizon) liveMarks.delete(key);
    liveMarks.set(m.key, m);
    marks.set(m.key, m);
    marksChanged();
  }
  if (alertBuffer) {
    if (alertBuffer.length < 5000) alertBuffer.push(a);
  } else if (takeAlert(a)) {
    renderAlerts();
  }
}

function tickAlerts() {
  for (const el of alertList.querySelectorAll("time.since")) {
    if (el.dateTime) el.textContent = fmtAgo(Date.parse(el.dateTime));
  }
}

function markRange() {
  for (const b of document.querySelectorAll("button[data-range]")) {
    const active = b.dataset.range === range;
    b.classList.toggle("active", active);
    b.setAttribute("aria-pressed", String(active));
  }
}

for (const button of document.querySelectorAll("button[data-range]")) {
  button.addEventListener("click", () => {
    range = button.dataset.range;
    markRange();
    const url = new URL(location.href);
    url.searchParams.set("range", range); // a reload keeps the range
    history.replaceState(null, "", url);
    loadSeries();
    loadMarks();
  });
}

markRange();
setInterval(() => { refreshLastSeen(page); tickAlerts(); }, 1000);
loadInfo();
loadSeries();
openStream(`/api/v1/stream?server=${encodeURIComponent(serverId)}`, {
  sample: applySample,
  health: applyHealth,
}, () => { loadInfo(); loadSeries(); });
// The alert stream opens first; its events wait until the snapshot is in (seq drops repeats).
alertBuffer = [];
openStream("/api/v1/alerts/stream", { alert: applyAlert }, () => { loadAlerts(); loadMarks(); });
loadAlerts();
loadMarks();
