// The HL7 message log: filter, open one (its segments laid out, the field in error marked,
// the ACK sent), and reprocess a message in error once the cause is fixed.
import { get, post, query } from "../api.js";
import { badge, el, errorText, field, guarded, input, notice, replace, select, table, when } from "../ui.js";

const STATUSES = [["", "any"], ["error", "error"], ["rejected", "rejected"],
  ["processed", "processed"], ["received", "received"]];

export async function render(view, [selected]) {
  const message = el("div", { "aria-live": "polite" });
  const list = el("div", { id: "message-list" });
  const detail = el("section", { class: "card", id: "message-detail", "aria-label": "Message detail" },
    el("p", { class: "muted" }, "Choose a message to see it."));
  const filters = guarded(el("form", { class: "filters", id: "message-filters" },
    field("Status", select("status", STATUSES)), field("Type", input("type", { placeholder: "ADT^A01", maxlength: 16 })),
    field("Sender", input("sender", { maxlength: 64 })), field("Since", input("since", { type: "date" })),
    el("button", { type: "submit" }, "Filter")), () => load());
  replace(view, el("h2", {}, "Messages"), message, filters, list, detail);

  async function load() {
    const data = new FormData(filters);
    const since = data.get("since");
    try {
      const rows = await get(`/api/messages${query({ status: data.get("status"), type: data.get("type"),
        sender: data.get("sender"), since: since ? `${since}T00:00:00Z` : "", limit: 200 })}`);
      replace(list, table(rows, [
        { label: "Received", value: (r) => when(r.received_at) },
        { label: "Type", value: (r) => r.message_type || "" },
        { label: "Sender", value: (r) => [r.sending_application, r.sending_facility].filter(Boolean).join(" / ") },
        { label: "Control ID", value: (r) => r.control_id || "" },
        { label: "Status", value: (r) => badge(r.status) },
        { label: "ACK", value: (r) => badge(r.ack_code) },
        { label: "Error", value: (r) => r.error || "" },
        { label: "", value: (r) => el("a", { href: `#/messages/${r.id}` }, "Open") },
      ], { caption: "HL7 messages", empty: "No message matches." }));
      replace(message);
    } catch (error) {
      replace(message, notice("error", errorText(error)));
    }
  }

  async function open(id) {
    try {
      const m = await get(`/api/messages/${encodeURIComponent(id)}`);
      const reprocess = el("button", { type: "button", id: "reprocess",
        disabled: !["error", "rejected"].includes(m.status) }, "Reprocess");
      const outcome = el("div", { "aria-live": "polite" });
      reprocess.addEventListener("click", async () => {
        reprocess.disabled = true;
        try {
          const result = await post(`/api/messages/${m.id}/reprocess`);
          replace(outcome, notice(result.status === "processed" ? "ok" : "error",
            `Reprocessed: ${result.status}, ACK ${result.ack_code}${result.error ? ` — ${result.error}` : ""}`));
          await load();
        } catch (error) {
          replace(outcome, notice("error", errorText(error)));
          reprocess.disabled = false;
        }
      });
      replace(detail, el("h3", {}, `Message ${m.id}: ${m.message_type || "?"} from ${m.sending_application || "?"}`),
        el("p", {}, "Status ", badge(m.status), " · ACK ", badge(m.ack_code), ` · attempts ${m.attempts}`,
          m.error ? ` · ${m.error}` : "", m.error_location ? ` (at ${m.error_location})` : ""),
        outcome, reprocess,
        el("h3", {}, "Segments"), segments(m.text || "", m.error_location),
        el("h3", {}, "ACK sent"), segments(m.ack || "", null));
    } catch (error) {
      replace(detail, notice("error", errorText(error)));
    }
  }

  await load();
  if (selected) await open(selected);
  return null;
}

/** One line per segment; the segment named by the error's location (e.g. PID-3) marked. */
function segments(text, location) {
  const wanted = location ? location.split(/[-.^]/)[0] : null;
  const lines = text.split(/\r\n|\r|\n/).filter(Boolean);
  return el("pre", { class: "segments", tabindex: 0, role: "region", "aria-label": "Segments" }, lines.map((line) => {
    const bad = wanted && line.startsWith(`${wanted}|`);
    return [el("span", { class: bad ? "bad" : "" }, line), "\n"];
  }));
}
