// Registered templates, each instantiable with a form.
import { api } from "../api.js";
import { h, notice } from "../ui.js";

function instantiateForm(template) {
  const prefix = `tpl-${template.id}`;
  const name = h("input", { id: `${prefix}-name`, placeholder: "default from the template" });
  const count = h("input", { id: `${prefix}-count`, type: "number", min: 1, max: 100, value: 1 });
  const hold = h("input", { id: `${prefix}-hold`, type: "checkbox" });
  const extra = h("textarea", { id: `${prefix}-extra`, rows: 2, placeholder: "extra attributes, e.g. CPU = 2" });
  return h("form", { class: "inline-form", "aria-label": `Instantiate ${template.name}`,
    onsubmit: async (event) => {
      event.preventDefault();
      try {
        const created = await api(`/templates/${template.id}/instantiate`, { method: "POST",
          body: { name: name.value, count: Number(count.value), hold: hold.checked, extra: extra.value } });
        notice(`Created VM${created.ids.length > 1 ? "s" : ""} ${created.ids.join(", ")}`, "info");
      } catch (error) {
        notice(error.message);
      }
    } },
    h("label", { for: `${prefix}-name` }, "VM name"), name,
    h("label", { for: `${prefix}-count` }, "Count"), count,
    h("label", { class: "inline" }, hold, " on hold"),
    h("label", { for: `${prefix}-extra` }, "Extra"), extra,
    h("button", { type: "submit" }, "Instantiate"));
}

export async function render(container) {
  const data = await api("/templates");
  container.append(h("h1", {}, "Templates"));
  if (!data.templates.length) {
    container.append(h("p", { class: "muted" }, "No templates registered (onetemplate create)."));
  }
  for (const template of data.templates) {
    container.append(h("article", { class: "card", "aria-labelledby": `tpl-${template.id}-title` },
      h("h2", { id: `tpl-${template.id}-title` }, `${template.name} `,
        h("span", { class: "muted" }, `#${template.id} · ${template.owner} · CPU ${template.cpu ?? "?"} · ${template.memory ?? "?"} MB`)),
      h("details", {}, h("summary", {}, "Template"), h("pre", {}, template.template)),
      instantiateForm(template)));
  }
}
