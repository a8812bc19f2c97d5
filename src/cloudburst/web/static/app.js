// The dashboard's shell: session, navigation (hash routes), live status.
import { api, setCsrf } from "./api.js";
import { startLive, stopLive } from "./live.js";
import { clear, notice } from "./ui.js";
import * as overview from "./views/overview.js";
import * as hosts from "./views/hosts.js";
import * as vms from "./views/vms.js";
import * as vm from "./views/vm.js";
import * as templates from "./views/templates.js";
import * as admin from "./views/admin.js";
import * as quotas from "./views/quotas.js";
import * as audit from "./views/audit.js";

const routes = [
  [/^#\/overview$/, overview, "overview"],
  [/^#\/hosts$/, hosts, "hosts"],
  [/^#\/vms$/, vms, "vms"],
  [/^#\/vms\/(\d+)$/, vm, "vms"],
  [/^#\/templates$/, templates, "templates"],
  [/^#\/admin$/, admin, "admin"],
  [/^#\/quotas$/, quotas, "quotas"],
  [/^#\/audit$/, audit, "audit"],
];

const context = { user: null, isAdmin: false };
let cleanup = null;
let renderCount = 0;

function $(id) { return document.getElementById(id); }

function setLive(state) {
  $("live").textContent = state === "live" ? "● live" : state ? `○ ${state}` : "";
  $("live").className = `live ${state}`;
}

async function route() {
  if (!context.user) return;
  const hash = (location.hash || "#/overview").split("?")[0];
  const match = routes.find(([pattern]) => pattern.test(hash));
  if (!match) { location.hash = "#/overview"; return; }
  const [pattern, view, tab] = match;
  const params = hash.match(pattern).slice(1);
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.view === tab) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (cleanup) { cleanup(); cleanup = null; }
  const container = clear($("view"));
  const mine = ++renderCount;
  try {
    const result = await view.render(container, params, context);
    if (mine === renderCount) cleanup = result || null;
    else if (result) result();
  } catch (error) {
    notice(error.message);
  }
}

function showLogin() {
  context.user = null;
  stopLive();
  if (cleanup) { cleanup(); cleanup = null; }
  clear($("view"));
  $("nav").hidden = true;
  $("logout").hidden = true;
  $("who").textContent = "";
  $("login").hidden = false;
  $("login-user").focus();
}

function loggedIn(session) {
  context.user = session.user;
  context.isAdmin = session.user.id === 0 || session.user.gid === 0;
  setCsrf(session.csrf_token);
  $("login").hidden = true;
  $("nav").hidden = false;
  $("nav-admin").hidden = !context.isAdmin;
  $("nav-audit").hidden = !context.isAdmin;
  $("logout").hidden = false;
  $("who").textContent = session.user.name;
  startLive(setLive);
  route();
}

async function boot() {
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("login-error").textContent = "";
    try {
      const session = await api("/session", { method: "POST", body: {
        username: $("login-user").value, password: $("login-password").value } });
      $("login-password").value = "";
      loggedIn(session);
    } catch (error) {
      $("login-error").textContent = error.message;
    }
  });
  $("logout").addEventListener("click", async () => {
    try { await api("/session", { method: "DELETE" }); } catch (error) { notice(error.message); }
    setCsrf(null);
    showLogin();
  });
  window.addEventListener("cb-logged-out", () => { if (context.user) showLogin(); });
  window.addEventListener("hashchange", route);
  try {
    loggedIn(await api("/session"));
  } catch {
    showLogin();
  }
}

boot();
