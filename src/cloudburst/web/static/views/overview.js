// Overview: local vs cloud capacity and use, VMs by state and place, what
// bursting costs now, and the live placement timeline.
import { api } from "../api.js";
import { onChanges } from "../live.js";
import { bar, clear, clock, fmt, h, stateBadge } from "../ui.js";

const KIND_LABEL = { local: "placed locally", burst: "burst to cloud", recalled: "recalled",
                     failed: "failed" };
const TIMELINE_SHOWN = 60;

function site(title, totals, kind) {
  return h("section", { class: `card site ${kind}`, "aria-labelledby": `site-${kind}` },
    h("h2", { id: `site-${kind}` }, title),
    h("p", { class: "big", "data-testid": `${kind}-vms` }, fmt(totals.running_vms),
      h("span", { class: "unit" }, " VMs")),
    h("p", {}, `${totals.hosts} ${kind === "cloud" ? "site" : "host"}${totals.hosts === 1 ? "" : "s"}`,
      totals.hosts_in_error ? h("span", { class: "error" }, `, ${totals.hosts_in_error} in error`) : ""),
    bar("CPU allocated", totals.cpu_usage, totals.max_cpu),
    bar("Memory allocated", Math.round(totals.mem_usage / 1024), Math.round(totals.max_mem / 1024), " MB"));
}

function timelineItem(entry) {
  return h("li", { class: `tl ${entry.kind}` },
    h("time", { datetime: new Date(entry.time * 1000).toISOString() }, clock(entry.time)), " ",
    h("span", { class: `kind ${entry.kind}` }, KIND_LABEL[entry.kind] || entry.kind), " ",
    h("a", { href: `#/vms/${entry.vm_id}` }, `VM ${entry.vm_id} ${entry.vm_name || ""}`),
    entry.host ? ` → ${entry.host}` : "",
    entry.error ? h("span", { class: "error" }, ` ${entry.error}`) : "");
}

export async function render(container, _params, _context) {
  const summary = h("div", { class: "grid" });
  const timeline = h("ol", { class: "timeline", "aria-label": "Placement timeline",
                             "aria-live": "off", reversed: true });
  container.append(
    h("h1", {}, "Overview"),
    summary,
    h("section", { class: "card", "aria-labelledby": "tl-title" },
      h("h2", { id: "tl-title" }, "Placements, live"), timeline));

  let pending = null;
  let lastLoad = 0;
  async function load() {
    lastLoad = Date.now();
    const data = await api("/overview");
    clear(summary).append(
      site("Local hosts", data.local, "local"),
      site("Cloud sites", data.cloud, "cloud"),
      h("section", { class: "card", "aria-labelledby": "states-title" },
        h("h2", { id: "states-title" }, `VMs: ${fmt(data.vms_total)}`),
        h("ul", { class: "counts", "aria-label": "VMs by place" },
          h("li", {}, h("strong", {}, fmt(data.vms_by_where.local)), " local"),
          h("li", {}, h("strong", {}, fmt(data.vms_by_where.cloud)), " in clouds"),
          h("li", {}, h("strong", {}, fmt(data.vms_by_where.unplaced)), " not placed")),
        h("ul", { class: "counts", "aria-label": "VMs by state" },
          Object.entries(data.vms_by_state).map(([state, count]) =>
            h("li", {}, stateBadge(state), " ", fmt(count))))),
      h("section", { class: "card", "aria-labelledby": "cost-title" },
        h("h2", { id: "cost-title" }, "Bursting cost"),
        data.cost.per_hour === null
          ? h("p", { class: "big muted" }, "unknown")
          : h("p", { class: "big" }, `$${data.cost.per_hour.toFixed(4)}`, h("span", { class: "unit" }, " / hour")),
        h("p", { class: "muted" },
          `${fmt(data.cost.priced_vms)} of ${fmt(data.cost.cloud_vms)} cloud VMs have a known price ` +
          "(the site's price, else CPU_COST / MEMORY_COST)")));
    if (!timeline.dataset.loaded) {
      timeline.dataset.loaded = "yes";
      clear(timeline);
      for (const entry of data.timeline.slice(-TIMELINE_SHOWN).reverse()) timeline.append(timelineItem(entry));
    }
  }
  // Numbers are reloaded at most twice a second while changes arrive.
  function soon() {
    if (pending) return;
    pending = setTimeout(() => { pending = null; load().catch(() => {}); },
                         Math.max(0, 500 - (Date.now() - lastLoad)));
  }
  await load();
  const stop = onChanges((batch) => {
    for (const entry of batch.timeline) {
      timeline.prepend(timelineItem(entry));
      while (timeline.children.length > TIMELINE_SHOWN) timeline.lastChild.remove();
    }
    if (batch.resync) delete timeline.dataset.loaded;
    if (batch.resync || batch.vms.length || batch.hosts.length) soon();
  });
  return () => { stop(); clearTimeout(pending); };
}
