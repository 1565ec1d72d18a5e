// The audit trail (auditors: the admin level): newest first, filtered by action, agent and
// outcome.
import { auditEvents } from "../audit_events.js";
import { el, errorText, field, guarded, input, notice, replace, select, table, when } from "../ui.js";

export async function render(view) {
  const message = el("div", { "aria-live": "polite" });
  const list = el("div", { id: "audit-list" });
  const form = guarded(el("form", { class: "filters", id: "audit-filters" },
    field("Action", input("action", { maxlength: 32, placeholder: "retrieve" })),
    field("Agent", input("agent", { maxlength: 128, placeholder: "Practitioner/1" })),
    field("Outcome", select("outcome", [["", "any"], ["0", "success"], ["4", "failure"]])),
    el("button", { type: "submit" }, "Filter")), () => load());
  replace(view, el("h2", {}, "Audit trail"), message, form, list);

  async function load() {
    const data = new FormData(form);
    const params = { _sort: "-date" };
    for (const key of ["action", "agent", "outcome"]) {
      const v = String(data.get(key) || "").trim();
      if (v) params[key] = v;
    }
    try {
      const rows = await auditEvents(params);
      replace(list, table(rows, [
        { label: "#", value: (r) => r.id }, { label: "When", value: (r) => when(r.recorded) },
        { label: "Who", value: (r) => r.who }, { label: "Action", value: (r) => r.action },
        { label: "Outcome", value: (r) => r.outcome }, { label: "What", value: (r) => r.entities },
      ], { caption: "Audit records", empty: "No record matches." }));
      replace(message);
    } catch (error) {
      replace(message, notice("error", errorText(error)));
    }
  }
  await load();
  return null;
}
