// The sign-in page: POST /api/v1/session with JSON (it sets the session cookie), then go to
// `next`, which the server already reduced to a path on this site ("/" otherwise).
const $ = (id) => document.getElementById(id);
const form = $("login-form");
const username = $("login-username");
const password = $("login-password");
const tenant = $("login-tenant");
const message = $("login-message");
const submit = $("login-submit");

function say(text, kind = "error") {
  message.textContent = text;
  message.dataset.kind = kind;
  message.hidden = !text;
}

function invalid(el, bad) {
  if (bad) el.setAttribute("aria-invalid", "true");
  else el.removeAttribute("aria-invalid");
}

// Belt and braces: only ever leave for a path of this origin.
function destination() {
  const next = form.dataset.next || "/";
  try {
    const url = new URL(next, location.origin);
    if (url.origin === location.origin && next.startsWith("/") && !next.startsWith("//")) {
      return url.pathname + url.search + url.hash;
    }
  } catch {
    // fall through
  }
  return "/";
}

async function signIn(event) {
  event.preventDefault();
  const body = { username: username.value.trim(), password: password.value };
  if (tenant.value.trim()) body.tenant = tenant.value.trim();
  invalid(username, !body.username);
  invalid(password, !body.password);
  if (!body.username || !body.password) {
    say(!body.username ? "Please enter your user name." : "Please enter your password.");
    (!body.username ? username : password).focus();
    return;
  }
  submit.disabled = true;
  say("Signing in…", "info");
  let response;
  let reply = null;
  try {
    response = await fetch("/api/v1/session", {
      method: "POST",
      headers: { Accept: "application/json", "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    reply = await response.json().catch(() => null);
  } catch (err) {
    submit.disabled = false;
    say(`Cannot reach FleetDeck: ${err.message}`);
    return;
  }
  if (!response.ok) {
    submit.disabled = false;
    say(reply?.error?.message ?? `Sign-in failed (HTTP ${response.status}).`);
    password.select();
    password.focus();
    return;
  }
  location.assign(destination());
}

form.addEventListener("submit", signIn);
