// pipesim HTML report: draws each section's timeline from the embedded JSON and handles
// zoom, pan, the time/step toggle, messages and the tooltip. Plain JavaScript and SVG.
(function () {
  "use strict";
  var t0 = performance.now();
  var DATA = JSON.parse(document.getElementById("pipesim-data").textContent);
  var tParsed = performance.now();
  var OPS = DATA.ops;  // op letter -> its name, from pipesim.views.style
  var LABEL_W = 58, AXIS_H = 24, ROW_H = 26, BOX_H = 20, SPAN_LANE = 8, MEM_LANE = 24, RIGHT = 8;
  var state = { mode: "time", a: 0, b: 1, messages: false };
  var tip = document.getElementById("tooltip");
  var views = [];
  var NS = document.querySelector("svg.timeline").namespaceURI;

  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    for (var k in attrs) node.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(node);
    return node;
  }
  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function fmt(x) { return String(Number(x.toPrecision(5))); }
  // a time of the section, in the unit it is shown in (s, ms or us as its span suits)
  function fmtT(sec, t) { return fmt(t * sec.timeScale); }
  function fmtMem(mem, level) { return String(Number((level * mem.scale).toPrecision(3))) + " " + mem.unit; }
  function fmtMemShort(mem, level) {  // fits under "rank 0": "16.9 MB", or "peak 4" rank stashes
    return mem.kind === "bytes" ? fmtMem(mem, level) : "peak " + Number((level * mem.scale).toPrecision(3));
  }

  // Full extent of the x axis: per unit in time mode (sections with one unit share an axis).
  var extentByUnit = {}, maxSteps = 1;
  DATA.sections.forEach(function (s) {
    extentByUnit[s.unit] = Math.max(extentByUnit[s.unit] || 0, s.extent);
    maxSteps = Math.max(maxSteps, s.steps);
  });

  function build(sec, i) {
    var svg = document.querySelector('svg.timeline[data-section="' + i + '"]');
    var mem = sec.memory, memLane = mem.full > 0 ? MEM_LANE : 0;
    var lane = sec.spans.length ? SPAN_LANE : 0, rowH = ROW_H + lane + memLane;
    var height = AXIS_H + sec.ranks * rowH + 4;
    svg.setAttribute("height", height);
    var defs = el("defs", {}, svg);
    var clip = el("clipPath", { id: "clip-" + i }, defs);
    var clipRect = el("rect", { x: LABEL_W, y: 0, width: 10, height: height }, clip);
    var pat = el("pattern", { id: "hatch-" + i, width: 4, height: 4,
      patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" }, defs);
    el("rect", { width: 4, height: 4, fill: "#e5e7eb" }, pat);
    el("rect", { width: 2, height: 4, fill: "#9ca3af" }, pat);
    var marker = el("marker", { id: "arrow-" + i, viewBox: "0 0 6 6", refX: 6, refY: 3,
      markerWidth: 6, markerHeight: 6, orient: "auto" }, defs);
    el("path", { d: "M0,0 L6,3 L0,6 z", fill: "#374151" }, marker);
    var bg = el("g", {}, svg), rowBgs = [];
    for (var r = 0; r < sec.ranks; r++) {
      rowBgs.push(el("rect", { class: "row-bg" + (r % 2 ? " alt" : ""), x: LABEL_W,
        y: AXIS_H + r * rowH, height: rowH }, bg));
      var label = el("text", { class: "rank-label", x: 4, y: AXIS_H + r * rowH + ROW_H / 2 }, bg);
      label.textContent = "rank " + r;
    }
    var grid = el("g", { class: "grid" }, svg);
    var plot = el("g", { "clip-path": "url(#clip-" + i + ")" });  // attached after its first draw
    var memG = el("g", {}, plot), boxes = el("g", {}, plot), spanG = el("g", {}, plot);
    var msgG = el("g", { class: "msgs off" }, plot);
    var v = { index: i, sec: sec, svg: svg, plot: plot, chars: [], rowH: rowH, height: height, clipRect: clipRect, rowBgs: rowBgs,
      grid: grid, msgG: msgG, rects: [], labels: [], spans: [], lines: null, width: 0,
      memBgs: [], memPaths: [] };
    if (memLane) {
      mem.ranks.forEach(function (changes, r) {
        var top = AXIS_H + r * rowH + ROW_H + lane, peak = 0;
        changes.forEach(function (c) { peak = Math.max(peak, c[2]); });
        v.memBgs.push(el("rect", { class: "mem-bg", x: LABEL_W, y: top, height: memLane - 4 }, memG));
        var path = el("path", { class: "mem", "data-rank": r, "data-peak": peak }, memG);
        el("title", {}, path).textContent = "rank " + r + ": activations kept for backward, peak " + fmtMem(mem, peak);
        v.memPaths.push({ path: path, changes: changes, base: top + memLane - 4 });
        var label = el("text", { class: "mem-peak", x: 4, y: top + (memLane - 4) / 2 }, bg);
        label.textContent = fmtMemShort(mem, peak);
      });
    }
    sec.events.forEach(function (ev, j) {
      var op = ev[1].replace(/^\d+/, "").charAt(0), mb = ev[1].replace(/^\d+[FIWB]/, "");
      var y = AXIS_H + ev[0] * rowH + (ROW_H - BOX_H) / 2;
      v.rects.push(el("rect", { class: "act op-" + op + (ev[5] % 2 ? " odd" : ""), y: y, height: BOX_H, rx: 3,
        "data-action": ev[1], "data-rank": ev[0], "data-i": j }, boxes));
      var t = el("text", { class: "mb op-" + op + (ev[5] % 2 ? " odd" : ""), y: y + BOX_H / 2 }, boxes);
      t.textContent = mb;
      v.labels.push(t);
      v.chars.push(mb.length);
    });
    sec.spans.forEach(function (sp, j) {
      v.spans.push(el("rect", { class: "span", y: AXIS_H + sp[0] * rowH + ROW_H - 2,
        height: lane - 2, fill: "url(#hatch-" + i + ")", "data-span": sp[1],
        "data-rank": sp[0], "data-j": j }, spanG));
    });
    svg.addEventListener("mouseover", function (e) { hover(v, e); });
    svg.addEventListener("mousemove", moveTip);
    svg.addEventListener("mouseleave", function () { unhover(v); });
    svg.addEventListener("wheel", function (e) { wheel(v, e); }, { passive: false });
    svg.addEventListener("mousedown", function (e) { startDrag(v, e); });
    return v;
  }

  // x range of event j: [start, end] in time mode, [step, step + 1] in step mode.
  function span(sec, ev) { return state.mode === "time" ? [ev[2], ev[3]] : [ev[4], ev[4] + 1]; }
  function extent(v) { return state.mode === "time" ? extentByUnit[v.sec.unit] || 1 : maxSteps; }

  function layout(v) {
    v.width = Math.max(200, v.svg.clientWidth || v.svg.parentNode.clientWidth || 800);
    v.plotW = v.width - LABEL_W - RIGHT;
    v.clipRect.setAttribute("width", v.plotW);
    v.rowBgs.forEach(function (r) { r.setAttribute("width", v.plotW); });
    v.memBgs.forEach(function (r) { r.setAttribute("width", v.plotW); });
  }

  function draw(v) {
    var ext = extent(v), lo = state.a * ext, hi = state.b * ext, k = v.plotW / (hi - lo);
    var gap = state.mode === "step" ? Math.min(0.06 * k, 2) : 0;
    function x(t) { return LABEL_W + (t - lo) * k; }
    v.x = x;
    v.sec.events.forEach(function (ev, j) {
      var s = span(v.sec, ev), x0 = x(s[0]) + gap, w = Math.max(1, x(s[1]) - gap - x0);
      var rect = v.rects[j], label = v.labels[j];
      rect.setAttribute("x", x0);
      rect.setAttribute("width", w);
      label.setAttribute("x", x0 + w / 2);
      var show = w >= 7 * v.chars[j] + 6;
      if (show !== label.shown) { label.style.display = show ? "" : "none"; label.shown = show; }
    });
    v.spans.forEach(function (r, j) {
      var sp = v.sec.spans[j], on = state.mode === "time";
      r.style.display = on ? "" : "none";
      if (on) { r.setAttribute("x", x(sp[2])); r.setAttribute("width", Math.max(1, x(sp[3]) - x(sp[2]))); }
    });
    drawMemory(v, x(0), x(ext));
    if (state.messages) drawMessages(v);
    drawAxis(v, lo, hi);
    v.svg.setAttribute("data-view-start", fmt(lo));
    v.svg.setAttribute("data-view-end", fmt(hi));
    v.svg.setAttribute("data-mode", state.mode);
  }

  // Each rank's level as a step area: it changes when an F starts or a freeing action ends.
  function drawMemory(v, x0, x1) {
    var mem = v.sec.memory, h = MEM_LANE - 4;
    v.memPaths.forEach(function (m) {
      var d = "M" + x0 + "," + m.base, y = m.base;
      m.changes.forEach(function (c) {
        var xc = v.x(span(v.sec, v.sec.events[c[0]])[c[1]]);
        d += "L" + xc + "," + y;
        y = m.base - c[2] / mem.full * h;
        d += "L" + xc + "," + y;
      });
      m.path.setAttribute("d", d + "L" + x1 + "," + y + "L" + x1 + "," + m.base + "Z");
    });
  }

  function drawMessages(v) {
    if (!v.lines) {
      v.lines = v.sec.messages.map(function () { return el("line", { "marker-end": "url(#arrow-" + v.index + ")" }, v.msgG); });
    }
    v.sec.messages.forEach(function (m, j) {
      var p = v.sec.events[m[0]], c = v.sec.events[m[1]], down = m[3] > m[2];
      var x1 = state.mode === "time" ? v.x(m[4]) : v.x(p[4] + 1);
      var x2 = state.mode === "time" ? v.x(m[5]) : v.x(c[4]);
      var off = (ROW_H - BOX_H) / 2;
      var y1 = AXIS_H + m[2] * v.rowH + (down ? ROW_H - off : off);
      var y2 = AXIS_H + m[3] * v.rowH + (down ? off : ROW_H - off);
      var line = v.lines[j];
      line.setAttribute("x1", x1); line.setAttribute("y1", y1);
      line.setAttribute("x2", x2); line.setAttribute("y2", y2);
    });
  }

  function niceStep(raw) {
    var p = Math.pow(10, Math.floor(Math.log10(raw))), n = raw / p;
    return p * (n < 1.5 ? 1 : n < 3.5 ? 2 : n < 7.5 ? 5 : 10);
  }

  function drawAxis(v, lo, hi) {
    while (v.grid.firstChild) v.grid.removeChild(v.grid.firstChild);
    var step = niceStep((hi - lo) / Math.max(2, v.plotW / 90));
    if (state.mode === "step") step = Math.max(1, Math.round(step));
    for (var t = Math.ceil(lo / step) * step; t <= hi + 1e-9 * step; t += step) {
      var x = Math.round(v.x(t)) + 0.5;
      el("line", { x1: x, x2: x, y1: AXIS_H - 4, y2: v.height - 4 }, v.grid);
      el("text", { x: x, y: AXIS_H - 9 }, v.grid).textContent =
        state.mode === "time" ? fmtT(v.sec, t) : fmt(t);
    }
    el("text", { class: "unit", x: LABEL_W - 6, y: AXIS_H - 9 }, v.grid).textContent =
      state.mode === "time" ? v.sec.timeUnit : "step";
  }

  var pending = false;
  function redraw() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(function () { pending = false; drawAll(); });
  }
  function drawAll() {
    views.forEach(draw);
    var first = views[0];
    window.pipesimView = { mode: state.mode, a: state.a, b: state.b,
      start: Number(first.svg.getAttribute("data-view-start")),
      end: Number(first.svg.getAttribute("data-view-end")) };
  }

  // Zoom about fraction `at` of the visible range by `factor` (< 1 zooms in).
  function zoom(factor, at) {
    var w = state.b - state.a, c = state.a + (at === undefined ? 0.5 : at) * w;
    var nw = Math.min(1, Math.max(1e-5, w * factor));
    setRange(c - (c - state.a) * nw / w, nw);
  }
  function setRange(a, w) {
    a = Math.min(Math.max(0, a), 1 - w);
    state.a = a; state.b = a + w;
    redraw();
  }
  function pan(frac) { setRange(state.a + frac * (state.b - state.a), state.b - state.a); }

  function wheel(v, e) {
    e.preventDefault();
    if (Math.abs(e.deltaX) > Math.abs(e.deltaY)) { pan(e.deltaX / v.plotW); return; }
    var rect = v.svg.getBoundingClientRect();
    var at = Math.min(1, Math.max(0, (e.clientX - rect.left - LABEL_W) / v.plotW));
    zoom(e.deltaY > 0 ? 1.25 : 0.8, at);
  }

  var drag = null;
  function startDrag(v, e) {
    if (e.button !== 0) return;
    drag = { v: v, x: e.clientX, a: state.a };
    v.svg.classList.add("dragging");
    e.preventDefault();
  }
  window.addEventListener("mousemove", function (e) {
    if (!drag) return;
    var w = state.b - state.a;
    setRange(drag.a - (e.clientX - drag.x) / drag.v.plotW * w, w);
  });
  window.addEventListener("mouseup", function () {
    if (drag) drag.v.svg.classList.remove("dragging");
    drag = null;
  });

  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var k = e.key;
    if (k === "+" || k === "=") zoom(0.8);
    else if (k === "-" || k === "_") zoom(1.25);
    else if (k === "ArrowLeft") pan(-0.1);
    else if (k === "ArrowRight") pan(0.1);
    else if (k === "0") setRange(0, 1);
    else return;
    e.preventDefault();
  });

  // Tooltip: the action, its times and what it waited for (the latest-ready input is marked).
  var hot = [];
  function unhover() {
    hot.forEach(function (r) { r.classList.remove("hot", "dep"); });
    hot = [];
    tip.hidden = true;
  }
  function hover(v, e) {
    var t = e.target, unit = " " + esc(v.sec.timeUnit);
    unhover();
    if (t.hasAttribute("data-i")) tip.innerHTML = actionTip(v, Number(t.getAttribute("data-i")), unit);
    else if (t.hasAttribute("data-j")) tip.innerHTML = spanTip(v.sec, v.sec.spans[Number(t.getAttribute("data-j"))], unit);
    else return;
    tip.hidden = false;
    moveTip(e);
  }
  function actionTip(v, j, unit) {
    var ev = v.sec.events[j], a = ev[1], op = a.replace(/^\d+/, "").charAt(0);
    var m = /^(\d+)[FIWB](\d+)$/.exec(a);
    v.rects[j].classList.add("hot");
    hot.push(v.rects[j]);
    var waits = v.sec.deps[j].map(function (d) {
      var p = v.sec.events[d[0]];
      v.rects[d[0]].classList.add("dep");
      hot.push(v.rects[d[0]]);
      var via = p[0] !== ev[0] ? " from rank " + p[0] + " (message)" : " (same rank)";
      return { t: d[1], html: esc(p[1]) + via + ", ready at " + fmtT(v.sec, d[1]) + unit };
    });
    var prev = j > 0 && v.sec.events[j - 1][0] === ev[0] ? v.sec.events[j - 1] : null;
    if (prev) waits.push({ t: prev[3], html: "rank free after " + esc(prev[1]) + " at " + fmtT(v.sec, prev[3]) + unit });
    var latest = waits.reduce(function (b, w) { return !b || w.t > b.t ? w : b; }, null);
    var items = waits.map(function (w) {
      return "<li" + (w === latest ? ' class="last"' : "") + ">" + w.html + (w === latest ? " ← last" : "") + "</li>";
    }).join("");
    return '<div class="t">' + esc(a) + "</div>" +
      '<div><span class="k">' + OPS[op] + " · stage " + m[1] + " · microbatch " + m[2] + " · rank " + ev[0] + "</span></div>" +
      "<div>start " + fmtT(v.sec, ev[2]) + unit + " · end " + fmtT(v.sec, ev[3]) + unit + "</div>" +
      "<div>duration " + fmtT(v.sec, ev[3] - ev[2]) + unit + " · step " + ev[4] + "</div>" +
      (items ? '<div class="k">waited for</div><ul>' + items + "</ul>" : '<div class="k">no inputs</div>');
  }
  function spanTip(sec, sp, unit) {
    return '<div class="t">' + esc(sp[1]) + '</div><div><span class="k">rank ' + sp[0] + "</span></div>" +
      "<div>start " + fmtT(sec, sp[2]) + unit + " · end " + fmtT(sec, sp[3]) + unit + "</div>" +
      "<div>duration " + fmtT(sec, sp[3] - sp[2]) + unit + "</div>";
  }
  function moveTip(e) {
    if (tip.hidden) return;
    var x = e.clientX + 14, y = e.clientY + 14, w = tip.offsetWidth, h = tip.offsetHeight;
    if (x + w > window.innerWidth - 4) x = Math.max(4, e.clientX - w - 14);
    if (y + h > window.innerHeight - 4) y = Math.max(4, e.clientY - h - 14);
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  }

  function setMode(mode) {
    state.mode = mode;
    ["time", "step"].forEach(function (m) {
      var b = document.getElementById("mode-" + m);
      b.classList.toggle("on", m === mode);
      b.setAttribute("aria-pressed", String(m === mode));
    });
    setRange(0, 1);
  }
  document.getElementById("mode-time").addEventListener("click", function () { setMode("time"); });
  document.getElementById("mode-step").addEventListener("click", function () { setMode("step"); });
  document.getElementById("zoom-in").addEventListener("click", function () { zoom(0.8); });
  document.getElementById("zoom-out").addEventListener("click", function () { zoom(1.25); });
  document.getElementById("zoom-reset").addEventListener("click", function () { setRange(0, 1); });
  var box = document.getElementById("show-messages");
  box.addEventListener("change", function () {
    state.messages = box.checked;
    views.forEach(function (v) { v.msgG.classList.toggle("off", !state.messages); });
    redraw();
  });
  window.addEventListener("resize", function () { views.forEach(layout); redraw(); });

  // Measure the empty plots first, draw into detached groups, then attach: one layout in all.
  views = DATA.sections.map(build);
  views.forEach(layout);
  var tBuilt = performance.now();
  drawAll();
  views.forEach(function (v) { v.svg.appendChild(v.plot); });
  window.pipesimTimes = { parse: tParsed - t0, build: tBuilt - tParsed, draw: performance.now() - tBuilt };
  var n = DATA.sections.reduce(function (s, x) { return s + x.events.length; }, 0);
  var ms = performance.now() - t0;
  document.body.setAttribute("data-render-ms", ms.toFixed(1));
  document.body.setAttribute("data-ready", "1");
  console.info("pipesim: drew " + n + " actions in " + ms.toFixed(1) + " ms");
  requestAnimationFrame(function () {
    setTimeout(function () {
      var painted = performance.now() - t0;
      document.body.setAttribute("data-paint-ms", painted.toFixed(1));
      console.info("pipesim: first frame after " + painted.toFixed(1) + " ms");
    }, 0);
  });
})();
