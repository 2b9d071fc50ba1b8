// The approvals inbox: commands of the tenant in pending-approval, live. Approve or reject
// with a comment; the API's refusal (e.g. the requester deciding on their own command) is
// shown in the dialog. A command decided while the page is open stays, dimmed, with its new
// status, so the approver sees it move on.
import { clearError, openStream } from "./app.js";
import { parseTime } from "./alerts-common.js";
import {
  $, advanced, fmtParams, formMessage, fromRecord, invalid, openDetail, parseSummary,
  refreshDetail, request, setStatus, setTime, shortId,
} from "./commands-common.js";
import { me } from "./session.js";

const PENDING = "pending-approval";
const rowsEl = $("approval-rows");
const table = $("approvals-table");
const empty = $("approvals-empty");
const count = $("approval-count");
const rowTemplate = $("approval-row-template");
const rows = new Map(); // command id -> {state, tr}
const fetching = new Map(); // command id -> its GET in flight
let buffered = []; // live events before the list is in (null once it is)
let myName = null;

function createRow(state) {
  const tr = rowTemplate.content.firstElementChild.cloneNode(true);
  tr.dataset.commandId = state.id;
  const server = tr.querySelector(".cmd-server");
  server.textContent = state.server_id;
  server.href = `/servers/${encodeURIComponent(state.server_id)}/commands`;
  tr.querySelector(".cmd-type").textContent = state.type ?? "";
  tr.querySelector(".cmd-params").textContent = fmtParams(state.params);
  tr.querySelector(".cmd-actor").textContent = state.actor ?? "";
  const reason = tr.querySelector(".cmd-reason");
  reason.textContent = state.reason;
  reason.title = state.reason;
  setTime(tr.querySelector(".cmd-created time"), state.created_at);
  const label = `${state.type} ${shortId(state.id)} on ${state.server_id}`;
  const approve = tr.querySelector(".approve-button");
  approve.setAttribute("aria-label", `Approve ${label}`);
  approve.addEventListener("click", () => openDecision(rows.get(state.id).state, "approve"));
  const reject = tr.querySelector(".reject-button");
  reject.setAttribute("aria-label", `Reject ${label}`);
  reject.addEventListener("click", () => openDecision(rows.get(state.id).state, "reject"));
  const details = tr.querySelector(".details-button");
  details.setAttribute("aria-label", `Details of ${label}`);
  details.addEventListener("click", () => openDetail(state.id));
  return tr;
}

function renderRow({ state, tr }) {
  tr.dataset.status = state.status;
  tr.classList.toggle("decided", state.status !== PENDING);
  setStatus(tr.querySelector(".cmd-status"), state.status);
  tr.querySelector(".cmd-message").textContent = state.status === PENDING ? "" : state.message;
  tr.querySelector(".marker-you").hidden = !myName || state.actor !== myName;
  for (const b of tr.querySelectorAll(".approve-button, .reject-button")) b.hidden = state.status !== PENDING;
}

function updateView() {
  const waiting = [...rows.values()].filter((e) => e.state.status === PENDING).length;
  table.hidden = rows.size === 0;
  empty.hidden = rows.size > 0;
  if (rows.size === 0) empty.textContent = "Nothing waits for an approval.";
  count.textContent = `${waiting} waiting`;
}

function upsert(state, live) {
  let entry = rows.get(state.id);
  if (!entry) {
    entry = { state, tr: createRow(state) };
    rows.set(state.id, entry);
    renderRow(entry);
    // oldest request first: it has waited longest
    const created = parseTime(state.created_at) ?? 0;
    const after = [...rowsEl.children].find(
      (tr) => (parseTime(rows.get(tr.dataset.commandId)?.state.created_at) ?? 0) > created);
    rowsEl.insertBefore(entry.tr, after ?? null);
  } else {
    entry.state = state;
    renderRow(entry);
  }
  if (live) {
    entry.tr.classList.remove("fresh");
    void entry.tr.offsetWidth;
    entry.tr.classList.add("fresh");
  }
  updateView();
}

async function applyEvent(raw) {
  const summary = parseSummary(raw);
  if (!summary) return;
  if (buffered !== null) {
    buffered.push(summary);
    return;
  }
  const entry = rows.get(summary.id);
  if (entry) {
    const next = advanced(entry.state, summary);
    if (next) upsert(next, true);
  } else if (summary.status === PENDING) {
    if (!fetching.has(summary.id)) {
      fetching.set(summary.id, request("GET", `/api/v1/commands/${encodeURIComponent(summary.id)}`)
        .then((reply) => (reply.ok ? fromRecord(reply.body?.command) : null)));
    }
    const state = await fetching.get(summary.id);
    fetching.delete(summary.id);
    const current = rows.get(summary.id);
    if (current) {
      const next = advanced(current.state, summary);
      if (next) upsert(next, true);
    } else if (state) {
      upsert(state, true);
    }
  }
  refreshDetail(summary.id);
}

async function loadPending() {
  const reply = await request("GET", `/api/v1/commands?status=${PENDING}&limit=500`);
  if (!reply.ok) {
    empty.textContent = `Cannot list the commands waiting for approval: ${reply.message}`;
    empty.hidden = false;
    buffered = null;
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

// ---- approve / reject ---------------------------------------------------------------------

const dialog = $("decide-dialog");
const comment = $("decide-comment");
const message = $("decide-message");
const submit = $("decide-submit");
let target = null; // {state, decision}

function openDecision(state, decision) {
  target = { state, decision };
  dialog.dataset.decision = decision;
  dialog.dataset.commandId = state.id;
  const verb = decision === "approve" ? "Approve" : "Reject";
  $("decide-title").textContent = `${verb} command`;
  submit.textContent = verb;
  submit.classList.toggle("danger", decision === "reject");
  $("decide-command").textContent =
    `${state.type} ${fmtParams(state.params)} on ${state.server_id}, requested by ${state.actor}: “${state.reason}”`;
  comment.value = "";
  invalid(comment, false);
  formMessage(message, "");
  submit.disabled = false;
  dialog.showModal();
  comment.focus();
}

async function decide(event) {
  event.preventDefault();
  if (!target) return;
  const text = comment.value.trim();
  invalid(comment, !text);
  if (!text) {
    formMessage(message, "Please enter a comment.");
    comment.focus();
    return;
  }
  submit.disabled = true;
  formMessage(message, "Sending…", "info");
  const { state, decision } = target;
  const reply = await request("POST", `/api/v1/commands/${encodeURIComponent(state.id)}/${decision}`,
    { comment: text });
  submit.disabled = false;
  if (!reply.ok) {
    const prefix = reply.status === 403 ? "Not allowed" : reply.status === 409 ? "Too late" : "Failed";
    formMessage(message, `${prefix}: ${reply.message}`);
    return;
  }
  clearError();
  const updated = fromRecord(reply.body?.command);
  if (updated) {
    const known = rows.get(updated.id);
    if (!known || parseTime(updated.updated_at) >= parseTime(known.state.updated_at)) upsert(updated, true);
  }
  target = null;
  dialog.close();
}

$("decide-form").addEventListener("submit", decide);
$("decide-cancel").addEventListener("click", () => { target = null; dialog.close(); });
comment.addEventListener("input", () => { if (comment.value.trim()) invalid(comment, false); });

// ---- start ------------------------------------------------------------------------------

me.then((who) => {
  myName = who?.name ?? null;
  for (const entry of rows.values()) renderRow(entry);
});
openStream("/api/v1/commands/stream", { command: applyEvent }, () => { buffered = []; loadPending(); });
loadPending();
