// Small DOM helpers: elements are built with textContent only (never innerHTML
// with data), so names and errors from the daemon cannot inject markup.

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      node.className = value;
    } else if (key === "style") {
      node.style.cssText = value; // CSSOM, allowed by the page's CSP (attributes are not)
    } else if (value === true) {
      node.setAttribute(key, "");
    } else {
      node.setAttribute(key, String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

// A labelled meter: used / total with a percentage bar.
export function bar(label, used, total, unit = "") {
  const percent = total > 0 ? Math.min(100, Math.round((used / total) * 100)) : 0;
  return h("div", { class: "bar" },
    h("div", { class: "bar-label" }, `${label}: ${fmt(used)}${unit} / ${fmt(total)}${unit}`,
      total > 0 ? ` (${percent}%)` : ""),
    h("div", { class: "bar-track", role: "meter", "aria-label": label,
               "aria-valuemin": 0, "aria-valuemax": total || 0, "aria-valuenow": used },
      h("div", { class: `bar-fill ${percent > 90 ? "hot" : ""}`,
                 style: `width:${percent}%` })));
}

export function fmt(value) {
  if (typeof value !== "number") return String(value ?? "");
  return Number.isInteger(value) ? value.toLocaleString("en") : value.toFixed(2);
}

export function time(seconds) {
  if (!seconds) return "-";
  return new Date(seconds * 1000).toLocaleString("en-GB", { hour12: false });
}

export function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString("en-GB", { hour12: false });
}

export function stateBadge(short, label) {
  return h("span", { class: `state s-${short}`, title: label || short }, short);
}

export function whereBadge(where) {
  if (!where) return h("span", { class: "where none" }, "-");
  return h("span", { class: `where ${where}` }, where);
}

let noticeTimer = null;

// One-line message for the user (errors are the API's own one-line messages).
export function notice(message, kind = "error") {
  const box = document.getElementById("notice");
  box.textContent = message;
  box.className = `notice ${kind}`;
  box.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { box.hidden = true; }, kind === "error" ? 12000 : 4000);
}

// Ask before a destructive action; resolves to true when confirmed.
export function confirmAction(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "cancel";
    dialog.showModal();
    document.getElementById("confirm-cancel").focus();
  });
}

// A sortable table header cell.
export function sortHeader(label, key, state, onSort) {
  const active = state.sort === key;
  const direction = active ? (state.order === "desc" ? "descending" : "ascending") : "none";
  return h("th", { scope: "col", "aria-sort": direction },
    h("button", { type: "button", class: "sort", onclick: () => onSort(key) },
      label, active ? (state.order === "desc" ? " ▼" : " ▲") : ""));
}
