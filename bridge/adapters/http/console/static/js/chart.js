// A line chart on a canvas: a few series over time, drawn by the console itself (no chart
// library to ship). Colours are told apart by the legend's text as well.

export const COLOURS = ["#0b5cad", "#a4161a", "#1e6b34", "#7a4a00", "#5b2a86", "#006d77"];

export function lineChart(canvas, series, { yLabel = "" } = {}) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(300, canvas.clientWidth) * ratio;
  const height = Math.max(150, canvas.clientHeight) * ratio;
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, width, height);
  const points = series.flatMap((s) => s.points);
  const label = series.map((s) => `${s.name}: ${s.points.length} points`).join("; ");
  canvas.setAttribute("aria-label", `${yLabel} chart. ${label}`);
  if (!points.length) {
    ctx.fillStyle = "#4a5563";
    ctx.font = `${14 * ratio}px system-ui, sans-serif`;
    ctx.fillText("No data yet", 12 * ratio, 24 * ratio);
    return;
  }
  const pad = { left: 64 * ratio, right: 12 * ratio, top: 12 * ratio, bottom: 28 * ratio };
  const xs = points.map((p) => p.x);
  const x0 = Math.min(...xs);
  const x1 = Math.max(...xs, x0 + 1);
  const y1 = Math.max(1, ...points.map((p) => p.y));
  const px = (x) => pad.left + ((x - x0) / (x1 - x0)) * (width - pad.left - pad.right);
  const py = (y) => height - pad.bottom - (y / y1) * (height - pad.top - pad.bottom);
  ctx.strokeStyle = "#cfd6de";
  ctx.fillStyle = "#4a5563";
  ctx.font = `${11 * ratio}px system-ui, sans-serif`;
  for (let i = 0; i <= 4; i += 1) {
    const y = (y1 * i) / 4;
    ctx.beginPath(); ctx.moveTo(pad.left, py(y)); ctx.lineTo(width - pad.right, py(y)); ctx.stroke();
    ctx.fillText(formatNumber(y), 4 * ratio, py(y) + 4 * ratio);
  }
  ctx.fillText(new Date(x0).toLocaleTimeString(), pad.left, height - 8 * ratio);
  const end = new Date(x1).toLocaleTimeString();
  ctx.fillText(end, width - pad.right - ctx.measureText(end).width, height - 8 * ratio);
  series.forEach((s, index) => {
    ctx.strokeStyle = COLOURS[index % COLOURS.length];
    ctx.lineWidth = 2 * ratio;
    ctx.beginPath();
    s.points.forEach((p, i) => (i ? ctx.lineTo(px(p.x), py(p.y)) : ctx.moveTo(px(p.x), py(p.y))));
    ctx.stroke();
  });
}

function formatNumber(n) {
  if (n >= 1e12) return `${(n / 1e12).toFixed(1)}T`;
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)}G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return String(Math.round(n * 10) / 10);
}
