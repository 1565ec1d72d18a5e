// Studies: search the archive (QIDO-RS; a clinician finds only the studies they may see),
// a study's series with thumbnails, open it in the viewer; operators forward it to a DICOM
// peer, export it de-identified, delete it (under the retention policy); clinicians share it
// with a colleague.
import { get, post, query, request } from "../api.js";
import { dicomDate, el, errorText, field, guarded, input, notice, replace, select, table } from "../ui.js";
import { TAGS, text, value } from "../viewer/dicomjson.js";

const JSON_TYPE = "application/dicom+json";

export async function render(view, [selected], who) {
  const message = el("div", { "aria-live": "polite", id: "studies-message" });
  const list = el("div", { id: "study-list" });
  const detail = el("section", { class: "card", id: "study-detail" });
  const form = guarded(el("form", { class: "filters", id: "study-search" },
    field("Patient ID", input("PatientID", { maxlength: 64 })),
    field("Patient name", input("PatientName", { maxlength: 64, placeholder: "Family*" })),
    field("Accession", input("AccessionNumber", { maxlength: 16 })),
    field("Study date", input("StudyDate", { type: "date" })),
    field("Modality", input("ModalitiesInStudy", { maxlength: 16 })),
    el("button", { type: "submit" }, "Search")), () => search());
  replace(view, el("h2", {}, "Studies"), message, form, list, detail);

  async function search() {
    const data = new FormData(form);
    const params = { limit: 100, includefield: "00081030" };
    for (const [key, raw] of data.entries()) {
      const v = String(raw).trim();
      if (v) params[key] = key === "StudyDate" ? v.replaceAll("-", "") : v;
    }
    try {
      const rows = await request(`/dicomweb/studies${query(params)}`, { accept: JSON_TYPE }) || [];
      replace(list, table(rows, [
        { label: "Date", value: (r) => dicomDate(text(r, TAGS.studyDate)) },
        { label: "Patient", value: (r) => `${text(r, TAGS.patientName).replaceAll("^", " ")} (${text(r, TAGS.patientId)})` },
        { label: "Accession", value: (r) => text(r, TAGS.accession) },
        { label: "Description", value: (r) => text(r, TAGS.studyDescription) },
        { label: "Modalities", value: (r) => (r["00080061"] && r["00080061"].Value || []).join(", ") },
        { label: "Images", value: (r) => String(value(r, "00201208", "")) },
        { label: "", value: (r) => el("span", {},
          el("a", { href: `#/studies/${text(r, TAGS.studyUid)}` }, "Details"), " · ",
          el("a", { href: `#/viewer/${text(r, TAGS.studyUid)}` }, "View")) },
      ], { caption: "Studies", empty: "No study matches." }));
      replace(message);
    } catch (error) {
      replace(message, notice("error", errorText(error)));
    }
  }

  async function open(uid) {
    const base = `/dicomweb/studies/${encodeURIComponent(uid)}`;
    try {
      const series = (await request(`${base}/series`, { accept: JSON_TYPE }) || [])
        .sort((a, b) => Number(value(a, TAGS.seriesNumber, 0)) - Number(value(b, TAGS.seriesNumber, 0)));
      const thumbs = el("div", { class: "thumbs" }, series.map((s) => {
        const img = el("img", { alt: `Series ${value(s, TAGS.seriesNumber, "")} thumbnail` });
        request(`${base}/series/${encodeURIComponent(text(s, TAGS.seriesUid))}/thumbnail?viewport=128,128`,
          { accept: "image/jpeg", raw: true }).then((r) => r.blob())
          .then((blob) => { img.src = URL.createObjectURL(blob); })
          .catch(() => { img.alt = "No thumbnail"; });
        return el("figure", {}, img, el("figcaption", {},
          `${text(s, TAGS.modality)} ${value(s, TAGS.seriesNumber, "")} ${text(s, TAGS.seriesDescription)} (${value(s, TAGS.seriesInstances, "?")})`));
      }));
      replace(detail, el("h3", {}, "Study"), el("p", {}, el("a", { href: `#/viewer/${uid}`, id: "open-viewer" }, "Open in the viewer")),
        thumbs, ...(who.clinician ? [shareForm(uid)]
          : [await forwardForm(uid), await exportForm(uid), deleteForm(uid)]));
    } catch (error) {
      replace(detail, notice("error", errorText(error)));
    }
  }

  function shareForm(uid) {
    const problem = el("div", { "aria-live": "polite" });
    return el("div", {}, el("h3", {}, "Share with a colleague"), problem, guarded(el("form", { class: "inline", id: "share-form" },
      field("Colleague (username)", input("user", { maxlength: 64, required: true })),
      el("button", { type: "submit" }, "Share")), async (data) => {
      const user = String(data.get("user") || "").trim();
      if (!user) { replace(problem, notice("error", "Enter the colleague's username.")); return; }
      try {
        await post("/api/shares", { user, study_uid: uid });
        replace(problem, notice("ok", `Shared with ${user}.`));
      } catch (error) {
        replace(problem, notice("error", errorText(error)));
      }
    }));
  }

  async function forwardForm(uid) {
    let peers = [];
    try { peers = (await get("/api/peers")).peers.filter((p) => p.role !== "scu" && p.host && p.port); } catch { peers = []; }
    if (!peers.length) return el("p", { class: "muted" }, "No DICOM peer to forward to is configured.");
    const problem = el("div", { "aria-live": "polite" });
    return el("div", {}, el("h3", {}, "Forward to a DICOM peer"), problem, guarded(el("form", { class: "inline", id: "forward-form" },
      field("Peer", select("destination", peers.map((p) => [p.ae_title, `${p.ae_title} (${p.host}:${p.port})`]))),
      el("button", { type: "submit" }, "Forward")), async (data) => {
      try {
        const answer = await post(`/api/studies/${encodeURIComponent(uid)}/forward`, { destination: data.get("destination") });
        replace(problem, notice("ok", `Forward queued (job ${answer.job_id}); a failure shows on the Jobs page.`));
      } catch (error) {
        replace(problem, notice("error", errorText(error)));
      }
    }));
  }

  function deleteForm(uid) {
    const problem = el("div", { "aria-live": "polite" });
    return el("div", {}, el("h3", {}, "Delete"), problem, guarded(el("form", { class: "inline", id: "delete-form" },
      field("Reason", input("reason", { maxlength: 512 })),
      field("Delete even under retention", input("override_retention", { type: "checkbox", value: "yes" })),
      el("button", { type: "submit", class: "danger" }, "Delete the study")), async (data) => {
      const reason = String(data.get("reason") || "").trim();
      if (!reason) { replace(problem, notice("error", "Say why the study is deleted.")); return; }
      try {
        await post(`/api/studies/${encodeURIComponent(uid)}/delete`, { reason, override_retention: data.get("override_retention") === "yes" });
        replace(detail, notice("ok", "Study deleted; the audit log keeps who and why."));
        await search();
      } catch (error) {
        replace(problem, notice("error", errorText(error)));
      }
    }));
  }

  async function exportForm(uid) {
    let destinations = [];
    try { destinations = await get("/api/deid/destinations"); } catch { destinations = []; }
    if (!destinations.length) return el("p", { class: "muted" }, "No de-identification destination is configured.");
    const problem = el("div", { "aria-live": "polite" });
    return el("div", {}, el("h3", {}, "Export de-identified"), problem, guarded(el("form", { class: "inline", id: "export-form" },
      field("Destination", select("destination", destinations.map((d) => [d.name, `${d.name} (${d.kind})`]))),
      el("button", { type: "submit" }, "Export")), async (data) => {
      try {
        const answer = await post("/api/deid/exports", { study_instance_uid: uid, destination: data.get("destination") });
        replace(problem, notice("ok", `Export ${answer.id} queued.`));
      } catch (error) {
        replace(problem, notice("error", errorText(error)));
      }
    }));
  }

  await search();
  if (selected) await open(selected);
  return null;
}
