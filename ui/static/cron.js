// One server's cron entries, all through the command bus: CRON_LIST for the table (FleetDeck's
// entries editable, every other line read-only), a create/edit form whose parameter fields
// come from the chosen template's typed parameters, the schedule checked as it is typed (a
// debounced CRON_CREATE/CRON_UPDATE dry run: the exact line and the next fire times in the
// server's timezone, or the error next to the field it names), and deletion with a reason.
import { $, fmtParams, formMessage, invalid } from "./commands-common.js";
import {
  failureText, fmtServerTime, limits, reasonField, runCommand, showActivity, watchCommands,
} from "./ops-common.js";

const TEMPLATES = JSON.parse($("cron-templates").textContent);
const MACROS = ["@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually",
  "@reboot"];
const DRY_RUN_WAIT_MS = 450;
const SHOWN_TIMES = 3;

const activity = $("op-activity");
const reasons = reasonField();
const entries = new Map(); // entry id -> the listed FleetDeck entry

// ---- the list ---------------------------------------------------------------------------

function timesList(times) {
  const ol = document.createElement("ol");
  ol.className = "fire-times";
  for (const t of times.slice(0, SHOWN_TIMES)) {
    const li = document.createElement("li");
    const el = document.createElement("time");
    el.dateTime = t;
    el.textContent = fmtServerTime(t);
    li.append(el);
    ol.append(li);
  }
  if (times.length > SHOWN_TIMES) ol.title = times.map(fmtServerTime).join("\n");
  return ol;
}

function cell(tr, text, className = "") {
  const td = document.createElement("td");
  if (className) td.className = className;
  if (text instanceof Node) td.append(text);
  else td.textContent = text ?? "";
  tr.append(td);
  return td;
}

function marker(text, className, title = "") {
  const span = document.createElement("span");
  span.className = `marker ${className}`;
  span.textContent = text;
  if (title) span.title = title;
  return span;
}

function button(text, className, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.textContent = text;
  b.addEventListener("click", onClick);
  return b;
}

function entryRow(e) {
  const tr = document.createElement("tr");
  tr.dataset.owned = String(Boolean(e.owned));
  if (e.entry_id) tr.dataset.entryId = e.entry_id;
  const managed = cell(tr, "");
  if (e.owned) {
    managed.append(marker("FleetDeck", "marker-owned", "Created by FleetDeck; editable here"));
    if (e.modified) {
      managed.append(marker("edited by hand", "marker-flapping",
        "The line differs from what FleetDeck wrote"));
    }
  } else {
    managed.append(marker("read-only", "marker-readonly", "Not created by FleetDeck: never changed"));
  }
  cell(tr, e.schedule ?? "", "mono");
  cell(tr, e.user ?? "");
  const job = cell(tr, "", "cron-job");
  if (e.owned && e.template) {
    const name = document.createElement("strong");
    name.textContent = e.template;
    const params = document.createElement("span");
    params.className = "mono";
    params.textContent = ` ${fmtParams(e.params)}`;
    job.append(name, params);
    if (e.comment) {
      const c = document.createElement("div");
      c.className = "muted";
      c.textContent = e.comment;
      job.append(c);
    }
  } else {
    const cmd = document.createElement("span");
    cmd.className = "mono";
    cmd.textContent = e.command ?? e.line ?? "";
    job.append(cmd);
  }
  if (e.error) {
    const err = document.createElement("div");
    err.className = "cron-error";
    err.textContent = e.error;
    job.append(err);
  }
  if (e.warning) {
    const warn = document.createElement("div");
    warn.className = "cron-warning";
    warn.textContent = e.warning;
    job.append(warn);
  }
  cell(tr, Array.isArray(e.next) && e.next.length ? timesList(e.next) : "–", "cron-next");
  cell(tr, `${e.source ?? ""}${e.line_no ? `:${e.line_no}` : ""}`, "mono muted cron-source");
  const actions = cell(tr, "", "actions");
  if (e.owned && e.entry_id) {
    actions.append(button("Edit", "cron-edit", () => startEdit(e.entry_id)),
      button("Delete", "cron-delete", () => askDelete(e.entry_id)));
  }
  return tr;
}

function showEntries(result) {
  const list = Array.isArray(result?.entries) ? result.entries : [];
  entries.clear();
  for (const e of list) if (e.owned && e.entry_id) entries.set(e.entry_id, e);
  $("cron-rows").replaceChildren(...list.map(entryRow));
  $("cron-table").hidden = list.length === 0;
  $("cron-empty").hidden = list.length > 0;
  $("cron-empty").textContent = "No cron entries on this server.";
  const owned = list.filter((e) => e.owned).length;
  $("cron-summary").textContent = `${list.length} entr${list.length === 1 ? "y" : "ies"}, `
    + `${owned} managed by FleetDeck · times in ${result?.timezone ?? "the server's zone"}`;
}

// CRON_LIST; a result too large to come back inline is asked for again with fewer fire times.
async function loadEntries() {
  $("cron-refresh").disabled = true;
  for (const preview of [limits.preview ?? 5, 1, 0]) {
    const done = await runCommand("CRON_LIST", { preview }, "cron page: list the entries",
      { onUpdate: (r) => { if (r.status === "pending-approval") showActivity(activity, "Listing the cron entries", r); } });
    if (done.ok && !done.truncated) {
      showEntries(done.result);
      $("cron-refresh").disabled = false;
      return;
    }
    if (!done.ok) {
      $("cron-empty").hidden = false;
      $("cron-table").hidden = true;
      $("cron-empty").textContent = failureText("Cannot list the cron entries", done);
      $("cron-refresh").disabled = false;
      return;
    }
  }
  $("cron-empty").hidden = false;
  $("cron-empty").textContent = "The list is too large to come back inline: the control plane "
    + "cannot fetch results stored on the agent yet.";
  $("cron-refresh").disabled = false;
}

// ---- the form: template and its typed parameters ------------------------------------

const form = $("cron-form");
const templateSelect = $("cron-template");
const schedule = $("cron-schedule");
const user = $("cron-user");
const comment = $("cron-comment");
const message = $("cron-message");
const submit = $("cron-submit");
let editing = null; // entry id while an entry is edited
let fields = []; // [{name, spec, required, input, hint}]
const touched = new Set();

for (const t of TEMPLATES) {
  const option = document.createElement("option");
  option.value = t.name;
  option.textContent = t.name === "freeform" ? "freeform (needs approval; off by default)" : t.name;
  templateSelect.append(option);
}

function template() {
  return TEMPLATES.find((t) => t.name === templateSelect.value) ?? TEMPLATES[0];
}

function fieldHint(spec, required) {
  const parts = [];
  if (spec.description) parts.push(spec.description);
  if (spec.type === "integer") {
    if (spec.minimum !== undefined && spec.maximum !== undefined) {
      parts.push(`whole number, ${spec.minimum} to ${spec.maximum}`);
    } else parts.push("whole number");
  }
  if (spec.type === "array") parts.push(`one per line${spec.maxItems ? `, at most ${spec.maxItems}` : ""}`);
  if (!required && spec.default !== undefined && spec.type !== "boolean") {
    parts.push(`default ${Array.isArray(spec.default) ? "none" : spec.default}`);
  }
  return parts.join("; ");
}

function makeInput(name, spec) {
  if (spec.type === "boolean") {
    const input = document.createElement("input");
    input.type = "checkbox";
    input.checked = Boolean(spec.default);
    return input;
  }
  if (spec.type === "array") {
    const input = document.createElement("textarea");
    input.rows = 3;
    input.spellcheck = false;
    return input;
  }
  const input = document.createElement("input");
  input.type = spec.type === "integer" ? "number" : "text";
  if (spec.type === "integer") {
    input.step = "1";
    if (spec.minimum !== undefined) input.min = String(spec.minimum);
    if (spec.maximum !== undefined) input.max = String(spec.maximum);
  }
  if (spec.maxLength) input.maxLength = spec.maxLength;
  if (spec.default !== undefined && spec.default !== null) input.value = String(spec.default);
  input.autocomplete = "off";
  input.spellcheck = false;
  if (name === "url") input.placeholder = "https://example.com/health";
  else if (["source", "dest", "config"].includes(name)) input.placeholder = "/absolute/path";
  return input;
}

function buildFields(values = {}) {
  const t = template();
  $("cron-template-hint").textContent = t.description;
  const required = new Set(t.schema.required ?? []);
  const box = $("cron-param-fields");
  box.replaceChildren();
  const properties = t.schema.properties ?? {};
  const names = (t.order ?? Object.keys(properties)).filter((n) => n in properties);
  fields = names.map((name) => {
    const spec = properties[name];
    const id = `cron-param-${name}`;
    const label = document.createElement("label");
    label.htmlFor = id;
    label.className = "mono";
    label.textContent = name; // as the agent's errors name it (params.<name>)
    const note = document.createElement("span");
    note.className = "muted";
    note.textContent = required.has(name) ? "" : " (optional)";
    label.append(note);
    const wrap = document.createElement("div");
    const input = makeInput(name, spec);
    input.id = id;
    input.dataset.param = name;
    const hint = document.createElement("p");
    hint.className = "hint";
    hint.id = `${id}-hint`;
    hint.textContent = fieldHint(spec, required.has(name));
    hint.dataset.base = hint.textContent;
    input.setAttribute("aria-describedby", hint.id);
    if (name in values) {
      const v = values[name];
      if (spec.type === "boolean") input.checked = Boolean(v);
      else if (spec.type === "array") input.value = (v ?? []).join("\n");
      else input.value = v ?? "";
    }
    wrap.append(input, hint);
    box.append(label, wrap);
    return { name, spec, required: required.has(name), input, hint };
  });
  $("cron-param-fields").closest("fieldset").hidden = fields.length === 0;
}

// The parameters as typed, and the first problem a browser can see in them (or null).
function readParams() {
  const params = {};
  let problem = null;
  const flag = (f, text) => {
    if (!problem) problem = { field: `params.${f.name}`, text };
  };
  for (const f of fields) {
    const { spec, input } = f;
    if (spec.type === "boolean") {
      params[f.name] = input.checked;
      continue;
    }
    if (spec.type === "array") {
      const items = input.value.split("\n").map((s) => s.trim()).filter(Boolean);
      if (spec.maxItems && items.length > spec.maxItems) flag(f, `at most ${spec.maxItems} lines`);
      if (items.length) params[f.name] = items;
      continue;
    }
    const text = input.value.trim();
    if (!text) {
      if (f.required) flag(f, "required");
      continue;
    }
    if (spec.type === "integer") {
      const n = Number(text);
      if (!Number.isInteger(n)) flag(f, "must be a whole number");
      else if ((spec.minimum !== undefined && n < spec.minimum)
               || (spec.maximum !== undefined && n > spec.maximum)) {
        flag(f, `must be between ${spec.minimum} and ${spec.maximum}`);
      }
      params[f.name] = n;
      continue;
    }
    if (spec.pattern && !new RegExp(spec.pattern).test(text)) {
      flag(f, `does not match ${spec.pattern}`);
    }
    params[f.name] = text;
  }
  return { params, problem };
}

// What a browser can see wrong with a schedule (the agent parses it fully), or "".
function scheduleProblem(text) {
  const s = text.trim();
  if (!s) return "type a schedule";
  if (s.length > (limits.max_schedule ?? 100)) return `longer than ${limits.max_schedule ?? 100} characters`;
  const bad = [...s].find((ch) => !/[0-9A-Za-z*/,\- @\t]/.test(ch));
  if (bad) return `character ${JSON.stringify(bad)} is not allowed (only digits, names, * , - / @ and spaces)`;
  if (s.startsWith("@")) {
    return MACROS.includes(s.toLowerCase()) ? "" : `unknown macro ${s}; known: ${MACROS.join(" ")}`;
  }
  const n = s.split(/\s+/).length;
  return n === 5 ? "" : `${n} field${n === 1 ? "" : "s"}; five are needed (minute hour day-of-month month day-of-week)`;
}

function commandParams(dryRun) {
  const { params, problem } = readParams();
  const body = { schedule: schedule.value.trim(), template: template().name, params };
  if (user.value.trim()) body.user = user.value.trim();
  // CRON_UPDATE keeps an omitted comment: an edit sends it even when emptied, to clear it.
  if (comment.value.trim() || editing) body.comment = comment.value.trim();
  if (editing) body.entry_id = editing;
  if (dryRun) body.dry_run = true;
  return { body, problem };
}

// Marks the field a problem names ("schedule", "user", "params.url"...), clearing the others.
function markField(problem) {
  const hints = [[schedule, $("cron-schedule-hint"), "schedule"], [user, $("cron-user-hint"), "user"],
    [comment, $("cron-comment-hint"), "comment"],
    ...fields.map((f) => [f.input, f.hint, `params.${f.name}`])];
  for (const [input, hint, name] of hints) {
    const hit = problem && problem.field === name;
    if (hint.dataset.base === undefined) hint.dataset.base = hint.textContent;
    if (hit) {
      hint.textContent = `${name}: ${problem.text}`;
      hint.dataset.state = "invalid";
    } else if (hint.dataset.state === "invalid" || hint.dataset.state === "ok") {
      hint.textContent = hint.dataset.base;
      delete hint.dataset.state;
    }
    invalid(input, Boolean(hit));
  }
}

// ---- the dry run, as the form is typed --------------------------------------------------

const preview = $("cron-preview");
const previewState = $("cron-preview-state");
let dryTimer = null;
let drySeq = 0;

function previewShows(state, text) {
  preview.dataset.state = state;
  previewState.textContent = text;
  previewState.dataset.state = state === "error" ? "invalid" : state === "ok" ? "ok" : "";
  if (state !== "ok") $("cron-preview-result").hidden = true;
}

function showDryRun(result) {
  $("cron-preview-line").textContent = result.line ?? "";
  $("cron-preview-tz").textContent = result.timezone ? `(${result.timezone}, the server's timezone)` : "";
  const before = $("cron-preview-before");
  before.hidden = !result.before;
  before.textContent = result.before ? `Replaces: ${result.before}` : "";
  const times = Array.isArray(result.next) ? result.next : [];
  $("cron-preview-times").replaceChildren(...times.map((t) => {
    const li = document.createElement("li");
    const el = document.createElement("time");
    el.dateTime = t;
    el.textContent = fmtServerTime(t);
    li.append(el);
    return li;
  }));
  if (!times.length) {
    const li = document.createElement("li");
    li.textContent = "never on a clock (it runs when cron starts)";
    $("cron-preview-times").append(li);
  }
  $("cron-preview-result").hidden = false;
  previewShows("ok", "Valid: this is what would be written.");
  $("cron-preview-result").hidden = false;
  const hint = $("cron-schedule-hint");
  hint.textContent = `Valid; next: ${times[0] ? fmtServerTime(times[0]) : "at start-up"}`;
  hint.dataset.state = "ok";
}

async function dryRun() {
  const seq = ++drySeq;
  const local = scheduleProblem(schedule.value);
  if (local) {
    markField(schedule.value.trim() || touched.has("schedule") ? { field: "schedule", text: local } : null);
    previewShows(schedule.value.trim() ? "error" : "idle", schedule.value.trim()
      ? `schedule: ${local}` : "Type a schedule to see the exact line and the next fire times.");
    return;
  }
  const { body, problem } = commandParams(true);
  if (problem) {
    markField(touched.has(problem.field) ? problem : null);
    previewShows("waiting", `Fill in ${problem.field} (${problem.text}) to see the exact line `
      + "and the next fire times.");
    return;
  }
  previewShows("checking", "Checking on the server…");
  const type = editing ? "CRON_UPDATE" : "CRON_CREATE";
  const done = await runCommand(type, body, "cron page: dry run of the form (writes nothing)", {
    onUpdate: (r) => {
      if (seq === drySeq && r.status === "pending-approval") {
        previewShows("pending", `The dry run (${type}) waits for an approver: this tenant's `
          + `policy asks for approval of ${type}. See Approvals.`);
      }
    },
  });
  if (seq !== drySeq) return; // the form changed meanwhile; a newer dry run is on its way
  if (done.ok) {
    markField(null);
    showDryRun(done.result ?? {});
    return;
  }
  const problemText = failureText(`${type} dry run`, done);
  markField(done.field ? { field: done.field, text: fieldText(done.message) } : null);
  previewShows("error", done.field ? `${done.field}: ${fieldText(done.message)}` : problemText);
}

function fieldText(msg) {
  const api = /^field '[^']*': ([\s\S]*)$/.exec(msg ?? "");
  const text = api ? api[1] : msg ?? "";
  const named = /^(?:schedule|user|comment|template|params\.[a-z_0-9]+|[a-z_][a-z0-9_]*): ([\s\S]*)$/.exec(text);
  return named ? named[1] : text;
}

function scheduleDryRun() {
  clearTimeout(dryTimer);
  previewShows("typing", "Waiting for you to stop typing…");
  dryTimer = setTimeout(dryRun, DRY_RUN_WAIT_MS);
}

form.addEventListener("input", (event) => {
  const name = event.target.dataset?.param ? `params.${event.target.dataset.param}`
    : event.target.id.replace(/^cron-/, "");
  touched.add(name);
  scheduleDryRun();
});
templateSelect.addEventListener("change", () => {
  buildFields();
  scheduleDryRun();
});

// ---- creating and editing ----------------------------------------------------------------

function resetForm() {
  editing = null;
  touched.clear();
  $("cron-form-title").textContent = "New entry";
  submit.textContent = "Create entry";
  $("cron-cancel").hidden = true;
  schedule.value = "";
  user.value = "";
  comment.value = "";
  buildFields();
  markField(null);
  previewShows("idle", "Type a schedule to see the exact line and the next fire times.");
}

function startEdit(id) {
  const e = entries.get(id);
  if (!e) return;
  editing = id;
  touched.clear();
  $("cron-form-title").textContent = `Edit entry ${id.slice(0, 8)}`;
  submit.textContent = "Save changes";
  $("cron-cancel").hidden = false;
  if (TEMPLATES.some((t) => t.name === e.template)) templateSelect.value = e.template;
  buildFields(e.params ?? {});
  schedule.value = e.schedule ?? "";
  user.value = e.user ?? "";
  comment.value = e.comment ?? "";
  formMessage(message, "");
  form.scrollIntoView({ block: "start" });
  schedule.focus();
  scheduleDryRun();
}

async function save(event) {
  event.preventDefault();
  for (const name of ["schedule", ...fields.map((f) => `params.${f.name}`)]) touched.add(name);
  const local = scheduleProblem(schedule.value);
  const { body, problem } = commandParams(false);
  const first = local ? { field: "schedule", text: local } : problem;
  if (first) {
    markField(first);
    formMessage(message, `${first.field}: ${first.text}`);
    return;
  }
  const reason = reasons.reason();
  if (!reason) {
    formMessage(message, "Give a reason for the change first (at the top of the page).");
    return;
  }
  const type = editing ? "CRON_UPDATE" : "CRON_CREATE";
  const label = editing ? `Saving entry ${editing.slice(0, 8)}` : "Creating the entry";
  submit.disabled = true;
  formMessage(message, `${label}…`, "info");
  const done = await runCommand(type, body, reason, {
    onUpdate: (r) => {
      showActivity(activity, label, r);
      if (r.status === "pending-approval") {
        formMessage(message, `${type} waits for an approver; it is written once approved.`, "info");
      }
    },
  });
  submit.disabled = false;
  if (!done.ok) {
    if (done.field) markField({ field: done.field, text: fieldText(done.message) });
    formMessage(message, failureText(type, done));
    if (done.record) showActivity(activity, label, done.record);
    return;
  }
  showActivity(activity, label, done.record);
  formMessage(message, `${editing ? "Saved" : "Created"}: ${done.result?.line ?? ""}`, "info");
  resetForm();
  loadEntries();
}

form.addEventListener("submit", save);
$("cron-cancel").addEventListener("click", () => {
  resetForm();
  formMessage(message, "");
});
$("cron-new").addEventListener("click", () => {
  resetForm();
  formMessage(message, "");
  form.scrollIntoView({ block: "start" });
  templateSelect.focus();
});
$("cron-refresh").addEventListener("click", loadEntries);

// ---- deleting ---------------------------------------------------------------------------

const delDialog = $("cron-delete-dialog");
const delReason = $("cron-delete-reason");
const delMessage = $("cron-delete-message");
let deleting = null;

function askDelete(id) {
  const e = entries.get(id);
  if (!e) return;
  deleting = id;
  $("cron-delete-line").textContent = e.line ?? `${e.schedule} ${e.command ?? ""}`;
  delReason.value = reasons.input.value.trim();
  invalid(delReason, false);
  formMessage(delMessage, "");
  $("cron-delete-confirm").disabled = false;
  delDialog.showModal();
  delReason.focus();
}

async function confirmDelete(event) {
  event.preventDefault();
  const reason = delReason.value.trim();
  if (reason.length < 3) {
    invalid(delReason, true);
    formMessage(delMessage, "A reason is required (3 to 2000 characters).");
    delReason.focus();
    return;
  }
  const id = deleting;
  const label = `Deleting entry ${id.slice(0, 8)}`;
  $("cron-delete-confirm").disabled = true;
  formMessage(delMessage, `${label}…`, "info");
  const done = await runCommand("CRON_DELETE", { entry_id: id }, reason, {
    onUpdate: (r) => {
      showActivity(activity, label, r);
      if (r.status === "pending-approval") {
        formMessage(delMessage, "CRON_DELETE waits for an approver; the entry is removed once approved.", "info");
      }
    },
  });
  $("cron-delete-confirm").disabled = false;
  if (!done.ok) {
    formMessage(delMessage, failureText("CRON_DELETE", done));
    return;
  }
  showActivity(activity, label, done.record);
  delDialog.close();
  if (editing === id) resetForm();
  loadEntries();
}

$("cron-delete-form").addEventListener("submit", confirmDelete);
$("cron-delete-cancel").addEventListener("click", () => delDialog.close());

// ---- start ------------------------------------------------------------------------------

watchCommands();
resetForm();
loadEntries();
