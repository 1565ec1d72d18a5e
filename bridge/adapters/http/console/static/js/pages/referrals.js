// Referrals (FHIR Task workflow): the inbox (what was sent to me or my department) and the
// outbox (what I referred), moving a referral on, and the consultation result form.
import { get, post, query } from "../api.js";
import { badge, el, errorText, field, guarded, notice, replace, table, when } from "../ui.js";

// The moves a performer makes from each status (the API refuses any other with 409).
const MOVES = { requested: ["accepted", "rejected"], received: ["accepted", "rejected"],
  accepted: ["in-progress"], "in-progress": [] };

const ref = (value) => (value && (value.reference || value.display)) || "";

export async function render(view, [selected], who) {
  const message = el("div", { "aria-live": "polite", id: "referral-message" });
  const inbox = el("section", { class: "card", id: "inbox" });
  const outbox = el("section", { class: "card", id: "outbox" });
  const detail = el("section", { class: "card", id: "referral-detail" });
  replace(view, el("h2", {}, "Referrals"), message, inbox, outbox, detail);

  const columns = [
    { label: "Referred", value: (r) => when(r.task.authoredOn) },
    { label: "Patient", value: (r) => ref(r.task.for) },
    { label: "What", value: (r) => (r.task.code && (r.task.code.text || ((r.task.code.coding || [])[0] || {}).display)) || r.task.description || "" },
    { label: "From", value: (r) => ref(r.task.requester) },
    { label: "To", value: (r) => ref(r.task.owner) },
    { label: "Status", value: (r) => badge(r.status) },
    { label: "", value: (r) => el("a", { href: `#/referrals/${r.id}` }, "Open") },
  ];

  async function load() {
    try {
      const rows = await get(`/api/referrals${query({ limit: 200 })}`);
      const mine = (r) => who.practitioner && ref(r.task.requester) === who.practitioner;
      replace(inbox, el("h3", {}, "Inbox"), table(rows.filter((r) => !mine(r)), columns,
        { caption: "Referrals to me", empty: "Nothing in the inbox." }));
      replace(outbox, el("h3", {}, "Outbox"), table(rows.filter(mine), columns,
        { caption: "Referrals I made", empty: "You have not referred anyone." }));
    } catch (error) {
      replace(message, notice("error", errorText(error)));
    }
  }

  async function open(id) {
    try {
      const referral = await get(`/api/referrals/${encodeURIComponent(id)}`);
      const task = referral.task;
      const problem = el("div", { "aria-live": "polite", id: "referral-problem" });
      const moves = (MOVES[referral.status] || []).map((status) => el("button", {
        type: "button", class: status === "rejected" ? "danger" : "", dataset: { move: status },
        onclick: async () => {
          try {
            await post(`/api/referrals/${referral.id}/status`, { status,
              reason: status === "rejected" ? window.prompt("Why is it rejected?") || "" : "" });
            replace(message, notice("ok", `Referral ${referral.id}: ${status}.`));
            await load();
            await open(referral.id);
          } catch (error) {
            replace(problem, notice("error", errorText(error)));
          }
        } }, status === "in-progress" ? "Start" : status[0].toUpperCase() + status.slice(1)));
      const studies = referral.studies || [];
      const outputs = (task.output || []).map((o) => ref(o.valueReference)).filter(Boolean);
      const report = ["accepted", "in-progress"].includes(referral.status) ? guarded(el("form", { id: "report-form", novalidate: true },
        field("Conclusion", el("textarea", { name: "conclusion", id: "f-conclusion", maxlength: 100000, required: true })),
        el("button", { type: "submit" }, "Send the result")), async (data) => {
        const conclusion = String(data.get("conclusion") || "").trim();
        if (!conclusion) { replace(problem, notice("error", "Write the conclusion before sending.")); return; }
        try {
          await post(`/api/referrals/${referral.id}/report`, { conclusion, study_uid: studies[0] || undefined });
          replace(message, notice("ok", `The result of referral ${referral.id} was sent to the referrer.`));
          await load();
          await open(referral.id);
        } catch (error) {
          replace(problem, notice("error", errorText(error)));
        }
      }) : null;
      replace(detail, el("h3", {}, `Referral ${referral.id}`), problem,
        el("p", {}, "Status ", badge(referral.status), task.businessStatus ? ` · ${task.businessStatus.text || ""}` : ""),
        el("p", {}, `Patient ${ref(task.for)} · from ${ref(task.requester)} · to ${ref(task.owner)}`),
        task.description ? el("p", {}, task.description) : null,
        studies.length ? el("p", {}, "Studies: ", studies.map((uid) => [el("a", { href: `#/viewer/${uid}` }, "open in the viewer"), " "])) : null,
        outputs.length ? el("p", {}, `Result: ${outputs.join(", ")}`) : null,
        el("div", { class: "filters" }, moves), report);
    } catch (error) {
      replace(detail, notice("error", errorText(error)));
    }
  }

  await load();
  if (selected) await open(selected);
  return null;
}

