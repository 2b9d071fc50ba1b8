// The audit log: GET /api/v1/audit with filters (actor, action or prefix like command.*,
// target, since/until), newest first, paged with before_seq. Filters live in the URL so a
// view can be shared; before/after are collapsed.
import { clearError } from "./app.js";
import { fmtDateTime, parseTime } from "./alerts-common.js";
import { $, formMessage, request, setTime } from "./commands-common.js";

const FIELDS = ["actor", "action", "target"];
const page = $("page");
const form = $("audit-filters");
const inputs = {
  actor: $("f-actor"), action: $("f-action"), target: $("f-target"),
  since: $("f-since"), until: $("f-until"), limit: $("f-limit"),
};
const rowsEl = $("audit-rows");
const table = $("audit-table");
const empty = $("audit-empty");
const count = $("audit-count");
const message = $("audit-message");
const rowTemplate = $("audit-row-template");
const newer = $("page-newer");
const older = $("page-older");
const newest = $("page-newest");

let cursor = null; // before_seq of the page shown (null: the newest)
let previous = []; // cursors of the newer pages visited, for "Newer"
let nextCursor = null; // before_seq of the next older page (null: no more)
let generation = 0; // counts requests; only the newest one's reply is shown

// ---- times: <input type=datetime-local> (local time) <-> ISO 8601 UTC ----------------------

function toLocalInput(iso) {
  const ms = parseTime(iso);
  if (ms === null) return "";
  const local = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return local.toISOString().slice(0, 19);
}

function fromLocalInput(value) {
  if (!value) return "";
  const ms = new Date(value).getTime(); // no zone: read as local time
  return Number.isNaN(ms) ? null : new Date(ms).toISOString();
}

// ---- filters <-> URL ----------------------------------------------------------------------

function readURL() {
  const q = new URLSearchParams(location.search);
  for (const name of FIELDS) inputs[name].value = q.get(name) ?? "";
  inputs.since.value = toLocalInput(q.get("since"));
  inputs.until.value = toLocalInput(q.get("until"));
  if (["50", "100", "200"].includes(q.get("limit"))) inputs.limit.value = q.get("limit");
  const before = Number.parseInt(q.get("before_seq") ?? "", 10);
  cursor = Number.isFinite(before) && before > 0 ? before : null;
}

// The query for the API (and the page's URL), or null after saying what is wrong.
function query() {
  const q = new URLSearchParams();
  for (const name of FIELDS) {
    const v = inputs[name].value.trim();
    if (v) q.set(name, v);
  }
  const since = fromLocalInput(inputs.since.value);
  const until = fromLocalInput(inputs.until.value);
  if (since === null || until === null) {
    formMessage(message, "Please enter a valid date and time.");
    return null;
  }
  if (since && until && since > until) {
    formMessage(message, "“Since” must come before “Until”.");
    (inputs.since.value ? inputs.since : inputs.until).focus();
    return null;
  }
  if (since) q.set("since", since);
  if (until) q.set("until", until);
  if (inputs.limit.value !== "100") q.set("limit", inputs.limit.value);
  if (cursor !== null) q.set("before_seq", String(cursor));
  return q;
}

// ---- rows ---------------------------------------------------------------------------------

function json(value) {
  return value === null || value === undefined ? "–" : JSON.stringify(value, null, 2);
}

function createRow({ seq, hash, event }) {
  const tr = rowTemplate.content.firstElementChild.cloneNode(true);
  tr.dataset.seq = String(seq);
  tr.dataset.action = event.action ?? "";
  tr.querySelector(".a-seq").textContent = String(seq);
  tr.querySelector(".a-seq").title = `hash ${hash}`;
  setTime(tr.querySelector(".a-time time"), event.ts);
  tr.querySelector(".a-actor").textContent = event.actor ?? "";
  tr.querySelector(".a-action").textContent = event.action ?? "";
  const target = tr.querySelector(".a-target");
  target.textContent = event.target ?? "";
  target.title = event.target ?? "";
  const reason = tr.querySelector(".a-reason");
  reason.textContent = event.reason ?? "";
  reason.title = event.reason ?? "";
  const list = tr.querySelector(".approval-list");
  list.replaceChildren(...(event.approvals ?? []).map((a) => {
    const li = document.createElement("li");
    li.textContent = `${a.decision} by ${a.actor}: ${a.comment}`;
    li.title = fmtDateTime(a.at);
    return li;
  }));
  const outcome = tr.querySelector(".a-outcome");
  outcome.textContent = event.outcome ?? "";
  outcome.dataset.outcome = event.outcome ?? "";
  const changes = tr.querySelector(".a-changes");
  if (event.before == null && event.after == null) {
    changes.textContent = "–";
  } else {
    tr.querySelector(".a-before").textContent = json(event.before);
    tr.querySelector(".a-after").textContent = json(event.after);
    tr.querySelector("summary").setAttribute("aria-label", `Before and after of record ${seq}`);
  }
  return tr;
}

async function load({ push = true } = {}) {
  const q = query();
  if (q === null) return;
  formMessage(message, "");
  if (push) history.replaceState(null, "", `${location.pathname}${q.size ? `?${q}` : ""}`);
  generation += 1;
  const mine = generation;
  page.dataset.state = "loading";
  empty.textContent = "Loading…";
  const reply = await request("GET", `/api/v1/audit${q.size ? `?${q}` : ""}`);
  if (mine !== generation) return; // a newer request replaced this one
  if (!reply.ok) {
    rowsEl.replaceChildren();
    table.hidden = true;
    empty.hidden = false;
    empty.textContent = `Cannot read the audit log: ${reply.message}`;
    nextCursor = null;
    updatePager(0);
    return;
  }
  clearError();
  const records = Array.isArray(reply.body.records) ? reply.body.records : [];
  const good = records.filter((r) => Number.isFinite(r?.seq) && r.event && typeof r.event === "object");
  rowsEl.replaceChildren(...good.map(createRow));
  nextCursor = Number.isFinite(reply.body.next_before_seq) ? reply.body.next_before_seq : null;
  table.hidden = good.length === 0;
  empty.hidden = good.length > 0;
  empty.textContent = cursor === null ? "No audit record matches." : "No older record matches.";
  updatePager(good.length);
}

function updatePager(n) {
  page.dataset.state = "ready";
  newer.disabled = cursor === null;
  newest.disabled = cursor === null;
  older.disabled = nextCursor === null;
  const first = rowsEl.firstElementChild?.dataset.seq;
  const last = rowsEl.lastElementChild?.dataset.seq;
  const span = n ? `records ${first}–${last}` : "";
  $("page-info").textContent = span;
  count.textContent = n ? `${n} shown${cursor === null ? ", newest first" : ""}` : "";
}

// ---- events -------------------------------------------------------------------------------

form.addEventListener("submit", (event) => {
  event.preventDefault();
  cursor = null;
  previous = [];
  load();
});
$("f-clear").addEventListener("click", () => {
  for (const el of Object.values(inputs)) if (el.tagName === "INPUT") el.value = "";
  inputs.limit.value = "100";
  cursor = null;
  previous = [];
  load();
});
older.addEventListener("click", () => {
  if (nextCursor === null) return;
  previous.push(cursor);
  cursor = nextCursor;
  load();
});
newer.addEventListener("click", () => {
  cursor = previous.length ? previous.pop() : null;
  load();
});
newest.addEventListener("click", () => {
  cursor = null;
  previous = [];
  load();
});

readURL();
load({ push: false });
