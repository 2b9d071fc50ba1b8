// One server's commands: send a PING (reason required, checked as you type), the list of its
// commands with live status changes (SSE `command` events), and each command's details.
import { clearError, openStream } from "./app.js";
import { parseTime } from "./alerts-common.js";
import {
  $, advanced, formMessage, fromRecord, invalid, openDetail, parseSummary, refreshDetail,
  request, setStatus, setTime, shortId,
} from "./commands-common.js";

const serverId = $("page").dataset.serverId;
const rowsEl = $("command-rows");
const table = $("commands-table");
const empty = $("commands-empty");
const count = $("command-count");
const rowTemplate = $("command-row-template");
const rows = new Map(); // command id -> {state, tr}
const fetching = new Map(); // command id -> its GET in flight
let buffered = []; // live events that arrived before the list was loaded (null once loaded)

// ---- the list -----------------------------------------------------------------------------

function createRow(state) {
  const tr = rowTemplate.content.firstElementChild.cloneNode(true);
  tr.dataset.commandId = state.id;
  const open = tr.querySelector(".cmd-open");
  open.textContent = shortId(state.id);
  open.title = state.id;
  open.setAttribute("aria-label", `Details of command ${state.id}`);
  open.addEventListener("click", () => openDetail(state.id));
  return tr;
}

function renderRow({ state, tr }) {
  tr.dataset.status = state.status;
  tr.querySelector(".cmd-type").textContent = state.type ?? "";
  setStatus(tr.querySelector(".cmd-status"), state.status);
  const message = tr.querySelector(".cmd-message");
  const progress = typeof state.progress === "number" && !state.finished_at
    ? ` (${Math.round(state.progress * 100)} %)` : "";
  message.textContent = `${state.message ?? ""}${progress}`;
  message.title = state.message ?? "";
  tr.querySelector(".cmd-actor").textContent = state.actor ?? "";
  setTime(tr.querySelector(".cmd-created time"), state.created_at);
  setTime(tr.querySelector(".cmd-updated time"), state.updated_at);
  setTime(tr.querySelector(".cmd-finished time"), state.finished_at);
}

function flash(tr) {
  tr.classList.remove("fresh");
  void tr.offsetWidth; // restart the animation
  tr.classList.add("fresh");
}

// Puts the row where it belongs: newest created first.
function place(entry) {
  const created = parseTime(entry.state.created_at) ?? 0;
  const after = [...rowsEl.children].find((other) => {
    const o = rows.get(other.dataset.commandId);
    return o && o !== entry && (parseTime(o.state.created_at) ?? 0) < created;
  });
  rowsEl.insertBefore(entry.tr, after ?? null);
}

function updateView() {
  const n = rows.size;
  table.hidden = n === 0;
  empty.hidden = n > 0;
  if (n === 0) empty.textContent = "No command was sent to this server yet.";
  const open = [...rows.values()].filter((e) => !e.state.finished_at).length;
  count.textContent = n ? `${n} command${n === 1 ? "" : "s"}, ${open} not finished` : "";
}

function upsert(state, live) {
  let entry = rows.get(state.id);
  if (!entry) {
    entry = { state, tr: createRow(state) };
    rows.set(state.id, entry);
    renderRow(entry);
    place(entry);
  } else {
    entry.state = state;
    renderRow(entry);
  }
  if (live) flash(entry.tr);
  updateView();
}

async function fetchOne(id) {
  const reply = await request("GET", `/api/v1/commands/${encodeURIComponent(id)}`);
  return reply.ok ? fromRecord(reply.body?.command) : null;
}

async function applyEvent(raw) {
  const summary = parseSummary(raw);
  if (!summary || summary.server_id !== serverId) return;
  if (buffered !== null) {
    buffered.push(summary);
    return;
  }
  const entry = rows.get(summary.id);
  if (entry) {
    const next = advanced(entry.state, summary);
    if (next) upsert(next, true);
  } else {
    // A new command: fetched once (for its creation time), however many events arrive meanwhile.
    if (!fetching.has(summary.id)) fetching.set(summary.id, fetchOne(summary.id));
    const state = await fetching.get(summary.id);
    fetching.delete(summary.id);
    const current = rows.get(summary.id);
    if (current) {
      const next = advanced(current.state, summary);
      if (next) upsert(next, true);
    } else if (state) {
      upsert(advanced(state, summary) ?? state, true);
    }
  }
  refreshDetail(summary.id);
}

async function loadCommands() {
  const url = `/api/v1/commands?${new URLSearchParams({ server: serverId, limit: "200" })}`;
  const reply = await request("GET", url);
  if (!reply.ok) {
    empty.textContent = `Cannot list the commands: ${reply.message}`;
    empty.hidden = false;
    return;
  }
  for (const r of reply.body.commands ?? []) {
    const state = fromRecord(r);
    if (!state) continue;
    const known = rows.get(state.id);
    if (!known || parseTime(state.updated_at) >= parseTime(known.state.updated_at)) upsert(state, false);
  }
  updateView();
  const waiting = buffered ?? [];
  buffered = null;
  for (const summary of waiting) await applyEvent(summary);
}

// ---- sending a PING ----------------------------------------------------------------------

const form = $("ping-form");
const payload = $("ping-payload");
const reason = $("ping-reason");
const hint = $("ping-reason-hint");
const message = $("ping-message");
const submit = $("ping-submit");
let touched = false;
let sending = false;

// Checks the reason as it is typed: the hint says what is missing, the button waits for it.
function checkReason() {
  const text = reason.value.trim();
  let problem = "";
  if (!text) problem = "A reason is required (3 to 2000 characters); it is recorded in the audit log.";
  else if (text.length < 3) problem = `The reason needs at least 3 characters (${3 - text.length} more).`;
  hint.textContent = problem || "The reason will be recorded in the audit log.";
  hint.dataset.state = problem ? (text ? "invalid" : "empty") : "ok";
  invalid(reason, touched && Boolean(problem));
  submit.disabled = sending || Boolean(problem);
  return !problem;
}

async function send(event) {
  event.preventDefault();
  touched = true;
  if (!checkReason()) {
    reason.focus();
    return;
  }
  sending = true;
  submit.disabled = true;
  formMessage(message, "Sending…", "info");
  const reply = await request("POST", "/api/v1/commands", {
    server_id: serverId, type: "PING", params: { payload: payload.value }, reason: reason.value.trim(),
  });
  sending = false;
  if (!reply.ok) {
    formMessage(message, reply.message);
    checkReason();
    return;
  }
  clearError();
  const state = fromRecord(reply.body?.command);
  if (state) {
    const known = rows.get(state.id);
    if (!known) upsert(state, true);
    formMessage(message, state.status === "pending-approval"
      ? `PING ${shortId(state.id)} waits for an approver (see Approvals).`
      : `PING ${shortId(state.id)} sent.`, "info");
  }
  reason.value = "";
  touched = false;
  checkReason();
}

reason.addEventListener("input", () => { touched = true; checkReason(); });
reason.addEventListener("blur", () => { if (reason.value) touched = true; checkReason(); });
form.addEventListener("submit", send);

// ---- start ------------------------------------------------------------------------------

checkReason();
// The stream opens first; its events wait in `buffered` until the list is in, so no change
// between the two is lost.
openStream(`/api/v1/commands/stream?${new URLSearchParams({ server: serverId })}`,
  { command: applyEvent }, () => { buffered = []; loadCommands(); });
loadCommands();
