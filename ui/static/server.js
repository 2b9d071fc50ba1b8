// One server: uPlot timelines loaded from .../series, extended live from the SSE stream.
import {
  fmtMiB, fmtNum, fmtPct, fmtUnit, getJSON, openStream, refreshLastSeen, setBadge, setLastSeen,
} from "./app.js";

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
  });
}

markRange();
setInterval(() => refreshLastSeen(page), 1000);
loadInfo();
loadSeries();
openStream(`/api/v1/stream?server=${encodeURIComponent(serverId)}`, {
  sample: applySample,
  health: applyHealth,
}, () => { loadInfo(); loadSeries(); });
