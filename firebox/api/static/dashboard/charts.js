// Small SVG charts drawn by hand: stacked bars and lines over time buckets. No dependencies.
(function () {
  "use strict";
  const NS = "http://www.w3.org/2000/svg";
  const W = 600, H = 220;
  const PAD = { left: 52, right: 10, top: 24, bottom: 26 };
  const PLOT_W = W - PAD.left - PAD.right, PLOT_H = H - PAD.top - PAD.bottom;

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (parent) parent.appendChild(node);
    return node;
  }

  // A round upper bound for the y axis: four gridline steps of 1, 2, 2.5 or 5 times a power of ten.
  function niceMax(value) {
    if (!(value > 0)) return 1;
    const quarter = value / 4;
    const power = Math.pow(10, Math.floor(Math.log10(quarter)));
    for (const step of [1, 2, 2.5, 5, 10]) if (quarter <= step * power) return 4 * step * power;
    return 40 * power;
  }

  function formatNumber(value) {
    if (value >= 1e6) return (value / 1e6).toFixed(value >= 1e7 ? 0 : 1) + "M";
    if (value >= 1e3) return (value / 1e3).toFixed(value >= 1e4 ? 0 : 1) + "k";
    return String(Math.round(value * 100) / 100);
  }

  function drawFrame(svg, labels, maxValue, series) {
    svg.replaceChildren();
    for (let i = 0; i <= 4; i++) {
      const y = PAD.top + PLOT_H - (PLOT_H * i) / 4;
      el("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: "axis" }, svg);
      el("text", { x: PAD.left - 6, y: y + 4, "text-anchor": "end" }, svg).textContent =
        formatNumber((maxValue * i) / 4);
    }
    const every = Math.max(1, Math.ceil(labels.length / 6));
    labels.forEach((label, i) => {
      if (i % every) return;
      const x = PAD.left + (PLOT_W * (i + 0.5)) / labels.length;
      el("text", { x: x, y: H - 8, "text-anchor": "middle" }, svg).textContent = label;
    });
    let legendX = PAD.left;
    for (const s of series) {
      el("rect", { x: legendX, y: 6, width: 10, height: 10, fill: s.color }, svg);
      const text = el("text", { x: legendX + 14, y: 15, class: "legend" }, svg);
      text.textContent = s.name;
      legendX += 24 + s.name.length * 6.5;
    }
  }

  function drawEmpty(svg) {
    el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, svg).textContent =
      "no data in this range";
  }

  // series: [{name, color, values: [number]}], stacked bottom to top.
  function barChart(svg, labels, series) {
    const totals = labels.map((_, i) => series.reduce((sum, s) => sum + (s.values[i] || 0), 0));
    const maxValue = niceMax(Math.max(0, ...totals));
    drawFrame(svg, labels, maxValue, series);
    if (!totals.some((t) => t > 0)) return drawEmpty(svg);
    const slot = PLOT_W / labels.length, width = Math.max(1, slot * 0.7);
    labels.forEach((_, i) => {
      let base = PAD.top + PLOT_H;
      for (const s of series) {
        const height = (PLOT_H * (s.values[i] || 0)) / maxValue;
        if (height <= 0) continue;
        base -= height;
        el("rect", { x: PAD.left + slot * i + (slot - width) / 2, y: base, width: width,
                     height: height, fill: s.color, "data-series": s.name }, svg);
      }
    });
  }

  // series: [{name, color, values: [number|null]}]; null leaves a gap.
  function lineChart(svg, labels, series) {
    const all = series.flatMap((s) => s.values.filter((v) => v !== null && v !== undefined));
    const maxValue = niceMax(Math.max(0, ...all));
    drawFrame(svg, labels, maxValue, series);
    if (!all.length) return drawEmpty(svg);
    const xOf = (i) => PAD.left + (PLOT_W * (i + 0.5)) / labels.length;
    const yOf = (v) => PAD.top + PLOT_H - (PLOT_H * v) / maxValue;
    for (const s of series) {
      let d = "", pen = false;
      s.values.forEach((v, i) => {
        if (v === null || v === undefined) { pen = false; return; }
        d += (pen ? "L" : "M") + xOf(i).toFixed(1) + " " + yOf(v).toFixed(1) + " ";
        pen = true;
        el("circle", { cx: xOf(i), cy: yOf(v), r: 2.5, fill: s.color }, svg);
      });
      if (d) el("path", { d: d.trim(), fill: "none", stroke: s.color, "stroke-width": 2,
                          "data-series": s.name }, svg);
    }
  }

  window.FireboxCharts = { barChart, lineChart };
})();
