"""The interactive orbit explorer (NERO-style): one self-contained HTML page, data embedded, plain JS + SVG.

Choose an orbit, the runs to overlay and an object (or "all"); a slider over Δ shows that object's rendered
frame and moves a marker along every curve: each run's mean over objects and, for "all", every object's curve
(thin) beside it, or the chosen object's curve. A two-parameter orbit (a grid over two latents) is shown as a
heatmap per measure and run, with a slider per latent. Training range (shaded), chance levels (dashed) and the
direction of "better" are on every chart, as in the PNG figures (`plots`).
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from ssl_eq.orbit.plots import FIXED_LIMITS, PLOTTED, chance_lines
from ssl_eq.utils.io import write_atomic

SKIPPED_CURVES = ("rank", "invariance_to_mean")  # in orbit.json, not worth a chart


def _png_uri(frames: np.ndarray) -> str:
    """(N, S, H, W, 3) uint8 -> data URI of the frames sheet (a row of S frames per object)."""
    from PIL import Image

    n, s, h, w, _ = frames.shape
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frames.transpose(0, 2, 1, 3, 4).reshape(n * h, s * w, 3))).save(buf, "png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _title(name: str) -> str:
    key = "probe" if name.startswith("probe_") else name
    text = PLOTTED.get(key, name)
    return f"{text} ({name.removeprefix('probe_')} part)" if key == "probe" else text


def orbit_payload(runs: dict[str, dict[str, Any]], frames: np.ndarray | None) -> dict[str, Any]:
    """The explorer's data for one orbit: `runs` maps run name -> its orbit.json entry; frames (N, S, H, W, 3)."""
    first = next(iter(runs.values()))
    names = [c for c in dict.fromkeys(c for r in runs.values() for c in r["curves"]) if c not in SKIPPED_CURVES]
    scale = first["scale"]
    charts = []
    for name in names:
        key = "probe" if name.startswith("probe_") else name
        charts.append({"name": name, "title": _title(name), "limits": FIXED_LIMITS.get(key),
                       "chance": [[y, label] for y, label in chance_lines(key, first)]})
    payload = {
        "latent": first["latent"], "unit": first["unit"], "source": first.get("source", "dataset"),
        "parameter": (np.asarray(first["parameter"]) * scale).tolist(), "reference": first["reference_index"],
        "train_band": first.get("train_band"), "objects": [str(o) for o in first["objects"]], "grid": first.get("grid"),
        "charts": charts,
        "runs": {run: {c: {"mean": r["curves"][c]["mean"], "per_object": r["curves"][c].get("per_object")}
                       for c in names if c in r["curves"]} for run, r in runs.items()},
    }
    if frames is not None:
        payload.update(frames=_png_uri(frames), frame_size=[int(frames.shape[2]), int(frames.shape[3])])
    return payload


SCRIPT = r"""
(function () {
  const root = document.getElementById('orbit-explorer');
  const D = JSON.parse(document.getElementById('orbit-data').textContent);
  const $ = (id) => document.getElementById(id);
  const NS = 'http://www.w3.org/2000/svg';
  const COLOURS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];
  const W = 340, H = 210, L = 44, R = 10, T = 26, B = 30;
  const el = (tag, attrs, parent) => {
    const e = document.createElementNS(NS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  };
  const fmt = (v) => (v === null || !isFinite(v)) ? '–' : Number(v).toPrecision(3);
  let img = null;
  const state = {orbit: Object.keys(D)[0], object: 'all', step: 0, step2: 0, runs: null};
  const orbit = () => D[state.orbit];
  const isGrid = () => !!orbit().grid;
  const frameIndex = () => isGrid() ? state.step * orbit().grid.shape[1] + state.step2 : state.step;
  const runNames = () => Object.keys(orbit().runs).filter((r) => state.runs.has(r));

  function setup() {
    const sel = $('oe-orbit');
    sel.innerHTML = '';
    for (const k of Object.keys(D)) sel.add(new Option(k, k));
    sel.value = state.orbit;
    sel.onchange = () => { state.orbit = sel.value; state.runs = null; reset(); };
    reset();
  }

  function reset() {
    const o = orbit();
    state.runs = new Set(Object.keys(o.runs));
    const runs = $('oe-runs');
    runs.innerHTML = '';
    Object.keys(o.runs).forEach((r, i) => {
      const label = document.createElement('label');
      const box = document.createElement('input');
      box.type = 'checkbox'; box.checked = true; box.value = r; box.className = 'oe-run';
      box.onchange = () => { box.checked ? state.runs.add(r) : state.runs.delete(r); draw(); };
      label.appendChild(box);
      label.appendChild(document.createTextNode(' ' + r + ' '));
      label.style.color = COLOURS[i % COLOURS.length];
      runs.appendChild(label);
    });
    const obj = $('oe-object');
    obj.innerHTML = '';
    obj.add(new Option('all (mean)', 'all'));
    o.objects.forEach((id, i) => obj.add(new Option(id, String(i))));
    obj.value = state.object = 'all';
    obj.onchange = () => { state.object = obj.value; draw(); };
    const s1 = $('oe-slider'), s2 = $('oe-slider2');
    const n1 = isGrid() ? o.grid.shape[0] : o.parameter.length;
    s1.max = n1 - 1;
    state.step = isGrid() ? o.grid.reference[0] : o.reference;
    s1.value = state.step;
    s1.oninput = () => { state.step = +s1.value; update(); };
    $('oe-slider2-box').style.display = isGrid() ? '' : 'none';
    if (isGrid()) {
      s2.max = o.grid.shape[1] - 1;
      state.step2 = o.grid.reference[1];
      s2.value = state.step2;
      s2.oninput = () => { state.step2 = +s2.value; update(); };
    }
    img = null;
    if (o.frames) { img = new Image(); img.onload = drawFrame; img.src = o.frames; }
    draw();
  }

  function drawFrame() {
    const o = orbit(), c = $('oe-frame'), ctx = c.getContext('2d');
    ctx.imageSmoothingEnabled = false;
    ctx.fillStyle = '#eee'; ctx.fillRect(0, 0, c.width, c.height);
    const n = state.object === 'all' ? 0 : +state.object, s = frameIndex();
    c.dataset.frame = n + ',' + s;
    if (!img || !img.complete) return;
    const [h, w] = o.frame_size;
    ctx.drawImage(img, s * w, n * h, w, h, 0, 0, c.width, c.height);
  }

  function label() {
    const o = orbit();
    if (isGrid()) {
      const g = o.grid;
      return g.latents.map((l, k) => 'Δ ' + l + ' = ' + fmt(g.parameters[k][k ? state.step2 : state.step]) + ' ' +
                           g.units[k]).join(', ');
    }
    return 'Δ ' + o.latent + ' = ' + fmt(o.parameter[state.step]) + ' ' + o.unit;
  }

  function update() {
    $('oe-value').textContent = label();
    drawFrame();
    const o = orbit(), s = frameIndex();
    for (const m of root.querySelectorAll('.oe-marker')) {
      const v = +m.dataset['v' + s];
      if (isGrid()) {
        m.setAttribute('x', +m.dataset.x0 + (+m.dataset.cw) * state.step2);
        m.setAttribute('y', +m.dataset.y0 + (+m.dataset.ch) * (orbit().grid.shape[0] - 1 - state.step));
      } else {
        m.setAttribute('cx', m.dataset['x' + s]);
        m.setAttribute('cy', isFinite(v) ? m.dataset['y' + s] : -100);
      }
      const t = m.nextSibling;
      if (t && t.classList && t.classList.contains('oe-marker-label')) t.textContent = fmt(m.dataset['v' + s]);
    }
    for (const c of root.querySelectorAll('.oe-cursor')) {
      c.setAttribute('x1', c.dataset['x' + s]); c.setAttribute('x2', c.dataset['x' + s]);
    }
  }

  function series(run, chart) {
    const c = orbit().runs[run][chart.name];
    if (!c) return null;
    if (state.object === 'all') return {main: c.mean, thin: c.per_object || []};
    return {main: (c.per_object || [])[+state.object] || c.mean, thin: [], mean: c.mean};
  }

  function lineChart(chart, box) {
    const o = orbit(), xs = o.parameter;
    const svg = el('svg', {width: W, height: H, class: 'oe-chart', 'data-measure': chart.name}, box);
    let lo = Infinity, hi = -Infinity;
    const all = [];
    runNames().forEach((r) => { const s = series(r, chart); if (s) all.push(s.main, ...s.thin, ...(s.mean ? [s.mean] : [])); });
    all.flat().forEach((v) => { if (v !== null && isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); } });
    chart.chance.forEach(([y]) => { lo = Math.min(lo, y); hi = Math.max(hi, y); });
    if (chart.limits) [lo, hi] = chart.limits;
    if (!isFinite(lo)) { lo = 0; hi = 1; }
    lo = Math.min(lo, 0); if (hi <= lo) hi = lo + 1;
    const x0 = Math.min(...xs), x1 = Math.max(...xs);
    const px = (x) => L + (W - L - R) * (x - x0) / ((x1 - x0) || 1);
    const py = (y) => H - B - (H - T - B) * (y - lo) / (hi - lo);
    el('text', {x: L, y: 14, class: 'oe-title'}, svg).textContent = chart.title;
    if (o.train_band) {
      const a = px(Math.max(o.train_band[0], x0)), b = px(Math.min(o.train_band[1], x1));
      el('rect', {x: a, y: T, width: Math.max(b - a, 0), height: H - T - B, fill: '#2ca02c', opacity: 0.1}, svg);
      el('text', {x: a + 2, y: T + 10, class: 'oe-small'}, svg).textContent = 'training range';
    }
    el('line', {x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: '#999'}, svg);
    el('line', {x1: L, y1: T, x2: L, y2: H - B, stroke: '#999'}, svg);
    [[lo, H - B], [hi, T + 8]].forEach(([v, y]) => {
      el('text', {x: L - 4, y: y, 'text-anchor': 'end', class: 'oe-small'}, svg).textContent = fmt(v);
    });
    [[x0, L], [x1, W - R]].forEach(([v, x]) => {
      el('text', {x: x, y: H - B + 12, 'text-anchor': 'middle', class: 'oe-small'}, svg).textContent = fmt(v);
    });
    el('text', {x: (L + W - R) / 2, y: H - 4, 'text-anchor': 'middle', class: 'oe-small'}, svg).textContent =
      'Δ ' + o.latent + ' (' + o.unit + ')';
    chart.chance.forEach(([y, text]) => {
      el('line', {x1: L, y1: py(y), x2: W - R, y2: py(y), stroke: '#000', 'stroke-dasharray': '4 3', opacity: 0.5}, svg);
      el('text', {x: W - R - 2, y: py(y) - 2, 'text-anchor': 'end', class: 'oe-small'}, svg).textContent = text;
    });
    const path = (vals) => vals.map((v, i) => (v === null || !isFinite(v)) ? null : px(xs[i]) + ',' + py(v))
      .filter((p) => p).join(' ');
    const cursor = el('line', {y1: T, y2: H - B, stroke: '#555', 'stroke-dasharray': '2 2', class: 'oe-cursor'}, svg);
    xs.forEach((x, i) => { cursor.dataset['x' + i] = px(x); });
    Object.keys(o.runs).forEach((r, k) => {
      if (!state.runs.has(r)) return;
      const s = series(r, chart);
      if (!s) return;
      const colour = COLOURS[k % COLOURS.length];
      s.thin.forEach((v) => el('polyline', {points: path(v), fill: 'none', stroke: colour, 'stroke-width': 0.7,
                                            opacity: 0.3, class: 'oe-object-curve'}, svg));
      if (s.mean) el('polyline', {points: path(s.mean), fill: 'none', stroke: colour, 'stroke-dasharray': '5 3',
                                  opacity: 0.7}, svg);
      el('polyline', {points: path(s.main), fill: 'none', stroke: colour, 'stroke-width': 2, class: 'oe-mean'}, svg);
      const m = el('circle', {r: 4.5, fill: colour, stroke: '#fff', class: 'oe-marker', 'data-run': r}, svg);
      s.main.forEach((v, i) => { m.dataset['x' + i] = px(xs[i]); m.dataset['y' + i] = py(v); m.dataset['v' + i] = v; });
      el('text', {x: W - R - 2, y: T + 12 + 11 * k, 'text-anchor': 'end', fill: colour, class: 'oe-small oe-marker-label'}, svg);
    });
  }

  function heatmap(chart, box, run, k) {
    const o = orbit(), g = o.grid, [n1, n2] = g.shape;
    const s = series(run, chart);
    if (!s) return;
    const svg = el('svg', {width: W, height: H, class: 'oe-chart', 'data-measure': chart.name}, box);
    el('text', {x: L, y: 14, class: 'oe-title'}, svg).textContent = chart.title + ' — ' + run;
    const vals = s.main.filter((v) => v !== null && isFinite(v));
    let [lo, hi] = chart.limits || [Math.min(...vals), Math.max(...vals)];
    if (!(hi > lo)) hi = lo + 1;
    const cw = (W - L - R) / n2, ch = (H - T - B) / n1;
    for (let i = 0; i < n1; i++) for (let j = 0; j < n2; j++) {
      const v = s.main[i * n2 + j], t = Math.max(0, Math.min(1, (v - lo) / (hi - lo)));
      el('rect', {x: L + j * cw, y: T + (n1 - 1 - i) * ch, width: cw + 0.5, height: ch + 0.5,
                  fill: isFinite(v) && v !== null ? 'hsl(' + (240 - 240 * t) + ',70%,50%)' : '#ccc'}, svg);
    }
    el('text', {x: L - 4, y: T + 8, 'text-anchor': 'end', class: 'oe-small'}, svg).textContent = g.latents[0] + ' ↑';
    el('text', {x: W - R, y: H - B + 12, 'text-anchor': 'end', class: 'oe-small'}, svg).textContent =
      g.latents[1] + ' →; colour ' + fmt(lo) + ' (blue) … ' + fmt(hi) + ' (red)';
    const m = el('rect', {width: cw, height: ch, fill: 'none', stroke: '#000', 'stroke-width': 2, class: 'oe-marker',
                          'data-run': run}, svg);
    m.dataset.x0 = L; m.dataset.y0 = T; m.dataset.cw = cw; m.dataset.ch = ch;
    s.main.forEach((v, i) => { m.dataset['v' + i] = v; });
    m.setAttribute('x', L); m.setAttribute('y', T);
    el('text', {x: W - R - 2, y: 14, 'text-anchor': 'end', class: 'oe-small oe-marker-label'}, svg);
  }

  function draw() {
    const box = $('oe-charts');
    box.innerHTML = '';
    for (const chart of orbit().charts) {
      if (isGrid()) Object.keys(orbit().runs).forEach((r, k) => { if (state.runs.has(r)) heatmap(chart, box, r, k); });
      else lineChart(chart, box);
    }
    update();
  }

  setup();
})();
"""

STYLE = ("#orbit-explorer{font-family:sans-serif;font-size:13px}#orbit-explorer .oe-controls{display:flex;"
         "flex-wrap:wrap;gap:10px;align-items:center;margin:6px 0}#orbit-explorer .oe-body{display:flex;gap:12px;"
         "align-items:flex-start}#oe-frame{border:1px solid #ccc;image-rendering:pixelated;flex:none}"
         "#oe-charts{display:flex;flex-wrap:wrap;gap:6px}#orbit-explorer .oe-title{font-size:11px;font-weight:bold}"
         "#orbit-explorer .oe-small{font-size:9px;fill:#444}#oe-slider,#oe-slider2{width:260px}")


def explorer_fragment(orbits: dict[str, dict[str, Any]]) -> str:
    """The explorer as an HTML fragment (style, controls, data, script); `orbits` maps a label to an
    `orbit_payload`."""
    data = json.dumps(orbits, allow_nan=False, default=lambda v: None).replace("</", "<\\/")
    return (f"<style>{STYLE}</style><div id='orbit-explorer'><div class='oe-controls'>"
            "<label>orbit <select id='oe-orbit'></select></label><label>object <select id='oe-object'></select>"
            "</label><span id='oe-runs'></span><label>Δ <input type='range' id='oe-slider' min='0' step='1'>"
            "</label><label id='oe-slider2-box'>Δ₂ <input type='range' id='oe-slider2' min='0' step='1'></label>"
            "<b id='oe-value'></b></div><div class='oe-body'><canvas id='oe-frame' width='192' height='192'>"
            f"</canvas><div id='oe-charts'></div></div></div><script type='application/json' id='orbit-data'>{data}"
            f"</script><script>{SCRIPT}</script>")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def write_explorer(results: dict[str, dict[str, dict[str, Any]]], frames: dict[str, np.ndarray], path: Path,
                   title: str = "ssl_eq orbit explorer") -> Path:
    """One self-contained page for every orbit of `results` (key -> run name -> orbit.json entry)."""
    orbits = {key: _finite(orbit_payload(runs, frames.get(key))) for key, runs in results.items()}
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
            f"<h1 style='font-family:sans-serif'>{html.escape(title)}</h1>{explorer_fragment(orbits)}</body></html>\n")
    return write_atomic(Path(path), lambda p: p.write_text(page))
