// The log-in page: a username and password, or an API token, posted with the pre-login CSRF
// cookie echoed; on success the bridge sets the login cookies and we go where we were going.
import { ApiError, request } from "./api.js";
import { guarded, notice, replace } from "./ui.js";

const message = document.getElementById("message");

function next() {
  const wanted = new URLSearchParams(location.search).get("next") || "#/";
  // Only a place inside the console: never an address elsewhere.
  return wanted.startsWith("#") ? `/console/${wanted}` : "/console/";
}

async function logIn(body) {
  try {
    await request("/console/session", { method: "POST", body });
    location.assign(next());
  } catch (error) {
    const text = error instanceof ApiError ? error.message : "the bridge cannot be reached";
    replace(message, notice("error", text));
  }
}

guarded(document.getElementById("password-form"), async (data) => {
  const username = String(data.get("username") || "").trim();
  const password = String(data.get("password") || "");
  if (!username || !password) {
    replace(message, notice("error", "Enter your username and password."));
    return;
  }
  await logIn({ username, password });
});

guarded(document.getElementById("token-form"), async (data) => {
  const token = String(data.get("token") || "").trim();
  if (!token) {
    replace(message, notice("error", "Paste an API token."));
    return;
  }
  await logIn({ token });
});
