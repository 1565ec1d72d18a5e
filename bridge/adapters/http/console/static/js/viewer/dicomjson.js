// Reading DICOM JSON (PS3.18 F.2) answers of QIDO-RS and WADO-RS metadata.

export function value(item, tag, fallback = "") {
  const element = item && item[tag];
  if (!element || !element.Value || !element.Value.length) return fallback;
  return element.Value[0];
}

export function values(item, tag) {
  const element = item && item[tag];
  return element && element.Value ? element.Value : [];
}

export function text(item, tag) {
  const found = value(item, tag, "");
  if (found && typeof found === "object") return found.Alphabetic || "";
  return String(found ?? "");
}

export const TAGS = {
  studyUid: "0020000D", seriesUid: "0020000E", sopUid: "00080018",
  modality: "00080060", seriesDescription: "0008103E", seriesNumber: "00200011",
  seriesInstances: "00201209", instanceNumber: "00200013", frames: "00280008",
  patientName: "00100010", patientId: "00100020", birthDate: "00100030", sex: "00100040",
  studyDate: "00080020", studyDescription: "00081030", accession: "00080050",
  windowCenter: "00281050", windowWidth: "00281051", rows: "00280010", columns: "00280011",
};
