// One server's files, all through the command bus: the sandbox roots (a picker when there
// are several), a breadcrumb and a paginated FILE_LIST, a viewer with syntax highlighting and
// an editor that saves with the SHA-256 of what it loaded (a change made meanwhile is
// refused, clearly), uploads with a progress bar, move/rename, delete to the trash (or for
// good, after typing the name), and the trash with restore. Changes carry the page's reason;
// whatever the agent refuses is shown with its own words.
import { $, formMessage, invalid } from "./commands-common.js";
import {
  MAX_VIEW, isConflict, readFile, sha256Hex, uploadBytes, writeText,
} from "./files-content.js";
import { highlightInto } from "./highlight.js";
import {
  failureText, fmtBytes, fmtMtime, reasonField, runCommand, showActivity,
  watchCommands,
} from "./ops-common.js";

const PAGE_SIZE = 50;
const MAX_ROOTS = 16;

const activity = $("op-activity");
const reasons = reasonField();
const message = $("files-message");
const state = { roots: [], root: 0, path: "", offset: 0, limit: PAGE_SIZE, trash: false, total: 0 };
let entries = []; // the listed page
let loadSeq = 0;

const join = (dir, name) => (dir ? `${dir}/${name}` : name);
const parentOf = (path) => path.split("/").slice(0, -1).join("/");
const baseName = (path) => path.split("/").pop();
const rootPath = () => state.roots.find((r) => r.index === state.root)?.path ?? "";

// Shows a pending approval (or, for changes, every status) on the activity line, and a
// pending approval also in `box` (the open dialog's message), so nobody waits in silence.
const follow = (label, always = false, box = null) => (record) => {
  if (always || record.status === "pending-approval") showActivity(activity, label, record);
  if (box && record.status === "pending-approval") {
    formMessage(box, `${label}: ${record.command.type} waits for an approver (see Approvals); `
      + "it runs once approved.", "info");
  }
};

// ---- where we are (kept in the address, so back/forward and reloads work) -------------

function readAddress() {
  const q = new URLSearchParams(location.search);
  state.root = Number.parseInt(q.get("root") ?? "0", 10) || 0;
  state.path = (q.get("path") ?? "").replace(/^\/+|\/+$/g, "");
  state.trash = q.get("trash") === "1";
  state.offset = Math.max(0, Number.parseInt(q.get("offset") ?? "0", 10) || 0);
}

function writeAddress(push) {
  const q = new URLSearchParams();
  if (state.root) q.set("root", String(state.root));
  if (state.path) q.set("path", state.path);
  if (state.trash) q.set("trash", "1");
  if (state.offset) q.set("offset", String(state.offset));
  const query = q.toString();
  const url = `${location.pathname}${query ? `?${query}` : ""}`;
  if (push) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
}

function go(changes) {
  Object.assign(state, { offset: 0 }, changes);
  writeAddress(true);
  loadListing();
}

window.addEventListener("popstate", () => {
  readAddress();
  showRoots();
  loadListing();
});

// ---- roots -------------------------------------------------------------------------------

// The agent's sandbox roots: every listing names them all, so one listing of the first root
// (index 0) is enough.
async function discoverRoots() {
  const done = await runCommand("FILE_LIST", { root: 0, path: "", limit: 1 },
    "file browser: find the sandbox roots", { onUpdate: follow("Finding the sandbox roots") });
  if (!done.ok) return done;
  const roots = done.result?.roots ?? [{ index: 0, path: done.result?.root ?? "root 0" }];
  state.roots = roots.slice(0, MAX_ROOTS).map((r) => ({ index: r.index, path: r.path }));
  return null;
}

function showRoots() {
  const select = $("files-root");
  select.replaceChildren(...state.roots.map((r) => {
    const o = document.createElement("option");
    o.value = String(r.index);
    o.textContent = r.path;
    return o;
  }));
  select.value = String(state.root);
  select.hidden = state.roots.length < 2;
  $("files-root-label").hidden = state.roots.length < 2;
}

$("files-root").addEventListener("change", (e) => {
  go({ root: Number(e.target.value), path: "", trash: false });
  closeView();
});

// ---- the listing -------------------------------------------------------------------------

function crumbs() {
  const nav = $("files-crumbs");
  nav.replaceChildren();
  const link = (text, path, current) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "link-button crumb";
    b.textContent = text;
    if (current) b.setAttribute("aria-current", "location");
    b.addEventListener("click", () => go({ path, trash: false }));
    return b;
  };
  nav.append(link(rootPath() || "root", "", !state.path && !state.trash));
  let at = "";
  for (const part of state.path ? state.path.split("/") : []) {
    at = join(at, part);
    const sep = document.createElement("span");
    sep.className = "crumb-sep";
    sep.textContent = "/";
    nav.append(sep, link(part, at, at === state.path && !state.trash));
  }
  if (state.trash) {
    const t = document.createElement("span");
    t.className = "crumb-trash";
    t.textContent = "· trash";
    nav.append(t);
  }
  $("files-up").disabled = !state.path || state.trash;
  const toggle = $("files-trash-toggle");
  toggle.setAttribute("aria-pressed", String(state.trash));
  toggle.textContent = state.trash ? "Back to the files" : "Trash";
  $("upload-form").hidden = state.trash;
}

function cell(tr, content, className = "") {
  const td = document.createElement("td");
  if (className) td.className = className;
  if (content instanceof Node) td.append(content);
  else td.textContent = content ?? "";
  tr.append(td);
  return td;
}

function button(text, className, onClick, label = "") {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.textContent = text;
  if (label) b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

function entryRow(e) {
  const tr = document.createElement("tr");
  const path = join(state.path, e.name);
  tr.dataset.name = e.name;
  tr.dataset.type = e.type;
  const name = button(e.type === "dir" ? `${e.name}/` : e.name, "link-button file-name",
    () => (e.type === "dir" ? go({ path, trash: false }) : openFile(path)));
  if (e.type === "other") name.disabled = true;
  cell(tr, name, "name");
  cell(tr, e.type, `ftype ftype-${e.type}`);
  cell(tr, e.type === "dir" ? "" : fmtBytes(e.size), "num");
  cell(tr, e.mode ?? "", "mono");
  cell(tr, [e.owner, e.group].filter(Boolean).join(":"), "mono");
  cell(tr, fmtMtime(e.mtime), "muted");
  cell(tr, "", "actions").append(
    button("Move", "file-move", () => askMove(path), `Move or rename ${e.name}`),
    button("Delete", "file-delete", () => askDelete(path, e.type), `Delete ${e.name}`));
  return tr;
}

function trashRow(e) {
  const tr = document.createElement("tr");
  tr.dataset.trashId = e.trash_id;
  cell(tr, e.original_path ?? "", "mono name");
  cell(tr, e.type ?? "", "ftype");
  cell(tr, e.type === "dir" ? "" : fmtBytes(e.size), "num");
  cell(tr, fmtMtime(e.deleted_at), "muted");
  cell(tr, "", "actions").append(button("Restore", "file-restore", () => restore(e),
    `Restore ${e.original_path}`));
  return tr;
}

function showPage(result) {
  entries = Array.isArray(result?.entries) ? result.entries : [];
  state.total = typeof result?.total === "number" ? result.total : entries.length;
  const rows = state.trash ? entries.map(trashRow) : entries.map(entryRow);
  $(state.trash ? "trash-rows" : "files-rows").replaceChildren(...rows);
  $("files-table").hidden = state.trash || !entries.length;
  $("trash-table").hidden = !state.trash || !entries.length;
  const empty = $("files-empty");
  empty.hidden = entries.length > 0;
  empty.textContent = state.trash ? "The trash of this root is empty." : "This folder is empty.";
  const first = entries.length ? state.offset + 1 : 0;
  $("files-range").textContent = `${first}–${state.offset + entries.length} of ${state.total}`;
  $("files-prev").disabled = state.offset === 0;
  $("files-next").disabled = state.offset + entries.length >= state.total;
}

// FILE_LIST of the current folder (or trash) page; a page too large to come back inline is
// asked for again in smaller pages.
async function loadListing() {
  const seq = ++loadSeq;
  crumbs();
  $("files-empty").hidden = false;
  $("files-empty").textContent = "Loading…";
  for (;;) {
    const params = { root: state.root, path: state.path, offset: state.offset, limit: state.limit };
    if (state.trash) params.trash = true;
    const what = state.trash ? "the trash" : `/${state.path}`;
    const done = await runCommand("FILE_LIST", params, `file browser: list ${what}`.slice(0, 400),
      { onUpdate: follow(`Listing ${what}`) });
    if (seq !== loadSeq) return;
    if (done.ok && done.truncated && state.limit > 5) {
      state.limit = Math.max(5, Math.floor(state.limit / 2));
      continue;
    }
    if (!done.ok || done.truncated) {
      $("files-table").hidden = true;
      $("trash-table").hidden = true;
      $("files-empty").textContent = done.ok ? "The listing is too large to come back inline."
        : failureText(`Cannot list ${what}`, done);
      return;
    }
    showPage(done.result);
    return;
  }
}

$("files-prev").addEventListener("click", () => go({ offset: Math.max(0, state.offset - state.limit) }));
$("files-next").addEventListener("click", () => go({ offset: state.offset + state.limit }));
$("files-up").addEventListener("click", () => go({ path: parentOf(state.path), trash: false }));
$("files-refresh").addEventListener("click", () => loadListing());
$("files-trash-toggle").addEventListener("click", () => go({ trash: !state.trash }));

// ---- viewing and editing -------------------------------------------------------------------

const view = $("file-view");
const code = $("file-code");
const editor = $("file-editor");
const viewMessage = $("file-message");
const progress = $("file-progress");
let loaded = null; // {path, root, text, sha256, crlf, complete, size}
let viewPath = null; // the file shown (also while it loads, or after it could not be read)
let viewSeq = 0;

function editing(on) {
  editor.hidden = !on;
  $("file-pre").hidden = on;
  $("file-edit").hidden = on;
  $("file-save").hidden = !on;
  $("file-discard").hidden = !on;
  view.dataset.mode = on ? "edit" : "view";
}

function closeView() {
  viewSeq += 1;
  loaded = null;
  viewPath = null;
  view.hidden = true;
}

function showProgress(done, total) {
  progress.hidden = !(total > 0) || done >= total;
  progress.max = total || 1;
  progress.value = done;
}

async function openFile(path) {
  const seq = ++viewSeq;
  loaded = null;
  viewPath = path;
  view.hidden = false;
  editing(false);
  $("file-edit").disabled = true;
  $("file-view-title").textContent = `${rootPath().replace(/\/$/, "")}/${path}`;
  $("file-view-facts").textContent = "loading…";
  code.textContent = "";
  formMessage(viewMessage, "");
  view.scrollIntoView({ block: "nearest" });
  const got = await readFile(state.root, path, {
    onProgress: (n, total) => { if (seq === viewSeq) showProgress(n, total); },
    onUpdate: follow(`Reading ${path}`),
  });
  if (seq !== viewSeq) return;
  showProgress(0, 0);
  if (!got.ok) {
    $("file-view-facts").textContent = "";
    if (/directory/i.test(got.done.message)) {
      closeView();
      go({ path, trash: false });
      return;
    }
    $("file-pre").hidden = true; // nothing to show but the reason
    formMessage(viewMessage, failureText(`Cannot read ${path}`, got.done));
    return;
  }
  let text = null;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(got.bytes);
  } catch {
    text = null;
  }
  const sha256 = await sha256Hex(got.bytes);
  if (seq !== viewSeq) return;
  loaded = { path, root: state.root, text, sha256, size: got.size, complete: got.complete,
    crlf: text !== null && text.includes("\r\n") };
  $("file-view-facts").textContent = [fmtBytes(got.size), got.mime,
    `sha256 ${sha256.slice(0, 12)}…`].filter(Boolean).join(" · ");
  view.dataset.sha256 = sha256;
  if (text === null) {
    code.className = "hljs";
    code.textContent = `Binary content (${got.mime || "not text"}), ${fmtBytes(got.size)}: not shown.`;
  } else {
    highlightInto(code, text, path);
  }
  const editable = text !== null && got.complete;
  $("file-edit").disabled = !editable;
  if (got.changed) {
    formMessage(viewMessage, "The file changed while it was being read; reload it before editing.");
  } else if (text !== null && !got.complete) {
    formMessage(viewMessage, `Showing the first ${fmtBytes(MAX_VIEW)} of ${fmtBytes(got.size)}; `
      + "a file this large cannot be edited here.", "info");
  }
}

function startEdit() {
  if (!loaded || loaded.text === null || !loaded.complete) return;
  editor.value = loaded.crlf ? loaded.text.replace(/\r\n/g, "\n") : loaded.text;
  editing(true);
  formMessage(viewMessage, "");
  editor.focus();
}

async function save() {
  if (!loaded) return;
  const reason = reasons.reason();
  if (!reason) {
    formMessage(viewMessage, "Give a reason for the change first (at the top of the page).");
    return;
  }
  const target = loaded;
  const text = target.crlf ? editor.value.replace(/\r?\n/g, "\r\n") : editor.value;
  const label = `Saving ${target.path}`;
  $("file-save").disabled = true;
  formMessage(viewMessage, `${label}…`, "info");
  const done = await writeText(target.root, target.path, text, target.sha256, reason, {
    onProgress: (n, total) => showProgress(n, total),
    onUpdate: follow(label, true, viewMessage),
  });
  $("file-save").disabled = false;
  showProgress(0, 0);
  if (done.record) showActivity(activity, label, done.record);
  if (target !== loaded) return;
  if (!done.ok) {
    formMessage(viewMessage, isConflict(done.message)
      ? "Not saved: the file changed on the server after you opened it, so your edit would "
        + `have overwritten someone else's change (${done.message}). Your text is still in the `
        + "editor: copy it, reload the file and apply your change again."
      : failureText(`Not saved: ${target.path}`, done));
    return;
  }
  const sha256 = await sha256Hex(new TextEncoder().encode(text));
  loaded = { ...target, text, sha256, size: new TextEncoder().encode(text).length };
  view.dataset.sha256 = sha256;
  highlightInto(code, text, target.path);
  editing(false);
  $("file-view-facts").textContent = `${fmtBytes(loaded.size)} · sha256 ${sha256.slice(0, 12)}…`;
  formMessage(viewMessage, `Saved ${target.path}.`, "info");
  loadListing();
}

$("file-edit").addEventListener("click", startEdit);
$("file-save").addEventListener("click", save);
$("file-discard").addEventListener("click", () => {
  editing(false);
  formMessage(viewMessage, "");
});
$("file-reload").addEventListener("click", () => { if (viewPath !== null) openFile(viewPath); });
$("file-close").addEventListener("click", closeView);

// ---- uploading -----------------------------------------------------------------------------

const uploadInput = $("upload-input");
const uploadStatus = $("upload-status");
const uploadBar = $("upload-progress");

uploadInput.addEventListener("change", () => { $("upload-submit").disabled = !uploadInput.files.length; });

async function upload(event) {
  event.preventDefault();
  const files = [...uploadInput.files];
  if (!files.length) return;
  const reason = reasons.reason();
  if (!reason) {
    formMessage(message, "Give a reason for the upload first (at the top of the page).");
    return;
  }
  formMessage(message, "");
  const replace = $("upload-replace").checked;
  const existing = new Set(entries.map((e) => e.name));
  $("upload-submit").disabled = true;
  const failed = [];
  for (const file of files) {
    const path = join(state.path, file.name);
    if (existing.has(file.name) && !replace) {
      failed.push(`${file.name}: exists already (tick "replace files that exist" to overwrite it)`);
      continue;
    }
    const bytes = new Uint8Array(await file.arrayBuffer());
    uploadBar.hidden = false;
    const label = `Uploading ${file.name}`;
    const done = await uploadBytes(state.root, path, bytes, reason, {
      onProgress: (n, total, note) => {
        uploadBar.max = total || 1;
        uploadBar.value = total ? n : 1;
        uploadStatus.textContent = `${file.name}: ${fmtBytes(n)} of ${fmtBytes(total)}`
          + ` (${total ? Math.floor((n / total) * 100) : 100} %)${note ? ` · ${note}` : ""}`;
      },
      onUpdate: follow(label, false, message),
    });
    if (done.record) showActivity(activity, label, done.record);
    if (!done.ok) failed.push(failureText(file.name, done));
    else uploadStatus.textContent = `${file.name}: uploaded (${fmtBytes(bytes.length)}).`;
  }
  uploadBar.hidden = true;
  $("upload-submit").disabled = false;
  if (failed.length) formMessage(message, failed.join("\n"));
  else uploadInput.value = "";
  $("upload-submit").disabled = !uploadInput.files.length;
  loadListing();
}

$("upload-form").addEventListener("submit", upload);

// ---- moving --------------------------------------------------------------------------------

const moveDialog = $("move-dialog");
const moveTo = $("move-to");
let moving = null;

function askMove(path) {
  moving = path;
  $("move-from").textContent = `From: ${path}`;
  moveTo.value = path;
  $("move-overwrite").checked = false;
  invalid(moveTo, false);
  formMessage($("move-message"), "");
  moveDialog.showModal();
  moveTo.focus();
  moveTo.setSelectionRange(path.length - baseName(path).length, path.length);
}

async function confirmMove(event) {
  event.preventDefault();
  const to = moveTo.value.trim();
  if (!to || to === moving) {
    invalid(moveTo, true);
    formMessage($("move-message"), "Type the new path.");
    return;
  }
  const reason = reasons.reason();
  if (!reason) {
    formMessage($("move-message"), "Give a reason first (at the top of the page).");
    return;
  }
  const absolute = to.startsWith("/");
  const params = { root: state.root, path: moving, destination: absolute ? to : to.replace(/^\/+/, ""),
    destination_root: absolute ? null : state.root, overwrite: $("move-overwrite").checked };
  const label = `Moving ${moving} to ${to}`;
  $("move-confirm").disabled = true;
  formMessage($("move-message"), `${label}…`, "info");
  const done = await runCommand("FILE_MOVE", params, reason,
    { onUpdate: follow(label, true, $("move-message")) });
  $("move-confirm").disabled = false;
  if (done.record) showActivity(activity, label, done.record);
  if (!done.ok) {
    formMessage($("move-message"), failureText("Not moved", done));
    return;
  }
  moveDialog.close();
  if (loaded?.path === moving) closeView();
  loadListing();
}

$("move-form").addEventListener("submit", confirmMove);
$("move-cancel").addEventListener("click", () => moveDialog.close());

// ---- deleting and restoring ------------------------------------------------------------

const deleteDialog = $("delete-dialog");
const permanent = $("delete-permanent");
const confirmName = $("delete-confirm-name");
let deleting = null; // {path, type}

function deleteReady() {
  const forGood = permanent.checked;
  $("delete-permanent-box").hidden = !forGood;
  $("delete-recursive-label").hidden = deleting?.type !== "dir";
  $("delete-explain").textContent = forGood
    ? "It is deleted for good: it does not go to the trash and cannot be restored."
    : "It goes to the root's trash, from where it can be restored.";
  const button = $("delete-confirm");
  button.textContent = forGood ? "Delete permanently" : "Move to trash";
  button.disabled = forGood && confirmName.value !== baseName(deleting?.path ?? "");
}

function askDelete(path, type) {
  deleting = { path, type };
  $("delete-path").textContent = path;
  $("delete-name").textContent = baseName(path);
  permanent.checked = false;
  $("delete-recursive").checked = false;
  confirmName.value = "";
  formMessage($("delete-message"), "");
  deleteReady();
  deleteDialog.showModal();
}

async function confirmDelete(event) {
  event.preventDefault();
  const forGood = permanent.checked;
  if (forGood && confirmName.value !== baseName(deleting.path)) return;
  const reason = reasons.reason();
  if (!reason) {
    formMessage($("delete-message"), "Give a reason first (at the top of the page).");
    return;
  }
  const params = { root: state.root, path: deleting.path, permanent: forGood };
  if (forGood && deleting.type === "dir" && $("delete-recursive").checked) params.recursive = true;
  const label = `${forGood ? "Deleting" : "Moving to the trash"} ${deleting.path}`;
  $("delete-confirm").disabled = true;
  formMessage($("delete-message"), `${label}…`, "info");
  const done = await runCommand("FILE_DELETE", params, reason,
    { onUpdate: follow(label, true, $("delete-message")) });
  deleteReady();
  if (done.record) showActivity(activity, label, done.record);
  if (!done.ok) {
    formMessage($("delete-message"), failureText("Not deleted", done));
    return;
  }
  deleteDialog.close();
  if (loaded?.path === deleting.path) closeView();
  formMessage(message, forGood ? `${deleting.path} deleted permanently.`
    : `${deleting.path} moved to the trash (open Trash to restore it).`, "info");
  loadListing();
}

permanent.addEventListener("change", deleteReady);
confirmName.addEventListener("input", deleteReady);
$("delete-form").addEventListener("submit", confirmDelete);
$("delete-cancel").addEventListener("click", () => deleteDialog.close());

async function restore(item) {
  const reason = reasons.reason();
  if (!reason) {
    formMessage(message, "Give a reason for the restore first (at the top of the page).");
    return;
  }
  const label = `Restoring ${item.original_path}`;
  formMessage(message, `${label}…`, "info");
  const done = await runCommand("FILE_RESTORE", { root: state.root, trash_id: item.trash_id },
    reason, { onUpdate: follow(label, true, message) });
  if (done.record) showActivity(activity, label, done.record);
  if (!done.ok) {
    formMessage(message, failureText(`Not restored: ${item.original_path}`, done));
    return;
  }
  formMessage(message, `Restored ${done.result?.path ?? item.original_path}.`, "info");
  loadListing();
}

// ---- start -------------------------------------------------------------------------------

async function start() {
  readAddress();
  watchCommands();
  crumbs();
  const failed = await discoverRoots();
  if (failed) {
    $("files-empty").textContent = failureText("Cannot open the file browser", failed);
    return;
  }
  if (!state.roots.some((r) => r.index === state.root)) state.root = state.roots[0].index;
  writeAddress(false);
  showRoots();
  loadListing();
}

start();
