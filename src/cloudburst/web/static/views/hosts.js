// Hosts and cloud sites: state, error, capacity bars, instance-type limits.
import { api } from "../api.js";
import { onChanges } from "../live.js";
import { bar, clear, h, time, whereBadge } from "../ui.js";

function hostCard(host) {
  const limits = Object.entries(host.capacity);
  const cooloffs = Object.entries(host.attributes).filter(([name]) => /COOL/.test(name));
  const cooling = host.cooloff
    ? h("p", { class: "warn" }, `Cool-off: ${host.cooloff.vms} VM${host.cooloff.vms === 1 ? "" : "s"} ` +
        `kept off this ${host.where === "cloud" ? "site" : "host"} after "no capacity" ` +
        `(${Math.ceil(host.cooloff.seconds_left)} s left)`)
    : "";
  return h("article", { class: `card host ${host.where || ""}`, "aria-labelledby": `host-${host.id}` },
    h("h2", { id: `host-${host.id}` }, `${host.name} `, whereBadge(host.where), " ",
      h("span", { class: `state h-${host.short_state}` }, host.short_state)),
    h("p", { class: "muted" }, `#${host.id} · ${host.im_mad}/${host.vm_mad} · ${host.locality} · ` +
      `monitored ${time(host.last_mon_time)}`),
    host.error ? h("p", { class: "error" }, host.error) : "",
    cooling,
    bar("CPU allocated", host.cpu_usage, host.max_cpu),
    bar("Memory allocated", Math.round(host.mem_usage / 1024), Math.round(host.max_mem / 1024), " MB"),
    h("p", {}, `${host.running_vms} VM${host.running_vms === 1 ? "" : "s"} `,
      h("a", { href: `#/vms?host=${host.id}` }, "list")),
    limits.length ? h("div", {},
      h("h3", {}, "Instance-type limits"),
      h("ul", { class: "counts" }, limits.map(([type, count]) => h("li", {}, `${type}: ${count}`)))) : "",
    host.site_cooloffs.length ? h("div", {},
      h("h3", {}, "Instance types cooling off"),
      h("ul", {}, host.site_cooloffs.map((c) => h("li", { class: "warn" },
        `${c.INSTANCE_TYPE}: ${c.SECONDS_LEFT} s left (${c.REASON})`)))) : "",
    cooloffs.length ? h("div", {},
      h("h3", {}, "Cool-offs"),
      h("ul", {}, cooloffs.map(([name, value]) => h("li", {}, `${name} = ${value}`)))) : "");
}

export async function render(container) {
  const local = h("div", { class: "grid" });
  const cloud = h("div", { class: "grid" });
  container.append(h("h1", {}, "Hosts"),
    h("h2", {}, "Cloud sites"), cloud, h("h2", {}, "Local hosts"), local);
  let pending = null;
  async function load() {
    const data = await api("/hosts");
    clear(local);
    clear(cloud);
    for (const host of data.hosts) (host.where === "cloud" ? cloud : local).append(hostCard(host));
    if (!local.children.length) local.append(h("p", { class: "muted" }, "No local hosts."));
    if (!cloud.children.length) cloud.append(h("p", { class: "muted" }, "No cloud sites."));
  }
  await load();
  const stop = onChanges((batch) => {
    if ((batch.resync || batch.hosts.length || batch.vms.length) && !pending) {
      pending = setTimeout(() => { pending = null; load().catch(() => {}); }, 400);
    }
  });
  return () => { stop(); clearTimeout(pending); };
}
