// The dashboard: what arrives (HL7 by ACK code, DICOM objects), what waits (queues, failed
// jobs, the reconciliation queue), and storage over time; refreshed every few seconds.
import { get, query } from "../api.js";
import { COLOURS, lineChart } from "../chart.js";
import { bytes, el, errorText, notice, replace } from "../ui.js";

const REFRESH_MS = 5000;
const CODES = ["AA", "AE", "AR", "none"];

function tile(label, value, id) {
  return el("div", { class: "tile", id }, el("div", { class: "value" }, String(value)),
    el("div", { class: "label" }, label));
}

function legend(names) {
  return el("div", { class: "legend" }, names.map((name, i) => {
    const item = el("span", {}, name);
    item.style.setProperty("--swatch", COLOURS[i % COLOURS.length]);
    return item;
  }));
}

export async function render(view) {
  const tiles = el("div", { class: "grid", id: "tiles" });
  const rates = el("canvas", { class: "chart", id: "rates-chart", role: "img" });
  const storage = el("canvas", { class: "chart", id: "storage-chart", role: "img" });
  const queues = el("div", { id: "queues" });
  const message = el("div", { "aria-live": "polite" });
  const hours = el("select", { id: "hours", "aria-label": "Period" },
    [[1, "last hour"], [6, "last 6 hours"], [24, "last 24 hours"]].map(([v, t]) => el("option", { value: v }, t)));
  const updated = el("span", { class: "muted", id: "updated" });
  replace(view, el("h2", {}, "Dashboard"), message,
    el("div", { class: "filters" }, el("label", {}, "Period", hours), updated), tiles,
    el("section", { class: "card" }, el("h3", {}, "Messages and objects per minute"),
      legend([...CODES.map((c) => `HL7 ${c}`), "DICOM objects"]), rates),
    el("section", { class: "card" }, el("h3", {}, "Queues"), queues),
    el("section", { class: "card" }, el("h3", {}, "Storage used over time"),
      el("div", { id: "storage-legend" }), storage));

  async function refresh() {
    try {
      const minutes = Number(hours.value) * 60;
      const [activity, history] = await Promise.all([
        get(`/api/activity${query({ minutes })}`),
        get(`/api/storage/history${query({ limit: 2000 })}`),
      ]);
      const hl7 = activity.totals.hl7 || {};
      replace(tiles,
        tile("HL7 accepted (AA)", hl7.AA || 0, "tile-aa"),
        tile("HL7 errors (AE/AR)", (hl7.AE || 0) + (hl7.AR || 0), "tile-errors"),
        tile("DICOM objects received", activity.totals.dicom_objects || 0, "tile-objects"),
        tile("Failed jobs", activity.failed_jobs, "tile-failed"),
        tile("Studies to reconcile", activity.reconciliation_queued, "tile-reconcile"));
      const at = (row) => new Date(row.minute).getTime();
      lineChart(rates, [
        ...CODES.map((code) => ({ name: `HL7 ${code}`, points: activity.hl7.map((r) => ({ x: at(r), y: r[code] || 0 })) })),
        { name: "DICOM objects", points: activity.dicom.map((r) => ({ x: at(r), y: r.objects })) },
      ], { yLabel: "Per minute" });
      replace(queues, activity.queues.length ? el("table", {},
        el("thead", {}, el("tr", {}, ["Queue", "Pending", "Running", "Failed"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, activity.queues.map((q) => el("tr", {}, el("td", {}, q.queue), el("td", {}, q.pending),
          el("td", {}, q.running), el("td", {}, q.failed ? el("a", { href: `#/jobs/${q.queue}` }, String(q.failed)) : "0")))))
        : el("p", { class: "muted" }, "No jobs."));
      drawStorage(storage, history);
      replace(updated, `Updated ${new Date(activity.at).toLocaleTimeString()}`);
      replace(message);
    } catch (error) {
      replace(message, notice("error", errorText(error)));
    }
  }

  function drawStorage(canvas, history) {
    const groups = new Map();
    for (const point of history) {
      const name = `${point.tier} ${point.modality || "all"}`;
      if (!groups.has(name)) groups.set(name, []);
      groups.get(name).push({ x: new Date(point.at).getTime(), y: point.bytes });
    }
    const series = [...groups.entries()].map(([name, points]) => ({ name, points: points.sort((a, b) => a.x - b.x) }));
    replace(document.getElementById("storage-legend"), legend(series.map((s) => s.name)));
    lineChart(canvas, series, { yLabel: "Bytes" });
    canvas.title = series.map((s) => `${s.name}: ${bytes(s.points.at(-1)?.y)}`).join(", ");
  }

  hours.addEventListener("change", refresh);
  await refresh();
  const timer = setInterval(refresh, REFRESH_MS);
  return () => clearInterval(timer);
}
