// A small hand-written SVG chart: a group's lag and read rate over the last samples.

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  if (text !== undefined) el.textContent = text;
  return el;
}

function line(values, width, height, top) {
  const known = values.filter((v) => v !== null);
  const peak = known.length ? Math.max(...known) : 0;
  const max = Math.max(1, peak);
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const points = [];
  values.forEach((value, i) => {
    if (value === null) return;
    const y = top + height - (value / max) * height;
    points.push(`${(i * step).toFixed(1)},${y.toFixed(1)}`);
  });
  return { points: points.join(" "), peak };
}

// samples: [{t (ms), lag (number|null), rate (per second|null)}], oldest first
export function groupChart(samples, { width = 260, height = 56, label = "" } = {}) {
  const plotTop = 4;
  const plotHeight = height - 16;
  const root = svg("svg", {
    class: "chart",
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": label,
  });
  root.append(svg("title", {}, label));
  root.append(svg("line", { class: "axis", x1: 0, y1: plotTop + plotHeight, x2: width, y2: plotTop + plotHeight }));
  const lag = line(samples.map((s) => s.lag), width, plotHeight, plotTop);
  const rate = line(samples.map((s) => s.rate), width, plotHeight, plotTop);
  if (lag.points) root.append(svg("polyline", { class: "lag", points: lag.points }));
  if (rate.points) root.append(svg("polyline", { class: "rate", points: rate.points }));
  const span = samples.length > 1 ? Math.round((samples[samples.length - 1].t - samples[0].t) / 1000) : 0;
  root.append(svg("text", { x: 0, y: height - 2 }, `${span}s`));
  root.append(svg("text", { x: width, y: height - 2, "text-anchor": "end" }, `max lag ${lag.peak} · max ${rate.peak.toFixed(1)}/s`));
  return root;
}
