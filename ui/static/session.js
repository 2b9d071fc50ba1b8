// The signed-in user in the top bar (from GET /api/v1/me) and signing out
// (DELETE /api/v1/session). Loaded by every page; other modules may await `me`.

// Who is signed in: {name, tenant, role, via}, or null (anonymous or the API unreachable).
export const me = loadMe();

async function loadMe() {
  try {
    const response = await fetch("/api/v1/me", { headers: { Accept: "application/json" } });
    if (!response.ok) return null;
    const body = await response.json();
    return body && typeof body.me === "object" ? body.me : null;
  } catch {
    return null;
  }
}

// The sign-in page, coming back to where the user is now.
export function loginURL() {
  const here = location.pathname + location.search;
  return `/login?${new URLSearchParams({ next: here })}`;
}

async function signOut(event) {
  event.preventDefault();
  try {
    await fetch("/api/v1/session", {
      method: "DELETE",
      headers: { Accept: "application/json", "Content-Type": "application/json" },
      body: "{}",
    });
  } catch {
    // the cookie may survive an unreachable server; the sign-in page is shown either way
  }
  location.assign("/login");
}

const box = document.getElementById("me");
if (box) {
  me.then((who) => {
    if (!who) return;
    document.getElementById("me-name").textContent = who.name ?? "";
    document.getElementById("me-tenant").textContent = who.tenant ?? "";
    document.getElementById("me-role").textContent = who.role ?? "";
    document.body.dataset.role = who.role ?? "";
    box.hidden = false;
  });
  document.getElementById("sign-out")?.addEventListener("click", signOut);
}
