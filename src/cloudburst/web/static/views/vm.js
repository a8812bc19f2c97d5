// One VM: state, placement and its reason, history, log, monitoring, cost, actions.
import { api } from "../api.js";
import { onChanges } from "../live.js";
import { clear, confirmAction, h, notice, stateBadge, time, whereBadge } from "../ui.js";

// Actions that lose work or the VM: asked for confirmation first.
const DESTRUCTIVE = /^(terminate|shutdown|delete|poweroff|undeploy|reboot-hard|reset|recover)/;

function facts(vm) {
  const row = (label, value) => [h("dt", {}, label), h("dd", {}, value)];
  return h("dl", { class: "facts" },
    row("State", [stateBadge(vm.short_state, vm.state_label), ` ${vm.state_label}`]),
    row("Host", vm.host ? [vm.host, " ", whereBadge(vm.where)] : "-"),
    row("Placement", vm.placement),
    row("Deploy id", h("code", {}, vm.deploy_id || "-")),
    row("IP", vm.ip || "-"),
    row("Owner", vm.owner),
    row("CPU / memory", `${vm.cpu} / ${vm.memory} MB`),
    row("Started", time(vm.stime)),
    row("Cost", vm.cost_per_hour === null ? "unknown" : `$${vm.cost_per_hour.toFixed(4)} / hour`),
    vm.error ? row("Error", h("span", { class: "error" }, vm.error)) : []);
}

function historyTable(vm) {
  if (!vm.history.length) return h("p", { class: "muted" }, "No history yet.");
  return h("table", {},
    h("caption", { class: "sr-only" }, "History"),
    h("thead", {}, h("tr", {}, ["#", "Host", "Driver", "Start", "End", "Reason"].map(
      (label) => h("th", { scope: "col" }, label)))),
    h("tbody", {}, vm.history.map((record) => h("tr", {},
      h("td", {}, record.seq), h("td", {}, record.host), h("td", {}, record.vm_mad),
      h("td", {}, time(record.start)), h("td", {}, time(record.end)), h("td", {}, record.reason)))));
}

async function act(vm, action, reload) {
  if (DESTRUCTIVE.test(action) &&
      !(await confirmAction(`${action} VM ${vm.id} (${vm.name})?`))) return;
  try {
    await api(`/vms/${vm.id}/action`, { method: "POST", body: { action } });
    notice(`${action}: requested for VM ${vm.id}`, "info");
    await reload();
  } catch (error) {
    notice(error.message);
  }
}

async function deployForm(vm, reload) {
  const hosts = (await api("/hosts")).hosts;
  const select = h("select", { id: "deploy-host" },
    hosts.map((host) => h("option", { value: host.id }, `${host.name} (${host.where || "?"}, ${host.short_state})`)));
  const enforce = h("input", { id: "deploy-enforce", type: "checkbox" });
  return h("form", { class: "inline-form", onsubmit: async (event) => {
    event.preventDefault();
    try {
      await api(`/vms/${vm.id}/deploy`, { method: "POST",
        body: { host_id: Number(select.value), enforce: enforce.checked } });
      notice(`deploy: requested for VM ${vm.id}`, "info");
      await reload();
    } catch (error) {
      notice(error.message);
    }
  } },
    h("label", { for: "deploy-host" }, "Deploy to"), select,
    h("label", { class: "inline" }, enforce, " enforce capacity"),
    h("button", { type: "submit" }, "Deploy"));
}

// What a migrate form may do now: the hosts the VM's driver can go to, cold and/or live.
async function migrateForm(vm, kept, reload) {
  const targets = await api(`/vms/${vm.id}/migrate`);
  if (!targets.cold && !targets.live) return "";
  if (!targets.hosts.length) {
    return h("p", { class: "muted" }, "Migrate: no other enabled host runs this VM's driver.");
  }
  const select = h("select", { id: "migrate-host", onchange: () => { kept.migrateHost = select.value; } },
    targets.hosts.map((host) => h("option", { value: host.id, selected: String(host.id) === kept.migrateHost },
      `${host.name} (${host.where || "?"}, ${host.short_state})`)));
  // Live only when the driver can; a driver that can only move live keeps it ticked.
  const live = h("input", { id: "migrate-live", type: "checkbox", disabled: !(targets.live && targets.cold),
    checked: targets.live && (!targets.cold || kept.migrateLive === true),
    onchange: () => { kept.migrateLive = live.checked; } });
  const enforce = h("input", { id: "migrate-enforce", type: "checkbox" });
  return h("form", { class: "inline-form", "aria-label": "Migrate", onsubmit: async (event) => {
    event.preventDefault();
    try {
      const answer = await api(`/vms/${vm.id}/migrate`, { method: "POST",
        body: { host_id: Number(select.value), live: live.checked, enforce: enforce.checked } });
      notice(`${answer.action}: requested for VM ${vm.id}`, "info");
      delete kept.migrateHost;
      await reload();
    } catch (error) {
      notice(error.message);
    }
  } },
    h("label", { for: "migrate-host" }, "Migrate to"), select,
    h("label", { class: "inline", title: targets.live ? "" : "this VM's driver cannot migrate live" },
      live, " live"),
    h("label", { class: "inline" }, enforce, " enforce capacity"),
    h("button", { type: "submit" }, "Migrate"));
}

// onevm recover's choices, as the VM's state allows them.
const RECOVER_HELP = {
  success: "the pending operation is taken as done",
  failure: "the pending operation is taken as failed",
  retry: "run the failed operation again",
  delete: "end the VM, cleaning up at its host",
  recreate: "end the VM's instance and start over as pending",
  "delete-db": "forget the VM without touching its host",
};
// Choices that lose the VM or its pending work: asked for confirmation first.
const DESTRUCTIVE_RECOVER = new Set(["failure", "delete", "recreate", "delete-db"]);

function recoverForm(vm, kept, reload) {
  if (!vm.recover.length) return "";
  const failed = /_FAILURE$/.test(vm.lcm_state_name);
  const choice = kept.recover && vm.recover.includes(kept.recover) ? kept.recover
    : vm.recover.includes("retry") ? "retry" : vm.recover[0];
  const radios = vm.recover.map((name) => h("label", { class: "choice" },
    h("input", { type: "radio", name: "recover-op", value: name, checked: name === choice,
                 onchange: () => { kept.recover = name; } }),
    ` ${name}`, h("span", { class: "muted" }, ` (${RECOVER_HELP[name] || name})`)));
  const form = h("form", { "aria-label": "Recover", onsubmit: async (event) => {
    event.preventDefault();
    const picked = form.querySelector("input[name=recover-op]:checked");
    if (!picked) return;
    const name = picked.value;
    if (DESTRUCTIVE_RECOVER.has(name) &&
        !(await confirmAction(`recover --${name} VM ${vm.id} (${vm.name})?`))) return;
    try {
      await api(`/vms/${vm.id}/recover`, { method: "POST", body: { operation: name } });
      notice(`recover --${name}: requested for VM ${vm.id}`, "info");
      delete kept.recover;
      await reload();
    } catch (error) {
      notice(error.message);
    }
  } },
    h("fieldset", {}, h("legend", {}, "Recover (operator)"), radios),
    h("button", { type: "submit" }, "Recover"));
  return h("details", { class: "card recover", open: failed || kept.recoverOpen,
                        ontoggle: (event) => { kept.recoverOpen = event.target.open; } },
    h("summary", {}, failed ? "Recover this failed VM" : "Recover…"), form);
}

export async function render(container, [id]) {
  const body = h("div", {});
  const kept = {}; // choices in the forms, kept while the page re-renders live
  container.append(body);
  let loads = 0;
  async function load() {
    const mine = ++loads;
    const vm = await api(`/vms/${id}`);
    const buttons = h("div", { class: "actions", role: "group", "aria-label": "Actions" },
      vm.actions.map((action) => h("button", {
        type: "button", class: DESTRUCTIVE.test(action) ? "danger" : "",
        "data-action": action, onclick: () => act(vm, action, load) }, action)));
    // Everything is read before the page is replaced, at once (never an empty page),
    // and only by the newest of overlapping loads.
    const deploy = vm.state_name === "PENDING" || vm.state_name === "HOLD"
      ? await deployForm(vm, load) : "";
    const migrate = vm.migrate.cold || vm.migrate.live ? await migrateForm(vm, kept, load) : "";
    if (mine !== loads) return;
    clear(body).append(
      h("p", {}, h("a", { href: "#/vms" }, "← all VMs")),
      h("h1", {}, `VM ${vm.id}: ${vm.name}`),
      facts(vm), buttons, deploy, migrate, recoverForm(vm, kept, load),
      h("section", { "aria-labelledby": "hist" }, h("h2", { id: "hist" }, "History"), historyTable(vm)),
      h("section", { "aria-labelledby": "mon" }, h("h2", { id: "mon" }, "Monitoring"),
        Object.keys(vm.monitoring).length
          ? h("dl", { class: "facts" }, Object.entries(vm.monitoring).map(
              ([key, value]) => [h("dt", {}, key), h("dd", {}, value)]))
          : h("p", { class: "muted" }, "Not polled yet.")),
      h("section", { "aria-labelledby": "log" }, h("h2", { id: "log" }, "Log"),
        h("pre", { class: "log", tabindex: 0 }, vm.log.join("\n") || "(empty)")),
      h("details", {}, h("summary", {}, "Template"), h("pre", {}, vm.template)));
  }
  await load();
  let pending = null;
  const stop = onChanges((batch) => {
    if ((batch.resync || batch.vms.some((vm) => String(vm.id) === id)) && !pending) {
      pending = setTimeout(() => { pending = null; load().catch((e) => notice(e.message)); }, 200);
    }
  });
  return () => { stop(); clearTimeout(pending); };
}
