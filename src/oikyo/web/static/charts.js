// oikyo dashboard: small hand-written SVG charts (no libraries).
//
//   const chart = new charts.LineChart(element, {title: "loss", series: ["loss", "eval_loss"]});
//   chart.set("loss", [[1, 2.3], [2, 2.1]]);     // replace a series: [[x, y], ...]
//   chart.add("loss", 3, 1.9);                    // append one point (redraws on the next frame)
//   new charts.LineChart(element, {series: ["a"], hlines: [{y: 1, label: "threshold"}]});  // dashed reference lines
//   charts.bars(element, ["0", "1", "2-3"], [0, 5, 7], {title: "tokens per example"});
//
// The element's data-points attribute holds how many points a line chart shows (tests read it).
"use strict";

const charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];
  const W = 480, H = 220, PAD = {left: 52, right: 12, top: 10, bottom: 26};
  const MAX_DRAWN = 800;  // points drawn per series; longer series are thinned evenly (last point kept)

  function svg(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // About ``count`` round tick values covering [low, high].
  function ticks(low, high, count = 5) {
    if (!(high > low)) return [low];
    const raw = (high - low) / count;
    const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) || raw;
    const out = [];
    for (let v = Math.ceil(low / step) * step; v <= high + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
    return out;
  }

  // A number for an axis or a legend; ``step`` (the tick spacing) decides how many digits tell ticks apart.
  function label(value, step) {
    const a = Math.abs(value);
    if (a === 0) return "0";
    const digits = step ? Math.min(6, Math.max(1, Math.floor(Math.log10(a)) - Math.floor(Math.log10(step)) + 2)) : 3;
    if (a < 1e-3 || a >= 1e6) return value.toExponential(Math.max(0, digits - 1)).replace(/\.?0+e/, "e");
    if (a >= 1e4) return Number((value / 1000).toPrecision(Math.max(2, digits - 3 + 2))) + "k";
    return String(Number(value.toPrecision(Math.max(digits, 1))));
  }

  function thin(points) {
    if (points.length <= MAX_DRAWN) return points;
    const stride = points.length / MAX_DRAWN, out = [];
    for (let i = 0; i < MAX_DRAWN; i++) out.push(points[Math.floor(i * stride)]);
    out.push(points[points.length - 1]);
    return out;
  }

  function header(container, title) {
    const head = document.createElement("div");
    head.className = "chart-title";
    head.append(title || container.dataset.title || "");
    return head;
  }

  class LineChart {
    // ``zero``: the y axis starts at 0 (counts); ``xRange``: a fixed [min, max] for the x axis;
    // ``hlines``: horizontal reference lines [{y, label}], always inside the y range (a threshold).
    constructor(container, {title, series = [], empty = "no data yet", zero = false, xRange = null, hlines = []} = {}) {
      this.container = container;
      this.hlines = hlines;
      this.zero = zero;
      this.xRange = xRange;
      this.title = title || container.dataset.title || "";
      this.empty = empty;
      this.series = new Map();
      series.forEach((name) => this.series.set(name, []));
      this.pending = false;
      this.render();
    }

    set(name, points) {
      this.series.set(name, points.map(([x, y]) => [Number(x), Number(y)]).filter(([, y]) => Number.isFinite(y)));
      this.schedule();
    }

    add(name, x, y) {
      if (!Number.isFinite(Number(y))) return;
      const points = this.series.get(name) || [];
      const last = points[points.length - 1];
      if (last && x <= last[0]) {
        // A step seen again: keep the newest value. An earlier step than the last means a later attempt
        // resumed before it, so the points after it were a lost attempt's: they are dropped (it redraws them).
        const at = points.findIndex((p) => p[0] >= x);
        points.splice(at, points[at][0] === x && x === last[0] ? 1 : points.length - at, [Number(x), Number(y)]);
      } else {
        points.push([Number(x), Number(y)]);
      }
      this.series.set(name, points);
      this.schedule();
    }

    get count() {
      let n = 0;
      for (const points of this.series.values()) n += points.length;
      return n;
    }

    schedule() {
      if (this.pending) return;
      this.pending = true;
      requestAnimationFrame(() => { this.pending = false; this.render(); });
    }

    render() {
      const entries = [...this.series.entries()];
      const all = entries.flatMap(([, points]) => points);
      const head = header(this.container, this.title);
      entries.forEach(([name, points], i) => {
        const last = points[points.length - 1];
        const item = document.createElement("span");
        item.className = "legend-item";
        item.style.setProperty("--swatch", COLORS[i % COLORS.length]);
        item.textContent = last ? `${name} ${label(last[1])}` : name;
        head.append(item);
      });
      const root = svg("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": this.title});
      this.container.replaceChildren(head, root);
      this.container.dataset.points = String(all.length);
      if (!all.length) {
        const note = document.createElement("div");
        note.className = "no-data";
        note.textContent = this.empty;
        this.container.append(note);
        root.append(svg("line", {class: "axis", x1: PAD.left, y1: H - PAD.bottom, x2: W - PAD.right, y2: H - PAD.bottom}));
        return;
      }
      let [x0, x1] = this.xRange || [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
      const ys = all.map((p) => p[1]).concat(this.hlines.map((line) => line.y));
      let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
      if (this.zero) y0 = Math.min(0, y0);
      if (x1 === x0) { x0 -= 1; x1 += 1; }
      if (y1 === y0) { const d = Math.abs(y0) * 0.1 || 1; if (!this.zero || y0 !== 0) y0 -= d; y1 += d; }
      const margin = (y1 - y0) * 0.05;
      if (!this.zero || y0 < 0) y0 -= margin;
      y1 += margin;
      const sx = (x) => PAD.left + (x - x0) / (x1 - x0) * (W - PAD.left - PAD.right);
      const sy = (y) => H - PAD.bottom - (y - y0) / (y1 - y0) * (H - PAD.top - PAD.bottom);
      const yTicks = ticks(y0, y1, 4), xTicks = ticks(x0, x1, 6);
      const yStep = yTicks.length > 1 ? yTicks[1] - yTicks[0] : 0, xStep = xTicks.length > 1 ? xTicks[1] - xTicks[0] : 0;
      for (const t of yTicks) {
        root.append(svg("line", {class: "grid", x1: PAD.left, x2: W - PAD.right, y1: sy(t), y2: sy(t)}));
        root.append(svg("text", {x: PAD.left - 6, y: sy(t) + 3, "text-anchor": "end"}, label(t, yStep)));
      }
      for (const t of xTicks) {
        root.append(svg("text", {x: sx(t), y: H - PAD.bottom + 14, "text-anchor": "middle"}, label(t, xStep)));
      }
      root.append(svg("line", {class: "axis", x1: PAD.left, y1: H - PAD.bottom, x2: W - PAD.right, y2: H - PAD.bottom}));
      root.append(svg("line", {class: "axis", x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: H - PAD.bottom}));
      for (const line of this.hlines) {
        root.append(svg("line", {class: "hline", x1: PAD.left, x2: W - PAD.right, y1: sy(line.y), y2: sy(line.y),
                                 "data-y": line.y}));
        if (line.label) root.append(svg("text", {class: "hline-label", x: W - PAD.right - 2, y: sy(line.y) - 3,
                                                 "text-anchor": "end"}, line.label));
      }
      entries.forEach(([name, points], i) => {
        if (!points.length) return;
        const color = COLORS[i % COLORS.length];
        const drawn = thin(points);
        const path = drawn.map(([x, y], j) => `${j ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join("");
        root.append(svg("path", {d: path, fill: "none", stroke: color, "stroke-width": 1.8,
                                 "stroke-linejoin": "round", "data-series": name}));
        if (drawn.length <= 40) {  // few points (eval_loss): mark each one
          for (const [x, y] of drawn) {
            const dot = svg("circle", {cx: sx(x), cy: sy(y), r: 2.5, fill: color});
            dot.append(svg("title", {}, `${name} at ${x}: ${label(y)}`));
            root.append(dot);
          }
        }
      });
    }
  }

  // A bar chart of counts per bin (a histogram); empty bins at both ends are left out.
  function bars(container, labels, values, {title} = {}) {
    let first = values.findIndex((v) => v > 0), last = values.length - 1;
    while (last > 0 && !(values[last] > 0)) last--;
    const head = header(container, title);
    if (first < 0) {
      container.replaceChildren(head, Object.assign(document.createElement("p"), {className: "muted", textContent: "no data"}));
      return;
    }
    first = Math.max(0, first - 1);
    last = Math.min(values.length - 1, last + 1);
    const shown = labels.slice(first, last + 1), counts = values.slice(first, last + 1);
    const top = Math.max(...counts);
    const root = svg("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title || "histogram"});
    const slot = (W - PAD.left - PAD.right) / shown.length;
    const base = H - PAD.bottom - 10;
    for (const t of ticks(0, top, 4)) {
      const y = base - t / top * (base - PAD.top);
      root.append(svg("line", {class: "grid", x1: PAD.left, x2: W - PAD.right, y1: y, y2: y}));
      root.append(svg("text", {x: PAD.left - 6, y: y + 3, "text-anchor": "end"}, label(t)));
    }
    shown.forEach((name, i) => {
      const height = counts[i] / top * (base - PAD.top);
      const x = PAD.left + i * slot;
      const bar = svg("rect", {class: "bar", x: x + slot * 0.1, y: base - height, width: slot * 0.8, height: Math.max(height, 0)});
      bar.append(svg("title", {}, `${name}: ${counts[i]}`));
      root.append(bar);
      if (counts[i] > 0 && shown.length <= 20) {
        root.append(svg("text", {x: x + slot / 2, y: base - height - 3, "text-anchor": "middle"}, label(counts[i])));
      }
      root.append(svg("text", {x: x + slot / 2, y: base + 12, "text-anchor": "middle"}, name));
    });
    root.append(svg("line", {class: "axis", x1: PAD.left, y1: base, x2: W - PAD.right, y2: base}));
    container.replaceChildren(head, root);
    container.dataset.bars = String(shown.length);
  }

  return {LineChart, bars, ticks};
})();
