// Alert helpers shared by the alert panel, the server list and the server page:
// checking alert events, the operator's remembered name, JSON writes with the error banner.
import { showError } from "./app.js";

export const ALERT_STATES = ["pending", "firing", "acknowledged", "resolved"];
export const ACTIVE_STATES = ["firing", "acknowledged"];
export const SEVERITIES = ["info", "warning", "critical"];
export const SEVERITY_RANK = { info: 0, warning: 1, critical: 2 };

const isText = (v) => typeof v === "string" && v.length > 0;

// An Alert (the alert's newest event) from the API or the alert stream, or null after a
// console warning when it lacks what the pages rely on. Optional fields are normalised.
export function parseAlert(a) {
  if (!a || typeof a !== "object" || !isText(a.alert_id) || !Number.isFinite(a.seq) ||
      !ALERT_STATES.includes(a.state) || !isText(a.server_id)) {
    console.warn("ignoring malformed alert event", a);
    return null;
  }
  return {
    ...a,
    severity: SEVERITIES.includes(a.severity) ? a.severity : "info",
    rule_id: typeof a.rule_id === "string" ? a.rule_id : "",
    rule_name: typeof a.rule_name === "string" ? a.rule_name : "",
    hostname: typeof a.hostname === "string" ? a.hostname : "",
    silenced_by: Array.isArray(a.silenced_by) ? a.silenced_by : [],
    flapping: a.flapping === true,
  };
}

// Parses a list from the API, dropping malformed entries.
export function parseAlerts(list) {
  if (!Array.isArray(list)) return [];
  return list.map(parseAlert).filter(Boolean);
}

export const isActive = (a) => ACTIVE_STATES.includes(a.state);

// ISO text -> epoch ms, or null.
export function parseTime(iso) {
  if (typeof iso !== "string" || !iso) return null;
  const ms = Date.parse(iso);
  return Number.isNaN(ms) ? null : ms;
}

// "45 s", "12 min", "3 h", "2 d" (for "ends in …").
export function fmtSpan(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min`;
  if (s < 172800) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86400)} d`;
}

export function fmtDateTime(iso) {
  const ms = parseTime(iso);
  return ms === null ? "–" : new Date(ms).toLocaleString();
}

// ---- writes -------------------------------------------------------------------------

// Sends `body` as JSON with `method`. Returns {ok: true, status, body} or, after showing
// the failure in the error banner, {ok: false, status, message}.
export async function sendJSON(method, url, body) {
  let response;
  try {
    response = await fetch(url, {
      method,
      headers: { Accept: "application/json", ...(body === undefined ? {} : { "Content-Type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    const message = `Network error while sending ${method} ${url}: ${err.message}`;
    showError(message);
    return { ok: false, status: 0, message };
  }
  let parsed = null;
  try {
    parsed = await response.json();
  } catch {
    // an empty or non-JSON body: fine on success, reported below on failure
  }
  if (!response.ok) {
    const e = parsed?.error;
    const message = e ? `${e.code}: ${e.message}` : `HTTP ${response.status} ${response.statusText} for ${method} ${url}`;
    showError(message);
    return { ok: false, status: response.status, message: e?.message ?? message };
  }
  return { ok: true, status: response.status, body: parsed };
}
