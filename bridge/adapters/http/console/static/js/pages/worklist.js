// The Modality Worklist: scheduled steps by station and date; create an order, edit it,
// cancel it. What the form sends is checked by the API; its answer is shown on the page.
import { get, patch, post, query } from "../api.js";
import { badge, dicomDate, el, errorText, field, guarded, input, notice, replace, select, table } from "../ui.js";

const PRIORITIES = [["ROUTINE", "routine"], ["HIGH", "high"], ["STAT", "stat"], ["LOW", "low"]];
const toDicom = (iso) => (iso ? iso.replaceAll("-", "") : undefined);
const toIso = (dicom) => (dicom && dicom.length === 8 ? `${dicom.slice(0, 4)}-${dicom.slice(4, 6)}-${dicom.slice(6)}` : "");
const blank = (value) => (value === "" || value === null ? undefined : value);

export async function render(view) {
  const message = el("div", { "aria-live": "polite", id: "worklist-message" });
  const list = el("div", { id: "worklist-list" });
  const editor = el("section", { class: "card", id: "order-editor" });
  const filters = guarded(el("form", { class: "filters", id: "worklist-filters" },
    field("Station AE", input("station_ae", { maxlength: 16 })),
    field("Date", input("date", { type: "date" })),
    field("Modality", input("modality", { maxlength: 16, placeholder: "CT" })),
    el("button", { type: "submit" }, "Show"),
    el("button", { type: "button", class: "secondary", id: "new-order", onclick: () => edit(null) }, "New order")),
  () => load());
  replace(view, el("h2", {}, "Worklist"), message, filters, list, editor);

  async function load() {
    const data = new FormData(filters);
    try {
      const rows = await get(`/api/worklist${query({ station_ae: data.get("station_ae"),
        date: toDicom(String(data.get("date") || "")), modality: data.get("modality"), limit: 200 })}`);
      replace(list, table(rows, [
        { label: "Date", value: (r) => `${dicomDate(r.step.start_date)} ${r.step.start_time || ""}` },
        { label: "Station", value: (r) => r.step.station_ae || "" },
        { label: "Modality", value: (r) => r.step.modality || "" },
        { label: "Patient", value: (r) => `${(r.patient.name || "").replaceAll("^", " ")} (${r.patient.patient_id || ""})` },
        { label: "Accession", value: (r) => r.order.accession || "" },
        { label: "Procedure", value: (r) => r.step.description || r.order.procedure_description || "" },
        { label: "Status", value: (r) => badge(r.step.status) },
        { label: "", value: (r) => el("span", {},
          el("button", { type: "button", class: "secondary", onclick: () => edit(r) }, "Edit"), " ",
          el("button", { type: "button", class: "danger", onclick: () => cancel(r) }, "Cancel")) },
      ], { caption: "Scheduled steps", empty: "No scheduled step matches." }));
    } catch (error) {
      replace(message, notice("error", errorText(error)));
    }
  }

  async function cancel(row) {
    if (!window.confirm(`Cancel the order ${row.order.accession || row.order.id}?`)) return;
    try {
      await post(`/api/worklist/${row.order.id}/cancel`);
      replace(message, notice("ok", `Order ${row.order.accession || row.order.id} canceled.`));
      await load();
    } catch (error) {
      replace(message, notice("error", errorText(error)));
    }
  }

  function edit(row) {
    const creating = row === null;
    const step = row ? row.step : {};
    const order = row ? row.order : {};
    const problem = el("div", { "aria-live": "polite" });
    const fields = [
      creating && field("Patient ID", input("patient_id", { required: true, maxlength: 64 })),
      creating && field("Issuer", input("issuer", { maxlength: 64 })),
      creating && field("Name (Family^Given)", input("name", { maxlength: 64 })),
      creating && field("Birth date", input("birth_date", { type: "date" })),
      creating && field("Sex", select("sex", [["", "—"], ["F", "F"], ["M", "M"], ["O", "O"]])),
      field("Accession", input("accession", { maxlength: 16, value: order.accession || "" })),
      field("Procedure", input("description", { maxlength: 64, value: step.description || order.procedure_description || "" })),
      field("Modality", input("modality", { maxlength: 16, value: step.modality || "", required: creating })),
      field("Station AE", input("station_ae", { maxlength: 16, value: step.station_ae || "" })),
      field("Date", input("start_date", { type: "date", value: toIso(step.start_date), required: creating })),
      field("Time", input("start_time", { type: "time", value: step.start_time ? `${step.start_time.slice(0, 2)}:${step.start_time.slice(2, 4)}` : "" })),
      field("Priority", select("priority", PRIORITIES, order.priority || "ROUTINE")),
    ];
    const form = guarded(el("form", { class: "inline", id: "order-form", novalidate: true }, fields,
      el("button", { type: "submit" }, creating ? "Create order" : "Save")), async (data) => {
      const text = (name) => blank(String(data.get(name) ?? "").trim());
      const stepBody = { modality: text("modality"), station_ae: text("station_ae"),
        start_date: toDicom(text("start_date")), start_time: text("start_time")?.replace(":", ""),
        description: text("description") };
      if (creating && (!text("patient_id") || !stepBody.modality || !stepBody.start_date)) {
        replace(problem, notice("error", "Patient ID, modality and date are needed."));
        return;
      }
      try {
        if (creating) {
          const created = await post("/api/worklist", {
            accession: text("accession"), procedure_description: text("description"), priority: text("priority"),
            patient: { identifiers: [{ value: text("patient_id"), issuer: text("issuer") || "" }],
              name: text("name"), birth_date: toDicom(text("birth_date")), sex: text("sex") },
            steps: [stepBody] });
          replace(message, notice("ok", `Order ${created.accession || created.id} created.`));
        } else {
          await patch(`/api/worklist/${order.id}`, { accession: text("accession"), priority: text("priority"),
            procedure_description: text("description"), steps: [{ ...stepBody, sps_id: step.sps_id }] });
          replace(message, notice("ok", `Order ${order.accession || order.id} saved.`));
        }
        replace(editor);
        await load();
      } catch (error) {
        replace(problem, notice("error", errorText(error)));
      }
    });
    replace(editor, el("h3", {}, creating ? "New order" : `Order ${order.accession || order.id}`), problem, form);
    form.querySelector("input")?.focus();
  }

  await load();
  return null;
}
