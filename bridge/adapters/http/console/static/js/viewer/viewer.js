// The review viewer: series list with thumbnails, one series shown at a time, scrolled with
// the mouse wheel or keys, window/level by dragging or presets, zoom and pan, the patient
// banner, frames prefetched in the background. Images are rendered by the bridge (rendered
// DICOMweb), so every stored transfer syntax shows the same way. Not for diagnosis.
import { request } from "../api.js";
import { dicomDate, el, personName, replace } from "../ui.js";
import { TAGS, text, value, values } from "./dicomjson.js";
import { FrameSource } from "./frames.js";

const JSON_TYPE = "application/dicom+json";
export const CT_PRESETS = [
  ["Soft tissue", 40, 400], ["Lung", -600, 1500], ["Bone", 480, 2500], ["Brain", 40, 80],
];

export async function openViewer(container, studyUid) {
  const study = `/dicomweb/studies/${encodeURIComponent(studyUid)}`;
  const state = { series: [], current: null, source: null, index: 0, zoom: 1, panX: 0, panY: 0,
    center: null, width: null, modality: "", drawn: 0, stopped: false };
  const canvas = el("canvas", { tabindex: 0, role: "img", "aria-label": "Image of the series",
    dataset: { frame: "0", frames: "0", loaded: "0", drawn: "0" } });
  const banner = el("div", { class: "banner" }, el("span", { id: "patient" }), el("span", { id: "study" }));
  const status = el("div", { class: "status", "aria-live": "off" });
  const tools = el("div", { class: "tools", role: "toolbar", "aria-label": "Viewer tools" });
  const list = el("aside", { "aria-label": "Series" });
  const stage = el("div", { class: "stage" }, canvas, banner, tools, status);
  replace(container, el("div", { class: "viewer-layout" }, list, stage));

  const seriesAnswer = await request(`${study}/series`, { accept: JSON_TYPE });
  state.series = (seriesAnswer || []).map((item) => ({
    uid: text(item, TAGS.seriesUid), modality: text(item, TAGS.modality),
    description: text(item, TAGS.seriesDescription),
    number: Number(value(item, TAGS.seriesNumber, 0)),
    count: Number(value(item, TAGS.seriesInstances, 0)),
  })).sort((a, b) => a.number - b.number);
  if (!state.series.length) throw new Error("This study has no series to show.");

  const ctx = canvas.getContext("2d");

  function lookWindow() {
    return state.center === null ? null : `${Math.round(state.center)},${Math.max(1, Math.round(state.width))}`;
  }

  function lookViewport() {
    if (state.zoom > 1) return null; // zoomed in: full resolution
    const ratio = window.devicePixelRatio || 1;
    return `${Math.round(canvas.clientWidth * ratio)},${Math.round(canvas.clientHeight * ratio)}`;
  }

  function draw() {
    const ratio = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const h = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, w, h);
    const source = state.source;
    if (!source) return;
    const bitmap = source.cached(state.index) || state.last;
    if (bitmap) {
      const scale = Math.min(w / bitmap.width, h / bitmap.height) * state.zoom;
      const dw = bitmap.width * scale;
      const dh = bitmap.height * scale;
      ctx.imageSmoothingEnabled = true;
      ctx.drawImage(bitmap, (w - dw) / 2 + state.panX * ratio, (h - dh) / 2 + state.panY * ratio, dw, dh);
      state.last = bitmap;
      state.drawn += 1;
      canvas.dataset.drawn = String(state.drawn);
      if (!canvas.dataset.firstImage) {
        canvas.dataset.firstImage = String(performance.now());
        performance.mark("bridge-first-image");
      }
    }
    const wl = state.center === null ? "WL default" : `WL ${Math.round(state.center)}/${Math.round(state.width)}`;
    status.textContent = `Image ${state.index + 1}/${source.frames.length} · ${wl} · ${Math.round(state.zoom * 100)}%`;
    canvas.dataset.frame = String(state.index);
    canvas.setAttribute("aria-label", `Image ${state.index + 1} of ${source.frames.length}`);
  }

  async function show(index) {
    const source = state.source;
    if (!source) return;
    state.index = Math.max(0, Math.min(source.frames.length - 1, index));
    if (!source.cached(state.index)) {
      const wanted = state.index;
      try { await source.load(wanted); } catch { /* shown as not loaded */ }
      if (wanted !== state.index || source !== state.source) return;
    }
    draw();
  }

  function relook() {
    state.source.setLook({ window: lookWindow(), viewport: lookViewport() });
    show(state.index).then(() => state.source && state.source.prefetch(state.index));
  }

  async function openSeries(series) {
    if (state.source) state.source.close();
    state.current = series;
    for (const button of list.querySelectorAll("button.series")) {
      button.setAttribute("aria-pressed", String(button.dataset.uid === series.uid));
    }
    const base = `${study}/series/${encodeURIComponent(series.uid)}`;
    const instances = await request(`${base}/instances`, { accept: JSON_TYPE });
    const frames = [];
    const sorted = (instances || []).map((item) => ({
      sop: text(item, TAGS.sopUid), number: Number(value(item, TAGS.instanceNumber, 0)),
      count: Math.max(1, Number(value(item, TAGS.frames, 1)) || 1),
    })).sort((a, b) => a.number - b.number);
    for (const instance of sorted) {
      for (let f = 1; f <= instance.count; f += 1) frames.push({ sop: instance.sop, frame: f });
    }
    const source = new FrameSource(base, frames);
    state.source = source;
    state.index = 0;
    state.last = null;
    state.modality = series.modality;
    source.setLook({ window: lookWindow(), viewport: lookViewport() });
    source.onLoaded = () => { canvas.dataset.loaded = String(source.loaded); };
    canvas.dataset.frames = String(frames.length);
    canvas.dataset.loaded = "0";
    if (!frames.length) return;
    await show(0);
    banners(base, sorted[0].sop);
    source.prefetch(0);
  }

  async function banners(base, sop) {
    try {
      const [meta] = await request(`${base}/instances/${encodeURIComponent(sop)}/metadata`, { accept: JSON_TYPE });
      const born = dicomDate(text(meta, TAGS.birthDate));
      replace(banner.firstChild, `${personName(value(meta, TAGS.patientName, ""))} · ID ${text(meta, TAGS.patientId)}`,
        born ? ` · born ${born}` : "", text(meta, TAGS.sex) ? ` · ${text(meta, TAGS.sex)}` : "");
      replace(banner.lastChild, `${dicomDate(text(meta, TAGS.studyDate))} ${text(meta, TAGS.studyDescription)}`);
      const centers = values(meta, TAGS.windowCenter);
      const widths = values(meta, TAGS.windowWidth);
      if (state.center === null && centers.length && widths.length) {
        state.header = [Number(centers[0]), Number(widths[0])];
      }
    } catch { /* the banner stays empty; the images still show */ }
  }

  function setWindow(center, width) {
    state.center = center;
    state.width = Math.max(1, width);
    relook();
  }

  // Series list with thumbnails.
  const thumbnails = [];
  for (const series of state.series) {
    const img = el("img", { alt: `Series ${series.number} thumbnail` });
    const button = el("button", { type: "button", class: "series", dataset: { uid: series.uid },
      "aria-pressed": "false", onclick: () => openSeries(series) },
    img, el("span", {}, `${series.modality} ${series.number} · ${series.description || ""} (${series.count})`));
    list.append(button);
    // Fetched once the first image is shown: they must not delay it.
    thumbnails.push(() => request(`${study}/series/${encodeURIComponent(series.uid)}/thumbnail?viewport=140,140`,
      { accept: "image/jpeg", raw: true })
      .then((r) => r.blob()).then((blob) => { img.src = URL.createObjectURL(blob); })
      .catch(() => { img.alt = `Series ${series.number}: no thumbnail`; }));
  }

  // Tools.
  const toolButton = (label, action, attrs = {}) => el("button", { type: "button", onclick: action, ...attrs }, label);
  tools.append(
    ...CT_PRESETS.map(([name, c, w]) => toolButton(name, () => setWindow(c, w), { dataset: { preset: name } })),
    toolButton("Default window", () => { state.center = null; relook(); }, { dataset: { tool: "default-window" } }),
    toolButton("Zoom in", () => { state.zoom = Math.min(8, state.zoom * 1.25); relook(); }, { dataset: { tool: "zoom-in" } }),
    toolButton("Zoom out", () => { state.zoom = Math.max(0.25, state.zoom / 1.25); relook(); }, { dataset: { tool: "zoom-out" } }),
    toolButton("Reset", () => { state.zoom = 1; state.panX = 0; state.panY = 0; state.center = null; relook(); },
      { dataset: { tool: "reset" } }),
  );

  // Scrolling: the wheel and the keys.
  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    show(state.index + (event.deltaY > 0 ? 1 : -1));
  }, { passive: false });
  canvas.addEventListener("keydown", (event) => {
    const steps = { ArrowDown: 1, ArrowRight: 1, PageDown: 10, ArrowUp: -1, ArrowLeft: -1, PageUp: -10 };
    if (event.key in steps) { event.preventDefault(); show(state.index + steps[event.key]); }
    else if (event.key === "Home") show(0);
    else if (event.key === "End") show(Number.MAX_SAFE_INTEGER);
    else if (event.key === "+") { state.zoom = Math.min(8, state.zoom * 1.25); relook(); }
    else if (event.key === "-") { state.zoom = Math.max(0.25, state.zoom / 1.25); relook(); }
  });

  // Dragging: window/level (left button), pan (shift or the middle button).
  let drag = null;
  canvas.addEventListener("pointerdown", (event) => {
    canvas.focus();
    const [c, w] = state.center === null ? (state.header || [40, 400]) : [state.center, state.width];
    drag = { x: event.clientX, y: event.clientY, pan: event.shiftKey || event.button === 1,
      center: c, width: w, panX: state.panX, panY: state.panY };
    canvas.setPointerCapture(event.pointerId);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drag) return;
    const dx = event.clientX - drag.x;
    const dy = event.clientY - drag.y;
    if (drag.pan) {
      state.panX = drag.panX + dx;
      state.panY = drag.panY + dy;
      draw();
    } else {
      state.center = drag.center + dy * 2;
      state.width = Math.max(1, drag.width + dx * 4);
      draw();
    }
  });
  canvas.addEventListener("pointerup", () => {
    if (drag && !drag.pan) relook();
    drag = null;
  });
  const resize = new ResizeObserver(() => draw());
  resize.observe(stage);

  await openSeries(state.series[0]);
  thumbnails.forEach((load) => load());
  canvas.focus();
  return () => {
    state.stopped = true;
    resize.disconnect();
    if (state.source) state.source.close();
  };
}
