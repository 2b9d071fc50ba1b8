// Server list: snapshot from GET /api/v1/servers, then live updates from /api/v1/stream.
// Active-alert badges: snapshot from GET /api/v1/alerts, live from /api/v1/alerts/stream.
import {
  collator, drawSparkline, fmtPct, getJSON, openStream, refreshLastSeen, setBadge, setLastSeen,
} from "./app.js";
import { isActive, parseAlert, parseAlerts } from "./alerts-common.js";

const SPARK_POINTS = 60;
const tbody = document.getElementById("server-rows");
const template = document.getElementById("server-row-template");
const filterName = document.getElementById("filter-name");
const filterHealth = document.getElementById("filter-health");
const count = document.getElementById("server-count");
const empty = document.getElementById("servers-empty");
const css = getComputedStyle(document.documentElement);
const COLORS = {
  cpu: css.getPropertyValue("--spark-cpu").trim() || "#2563eb",
  mem: css.getPropertyValue("--spark-mem").trim() || "#7c3aed",
};

const rows = new Map(); // server_id -> row state
const dirty = new Set(); // rows whose sparklines need drawing
let frame = 0;
let countStale = true;

const byHost = (a, b) => collator.compare(a.hostname, b.hostname) || collator.compare(a.id, b.id);

// Keeps tbody sorted by hostname: append in the common case, else binary search.
function place(row) {
  const others = [...tbody.children].filter((tr) => tr !== row.tr);
  const at = (i) => rows.get(others[i].dataset.serverId);
  let lo = 0;
  let hi = others.length;
  if (hi && byHost(at(hi - 1), row) <= 0) lo = hi;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (byHost(at(mid), row) > 0) hi = mid;
    else lo = mid + 1;
  }
  tbody.insertBefore(row.tr, others[lo] ?? null);
}

function ensureRow(id, hostname, tenant) {
  let row = rows.get(id);
  if (row) {
    if (hostname && hostname !== row.hostname) {
      row.hostname = hostname;
      row.tr.querySelector(".host a").textContent = hostname;
      place(row);
    }
    if (tenant && !row.tenant.textContent) row.tenant.textContent = tenant;
    return row;
  }
  const tr = template.content.firstElementChild.cloneNode(true);
  tr.dataset.serverId = id;
  const link = tr.querySelector(".host a");
  link.href = `/servers/${encodeURIComponent(id)}`;
  link.textContent = hostname || id;
  tr.querySelector(".sid").textContent = id;
  const field = (name) => tr.querySelector(`[data-field="${name}"]`);
  row = {
    id, tr, hostname: hostname || id,
    badge: tr.querySelector(".badge"),
    tenant: tr.querySelector(".tenant"),
    seen: tr.querySelector(".last-seen"),
    cpuText: field("cpu"), memText: field("mem"),
    cpuSpark: tr.querySelector("canvas.spark-cpu"), memSpark: tr.querySelector("canvas.spark-mem"),
    cpu: [], mem: [],
  };
  row.tenant.textContent = tenant || "";
  row.alertCount = tr.querySelector(".alert-count");
  row.alertCount.href = `/alerts?server=${encodeURIComponent(id)}`;
  rows.set(id, row);
  place(row);
  renderAlertCount(id);
  return row;
}

function push(series, value) {
  if (typeof value !== "number") return;
  series.push(value);
  if (series.length > SPARK_POINTS) series.splice(0, series.length - SPARK_POINTS);
}

function setFigures(row, cpu, mem) {
  push(row.cpu, cpu);
  push(row.mem, mem);
  row.cpuText.textContent = fmtPct(cpu);
  row.memText.textContent = fmtPct(mem);
  dirty.add(row);
  schedule();
}

function applySummary(s) {
  const row = ensureRow(s.server_id, s.hostname, s.tenant);
  setBadge(row.badge, s.health, s.reasons ?? []);
  setLastSeen(row.seen, s.last_seen ?? null);
  // Seed only empty sparklines: after a resync, live samples are already in them.
  if (!row.cpu.length) setFigures(row, s.cpu, s.mem);
  filter(row);
}

function applySample(d) {
  const row = ensureRow(d.server_id, d.hostname, d.tenant);
  setFigures(row, d.cpu, d.mem);
  setLastSeen(row.seen, d.ts);
  setBadge(row.badge, d.health, d.reasons); // the fleet stream's summaries carry reasons
  filter(row);
}

function applyHealth(d) {
  const row = ensureRow(d.server_id, d.hostname);
  setBadge(row.badge, d.state, d.reasons ?? []);
  if (d.last_seen !== undefined) setLastSeen(row.seen, d.last_seen);
  filter(row);
}

// ---- active alerts (firing or acknowledged) -------------------------------------------

const activeAlerts = new Map(); // alert_id -> alert, active ones only
const alertSeqs = new Map(); // alert_id -> newest seq applied
let alertBuffer = null; // alert events received while the snapshot loads
let alertLoad = 0; // the newest snapshot request wins

function renderAlertCount(serverId) {
  const row = rows.get(serverId);
  if (!row) return; // shown once the server's row exists
  let total = 0;
  let critical = 0;
  for (const a of activeAlerts.values()) {
    if (a.server_id !== serverId) continue;
    total += 1;
    if (a.severity === "critical" && a.state === "firing") critical += 1;
  }
  const el = row.alertCount;
  el.dataset.count = String(total);
  el.dataset.critical = String(critical > 0);
  el.classList.toggle("critical", critical > 0);
  el.hidden = total === 0;
  el.textContent = String(total);
  const text = `${total} active alert${total === 1 ? "" : "s"}` +
    (critical ? `, ${critical} critical firing unacknowledged` : "");
  el.title = text;
  el.setAttribute("aria-label", text);
}

function applyAlert(raw) {
  const a = parseAlert(raw);
  if (!a) return;
  if (alertBuffer) {
    if (alertBuffer.length < 5000) alertBuffer.push(a);
    return;
  }
  takeAlert(a);
}

function takeAlert(a) {
  if ((alertSeqs.get(a.alert_id) ?? 0) >= a.seq) return; // stale or replayed
  alertSeqs.set(a.alert_id, a.seq);
  const before = activeAlerts.get(a.alert_id);
  if (isActive(a)) activeAlerts.set(a.alert_id, a);
  else activeAlerts.delete(a.alert_id);
  if (before && before.server_id !== a.server_id) renderAlertCount(before.server_id);
  renderAlertCount(a.server_id);
}

async function loadAlerts() {
  const mine = ++alertLoad;
  alertBuffer ??= [];
  const body = await getJSON("/api/v1/alerts?state=firing,acknowledged");
  if (mine !== alertLoad) return; // superseded: the newer request takes the buffer
  const events = alertBuffer ?? [];
  alertBuffer = null;
  if (Array.isArray(body?.alerts)) {
    activeAlerts.clear();
    alertSeqs.clear();
    for (const a of parseAlerts(body.alerts)) takeAlert(a);
    for (const id of rows.keys()) renderAlertCount(id);
  } else if (body) {
    console.warn("malformed alert list", body);
  }
  for (const a of events) takeAlert(a);
}

// ---- filtering ----------------------------------------------------------------------

function filter(row) {
  const q = filterName.value.trim().toLowerCase();
  const state = filterHealth.value;
  const show = (!state || row.badge.dataset.health === state) &&
    (!q || row.hostname.toLowerCase().includes(q) || row.id.toLowerCase().includes(q));
  if (show && row.tr.hidden) dirty.add(row); // canvases of hidden rows are not drawn
  row.tr.hidden = !show;
  countStale = true;
  schedule();
}

function filterAll() {
  for (const row of rows.values()) filter(row);
}

function updateCount() {
  let shown = 0;
  for (const row of rows.values()) if (!row.tr.hidden) shown += 1;
  const total = rows.size;
  count.textContent = shown === total ? `${total} servers` : `${shown} of ${total} servers`;
  empty.hidden = shown > 0;
  empty.textContent = total ? "No server matches the filter." : "No server has reported yet.";
}

// ---- drawing, batched per animation frame --------------------------------------------

function schedule() {
  if (!frame) frame = requestAnimationFrame(flush);
}

function flush() {
  frame = 0;
  for (const row of dirty) {
    drawSparkline(row.cpuSpark, row.cpu, { slots: SPARK_POINTS, color: COLORS.cpu });
    drawSparkline(row.memSpark, row.mem, { slots: SPARK_POINTS, color: COLORS.mem });
  }
  dirty.clear();
  if (countStale) updateCount();
  countStale = false;
}

// ---- start --------------------------------------------------------------------------

async function loadList() {
  const body = await getJSON("/api/v1/servers");
  const servers = [...(body?.servers ?? [])].sort((a, b) =>
    collator.compare(a.hostname ?? "", b.hostname ?? "") || collator.compare(a.server_id, b.server_id));
  for (const s of servers) applySummary(s);
  countStale = true;
  schedule();
}

filterName.addEventListener("input", filterAll);
filterHealth.addEventListener("change", filterAll);
setInterval(() => refreshLastSeen(tbody), 1000);

loadList().then(() => {
  openStream("/api/v1/stream", { sample: applySample, health: applyHealth }, loadList);
});
// The alert stream opens first; its events wait until the snapshot is in (seq drops repeats).
alertBuffer = [];
openStream("/api/v1/alerts/stream", { alert: applyAlert }, loadAlerts);
loadAlerts();
