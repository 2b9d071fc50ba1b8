// Alert panel: the alert table (snapshot from GET /api/v1/alerts, then live from
// /api/v1/alerts/stream), acknowledgement dialog, per-alert history and silences.
// Rows change only from events of the stream: an ack or unack is a request; the row
// changes when the alert's next event arrives.
import { clearError, collator, fmtAgo, fmtNum, getJSON, openStream } from "./app.js";
import {
  fmtDateTime, fmtSpan, parseAlert, parseAlerts, parseTime, sendJSON,
} from "./alerts-common.js";

const $ = (id) => document.getElementById(id);
const tbody = $("alert-rows");
const rowTemplate = $("alert-row-template");
const filterState = $("filter-state");
const filterSeverity = $("filter-severity");
const filterServer = $("filter-server");
const countEl = $("alert-count");
const empty = $("alerts-empty");

// filter-state option -> the `state` query parameter (null = every state)
const STATE_FILTERS = {
  active: ["pending", "firing", "acknowledged"],
  firing: ["firing"],
  acknowledged: ["acknowledged"],
  pending: ["pending"],
  resolved: ["resolved"],
  all: null,
};

const rows = new Map(); // alert_id -> {alert, tr}
let buffered = null; // alert events received while the table loads (null = not loading)
let loading = null; // AbortController of the list request in flight
let loaded = false;
let loadFailed = false; // the newest list request failed

// ---- filters ------------------------------------------------------------------------

function wantedStates() {
  return Object.hasOwn(STATE_FILTERS, filterState.value) ? STATE_FILTERS[filterState.value] : STATE_FILTERS.active;
}

// Whether an alert not yet in the table belongs in it (rows already shown stay until reload).
function admits(a) {
  const states = wantedStates();
  return (!states || states.includes(a.state)) && (!filterSeverity.value || a.severity === filterSeverity.value);
}

function matchesServer(a) {
  const q = filterServer.value.trim().toLowerCase();
  return !q || a.server_id.toLowerCase().includes(q) || a.hostname.toLowerCase().includes(q);
}

function readFiltersFromURL() {
  const params = new URLSearchParams(location.search);
  const state = params.get("state");
  if (state && Object.hasOwn(STATE_FILTERS, state)) filterState.value = state;
  const severity = params.get("severity");
  if (severity && [...filterSeverity.options].some((o) => o.value === severity)) filterSeverity.value = severity;
  const server = params.get("server");
  if (server) filterServer.value = server;
}

function writeFiltersToURL() {
  const url = new URL(location.href);
  const set = (key, value, fallback = "") => {
    if (value && value !== fallback) url.searchParams.set(key, value);
    else url.searchParams.delete(key);
  };
  set("state", filterState.value, "active");
  set("severity", filterSeverity.value);
  set("server", filterServer.value.trim());
  history.replaceState(null, "", url);
}

// ---- rows ---------------------------------------------------------------------------

function createRow(a) {
  const tr = rowTemplate.content.firstElementChild.cloneNode(true);
  tr.dataset.alertId = a.alert_id;
  const entry = { alert: a, tr };
  tr.querySelector(".ack-button").addEventListener("click", () => openAck(entry.alert, "ack"));
  tr.querySelector(".unack-button").addEventListener("click", () => openAck(entry.alert, "unack"));
  tr.querySelector(".history-button").addEventListener("click", () => openHistory(entry.alert));
  tr.querySelector(".silence-button").addEventListener("click", () => silenceAlert(entry.alert));
  renderRow(entry);
  return entry;
}

function renderRow({ alert: a, tr }) {
  tr.dataset.state = a.state;
  tr.dataset.severity = a.severity;
  tr.dataset.serverId = a.server_id;
  tr.dataset.seq = String(a.seq);
  tr.dataset.silenced = String(a.silenced_by.length > 0);
  tr.dataset.flapping = String(a.flapping);
  tr.classList.toggle("resolved", a.state === "resolved");

  const sev = tr.querySelector(".severity");
  sev.className = `severity severity-${a.severity}`;
  sev.textContent = a.severity;

  const host = tr.querySelector(".host a");
  host.href = `/servers/${encodeURIComponent(a.server_id)}`;
  host.textContent = a.hostname || a.server_id;
  host.title = a.server_id;

  const rule = tr.querySelector(".rule");
  rule.title = [a.summary, a.rule_id && `rule ${a.rule_id}`].filter(Boolean).join("\n");
  tr.querySelector(".rule-name").textContent = a.rule_name || a.rule_id;
  const item = tr.querySelector(".rule-item");
  item.textContent = a.item ? `[${a.item}]` : "";
  item.hidden = !a.item;
  tr.querySelector(".condition").textContent = a.condition ?? "";

  // started_at is when it began firing; a pending alert shows when its pending began
  const since = a.started_at || (a.state === "pending" ? tr.querySelector(".since").dateTime || a.ts : null);
  setSince(tr.querySelector(".since"), typeof since === "string" ? since : null);

  const state = tr.querySelector(".alert-state");
  state.className = `alert-state state-${a.state}`;
  state.textContent = a.state;
  const silenced = tr.querySelector(".marker-silenced");
  silenced.hidden = a.silenced_by.length === 0;
  silenced.title = `Silenced by ${a.silenced_by.join(", ")}: notifications are suppressed`;
  const flapping = tr.querySelector(".marker-flapping");
  flapping.hidden = !a.flapping;
  flapping.title = "Changing state often: repeated notifications are suppressed";

  tr.querySelector(".value").textContent = fmtNum(a.value);

  const acked = tr.querySelector(".acked-by");
  const isAcked = a.state === "acknowledged";
  acked.textContent = isAcked ? a.acked_by ?? "" : "";
  const expires = isAcked && a.ack_expires_at ? `\nexpires ${fmtDateTime(a.ack_expires_at)}` : "";
  acked.title = isAcked ? `${a.ack_comment ?? ""}${expires}`.trim() : "";

  tr.querySelector(".ack-button").hidden = a.state !== "firing";
  tr.querySelector(".unack-button").hidden = a.state !== "acknowledged";
  tr.hidden = !matchesServer(a);
}

function setSince(el, iso) {
  const ms = parseTime(iso);
  el.dateTime = ms === null ? "" : iso;
  el.title = ms === null ? "" : new Date(ms).toLocaleString();
  el.textContent = ms === null ? "–" : fmtAgo(ms);
}

function tick() {
  for (const el of tbody.querySelectorAll("time.since")) {
    if (el.dateTime) el.textContent = fmtAgo(Date.parse(el.dateTime));
  }
  tickSilences();
}

function updateView() {
  let shown = 0;
  for (const { tr } of rows.values()) if (!tr.hidden) shown += 1;
  const total = rows.size;
  countEl.textContent = !loaded ? "" : shown === total ? `${total} alert${total === 1 ? "" : "s"}` : `${shown} of ${total} alerts`;
  empty.hidden = shown > 0;
  if (!loaded) empty.textContent = loadFailed ? "The alerts could not be loaded." : "Loading…";
  else if (total) empty.textContent = "No alert matches the server filter.";
  else if (filterState.value === "active" && !filterSeverity.value) empty.textContent = "No active alerts.";
  else empty.textContent = "No alert matches the filters.";
}

// Applies one alert (its newest event) from the stream.
function applyEvent(raw) {
  const a = parseAlert(raw);
  if (!a) return;
  historyEvent(a);
  if (buffered) {
    if (buffered.length < 5000) buffered.push(a);
    return;
  }
  apply(a, true);
  updateView();
}

function apply(a, live) {
  const entry = rows.get(a.alert_id);
  if (entry) {
    if (a.seq <= entry.alert.seq) return; // stale or replayed
    entry.alert = a;
    renderRow(entry);
    return;
  }
  if (!admits(a)) return;
  const created = createRow(a);
  rows.set(a.alert_id, created);
  if (live) {
    tbody.prepend(created.tr); // newest first
    created.tr.classList.add("fresh");
    setTimeout(() => created.tr.classList.remove("fresh"), 3000);
  } else {
    tbody.append(created.tr);
  }
}

function alertsURL() {
  const params = new URLSearchParams();
  const states = wantedStates();
  if (states) params.set("state", states.join(","));
  if (filterSeverity.value) params.set("severity", filterSeverity.value);
  const qs = params.toString();
  return `/api/v1/alerts${qs ? `?${qs}` : ""}`;
}

async function loadAlerts() {
  loading?.abort();
  const mine = (loading = new AbortController());
  buffered ??= [];
  const body = await getJSON(alertsURL(), { signal: mine.signal });
  if (mine !== loading) return; // superseded by a newer request (its buffer carries on)
  loading = null;
  const events = buffered;
  buffered = null;
  if (body && Array.isArray(body.alerts)) {
    rows.clear();
    tbody.replaceChildren();
    for (const a of parseAlerts(body.alerts)) apply(a, false);
    loaded = true;
    loadFailed = false;
  } else {
    if (body) console.warn("malformed alert list", body);
    loadFailed = true;
  }
  for (const a of events) apply(a, true);
  updateView();
}

function refilter() {
  writeFiltersToURL();
  loadAlerts();
}

function refilterServer() {
  writeFiltersToURL();
  for (const entry of rows.values()) entry.tr.hidden = !matchesServer(entry.alert);
  updateView();
}

// ---- acknowledge / un-acknowledge ---------------------------------------------------

const ackDialog = $("ack-dialog");
const ackForm = $("ack-form");
const ackComment = $("ack-comment");
const ackExpires = $("ack-expires");
const ackSubmit = $("ack-submit");
const ackMessage = $("ack-message");
let ackTarget = null; // {alert, mode}

function describe(a) {
  const item = a.item ? ` [${a.item}]` : "";
  return `${a.severity} · ${a.rule_name || a.rule_id}${item} on ${a.hostname || a.server_id}` +
    (a.condition ? ` · ${a.condition}` : "");
}

function invalid(el, bad) {
  if (bad) el.setAttribute("aria-invalid", "true");
  else el.removeAttribute("aria-invalid");
}

function formMessage(el, text, kind = "error") {
  el.textContent = text;
  el.dataset.kind = kind;
  el.hidden = !text;
}

function openAck(a, mode) {
  ackTarget = { alert: a, mode };
  ackDialog.dataset.mode = mode;
  ackDialog.dataset.alertId = a.alert_id;
  $("ack-title").textContent = mode === "ack" ? "Acknowledge alert" : "Un-acknowledge alert";
  ackSubmit.textContent = mode === "ack" ? "Acknowledge" : "Un-acknowledge";
  $("ack-alert").textContent = describe(a);
  for (const el of ackDialog.querySelectorAll(".ack-expires-field")) el.hidden = mode !== "ack";
  ackComment.value = "";
  ackExpires.value = "";
  ackComment.removeAttribute("aria-invalid");
  formMessage(ackMessage, "");
  ackSubmit.disabled = false;
  ackDialog.showModal();
  ackComment.focus();
}

async function submitAck(event) {
  event.preventDefault();
  if (!ackTarget) return;
  const comment = ackComment.value.trim();
  invalid(ackComment, !comment);
  if (!comment) {
    formMessage(ackMessage, "Please enter a comment.");
    ackComment.focus();
    return;
  }
  const { alert: a, mode } = ackTarget;
  const body = { comment };
  if (mode === "ack" && ackExpires.value) body.expires_s = Number(ackExpires.value);
  ackSubmit.disabled = true;
  formMessage(ackMessage, "Sending…", "info");
  const result = await sendJSON("POST", `/api/v1/alerts/${encodeURIComponent(a.alert_id)}/${mode}`, body);
  ackSubmit.disabled = false;
  if (!result.ok) {
    formMessage(ackMessage, result.message);
    return;
  }
  clearError();
  formMessage(ackMessage, "");
  ackTarget = null;
  ackDialog.close();
}

ackForm.addEventListener("submit", submitAck);
$("ack-cancel").addEventListener("click", () => { ackTarget = null; ackDialog.close(); });

// ---- history ------------------------------------------------------------------------

const historyDialog = $("history-dialog");
const historyList = $("alert-history");
const historyEmpty = $("history-empty");
const historyTemplate = $("history-item-template");
let historyFor = null; // alert_id shown
let historyEvents = new Map(); // seq -> event

function renderHistory() {
  const events = [...historyEvents.values()].sort((x, y) => x.seq - y.seq);
  historyList.replaceChildren(...events.map((e) => {
    const li = historyTemplate.content.firstElementChild.cloneNode(true);
    li.dataset.transition = String(e.transition ?? e.state);
    li.dataset.state = e.state;
    li.dataset.seq = String(e.seq);
    const time = li.querySelector(".history-time");
    if (parseTime(e.ts) !== null) time.dateTime = e.ts;
    time.textContent = fmtDateTime(e.ts);
    li.querySelector(".history-transition").textContent = String(e.transition ?? e.state);
    li.querySelector(".history-state").textContent = e.transition && e.transition !== e.state ? `→ ${e.state}` : "";
    li.querySelector(".history-value").textContent = typeof e.value === "number" ? `value ${fmtNum(e.value)}` : "";
    li.querySelector(".history-actor").textContent = e.actor ? `by ${e.actor}` : "by the rule";
    li.querySelector(".history-reason").textContent = e.reason ? `“${e.reason}”` : "";
    return li;
  }));
}

async function openHistory(a) {
  historyFor = a.alert_id;
  historyEvents = new Map();
  historyDialog.dataset.alertId = a.alert_id;
  $("history-alert").textContent = describe(a);
  historyList.replaceChildren();
  historyEmpty.textContent = "Loading…";
  historyEmpty.hidden = false;
  if (!historyDialog.open) historyDialog.showModal();
  const body = await getJSON(`/api/v1/alerts/${encodeURIComponent(a.alert_id)}`);
  if (historyFor !== a.alert_id) return;
  if (!body) {
    historyEmpty.textContent = "The history could not be loaded.";
    return;
  }
  for (const e of parseAlerts(body.history)) if (e.alert_id === a.alert_id) historyEvents.set(e.seq, e);
  // the newest event this page has from the stream may not be in the store yet
  if (!historyEvents.has(a.seq)) historyEvents.set(a.seq, a);
  renderHistory();
  historyEmpty.textContent = "No events.";
  historyEmpty.hidden = historyEvents.size > 0;
}

// A live event of the alert whose history is open joins its timeline.
function historyEvent(a) {
  if (!historyDialog.open || a.alert_id !== historyFor || historyEvents.has(a.seq)) return;
  historyEvents.set(a.seq, a);
  renderHistory();
  historyEmpty.hidden = true;
}

$("history-close").addEventListener("click", () => historyDialog.close());
historyDialog.addEventListener("close", () => { historyFor = null; });

// ---- silences -----------------------------------------------------------------------

const silenceRows = $("silence-rows");
const silenceTemplate = $("silence-row-template");
const silencesEmpty = $("silences-empty");
const silencesTable = $("silences-table");
const silenceForm = $("silence-form");
const matchersBox = $("silence-matchers");
const matcherTemplate = $("matcher-row-template");
const silenceComment = $("silence-comment");
const silenceDuration = $("silence-duration");
const silenceMessage = $("silence-message");
const silenceSubmit = $("silence-submit");

function fmtMatcher(m) {
  return `${m.label}${m.op}"${m.value}"`;
}

function renderSilences(list) {
  const now = Date.now();
  const active = list
    .filter((s) => s && typeof s.id === "string" && Array.isArray(s.matchers))
    .filter((s) => (parseTime(s.ends_at) ?? Infinity) > now)
    .sort((x, y) => (parseTime(x.ends_at) ?? 0) - (parseTime(y.ends_at) ?? 0) || collator.compare(x.id, y.id));
  silenceRows.replaceChildren(...active.map((s) => {
    const tr = silenceTemplate.content.firstElementChild.cloneNode(true);
    tr.dataset.silenceId = s.id;
    const box = tr.querySelector(".silence-matchers");
    for (const m of s.matchers) {
      const code = document.createElement("code");
      code.className = "matcher";
      code.textContent = fmtMatcher(m);
      box.append(code, " ");
    }
    tr.querySelector(".silence-starts").textContent = fmtDateTime(s.starts_at);
    const ends = tr.querySelector(".ends");
    ends.dateTime = s.ends_at ?? "";
    ends.title = fmtDateTime(s.ends_at);
    tr.querySelector(".silence-created-by").textContent = s.created_by ?? "";
    const comment = tr.querySelector(".silence-comment");
    comment.textContent = s.comment ?? "";
    comment.title = s.comment ?? "";
    tr.querySelector(".expire-button").addEventListener("click", () => openExpire(s));
    return tr;
  }));
  silencesEmpty.hidden = active.length > 0;
  silencesTable.hidden = active.length === 0;
  tickSilences();
}

// "ends in …" ticks; a silence that has ended leaves the list.
function tickSilences() {
  const now = Date.now();
  let removed = false;
  for (const el of silenceRows.querySelectorAll("time.ends")) {
    const ms = parseTime(el.dateTime);
    if (ms === null) {
      el.textContent = "–";
    } else if (ms <= now) {
      el.closest("tr").remove();
      removed = true;
    } else {
      el.textContent = `in ${fmtSpan((ms - now) / 1000)}`;
    }
  }
  if (removed) {
    silencesEmpty.hidden = silenceRows.children.length > 0;
    silencesTable.hidden = silenceRows.children.length === 0;
  }
}

async function loadSilences() {
  const body = await getJSON("/api/v1/alerts/silences");
  if (!body) return;
  if (!Array.isArray(body.silences)) {
    console.warn("malformed silence list", body);
    return;
  }
  renderSilences(body.silences);
}

function addMatcher(label = "server_id", op = "=", value = "") {
  const row = matcherTemplate.content.firstElementChild.cloneNode(true);
  row.querySelector(".matcher-label").value = label;
  row.querySelector(".matcher-op").value = op;
  row.querySelector(".matcher-value").value = value;
  row.querySelector(".matcher-remove").addEventListener("click", () => {
    row.remove();
    if (!matchersBox.children.length) addMatcher();
    numberMatchers();
  });
  matchersBox.append(row);
  numberMatchers();
  return row;
}

function numberMatchers() {
  [...matchersBox.children].forEach((row, i) => {
    const n = i + 1;
    row.querySelector(".matcher-label").setAttribute("aria-label", `Matcher ${n} label`);
    row.querySelector(".matcher-op").setAttribute("aria-label", `Matcher ${n} operator`);
    row.querySelector(".matcher-value").setAttribute("aria-label", `Matcher ${n} value`);
    row.querySelector(".matcher-remove").setAttribute("aria-label", `Remove matcher ${n}`);
  });
}

function silenceAlert(a) {
  matchersBox.replaceChildren();
  addMatcher("server_id", "=", a.server_id);
  addMatcher("rule_id", "=", a.rule_id);
  formMessage(silenceMessage, "");
  silenceForm.scrollIntoView({ behavior: "smooth", block: "center" });
  silenceComment.focus({ preventScroll: true });
}

async function submitSilence(event) {
  event.preventDefault();
  const matchers = [];
  let bad = null;
  for (const row of matchersBox.children) {
    const input = row.querySelector(".matcher-value");
    const value = input.value.trim();
    invalid(input, !value);
    if (!value) bad ??= input;
    matchers.push({
      label: row.querySelector(".matcher-label").value,
      op: row.querySelector(".matcher-op").value,
      value,
    });
  }
  const comment = silenceComment.value.trim();
  invalid(silenceComment, !comment);
  const problems = [
    !matchers.length && "at least one matcher",
    bad && "a value for every matcher",
    !comment && "a comment",
  ].filter(Boolean);
  if (problems.length) {
    const list = problems.length > 1 ? `${problems.slice(0, -1).join(", ")} and ${problems.at(-1)}` : problems[0];
    formMessage(silenceMessage, `Please enter ${list}.`);
    (bad ?? silenceComment).focus();
    return;
  }
  silenceSubmit.disabled = true;
  formMessage(silenceMessage, "Sending…", "info");
  const result = await sendJSON("POST", "/api/v1/alerts/silences", {
    matchers, duration_s: Number(silenceDuration.value), comment,
  });
  silenceSubmit.disabled = false;
  if (!result.ok) {
    formMessage(silenceMessage, result.message);
    return;
  }
  clearError();
  const id = result.body?.silence?.id;
  formMessage(silenceMessage, id ? `Silence ${id} created.` : "Silence created.", "info");
  silenceComment.value = "";
  matchersBox.replaceChildren();
  addMatcher();
  loadSilences();
}

silenceForm.addEventListener("submit", submitSilence);
$("silence-add-matcher").addEventListener("click", () => addMatcher().querySelector(".matcher-value").focus());

// expire
const expireDialog = $("expire-dialog");
const expireMessage = $("expire-message");
const expireSubmit = $("expire-submit");
let expireTarget = null;

function openExpire(s) {
  expireTarget = s;
  expireDialog.dataset.silenceId = s.id;
  $("expire-silence").textContent = `${s.id}: ${(s.matchers ?? []).map(fmtMatcher).join(" ")}`;
  formMessage(expireMessage, "");
  expireSubmit.disabled = false;
  expireDialog.showModal();
  expireSubmit.focus();
}

async function submitExpire(event) {
  event.preventDefault();
  if (!expireTarget) return;
  expireSubmit.disabled = true;
  const url = `/api/v1/alerts/silences/${encodeURIComponent(expireTarget.id)}`;
  const result = await sendJSON("DELETE", url);
  expireSubmit.disabled = false;
  if (!result.ok) {
    formMessage(expireMessage, result.message);
    return;
  }
  clearError();
  formMessage(silenceMessage, "");
  expireTarget = null;
  expireDialog.close();
  loadSilences();
}

$("expire-form").addEventListener("submit", submitExpire);
$("expire-cancel").addEventListener("click", () => { expireTarget = null; expireDialog.close(); });

// ---- start --------------------------------------------------------------------------

readFiltersFromURL();
filterState.addEventListener("change", refilter);
filterSeverity.addEventListener("change", refilter);
filterServer.addEventListener("input", refilterServer);
addMatcher();
updateView();
setInterval(tick, 1000);

// The stream opens first and its events wait in `buffered` until the snapshot is in,
// so nothing between the snapshot and the stream's start is lost (seq drops repeats).
buffered = [];
openStream("/api/v1/alerts/stream", { alert: applyEvent }, () => { loadAlerts(); loadSilences(); });
loadAlerts();
loadSilences();
