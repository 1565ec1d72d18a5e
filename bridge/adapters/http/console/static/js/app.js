// The console's shell: who is logged in, the pages they may use, and the hash router
// (#/page/arg...). Each page is a module with render(view, args, who) that may return a
// function stopping what it started (timers, prefetch).
import { get, post } from "./api.js";
import { el, errorText, notice, replace } from "./ui.js";

// kind: "system" pages for operators and systems' tokens, "clinical" for clinicians.
const PAGES = [
  { path: "dashboard", title: "Dashboard", kind: "system", module: "./pages/dashboard.js" },
  { path: "messages", title: "Messages", kind: "system", module: "./pages/messages.js" },
  { path: "worklist", title: "Worklist", kind: "system", module: "./pages/worklist.js" },
  { path: "reconciliation", title: "Reconciliation", kind: "system",
    module: "./pages/reconciliation.js" },
  { path: "studies", title: "Studies", kind: "both", module: "./pages/studies.js" },
  { path: "referrals", title: "Referrals", kind: "both", module: "./pages/referrals.js" },
  { path: "storage", title: "Storage", kind: "system", module: "./pages/storage.js" },
  { path: "jobs", title: "Jobs", kind: "system", module: "./pages/jobs.js" },
  { path: "audit", title: "Audit", kind: "system", module: "./pages/audit.js" },
  { path: "viewer", title: "Viewer", kind: "both", module: "./pages/viewer.js", hidden: true },
];

const view = document.getElementById("view");
let who = null;
let stop = null;

function allowed(page) {
  if (page.kind === "both") return true;
  return who.clinician ? page.kind === "clinical" : page.kind === "system";
}

function home() { return who.clinician ? "referrals" : "dashboard"; }

function drawNav(current) {
  const links = PAGES.filter((p) => !p.hidden && allowed(p)).map((p) => el("a", {
    href: `#/${p.path}`, "aria-current": p.path === current ? "page" : false,
  }, p.title));
  replace(document.getElementById("nav"), links);
}

async function route() {
  const [path, ...args] = (location.hash.replace(/^#\/?/, "") || home()).split("/");
  const page = PAGES.find((p) => p.path === path && allowed(p));
  if (stop) { stop(); stop = null; }
  drawNav(page ? page.path : "");
  if (!page) {
    replace(view, notice("error", "There is no such page, or it is not for your role."));
    return;
  }
  document.title = `${page.title} · bridge console`;
  replace(view, el("p", { class: "muted" }, "Loading…"));
  try {
    const module = await import(page.module);
    const cleanup = await module.render(view, args.map(decodeURIComponent), who);
    if (typeof cleanup === "function") stop = cleanup;
  } catch (error) {
    replace(view, notice("error", errorText(error)));
  }
}

async function start() {
  try {
    who = await get("/console/session");
  } catch {
    location.assign(`/console/login?next=${encodeURIComponent(location.hash || "#/")}`);
    return;
  }
  replace(document.getElementById("who"), `${who.name} (${who.role})`);
  document.getElementById("logout").addEventListener("click", async () => {
    try { await post("/console/logout"); } finally { location.assign("/console/login"); }
  });
  window.addEventListener("hashchange", route);
  await route();
}

start();
