// The audit trail (oneadmin's group): every state-changing call of both APIs,
// newest first, optionally of one user.
import { api } from "../api.js";
import { clear, h, notice, time } from "../ui.js";

const SHOWN = 200;

export async function render(container) {
  const users = (await api("/users")).users;
  const select = h("select", { id: "audit-user" },
    h("option", { value: "-1" }, "every user"),
    users.map((user) => h("option", { value: user.id }, user.name)));
  const count = h("p", { id: "audit-count", role: "status" });
  const table = h("table", { "aria-label": "Audit trail" });
  async function load() {
    const data = await api(`/audit?limit=${SHOWN}&uid=${select.value}`);
    const entries = data.entries.slice().reverse();
    count.textContent = `${entries.length} record${entries.length === 1 ? "" : "s"}` +
      (entries.length === SHOWN ? ` (the newest ${SHOWN})` : "");
    clear(table).append(
      h("caption", { class: "sr-only" }, "Audit trail"),
      h("thead", {}, h("tr", {}, ["#", "Time", "User", "Method", "Object", "Result", "Message"]
        .map((label) => h("th", { scope: "col" }, label)))),
      h("tbody", {}, entries.map((entry) => h("tr", { "data-id": entry.id },
        h("td", {}, entry.id), h("td", {}, time(entry.time)), h("td", {}, entry.user),
        h("td", {}, h("code", {}, entry.method)), h("td", {}, entry.object),
        h("td", { class: entry.success ? "ok" : "error" }, entry.success ? "ok" : "refused"),
        h("td", {}, entry.message)))));
  }
  select.addEventListener("change", () => { load().catch((error) => notice(error.message)); });
  await load(); // a caller without the right gets the API's one line, and no page
  container.append(h("h1", {}, "Audit trail"),
    h("form", { class: "filters", onsubmit: (event) => event.preventDefault() },
      h("label", { for: "audit-user" }, "Caller"), select),
    count, table);
}
