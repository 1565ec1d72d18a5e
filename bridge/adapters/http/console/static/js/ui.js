// Small DOM helpers. Values from the API are only ever set as text, never as HTML, so a
// patient's name or a message's content cannot inject anything into the page.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(node.dataset, value);
    } else if (value === true) {
      node.setAttribute(key, "");
    } else {
      node.setAttribute(key, String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

/** An error or success message that screen readers announce. */
export function notice(kind, text) {
  return el("div", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

export function errorText(error) {
  if (error && error.status === 403) return `Not allowed: ${error.message}`;
  if (error && error.location) return `${error.message} (field: ${error.location})`;
  return error && error.message ? error.message : String(error);
}

/** columns: [{label, value: row => text|Node}] */
export function table(rows, columns, { caption, onSelect, empty = "Nothing to show." } = {}) {
  if (!rows.length) return el("p", { class: "muted" }, empty);
  const head = el("tr", {}, columns.map((c) => el("th", { scope: "col" }, c.label)));
  const body = rows.map((row) => {
    const cells = columns.map((c) => el("td", {}, c.value(row)));
    const tr = el("tr", {}, cells);
    if (onSelect) {
      tr.tabIndex = 0;
      tr.addEventListener("click", () => onSelect(row, tr));
      tr.addEventListener("keydown", (event) => {
        if (event.key === "Enter") onSelect(row, tr);
      });
    }
    return tr;
  });
  return el("table", {}, caption ? el("caption", { class: "visually-hidden" }, caption) : null,
    el("thead", {}, head), el("tbody", {}, body));
}

export function badge(text) {
  return el("span", { class: `badge ${text || ""}` }, text || "—");
}

export function field(label, input) {
  return el("label", {}, label, input);
}

export function input(name, attrs = {}) {
  return el("input", { name, id: `f-${name}`, ...attrs });
}

export function select(name, options, value = "") {
  return el("select", { name, id: `f-${name}` },
    options.map(([v, text]) => el("option", { value: v, selected: v === value }, text)));
}

/** Runs ``action`` once at a time for a form: a double submit does not send twice. */
export function guarded(form, action) {
  let busy = false;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (busy) return;
    busy = true;
    const buttons = form.querySelectorAll("button");
    buttons.forEach((b) => { b.disabled = true; });
    try {
      await action(new FormData(form));
    } finally {
      busy = false;
      buttons.forEach((b) => { b.disabled = false; });
    }
  });
  return form;
}

export function dicomDate(text) {
  if (!text || text.length < 8) return text || "";
  return `${text.slice(0, 4)}-${text.slice(4, 6)}-${text.slice(6, 8)}`;
}

export function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

export function personName(value) {
  if (!value) return "";
  const name = typeof value === "string" ? value : value.Alphabetic || "";
  return name.split("^").filter(Boolean).join(" ");
}

export function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = Number(n);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}
