// Quotas: the VM limits of the users and groups the caller may see (a user sees its
// own and its group's), with their use, the money budgets included.
import { api } from "../api.js";
import { h } from "../ui.js";

const METRICS = [
  ["VMS", "VMs"], ["CPU", "CPU"], ["MEMORY", "Memory"], ["RUNNING_VMS", "Running VMs"],
  ["RUNNING_CPU", "Running CPU"], ["RUNNING_MEMORY", "Running memory"],
  ["HOURLY_COST", "Cost / hour"], ["MONTHLY_COST", "Cost this month"],
];
const MONEY = new Set(["HOURLY_COST", "MONTHLY_COST"]);

function figure(metric, value) {
  if (MONEY.has(metric)) return `$${Number(value.toFixed(6))}`;
  if (metric === "MEMORY" || metric === "RUNNING_MEMORY") return `${Math.round(value)} MB`;
  return String(Number(value.toFixed(2)));
}

// "used / limit"; a limit below 0 is none (-2 unlimited, -1 default with no default set).
function cell(entry) {
  const limited = entry.effective >= 0;
  const text = `${figure(entry.metric, entry.used)} / ${limited ? figure(entry.metric, entry.effective) : "-"}`;
  const full = limited && entry.used >= entry.effective;
  return h("td", { class: full ? "warn" : "", "data-metric": entry.metric, "data-used": entry.used,
                   "data-limit": entry.limit, "data-effective": entry.effective,
                   title: entry.limit === -1 && limited ? "the default limit" : "" },
    text, entry.limit === -1 && limited ? h("span", { class: "muted" }, " (default)") : "");
}

function site(clusterId) { return clusterId === -1 ? "all" : `cluster ${clusterId}`; }

function table(caption, owners) {
  const rows = [];
  for (const owner of owners) {
    if (owner.exempt) {
      rows.push(h("tr", { "data-owner": owner.id }, h("th", { scope: "row" }, owner.name),
        h("td", { colspan: METRICS.length + 1, class: "muted" }, "no quotas apply (oneadmin)")));
      continue;
    }
    if (!owner.quotas.length) {
      rows.push(h("tr", { "data-owner": owner.id }, h("th", { scope: "row" }, owner.name),
        h("td", { colspan: METRICS.length + 1, class: "muted" }, "nothing used, no limits set")));
      continue;
    }
    for (const quota of owner.quotas) {
      const byMetric = Object.fromEntries(quota.metrics.map((entry) => [entry.metric, entry]));
      rows.push(h("tr", { "data-owner": owner.id, "data-cluster": quota.cluster_id },
        h("th", { scope: "row" }, owner.name), h("td", {}, site(quota.cluster_id)),
        METRICS.map(([metric]) => cell(byMetric[metric]))));
    }
  }
  return h("table", { class: "quotas", "aria-label": caption },
    h("caption", { class: "sr-only" }, caption),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Name"), h("th", { scope: "col" }, "Site"),
      METRICS.map(([, label]) => h("th", { scope: "col" }, label)))),
    h("tbody", {}, rows));
}

function defaults(label, list) {
  if (!list.length) return h("p", { class: "muted" }, `${label}: none set.`);
  return h("p", {}, `${label}: `, list.map((entry) => `${site(entry.cluster_id)}: ` +
    Object.entries(entry.limits).map(([metric, value]) =>
      `${metric} ${value < 0 ? (value === -2 ? "unlimited" : "-") : figure(metric, value)}`).join(", ")).join("; "));
}

export async function render(container) {
  const data = await api("/quotas");
  container.append(
    h("h1", {}, "Quotas"),
    h("p", { class: "muted" }, "Use / limit of VMs, CPU, memory and the money budgets " +
      "(cloud stays at their recorded prices); \"-\" is no limit."),
    h("h2", {}, "Users"), table("User quotas", data.users),
    h("h2", {}, "Groups"), table("Group quotas", data.groups),
    h("h2", {}, "Defaults"),
    defaults("Users", data.defaults.user), defaults("Groups", data.defaults.group));
}
