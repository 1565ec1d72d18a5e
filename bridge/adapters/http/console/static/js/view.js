// The viewer opened from an MIS link: the token is in the URL's fragment (never sent to a
// server, never in a log); it is presented as a bearer token and opens that one study.
import { ApiError, useBearer } from "./api.js";
import { el, replace } from "./ui.js";
import { openViewer } from "./viewer/viewer.js";

const view = document.getElementById("view");

function refused(text) {
  document.title = "Link not valid · bridge";
  replace(view, el("div", { class: "refused", role: "alert" },
    el("h2", {}, "This link does not open a study"), el("p", {}, text),
    el("p", {}, "Open the study again from the MIS to get a new link.")));
}

function studyOf(token) {
  // brl_<base64url of v1|study|expiry>.<mac>: the study is read here only to build the URLs;
  // the bridge checks the signature on every request.
  try {
    const payload = token.slice(4).split(".")[0].replace(/-/g, "+").replace(/_/g, "/");
    const fields = atob(payload).split("|");
    return fields.length === 3 ? fields[1] : null;
  } catch {
    return null;
  }
}

async function start() {
  const token = decodeURIComponent(location.hash.replace(/^#/, ""));
  const study = token.startsWith("brl_") ? studyOf(token) : null;
  if (!study) {
    refused("The link is incomplete or altered.");
    return;
  }
  // The token stays in memory only: the address bar no longer shows it.
  history.replaceState(null, "", location.pathname);
  useBearer(token);
  try {
    await openViewer(view, study);
  } catch (error) {
    refused(error instanceof ApiError && (error.status === 401 || error.status === 403)
      ? error.message : `The study cannot be shown: ${error.message}`);
  }
}

// An MIS that opens the next link in the same tab changes only the fragment: start again.
window.addEventListener("hashchange", () => location.reload());
start();
