// structattn report explorer: linked point maps (Plotly), the selected point's patch and maps
// (canvas), its loop and parity (Plotly), and a sortable score table. Data: #sa-data, #sa-figs.
(function () {
  "use strict";
  const t0 = performance.now();  // ms since navigation start: the page and plotly.js parsed up to here
  const D = JSON.parse(document.getElementById("sa-data").textContent);
  const F = JSON.parse(document.getElementById("sa-figs").textContent);
  const root = document.getElementById("sa-explorer");

  function bytes(b64) {
    const s = atob(b64), out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  const f32 = (b64) => new Float32Array(bytes(b64).buffer);
  const n = D.n, K = D.targets.length;
  const pos = f32(D.positions), yTrue = f32(D.yTrue), yPred = f32(D.yPred);
  const yStd = D.yStd ? f32(D.yStd) : null;
  const split = new Int8Array(bytes(D.split).buffer);
  const imgs = D.image.padded.map(bytes), PW = D.image.pw, HALF = D.image.half;
  let img = imgs[0];
  const lutSeq = bytes(D.luts.seq), lutDiv = bytes(D.luts.div);
  const rows = Array.from({length: n}, (_, i) => pos[2 * i]), cols = Array.from({length: n}, (_, i) => pos[2 * i + 1]);
  const mapIndex = D.maps ? new Int32Array(bytes(D.maps.index).buffer) : null;
  const maps = {};  // method -> target -> {res, shared, q: Uint8Array, scale: Float32Array, signed}
  if (D.maps) for (const m of D.maps.methods) {
    maps[m] = {};
    for (const [t, q] of Object.entries(D.maps.maps[m])) {
      maps[m][t] = {res: q.res, shared: q.shared, q: bytes(q.data), scale: f32(q.scale), signed: q.signed};
    }
  }
  const loops = D.loops ? {v: D.loops.voltage, meas: f32(D.loops.measured),
                           fit: D.loops.fitted ? f32(D.loops.fitted) : null} : null;
  const V = loops ? loops.v.length : 0;
  const tDecoded = performance.now();
  // names come from the user's data: into Plotly's text (which reads a few tags) only as entities
  const esc = (t) => String(t).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  const fmt = (x) => (x === null || x === undefined || Number.isNaN(x)) ? "n/a" : Number(x).toPrecision(3);
  const val = (arr, i, k) => arr[i * K + k];
  let target = 0, colourBy = "measured", selected = -1;

  // ---- linked maps --------------------------------------------------------------------
  const P = F.panels.length, linked = document.getElementById("sa-linked");
  const pointTraces = Array.from({length: P}, (_, j) => 1 + j);
  function panelValues(j) {
    const k = target, name = F.panels[j];
    const q = (name === "structure") ? colourBy : name;
    return Array.from({length: n}, (_, i) => {
      if (q === "measured") return val(yTrue, i, k);
      if (q === "predicted") return val(yPred, i, k);
      if (q === "error" || q === "prediction error") return val(yPred, i, k) - val(yTrue, i, k);
      if (q === "uncertainty") return yStd ? val(yStd, i, k) : NaN;
      return split[i];  // "split"
    });
  }
  function colourscale(j) {
    const q = (F.panels[j] === "structure") ? colourBy : F.panels[j];
    if (q === "error" || q === "prediction error") return "RdBu";
    if (q === "split") return [[0, "#1f77b4"], [0.33, "#1f77b4"], [0.34, "#ff7f0e"], [0.66, "#ff7f0e"], [0.67, "#d62728"], [1, "#d62728"]];
    return "Viridis";
  }
  function linkedStyle() {
    // per points trace: colours, colour scale and range, hover text for the chosen target and quantity
    const k = target, u = D.units[k] ? " [" + esc(D.units[k]) + "]" : "";
    const st = {"marker.color": [], "marker.colorscale": [], "marker.cmid": [], "marker.cmin": [], "marker.cmax": [], text: []};
    for (let j = 0; j < P; j++) {
      const v = panelValues(j), q = (F.panels[j] === "structure") ? colourBy : F.panels[j];
      st["marker.color"].push(v);
      st["marker.colorscale"].push(colourscale(j));
      st["marker.cmid"].push((q === "error" || q === "prediction error") ? 0 : null);  // errors: white at zero
      st["marker.cmin"].push(q === "split" ? 0 : null);
      st["marker.cmax"].push(q === "split" ? 2 : null);
      st.text.push(v.map((x, i) => "point " + i + "<br>" + esc(D.targets[k]) + " " + q + ": " +
                         (q === "split" ? (D.splitNames[String(x)] || x) : fmt(x) + u)));
    }
    return st;
  }
  function restyleLinked() { Plotly.restyle(linked, linkedStyle(), pointTraces); }

  // ---- patch and maps (canvas) --------------------------------------------------------
  const W = D.window;
  function drawPatch(canvas, i, map, scaleIdx) {
    // map: {res, q, scale, signed, shared} or null; scaleIdx: row of the stored map
    const ctx = canvas.getContext("2d"), im = ctx.createImageData(W, W);
    const r0 = Math.round(pos[2 * i]), c0 = Math.round(pos[2 * i + 1]);  // padded[r : r+W, c : c+W]
    const res = map ? map.res : 0, step = map ? W / res : 1, base = map ? scaleIdx * res * res : 0;
    for (let y = 0; y < W; y++) for (let x = 0; x < W; x++) {
      const g = img[(r0 + y) * PW + (c0 + x)];
      let R = g, G = g, B = g;
      if (map) {
        const qv = map.q[base + Math.floor(y / step) * res + Math.floor(x / step)];
        const s = (qv - 128) / 127;  // in [-1, 1]
        let lut, li, a;
        if (map.signed) {  // square-root scale: a few strong pixels would otherwise hide the rest; zero: the patch shows
          const r = Math.sign(s) * Math.sqrt(Math.abs(s));
          lut = lutDiv; li = Math.round(127.5 + 127.5 * r); a = 0.85 * Math.abs(r);
        }
        else { lut = lutSeq; li = Math.round(Math.max(0, s) * 255); a = 0.55; }  // as the report's static overlays
        R = (1 - a) * g + a * lut[3 * li]; G = (1 - a) * g + a * lut[3 * li + 1]; B = (1 - a) * g + a * lut[3 * li + 2];
      }
      const o = 4 * (y * W + x);
      im.data[o] = R; im.data[o + 1] = G; im.data[o + 2] = B; im.data[o + 3] = 255;
    }
    const off = document.createElement("canvas");
    off.width = W; off.height = W;
    off.getContext("2d").putImageData(im, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(off, 0, 0, canvas.width, canvas.height);
    const cx = canvas.width * (Math.floor(W / 2) + 0.5) / W, cy = canvas.height * (Math.floor(W / 2) + 0.5) / W;
    ctx.strokeStyle = "#39ff14"; ctx.lineWidth = 1.5; ctx.beginPath();
    ctx.moveTo(cx - 5, cy); ctx.lineTo(cx + 5, cy); ctx.moveTo(cx, cy - 5); ctx.lineTo(cx, cy + 5); ctx.stroke();
  }
  function showMaps(i) {
    const grid = document.getElementById("sa-maps-grid"), note = document.getElementById("sa-maps-note");
    grid.innerHTML = "";
    grid.dataset.point = String(i);
    if (!D.maps) { note.textContent = "This run has no explanation maps (run `structattn explain RUN`)."; return; }
    const j = mapIndex[i];
    if (j < 0) {
      note.textContent = "Point " + i + " was not explained (the run explains " + (D.maps.methods.length ? "its test points" : "no points") +
        "; `structattn explain RUN --points all` explains every point).";
      return;
    }
    note.textContent = D.maps.note || "";
    const table = document.createElement("table"), head = document.createElement("tr");
    head.appendChild(document.createElement("th"));
    for (const t of D.maps.targets) { const th = document.createElement("th"); th.textContent = t; head.appendChild(th); }
    table.appendChild(head);
    for (const m of D.maps.methods) {
      const tr = document.createElement("tr"), th = document.createElement("th");
      th.textContent = m + (maps[m][D.maps.targets[0]] && maps[m][D.maps.targets[0]].signed ? " (signed)" : "");
      tr.appendChild(th);
      for (const t of D.maps.targets) {
        const td = document.createElement("td"), mp = maps[m][t];
        if (mp) {
          const cv = document.createElement("canvas");
          cv.width = 72; cv.height = 72; cv.className = "sa-map"; cv.dataset.method = m; cv.dataset.target = t;
          const row = mp.shared ? 0 : j;
          cv.title = m + " / " + t + ", max |value| " + fmt(mp.scale[row]);
          drawPatch(cv, i, mp, row);
          td.appendChild(cv);
        }
        tr.appendChild(td);
      }
      table.appendChild(tr);
    }
    grid.appendChild(table);
  }
  function showInfo(i) {
    const sp = D.splitNames[String(split[i])] || String(split[i]);
    document.getElementById("sa-point-title").textContent =
      "point " + i + " (row " + fmt(pos[2 * i]) + ", col " + fmt(pos[2 * i + 1]) + "), " + sp;
    const table = document.createElement("table");  // built from text nodes: names are never markup
    const row = (cells, tag) => {
      const tr = document.createElement("tr");
      for (const c of cells) { const td = document.createElement(tag); td.textContent = c; tr.appendChild(td); }
      table.appendChild(tr);
    };
    row(["target", "measured", "predicted", "error"].concat(yStd ? ["uncertainty"] : []), "th");
    for (let k = 0; k < K; k++) {
      row([D.targets[k] + (D.units[k] ? " [" + D.units[k] + "]" : ""), fmt(val(yTrue, i, k)), fmt(val(yPred, i, k)),
           fmt(val(yPred, i, k) - val(yTrue, i, k))].concat(yStd ? [fmt(val(yStd, i, k))] : []), "td");
    }
    const info = document.getElementById("sa-point-info");
    info.replaceChildren(table);
  }

  // ---- loop and parity ----------------------------------------------------------------
  const loopDiv = document.getElementById("sa-loop"), parityDiv = document.getElementById("sa-parity");
  function showLoop(i) {
    if (!loops) return;
    const m = Array.from(loops.meas.subarray(i * V, (i + 1) * V));
    const f = loops.fit ? Array.from(loops.fit.subarray(i * V, (i + 1) * V)) : [];
    Plotly.restyle(loopDiv, {x: [loops.v, loops.fit ? loops.v : []], y: [m, f]}, [0, 1]);
    Plotly.relayout(loopDiv, {"title.text": "loop of point " + i});
  }
  function parityData() {
    const k = target, xs = [], ys = [], cs = [], tx = [];
    let lo = Infinity, hi = -Infinity;
    for (let i = 0; i < n; i++) {
      const a = val(yTrue, i, k), b = val(yPred, i, k);
      xs.push(a); ys.push(b); cs.push(split[i] === 2 ? "#d62728" : "#9e9e9e");
      tx.push("point " + i + " (" + (D.splitNames[String(split[i])] || split[i]) + ")");
      if (Number.isFinite(a)) { lo = Math.min(lo, a); hi = Math.max(hi, a); }
      if (Number.isFinite(b)) { lo = Math.min(lo, b); hi = Math.max(hi, b); }
    }
    return {x: [xs, [lo, hi]], y: [ys, [lo, hi]], "marker.color": [cs, null], text: [tx, null],
            title: esc(D.targets[k]) + ": predicted vs measured (red: test points)"};
  }
  function restyleParity() {
    const d = parityData();
    Plotly.restyle(parityDiv, {x: d.x, y: d.y, "marker.color": d["marker.color"], text: d.text}, [0, 1]);
    Plotly.relayout(parityDiv, {"title.text": d.title});
  }
  function ringShape(xref, yref, x, y) {  // a fixed-size ring at a data point: no trace is redrawn
    return {type: "circle", xref: xref, yref: yref, xsizemode: "pixel", ysizemode: "pixel", xanchor: x, yanchor: y,
            x0: -8, x1: 8, y0: -8, y1: 8, line: {color: "#e31a1c", width: 2.5}};
  }
  function ring(i) {
    const k = target, shapes = [];
    for (let j = 0; j < P; j++) shapes.push(ringShape(j ? "x" + (j + 1) : "x", j ? "y" + (j + 1) : "y", pos[2 * i + 1], pos[2 * i]));
    Plotly.relayout(linked, {shapes: shapes});
    Plotly.relayout(parityDiv, {shapes: [ringShape("x", "y", val(yTrue, i, k), val(yPred, i, k))]});
  }

  function select(i) {
    if (!(i >= 0 && i < n)) return;
    selected = i;
    const pc = document.getElementById("sa-patch");
    drawPatch(pc, i, null, 0);
    pc.dataset.point = String(i);
    showInfo(i);
    showMaps(i);
    showLoop(i);
    ring(i);
    root.dataset.selected = String(i);
  }

  // ---- score table --------------------------------------------------------------------
  function scoreTable() {
    const wrap = document.getElementById("sa-scores-wrap"), S = D.scores;
    if (!S.rows.length) { wrap.textContent = "This run scored no explanation methods."; return; }
    const table = document.createElement("table");
    table.id = "sa-scores";
    const head = document.createElement("tr");
    S.header.forEach((h, c) => {
      const th = document.createElement("th");
      th.textContent = h; th.dataset.col = String(c);
      th.addEventListener("click", () => sortBy(c, th));
      head.appendChild(th);
    });
    table.appendChild(head);
    const body = document.createElement("tbody");
    for (const r of S.rows) {
      const tr = document.createElement("tr");
      r.forEach((v, c) => {
        const td = document.createElement("td");
        td.textContent = (typeof v === "number") ? fmt(v) : (v === null ? "n/a" : v);
        td.dataset.v = (v === null) ? "" : String(v);
        tr.appendChild(td);
      });
      body.appendChild(tr);
    }
    table.appendChild(body);
    wrap.appendChild(table);
    let last = -1, asc = true;
    function sortBy(c, th) {
      asc = (c === last) ? !asc : true; last = c;
      const trs = Array.from(body.children);
      const num = trs.every((tr) => tr.children[c].dataset.v === "" || !Number.isNaN(Number(tr.children[c].dataset.v)));
      trs.sort((a, b) => {
        const x = a.children[c].dataset.v, y = b.children[c].dataset.v;
        if (x === "" || y === "") return (x === "") - (y === "");  // n/a last either way
        const d = num ? Number(x) - Number(y) : x.localeCompare(y);
        return asc ? d : -d;
      });
      trs.forEach((tr) => body.appendChild(tr));
      head.querySelectorAll("th").forEach((h) => h.classList.remove("sorted-asc", "sorted-desc"));
      th.classList.add(asc ? "sorted-asc" : "sorted-desc");
      table.dataset.sortedBy = String(c) + (asc ? "+" : "-");
    }
  }

  function showChannel(c) {
    img = imgs[c];
    const z = [];  // the unpadded channel for the structure panel
    for (let y = HALF; y < HALF + D.image.h; y++) z.push(Array.from(img.subarray(y * PW + HALF, y * PW + HALF + D.image.w)));
    Plotly.restyle(linked, {z: [z]}, [0]);
    if (selected >= 0) select(selected);
  }

  // ---- wiring -------------------------------------------------------------------------
  const csel = document.getElementById("sa-channel");
  D.image.channels.forEach((c, k) => { const o = document.createElement("option"); o.value = String(k); o.textContent = c; csel.appendChild(o); });
  csel.addEventListener("change", () => showChannel(Number(csel.value)));
  const tsel = document.getElementById("sa-target");
  D.targets.forEach((t, k) => { const o = document.createElement("option"); o.value = String(k); o.textContent = t; tsel.appendChild(o); });
  tsel.addEventListener("change", () => { target = Number(tsel.value); restyleLinked(); restyleParity(); if (selected >= 0) ring(selected); });
  document.getElementById("sa-colour").addEventListener("change", (e) => { colourBy = e.target.value; restyleLinked(); });
  const cfg = {responsive: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d"]};
  // points at (col, row): x is the column, y the row, as on the image; colours set before the first draw
  const st = linkedStyle();
  pointTraces.forEach((t, j) => {
    const tr = F.maps.data[t];
    tr.x = cols; tr.y = rows; tr.customdata = Array.from({length: n}, (_, i) => i); tr.text = st.text[j];
    Object.assign(tr.marker, {color: st["marker.color"][j], colorscale: st["marker.colorscale"][j],
                              cmid: st["marker.cmid"][j]});
  });
  const pd = parityData();
  Object.assign(F.parity.data[0], {x: pd.x[0], y: pd.y[0], text: pd.text[0], customdata: Array.from({length: n}, (_, i) => i)});
  F.parity.data[0].marker.color = pd["marker.color"][0];
  Object.assign(F.parity.data[1], {x: pd.x[1], y: pd.y[1]});
  F.parity.layout.title = {text: pd.title};
  const ready = [Plotly.newPlot(linked, F.maps.data, F.maps.layout, cfg),
                 Plotly.newPlot(parityDiv, F.parity.data, F.parity.layout, cfg)];
  if (loops) ready.push(Plotly.newPlot(loopDiv, F.loop.data, F.loop.layout, cfg));
  else loopDiv.innerHTML = "<p class='note'>This run's data have no loops (targets were given directly).</p>";
  if (D.loops && D.loops.note) document.getElementById("sa-loop-note").textContent = D.loops.note;
  Promise.all(ready).then(() => {
    const tPlotted = performance.now();
    const onClick = (ev) => { const p = ev.points && ev.points[0]; if (p && p.customdata !== undefined) select(Number(p.customdata)); };
    linked.on("plotly_click", onClick);
    parityDiv.on("plotly_click", onClick);
    scoreTable();
    let first = -1;  // start on the first explained point, so the maps are never empty at first sight
    if (mapIndex) for (let i = 0; i < n && first < 0; i++) if (mapIndex[i] >= 0) first = i;
    select(first >= 0 ? first : 0);
    const tReady = performance.now();
    root.dataset.timing = JSON.stringify({script: t0, decoded: tDecoded, plotted: tPlotted, ready: tReady});
    root.dataset.readyMs = String(Math.round(tReady));  // ms since navigation start
    root.dataset.ready = "1";
  });
  window.structattnExplorer = {select: select, data: D};
})();
