// For oneadmin: users, groups and ACL rules (as the tenancy services provide them).
import { api } from "../api.js";
import { h } from "../ui.js";

function table(caption, headers, rows) {
  return h("table", {},
    h("caption", { class: "sr-only" }, caption),
    h("thead", {}, h("tr", {}, headers.map((label) => h("th", { scope: "col" }, label)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((cell) => h("td", {}, cell))))));
}

export async function render(container) {
  const [users, groups, acl] = await Promise.all([
    api("/users"), api("/groups"), api("/acl").catch((error) => ({ error: error.message }))]);
  container.append(
    h("h1", {}, "Users"),
    table("Users", ["ID", "Name", "Group", "Auth", "Enabled"], users.users.map((user) =>
      [user.id, user.name, user.gid, user.auth_driver, user.enabled ? "yes" : "no"])),
    h("h2", {}, "Groups"),
    table("Groups", ["ID", "Name", "Members", "Administrators"], groups.groups.map((group) =>
      [group.id, group.name, group.users.join(", "), group.admins.join(", ")])),
    h("h2", {}, "ACL rules"),
    acl.error ? h("p", { class: "error" }, acl.error)
      : table("ACL rules", ["ID", "Rule"], acl.rules.map((rule) => [rule.id, h("code", {}, rule.rule)])));
}
