// Small inline-SVG line charts for telemetry (no chart library).

const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

/**
 * A chart of one or two series. `series`: [{values: number[], cls: "s1"}]; `max`: fixed top
 * of the scale (e.g. 100 for percentages) or null to scale to the data.
 */
export function lineChart(series, { max = null, points = 60, label = "" } = {}) {
  const W = 300;
  const H = 80;
  const el = svg("svg", {
    viewBox: `0 0 ${W} ${H}`,
    preserveAspectRatio: "none",
    class: "chart",
    role: "img",
    "aria-label": label,
  });
  for (const y of [0.25, 0.5, 0.75]) el.append(svg("line", { x1: 0, x2: W, y1: H * y, y2: H * y, class: "grid" }));
  const all = series.flatMap((s) => s.values).filter((v) => Number.isFinite(v));
  const top = max ?? Math.max(1, ...all) * 1.15;
  // Few samples still fill most of the width; from `points` samples on, the chart scrolls.
  const longest = Math.max(0, ...series.map((s) => Math.min(points, s.values.length)));
  const step = W / Math.max(1, Math.max(longest, Math.min(points, 20)) - 1);
  for (const s of series) {
    const vals = s.values.slice(-points);
    if (!vals.length) continue;
    const x0 = W - (vals.length - 1) * step;
    const pts = vals.map((v, i) => [x0 + i * step, H - (Math.max(0, Math.min(v, top)) / top) * (H - 2) - 1]);
    const line = pts.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
    if (s.fill !== false) {
      el.append(svg("polygon", { points: `${pts[0][0].toFixed(1)},${H} ${line} ${pts.at(-1)[0].toFixed(1)},${H}`, class: `area ${s.cls}` }));
    }
    el.append(svg("polyline", { points: line, class: `line ${s.cls}`, "vector-effect": "non-scaling-stroke" }));
  }
  el.dataset.points = String(Math.max(0, ...series.map((s) => s.values.length)));
  return el;
}
