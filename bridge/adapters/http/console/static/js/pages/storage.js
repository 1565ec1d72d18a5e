// Storage: what each tier holds (by modality), the online capacity and its marks, migrations
// waiting, the cleanup dry run (what would go, and why some would stay), the deletion log, and
// the DICOM peers the bridge knows.
import { get, request } from "../api.js";
import { bytes, el, errorText, notice, replace, table, when } from "../ui.js";

export async function render(view) {
  const message = el("div", { "aria-live": "polite" });
  const summary = el("section", { class: "card", id: "storage-summary" });
  const dry = el("section", { class: "card", id: "cleanup-dry-run" });
  const deletions = el("section", { class: "card", id: "deletions" });
  const peers = el("section", { class: "card", id: "peers" });
  replace(view, el("h2", {}, "Storage"), message, summary, dry, deletions, peers);
  try {
    const [s, log, known] = await Promise.all([get("/api/storage"), get("/api/storage/deletions?limit=50"), get("/api/peers")]);
    const c = s.capacity;
    const m = s.pending_migrations;
    replace(summary, el("h3", {}, "Tiers"),
      el("p", {}, `Online: ${bytes(c.used_bytes)} of ${bytes(c.capacity_bytes)} (${c.measured_by}); cleanup from ${bytes(c.high_mark_bytes)} down to ${bytes(c.low_mark_bytes)}.`),
      el("p", {}, s.longterm_configured ? `Waiting for long-term copy: ${m.due_studies} studies due (${bytes(m.due_bytes)}), ${m.waiting_studies} waiting (${bytes(m.waiting_bytes)}).`
        : "No long-term tier is configured."),
      table(s.tiers, [{ label: "Tier", value: (t) => t.tier }, { label: "Modality", value: (t) => t.modality || "all" },
        { label: "Instances", value: (t) => t.instances }, { label: "Size", value: (t) => bytes(t.bytes) }], { caption: "Usage by tier" }));
    const button = el("button", { type: "button", id: "run-dry-run" }, "Cleanup dry run");
    replace(dry, el("h3", {}, "Cleanup"), el("p", { class: "muted" }, "A dry run lists what a cleanup would remove now; nothing is removed."), button);
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const report = await request("/api/storage/cleanup?dry_run=true", { method: "POST", body: {} });
        replace(dry, el("h3", {}, "Cleanup dry run"), button,
          el("p", {}, `${report.note || ""} Usage ${bytes(report.usage_before)} → ${bytes(report.usage_after)}.`),
          table(report.removed, [{ label: "Study", value: (r) => r.study_instance_uid }, { label: "Modalities", value: (r) => r.modalities },
            { label: "Why", value: (r) => r.reason }, { label: "Size", value: (r) => bytes(r.bytes) }], { empty: "Nothing would be removed." }),
          report.kept.length ? table(report.kept, [{ label: "Kept", value: (k) => k[0] }, { label: "Why", value: (k) => k[1] }]) : null);
      } catch (error) {
        replace(message, notice("error", errorText(error)));
      } finally {
        button.disabled = false;
      }
    });
    replace(deletions, el("h3", {}, "Deleted"), table(log, [{ label: "When", value: (d) => when(d.at) },
      { label: "Study", value: (d) => d.study_instance_uid }, { label: "Tier", value: (d) => d.tier },
      { label: "Why", value: (d) => d.reason }, { label: "By", value: (d) => d.actor || "" }], { empty: "Nothing was deleted." }));
    replace(peers, el("h3", {}, `DICOM peers${known.strict ? " (others refused)" : ""}`), table(known.peers, [
      { label: "AE title", value: (p) => p.ae_title }, { label: "Host", value: (p) => p.host || "any" },
      { label: "Port", value: (p) => p.port || "" }, { label: "Role", value: (p) => p.role }], { empty: "No peer configured." }));
  } catch (error) {
    replace(message, notice("error", errorText(error)));
  }
  return null;
}
