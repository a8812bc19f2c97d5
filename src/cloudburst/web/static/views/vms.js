// VMs: search, filter, sort and page on the server; rows update live.
import { api } from "../api.js";
import { onChanges } from "../live.js";
import { clear, fmt, h, sortHeader, stateBadge, whereBadge } from "../ui.js";

const STATES = ["", "pending", "hold", "active", "poweroff", "stopped", "suspended", "undeployed",
                "done", "any"];
const PAGE = 50;

export async function render(container) {
  const query = new URLSearchParams(location.hash.split("?")[1] || "");
  const state = { q: "", state: "", where: "", host: query.get("host") || "", sort: "id",
                  order: "asc", offset: 0 };
  const search = h("input", { id: "vm-search", type: "search", placeholder: "name, id or deploy id",
                              "aria-describedby": "vm-count" });
  const stateSelect = h("select", { id: "vm-state" },
    STATES.map((name) => h("option", { value: name }, name || "any but done")));
  const whereSelect = h("select", { id: "vm-where" },
    ["", "local", "cloud"].map((name) => h("option", { value: name }, name || "anywhere")));
  const count = h("p", { id: "vm-count", role: "status" });
  const table = h("table", { class: "vms" });
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  container.append(h("h1", {}, "Virtual machines"),
    h("form", { class: "filters", role: "search", onsubmit: (e) => { e.preventDefault(); } },
      h("label", { for: "vm-search" }, "Search"), search,
      h("label", { for: "vm-state" }, "State"), stateSelect,
      h("label", { for: "vm-where" }, "Runs"), whereSelect,
      state.host ? h("span", {}, `host #${state.host} `,
        h("a", { href: "#/vms" }, "(all hosts)")) : ""),
    count, table, pager, createForm());

  let rows = new Map();
  let pending = null;
  async function load() {
    const params = new URLSearchParams({ q: state.q, state: state.state, where: state.where,
      host: state.host, sort: state.sort, order: state.order, offset: state.offset, limit: PAGE });
    const data = await api(`/vms?${params}`);
    count.textContent = `${fmt(data.total)} VM${data.total === 1 ? "" : "s"}` +
      (data.total ? `, showing ${data.offset + 1}–${data.offset + data.vms.length}` : "");
    rows = new Map();
    const onSort = (key) => {
      state.order = state.sort === key && state.order === "asc" ? "desc" : "asc";
      state.sort = key;
      load();
    };
    clear(table).append(
      h("caption", { class: "sr-only" }, "Virtual machines"),
      h("thead", {}, h("tr", {},
        sortHeader("ID", "id", state, onSort), sortHeader("Name", "name", state, onSort),
        h("th", { scope: "col" }, "Owner"), sortHeader("State", "state", state, onSort),
        sortHeader("Host", "host", state, onSort), h("th", { scope: "col" }, "Runs"),
        h("th", { scope: "col" }, "IP"), sortHeader("CPU", "cpu", state, onSort),
        sortHeader("Memory", "memory", state, onSort))),
      h("tbody", {}, data.vms.map((vm) => {
        const row = h("tr", { "data-vm": vm.id },
          h("td", {}, vm.id), h("td", {}, h("a", { href: `#/vms/${vm.id}` }, vm.name)),
          h("td", {}, vm.owner), h("td", { class: "st" }, stateBadge(vm.short_state, vm.state_label)),
          h("td", { class: "hst" }, vm.host ?? "-"), h("td", { class: "whr" }, whereBadge(vm.where)),
          h("td", {}, vm.ip || ""), h("td", {}, vm.cpu), h("td", {}, `${vm.memory} MB`));
        rows.set(vm.id, row);
        return row;
      })));
    clear(pager);
    if (state.offset > 0) {
      pager.append(h("button", { type: "button", onclick: () => { state.offset = Math.max(0, state.offset - PAGE); load(); } }, "← Previous"));
    }
    if (state.offset + data.vms.length < data.total) {
      pager.append(h("button", { type: "button", onclick: () => { state.offset += PAGE; load(); } }, "Next →"));
    }
  }
  let typing = null;
  search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { state.q = search.value; state.offset = 0; load(); }, 250);
  });
  stateSelect.addEventListener("change", () => { state.state = stateSelect.value; state.offset = 0; load(); });
  whereSelect.addEventListener("change", () => { state.where = whereSelect.value; state.offset = 0; load(); });
  await load();
  const stop = onChanges((batch) => {
    let reload = batch.resync;
    for (const vm of batch.vms) {
      const row = rows.get(vm.id);
      if (row) {
        clear(row.querySelector(".st")).append(stateBadge(vm.short_state));
      } else {
        reload = true; // a new VM, or one entering the filter: the page and count change
      }
      if (row && vm.host_id !== null) reload = true; // its host may have changed
    }
    if (reload && !pending) {
      pending = setTimeout(() => { pending = null; load().catch(() => {}); }, 400);
    }
  });
  return () => { stop(); clearTimeout(pending); clearTimeout(typing); };
}

function createForm() {
  const text = h("textarea", { id: "vm-template", rows: 4, required: true,
                               placeholder: 'CPU = 1\nMEMORY = 512' });
  const hold = h("input", { id: "vm-hold", type: "checkbox" });
  const status = h("p", { role: "status" });
  return h("details", { class: "card" }, h("summary", {}, "Create a VM from template text"),
    h("form", { onsubmit: async (event) => {
      event.preventDefault();
      status.textContent = "";
      try {
        const created = await api("/vms", { method: "POST", body: { template: text.value, hold: hold.checked } });
        status.textContent = `Created VM ${created.id}`;
      } catch (error) {
        status.textContent = "";
        status.append(h("span", { class: "error" }, error.message));
      }
    } },
      h("label", { for: "vm-template" }, "Template (OpenNebula syntax)"), text,
      h("label", { class: "inline" }, hold, " on hold"),
      h("button", { type: "submit" }, "Create"), status));
}
