// File content through the command bus: reading a file in FILE_READ pieces small enough for
// their result to come back inline, writing it back (FILE_WRITE with the SHA-256 of what was
// loaded, so a change made meanwhile is refused), and resumable uploads in FILE_UPLOAD_CHUNKs
// that fit in one API request, the last carrying the SHA-256 computed here.
import { limits, runCommand } from "./ops-common.js";

const MAX_RESULT = limits.max_result ?? 16 * 1024;
const MAX_BODY = limits.max_body ?? 64 * 1024;
// Base64 text of one upload chunk: at most 96 KiB, and the whole request within the API's cap.
const MAX_CHUNK_BASE64 = 96 * 1024;
const READ_PARALLEL = 4;
const UPLOAD_RETRIES = 5;
export const MAX_VIEW = 256 * 1024; // bytes loaded into the viewer at most

const encoder = new TextEncoder();
export const byteLength = (text) => encoder.encode(text).length;

// ---- bytes, base64 and SHA-256 ----------------------------------------------------------

export function toBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

export function fromBase64(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i += 1) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const hex = (buffer) => [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, "0")).join("");

// SHA-256 of `bytes` as hex: WebCrypto where the page is a secure context (https, localhost),
// else the small implementation below (plain-http deployments have no crypto.subtle).
export async function sha256Hex(bytes) {
  if (globalThis.crypto?.subtle) return hex(await crypto.subtle.digest("SHA-256", bytes));
  return sha256Fallback(bytes);
}

const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2]);

function sha256Fallback(bytes) {
  const bits = bytes.length * 8;
  const padded = new Uint8Array(((bytes.length + 9 + 63) >> 6) << 6);
  padded.set(bytes);
  padded[bytes.length] = 0x80;
  const view = new DataView(padded.buffer);
  view.setUint32(padded.length - 8, Math.floor(bits / 0x100000000));
  view.setUint32(padded.length - 4, bits >>> 0);
  const h = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f,
    0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
  const w = new Uint32Array(64);
  const rotr = (x, n) => (x >>> n) | (x << (32 - n));
  for (let off = 0; off < padded.length; off += 64) {
    for (let i = 0; i < 16; i += 1) w[i] = view.getUint32(off + i * 4);
    for (let i = 16; i < 64; i += 1) {
      const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
      const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) >>> 0;
    }
    let [a, b, c, d, e, f, g, hh] = h;
    for (let i = 0; i < 64; i += 1) {
      const t1 = (hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) >>> 0;
      const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
      [hh, g, f, e, d, c, b, a] = [g, f, e, (d + t1) >>> 0, c, b, a, (t1 + t2) >>> 0];
    }
    const next = [a, b, c, d, e, f, g, hh];
    for (let i = 0; i < 8; i += 1) h[i] = (h[i] + next[i]) >>> 0;
  }
  return [...h].map((x) => x.toString(16).padStart(8, "0")).join("");
}

// ---- reading ---------------------------------------------------------------------------

// Raw bytes per FILE_READ so that its result (base64, 4/3 larger, plus the path and the other
// fields) stays under the inline result limit.
function readSize(path) {
  const room = MAX_RESULT - 1024 - 2 * byteLength(JSON.stringify(path));
  return Math.max(1024, Math.floor(room / 4) * 3);
}

// Reads `path` (relative to root `root`) up to `max` bytes. Returns {ok: true, bytes, size,
// mime, complete, changed} or {ok: false, done} (the failed command's outcome).
// `onProgress(loaded, total)` follows it; `onUpdate` sees each command's status.
export async function readFile(root, path, { max = MAX_VIEW, onProgress = () => {}, onUpdate } = {}) {
  let length = readSize(path);
  const reason = `file browser: view ${path}`.slice(0, 400);
  const read = async (offset, size) => {
    for (;;) {
      const done = await runCommand("FILE_READ",
        { root, path, offset, length: size, encoding: "base64" }, reason, { onUpdate });
      if (!done.ok || !done.truncated || size <= 1024) return done;
      size = Math.floor(size / 2); // a longer path than expected: ask for less
      length = Math.min(length, size);
    }
  };
  const first = await read(0, Math.min(length, max));
  if (!first.ok) return { ok: false, done: first };
  if (first.truncated) return { ok: false, done: { ...first, ok: false, message: "the result was too large to come back inline" } };
  const size = first.result.size ?? 0;
  const want = Math.min(size, max);
  const parts = [fromBase64(first.result.content ?? "")];
  let loaded = parts[0].length;
  let changed = false;
  onProgress(loaded, want);
  while (loaded < want && !changed) {
    const asks = [];
    for (let at = loaded; at < want && asks.length < READ_PARALLEL; at += length) {
      asks.push({ at, size: Math.min(length, want - at) });
    }
    const dones = await Promise.all(asks.map((a) => read(a.at, a.size)));
    for (const [i, done] of dones.entries()) {
      if (!done.ok) return { ok: false, done };
      if (done.truncated) {
        return { ok: false, done: { ...done, ok: false, message: "the result was too large to come back inline" } };
      }
      const bytes = fromBase64(done.result.content ?? "");
      // a different size, or a short piece before the end: the file changed while it was read
      if (done.result.size !== size || bytes.length !== asks[i].size) changed = true;
      parts.push(bytes);
      loaded += bytes.length;
    }
    onProgress(loaded, want);
  }
  const bytes = concat(parts);
  return { ok: true, bytes, size, mime: first.result.mime ?? "",
    complete: bytes.length === size && !changed, changed };
}

// ---- uploading -------------------------------------------------------------------------

const newUploadId = () => hex(crypto.getRandomValues(new Uint8Array(12)));

// Raw bytes per chunk: its base64 at most MAX_CHUNK_BASE64, the request within the API's cap.
function chunkSize(root, path, reason) {
  const frame = { server_id: "x".repeat(64), type: "FILE_UPLOAD_CHUNK", reason, params: {
    root, path, upload_id: "x".repeat(24), offset: 1e12, data: "", final: true,
    sha256: "0".repeat(64), total_size: 1e12, expected_sha256: "0".repeat(64) } };
  const room = Math.min(MAX_CHUNK_BASE64, MAX_BODY - byteLength(JSON.stringify(frame)) - 512);
  return Math.max(3, Math.floor(room / 4) * 3);
}

// "… 81920 bytes received …" / "… received 81920 …" / "expected offset 81920": where to resume.
export function resumeOffset(message) {
  const m = /(\d+) bytes? (?:were |have been |so far )?received|received\D{0,20}(\d+)|expected offset\D{0,6}(\d+)|offset must be (\d+)/i.exec(message ?? "");
  if (!m) return null;
  const n = Number(m[1] ?? m[2] ?? m[3] ?? m[4]);
  return Number.isSafeInteger(n) ? n : null;
}

const retryable = (done) => (done.refused ? [0, 502, 503, 504].includes(done.status)
  : ["timed-out", "expired", "lost"].includes(done.status) || resumeOffset(done.message) !== null);

// Uploads `bytes` to `path` in chunks, resuming from the offset the agent reports when a
// chunk fails. `expected` (hex) makes the final chunk refuse to replace a file whose content
// changed. Returns the last command's outcome ({ok, result, message, ...}).
export async function uploadBytes(root, path, bytes, reason, {
  expected = null, onProgress = () => {}, onUpdate,
} = {}) {
  const uploadId = newUploadId();
  const sha256 = await sha256Hex(bytes);
  const size = chunkSize(root, path, reason);
  let offset = 0;
  let failures = 0;
  onProgress(0, bytes.length);
  for (;;) {
    const end = Math.min(offset + size, bytes.length);
    const final = end === bytes.length;
    const params = { root, path, upload_id: uploadId, offset, data: toBase64(bytes.subarray(offset, end)) };
    if (final) Object.assign(params, { final: true, sha256, total_size: bytes.length });
    if (final && expected) params.expected_sha256 = expected;
    const done = await runCommand("FILE_UPLOAD_CHUNK", params, reason, { onUpdate });
    if (done.ok) {
      failures = 0;
      if (final || done.result?.complete) {
        onProgress(bytes.length, bytes.length);
        return done;
      }
      offset = Number.isSafeInteger(done.result?.received) ? done.result.received : end;
      onProgress(offset, bytes.length);
      continue;
    }
    failures += 1;
    if (failures > UPLOAD_RETRIES || !retryable(done)) return done;
    const resume = resumeOffset(done.message);
    if (resume !== null && resume <= bytes.length) offset = resume;
    onProgress(offset, bytes.length, `retrying from byte ${offset} (${done.message || done.status})`);
    await new Promise((r) => setTimeout(r, 500 * failures));
  }
}

// ---- writing ---------------------------------------------------------------------------

// Saves `text` over `path`, refused unless the file still has the hash `expected`: one
// FILE_WRITE when it fits in a request, else an upload whose final chunk carries the check.
export async function writeText(root, path, text, expected, reason, { onProgress, onUpdate } = {}) {
  const params = { root, path, content: text, encoding: "utf-8" };
  if (expected) params.expected_sha256 = expected;
  const body = { server_id: "x".repeat(64), type: "FILE_WRITE", params, reason };
  if (byteLength(JSON.stringify(body)) + 512 <= MAX_BODY) {
    return runCommand("FILE_WRITE", params, reason, { onUpdate });
  }
  return uploadBytes(root, path, encoder.encode(text), reason, { expected, onProgress, onUpdate });
}

// Whether a failure says the file changed since it was loaded (the hash precondition).
export function isConflict(message) {
  return /sha-?256|expected.*hash|hash.*(?:differ|mismatch|changed)|changed since|precondition|conflict/i.test(message ?? "");
}
