// For oneadmin: the users (groups, ACLs and quotas appear here as the API provides them).
import { api } from "../api.js";
import { h } from "../ui.js";

export async function render(container) {
  const data = await api("/users");
  container.append(h("h1", {}, "Users"),
    h("table", {},
      h("caption", { class: "sr-only" }, "Users"),
      h("thead", {}, h("tr", {}, ["ID", "Name", "Group", "Auth", "Enabled"].map(
        (label) => h("th", { scope: "col" }, label)))),
      h("tbody", {}, data.users.map((user) => h("tr", {},
        h("td", {}, user.id), h("td", {}, user.name), h("td", {}, user.gid),
        h("td", {}, user.auth_driver), h("td", {}, user.enabled ? "yes" : "no"))))));
}
