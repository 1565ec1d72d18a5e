// The reconciliation queue: each study that could not be matched to an MIS order or patient,
// with the reason; find the patient's orders, assign the study (to an order, an accession or a
// patient) or reject it; the audit record of the decision is shown.
import { get, post, query } from "../api.js";
import { auditEvents } from "../audit_events.js";
import { dicomDate, el, errorText, field, guarded, input, notice, replace, table, when } from "../ui.js";

export async function render(view) {
  const message = el("div", { "aria-live": "polite", id: "reconciliation-message" });
  const list = el("div", { id: "queue" });
  const work = el("section", { class: "card", id: "reconcile" }, el("p", { class: "muted" }, "Choose a study from the queue."));
  replace(view, el("h2", {}, "Reconciliation"), message, list, work);

  async function load() {
    try {
      const rows = await get(`/api/reconciliation${query({ limit: 200 })}`);
      replace(list, table(rows, [
        { label: "Received", value: (r) => when(r.received_at) },
        { label: "Patient (as sent)", value: (r) => `${(r.patient_name || "").replaceAll("^", " ")} (${r.patient_id || "no ID"})` },
        { label: "Accession", value: (r) => r.accession || "" },
        { label: "Date", value: (r) => dicomDate(r.study_date) },
        { label: "Modalities", value: (r) => (r.modalities || []).join ? r.modalities.join(", ") : r.modalities },
        { label: "Reason", value: (r) => r.reason || r.kind || "" },
        { label: "", value: (r) => el("button", { type: "button", class: "secondary", onclick: () => open(r) }, "Reconcile") },
      ], { caption: "Studies waiting for reconciliation", empty: "The queue is empty." }));
    } catch (error) {
      replace(message, notice("error", errorText(error)));
    }
  }

  function open(study) {
    const problem = el("div", { "aria-live": "polite", id: "assign-problem" });
    const found = el("div", { id: "order-search-results" });
    const audit = el("div", { id: "assign-audit" });
    const assign = async (body) => {
      try {
        const answer = await post(`/api/reconciliation/${encodeURIComponent(study.study_instance_uid)}/assign`, body);
        replace(message, notice("ok", `Study assigned${answer.accession ? ` to accession ${answer.accession}` : ""}.`));
        await showAudit("assign");
        await load();
      } catch (error) {
        replace(problem, notice("error", errorText(error)));
      }
    };
    const showAudit = async (action) => {
      try {
        const rows = (await auditEvents({ action, _sort: "-date" }))
          .filter((r) => r.entities.includes(study.study_instance_uid)).slice(0, 3);
        replace(audit, el("h3", {}, "Audit record"), table(rows, [
          { label: "When", value: (r) => when(r.recorded) }, { label: "Who", value: (r) => r.who },
          { label: "Action", value: (r) => r.action }, { label: "Outcome", value: (r) => r.outcome },
          { label: "What", value: (r) => r.entities },
        ], { empty: "No audit record found." }));
      } catch (error) {
        replace(audit, notice("error", `The audit trail cannot be read: ${errorText(error)}`));
      }
    };
    const search = guarded(el("form", { class: "inline", id: "order-search" },
      field("Patient ID", input("patient_id", { maxlength: 64, value: study.patient_id || "" })),
      field("Accession", input("accession", { maxlength: 16, value: study.accession || "" })),
      el("button", { type: "submit", class: "secondary" }, "Find orders")), async (data) => {
      const patientId = String(data.get("patient_id") || "").trim();
      const accession = String(data.get("accession") || "").trim();
      if (!patientId && !accession) {
        replace(found, notice("error", "Enter a patient ID or an accession number."));
        return;
      }
      try {
        const rows = await get(`/api/worklist${query({ patient_id: patientId, accession, limit: 50 })}`);
        replace(found, table(rows, [
          { label: "Patient", value: (r) => `${(r.patient.name || "").replaceAll("^", " ")} (${r.patient.patient_id})` },
          { label: "Accession", value: (r) => r.order.accession || "" },
          { label: "Procedure", value: (r) => r.order.procedure_description || r.step.description || "" },
          { label: "Date", value: (r) => dicomDate(r.step.start_date) },
          { label: "", value: (r) => el("button", { type: "button", onclick: () => assign({ order_id: r.order.id }) }, "Assign to this order") },
        ], { empty: "No open order matches: assign to the patient instead, or reject." }));
      } catch (error) {
        replace(found, notice("error", errorText(error)));
      }
    });
    const toPatient = guarded(el("form", { class: "inline", id: "assign-patient" },
      field("MIS patient ID", input("patient_id", { maxlength: 64 })), field("Issuer", input("issuer", { maxlength: 64 })),
      el("button", { type: "submit" }, "Assign to this patient (no order)")), async (data) => {
      const patientId = String(data.get("patient_id") || "").trim();
      if (!patientId) { replace(problem, notice("error", "Enter the MIS patient ID.")); return; }
      await assign({ patient: { patient_id: patientId, issuer: String(data.get("issuer") || "").trim() } });
    });
    const reject = guarded(el("form", { class: "inline", id: "reject" },
      field("Reason for rejecting", input("reason", { maxlength: 256 })),
      el("button", { type: "submit", class: "danger" }, "Reject")), async (data) => {
      const reason = String(data.get("reason") || "").trim();
      if (!reason) { replace(problem, notice("error", "Say why the study is rejected.")); return; }
      try {
        await post(`/api/reconciliation/${encodeURIComponent(study.study_instance_uid)}/reject`, { reason });
        replace(message, notice("ok", "Study rejected."));
        await showAudit("reject");
        await load();
      } catch (error) {
        replace(problem, notice("error", errorText(error)));
      }
    });
    replace(work, el("h3", {}, `Study of ${(study.patient_name || "").replaceAll("^", " ")} — ${study.reason || study.kind || ""}`),
      problem, search, found, toPatient, reject, audit);
  }

  await load();
  return null;
}
