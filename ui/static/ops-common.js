// Helpers of the pages that manage a server through the command bus (cron, files): run one
// command and wait for its outcome (live `command` events, with a slow poll as a safety net),
// the reason shared by a page's changes (remembered for the browser session), the activity
// line that says what the last command is doing (and, clearly, when it waits for an
// approver), and formatters. All text goes into the DOM with textContent.
import { openStream } from "./app.js";
import { $, FINAL, parseSummary, request, setStatus, shortId } from "./commands-common.js";

const page = $("page");
export const serverId = page.dataset.serverId;
export const limits = JSON.parse($("page-limits")?.textContent || "{}");

// ---- running commands ---------------------------------------------------------------------

const wakers = new Map(); // command id -> function that ends the current wait early

function waitFor(id, ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => { wakers.delete(id); resolve(); }, ms);
    wakers.set(id, () => { clearTimeout(timer); wakers.delete(id); resolve(); });
  });
}

function onCommandEvent(raw) {
  const summary = parseSummary(raw);
  if (summary) wakers.get(summary.id)?.();
}

let watching = false;

// Follows this server's command events, so a command's end is seen at once.
export function watchCommands() {
  if (watching) return;
  watching = true;
  openStream(`/api/v1/commands/stream?${new URLSearchParams({ server: serverId })}`,
    { command: onCommandEvent }, () => { for (const wake of [...wakers.values()]) wake(); });
}

// What a finished (or refused) command came to:
// {ok, status, message, result, truncated, record, id, refused, field}.
function outcome(record) {
  const result = record.result ?? null;
  return {
    ok: record.status === "succeeded", status: record.status, message: record.message ?? "",
    result, truncated: Boolean(result?.truncated) || Boolean(record.result_ref),
    record, id: record.command.id, refused: false, field: null,
  };
}

// "field 'params.CRON_CREATE.schedule': the schedule is empty" -> {field: "schedule", text}.
export function fieldOf(message) {
  const api = /^field '([^']*)': ([\s\S]*)$/.exec(message ?? "");
  if (api) {
    const where = api[1].split(".").slice(2).join(".");
    const inner = /^([a-z_][a-z0-9_]*): ([\s\S]*)$/.exec(api[2]);
    if (where === "params" && inner) return { field: `params.${inner[1]}`, text: inner[2] };
    return { field: where || api[1], text: api[2] };
  }
  const agent = /^(schedule|user|comment|template|params\.[a-z_][a-z0-9_]*): ([\s\S]*)$/.exec(message ?? "");
  return agent ? { field: agent[1], text: agent[2] } : { field: null, text: message ?? "" };
}

// Sends `type` with `params` to this server and waits until it is final. `onUpdate(record)`
// sees every status it passes (pending-approval among them). Never throws: a refusal by the
// API comes back as {ok: false, refused: true, message, field}.
export async function runCommand(type, params, reason, { onUpdate = () => {} } = {}) {
  watchCommands();
  const reply = await request("POST", "/api/v1/commands",
    { server_id: serverId, type, params, reason }, { quiet: true });
  if (!reply.ok) {
    const { field } = fieldOf(reply.message);
    return { ok: false, refused: true, status: "refused", message: reply.message, field,
      result: null, truncated: false, record: null, id: null };
  }
  let record = reply.body.command;
  const id = record.command.id;
  onUpdate(record);
  let delay = 250;
  while (!FINAL.has(record.status)) {
    await waitFor(id, record.status === "pending-approval" ? 5000 : delay);
    delay = Math.min(delay * 2, 2000);
    const got = await request("GET", `/api/v1/commands/${encodeURIComponent(id)}`,
      undefined, { quiet: true });
    if (got.ok && got.body?.command) {
      const changed = got.body.command.status !== record.status
        || got.body.command.message !== record.message;
      record = got.body.command;
      if (changed) onUpdate(record);
    } else if (got.status === 404) {
      return { ...outcome(record), ok: false, status: "lost", message: got.message };
    }
  }
  const done = outcome(record);
  if (!done.ok) done.field = fieldOf(done.message).field;
  return done;
}

// ---- the activity line ----------------------------------------------------------------

// Shows what the page's latest command is doing in `el` (a status badge and a sentence);
// a command waiting for an approver says so and links to the inbox.
export function showActivity(el, label, record) {
  if (!el) return;
  el.hidden = false;
  el.replaceChildren();
  el.dataset.status = record?.status ?? "";
  if (!record) {
    el.textContent = label;
    return;
  }
  const badge = document.createElement("span");
  setStatus(badge, record.status);
  const text = document.createElement("span");
  const id = shortId(record.command.id);
  if (record.status === "pending-approval") {
    text.append(`${label} (${record.command.type} ${id}) waits for an approver; it runs once `
      + "approved. ");
    const link = document.createElement("a");
    link.href = "/approvals";
    link.textContent = "Open Approvals";
    text.append(link);
  } else {
    text.textContent = `${label} (${record.command.type} ${id})${record.message ? `: ${record.message}` : ""}`;
  }
  el.append(badge, " ", text);
}

// A sentence for a command that did not succeed.
export function failureText(label, done) {
  if (done.refused) return `${label}: refused by the API: ${done.message}`;
  const why = done.message || done.status;
  switch (done.status) {
    case "rejected": return `${label}: rejected: ${why}`;
    case "expired": return `${label}: expired before the agent took it (is the agent running?)`;
    case "timed-out": return `${label}: the agent did not finish in time: ${why}`;
    default: return `${label}: ${why}`;
  }
}

// ---- the reason of a page's changes -------------------------------------------------

// Wires the page's reason field (#op-reason, hint #op-reason-hint): its text is kept for
// this browser session, per server. `reason()` returns it when it is long enough, else
// null after saying why next to the field and focusing it.
export function reasonField() {
  const input = $("op-reason");
  const hint = $("op-reason-hint");
  const key = `fleetdeck.reason.${serverId}`;
  input.value = sessionStorage.getItem(key) ?? "";
  const check = (loud) => {
    const text = input.value.trim();
    const ok = text.length >= 3;
    hint.dataset.state = ok ? "ok" : (loud || text ? "invalid" : "empty");
    hint.textContent = ok ? "Recorded in the audit log with every change made on this page."
      : "Every change needs a reason (3 to 2000 characters); it is recorded in the audit log.";
    if (ok || !loud) input.removeAttribute("aria-invalid");
    else input.setAttribute("aria-invalid", "true");
    return ok;
  };
  input.addEventListener("input", () => {
    sessionStorage.setItem(key, input.value);
    check(false);
  });
  check(false);
  return {
    input,
    reason() {
      if (check(true)) return input.value.trim();
      input.focus();
      return null;
    },
  };
}

// ---- formatters -----------------------------------------------------------------------

export function fmtBytes(n) {
  if (typeof n !== "number" || !Number.isFinite(n)) return "–";
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = -1;
  do {
    v /= 1024;
    i += 1;
  } while (v >= 1024 && i < units.length - 1);
  return `${v >= 100 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

const WEEKDAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

// An ISO time with its offset, shown in that offset (the server's zone), not the browser's:
// "2025-03-30T03:00:00+02:00" -> "Sun 2025-03-30 03:00 (UTC+02:00)".
export function fmtServerTime(iso) {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?(?:\.\d+)?(Z|[+-]\d{2}:\d{2})?$/.exec(iso ?? "");
  if (!m) return iso ?? "";
  const day = WEEKDAYS[new Date(Date.UTC(+m[1], +m[2] - 1, +m[3])).getUTCDay()];
  const seconds = m[6] && m[6] !== "00" ? `:${m[6]}` : "";
  const offset = !m[7] || m[7] === "Z" || m[7] === "+00:00" ? "UTC" : `UTC${m[7]}`;
  return `${day} ${m[1]}-${m[2]}-${m[3]} ${m[4]}:${m[5]}${seconds} (${offset})`;
}

// A modification time (ISO, or seconds since the epoch) in the browser's zone.
export function fmtMtime(value) {
  const ms = typeof value === "number" ? value * 1000 : Date.parse(value ?? "");
  if (!Number.isFinite(ms)) return value == null ? "–" : String(value);
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} `
    + `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
