// Command helpers shared by the commands page, the approvals inbox and the audit page:
// JSON requests (error banner, sign-in on 401), status badges, command summaries from the
// live stream, and the command detail dialog (history, approval trace, result).
// All text goes into the DOM with textContent.
import { showError } from "./app.js";
import { fmtDateTime, parseTime } from "./alerts-common.js";
import { loginURL } from "./session.js";

export const STATUSES = ["pending-approval", "queued", "acked", "running", "succeeded", "failed",
  "rejected", "expired", "timed-out"];
export const FINAL = new Set(["succeeded", "failed", "rejected", "expired", "timed-out"]);

export const $ = (id) => document.getElementById(id);

// Sends a request (`body` as JSON when given). Returns {ok: true, status, body} or, after
// showing the failure in the error banner (unless `quiet`: the caller shows it in place),
// {ok: false, status, message} where message is the API's own. A 401 (the session ended)
// goes to the sign-in page.
export async function request(method, url, body, { quiet = false } = {}) {
  const report = quiet ? () => {} : showError;
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    const message = `Network error on ${method} ${url}: ${err.message}`;
    report(message);
    return { ok: false, status: 0, message };
  }
  const parsed = await response.json().catch(() => null);
  if (response.status === 401) {
    location.assign(loginURL());
    return { ok: false, status: 401, message: "Your session has ended; please sign in again." };
  }
  if (!response.ok) {
    const e = parsed?.error;
    const message = e?.message ?? `HTTP ${response.status} ${response.statusText}`;
    report(e ? `${e.code}: ${e.message}` : `${message} for ${method} ${url}`);
    return { ok: false, status: response.status, message };
  }
  if (parsed === null) {
    report(`Malformed JSON from ${url}`);
    return { ok: false, status: response.status, message: "malformed reply" };
  }
  return { ok: true, status: response.status, body: parsed };
}

export function invalid(el, bad) {
  if (bad) el.setAttribute("aria-invalid", "true");
  else el.removeAttribute("aria-invalid");
}

export function formMessage(el, text, kind = "error") {
  el.textContent = text;
  el.dataset.kind = kind;
  el.hidden = !text;
}

export function setStatus(el, status) {
  el.className = "cmd-status";
  el.dataset.status = status;
  el.textContent = status;
}

export function setTime(el, iso) {
  el.dateTime = iso ?? "";
  el.textContent = fmtDateTime(iso);
}

const isText = (v) => typeof v === "string" && v.length > 0;

// A live `command` event (CommandRecord.summary()), or null after a console warning.
export function parseSummary(s) {
  if (!s || typeof s !== "object" || !isText(s.id) || !isText(s.server_id) ||
      !STATUSES.includes(s.status) || parseTime(s.updated_at) === null) {
    console.warn("ignoring malformed command event", s);
    return null;
  }
  return s;
}

// The row state of a full CommandRecord from the API.
export function fromRecord(r) {
  const c = r?.command;
  if (!c || !isText(c.id) || !STATUSES.includes(r.status)) {
    console.warn("ignoring malformed command", r);
    return null;
  }
  return {
    id: c.id, server_id: c.server_id, type: c.type, status: r.status, message: r.message ?? "",
    progress: r.progress ?? null, actor: c.actor, reason: c.reason ?? "",
    params: c.params ?? {}, created_at: r.created_at, updated_at: r.updated_at,
    finished_at: r.finished_at ?? null,
  };
}

// `state` moved on by a live summary, or null when the summary is older than what we have.
export function advanced(state, summary) {
  if (parseTime(summary.updated_at) < parseTime(state.updated_at)) return null;
  return {
    ...state, status: summary.status, message: summary.message ?? "",
    progress: summary.progress ?? null, updated_at: summary.updated_at,
    finished_at: FINAL.has(summary.status) ? (state.finished_at ?? summary.updated_at) : null,
  };
}

// "payload=hi" for a command's parameters (the type itself left out).
export function fmtParams(params) {
  return Object.entries(params ?? {})
    .filter(([k]) => k !== "type")
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
    .join(" ");
}

export const shortId = (id) => id.slice(0, 8);

// ---- the detail dialog (templates/_command_dialog.html) ------------------------------------

const dialog = $("command-dialog");
let shownId = null;

function fact(dl, label, value, { mono = false } = {}) {
  if (value === null || value === undefined || value === "") return;
  const dt = document.createElement("dt");
  dt.textContent = label;
  const dd = document.createElement("dd");
  if (value instanceof Node) dd.append(value);
  else dd.textContent = String(value);
  if (mono) dd.className = "mono";
  dl.append(dt, dd);
}

function timeEl(iso) {
  const t = document.createElement("time");
  setTime(t, iso);
  return t;
}

function statusEl(status) {
  const s = document.createElement("span");
  setStatus(s, status);
  return s;
}

function renderDetail(r) {
  const c = r.command;
  $("cd-id").textContent = c.id;
  dialog.dataset.commandId = c.id;
  dialog.dataset.status = r.status;
  const facts = $("cd-facts");
  facts.replaceChildren();
  fact(facts, "Status", statusEl(r.status));
  fact(facts, "Message", r.message);
  if (typeof r.progress === "number") fact(facts, "Progress", `${Math.round(r.progress * 100)} %`);
  fact(facts, "Type", c.type);
  fact(facts, "Server", c.server_id, { mono: true });
  fact(facts, "Requested by", c.actor);
  fact(facts, "Reason", c.reason);
  fact(facts, "Parameters", fmtParams(c.params) || "none", { mono: true });
  fact(facts, "Needs approval", r.requires_approval ? "yes" : "no");
  fact(facts, "Created", timeEl(r.created_at));
  fact(facts, "Issued", timeEl(c.issued_at));
  fact(facts, "Expires", timeEl(c.expires_at));
  if (r.acked_at) fact(facts, "Acknowledged by the agent", timeEl(r.acked_at));
  if (r.finished_at) fact(facts, "Finished", timeEl(r.finished_at));

  const history = $("cd-history");
  history.replaceChildren(...(r.history ?? []).map((h) => {
    const li = document.createElement("li");
    li.dataset.status = h.status ?? "";
    const at = document.createElement("time");
    at.className = "history-time";
    setTime(at, h.at);
    const what = statusEl(h.status ?? "?");
    const by = document.createElement("span");
    by.className = "muted";
    by.textContent = h.by ? `by ${h.by}` : "";
    const msg = document.createElement("span");
    msg.className = "history-reason";
    msg.textContent = h.message ?? "";
    li.append(at, what, by, msg);
    return li;
  }));
  $("cd-history-empty").hidden = history.children.length > 0;

  const approvals = $("cd-approvals");
  approvals.replaceChildren(...(c.approvals ?? []).map((a) => {
    const li = document.createElement("li");
    li.dataset.decision = a.decision ?? "";
    const at = document.createElement("time");
    at.className = "history-time";
    setTime(at, a.at);
    const what = document.createElement("span");
    what.className = "history-transition";
    what.textContent = `${a.decision} by ${a.actor}`;
    const comment = document.createElement("span");
    comment.className = "history-reason";
    comment.textContent = a.comment ?? "";
    li.append(at, what, comment);
    return li;
  }));
  $("cd-approvals-empty").textContent = r.requires_approval
    ? "Waiting for an approver." : "This command type needs no approval here.";
  $("cd-approvals-empty").hidden = approvals.children.length > 0;

  const result = $("cd-result");
  if (r.result) result.textContent = JSON.stringify(r.result, null, 2);
  else if (r.result_ref) result.textContent = `stored by reference: ${r.result_ref}`;
  else result.textContent = FINAL.has(r.status) ? "no result" : "not finished yet";
}

export async function openDetail(id) {
  if (!dialog) return;
  shownId = id;
  $("cd-id").textContent = id;
  $("cd-facts").replaceChildren();
  if (!dialog.open) dialog.showModal();
  await refreshDetail(id);
}

// Reloads the dialog if it shows `id` (after a live change).
export async function refreshDetail(id) {
  if (!dialog?.open || id !== shownId) return;
  const reply = await request("GET", `/api/v1/commands/${encodeURIComponent(id)}`);
  if (reply.ok && id === shownId && reply.body?.command) renderDetail(reply.body.command);
}

$("cd-close")?.addEventListener("click", () => dialog.close());
dialog?.addEventListener("close", () => { shownId = null; });
