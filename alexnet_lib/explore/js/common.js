// Shared by every explorer of alexnet_lib.explore: DOM helpers, number formatting, a seeded PRNG and
// the layer arithmetic of the library's networks (output sizes, parameters, FLOPs, receptive fields).
// Loaded as plain script text: `AX` is the one object it fills; each explorer file adds AX.explorers.<name>.
// tests/test_explorers.py runs the compute functions under node against alexnet_lib.
AX.explorers = AX.explorers || {};

// ---- numbers -------------------------------------------------------------------------------------
AX.fmtInt = function (n) {
  return Math.round(n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
};
AX.fmt = function (n, digits) {  // 1.23G, 45.6M, 7.89k, as in alexnet_lib.arithmetic._fmt
  var d = digits === undefined ? 2 : digits, a = Math.abs(n);
  var units = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (var i = 0; i < units.length; i++) if (a >= units[i][0]) return (n / units[i][0]).toFixed(d) + units[i][1];
  return String(Math.round(n));
};
AX.fmtSeconds = function (s) {
  if (!isFinite(s)) return "-";
  if (s < 1) return (s * 1000).toPrecision(3) + " ms";
  if (s < 120) return s.toPrecision(3) + " s";
  if (s < 7200) return (s / 60).toPrecision(3) + " min";
  if (s < 172800) return (s / 3600).toPrecision(3) + " h";
  return (s / 86400).toPrecision(3) + " days";
};

// ---- seeded random numbers (mulberry32; alexnet_lib.explore.Mulberry32 is the same generator) --------
AX.rng = function (seed) {
  var a = seed >>> 0, spare = null;
  var r = {
    uniform: function () {
      a = (a + 0x6D2B79F5) >>> 0;
      var t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    },
    normal: function () {  // Box-Muller, both values used in turn
      if (spare !== null) { var s = spare; spare = null; return s; }
      var u = 1 - r.uniform(), v = r.uniform(), m = Math.sqrt(-2 * Math.log(u));
      spare = m * Math.sin(2 * Math.PI * v);
      return m * Math.cos(2 * Math.PI * v);
    }
  };
  return r;
};

// ---- layer arithmetic ------------------------------------------------------------------------------
// o = floor((i + 2p - d(k-1) - 1) / s) + 1, as alexnet_lib.arithmetic.conv_output_size (ceil_mode too).
AX.convOut = function (i, k, s, p, d, ceil) {
  var span = i + 2 * p - d * (k - 1) - 1;
  var o = (ceil ? Math.ceil(span / s) : Math.floor(span / s)) + 1;
  if (ceil && o > 0 && (o - 1) * s >= i + p) o -= 1;
  return o;
};
AX.formula = function (i, L) {
  var r = L.ceil ? "ceil" : "floor";
  return r + "((" + i + " + 2·" + L.p + " − " + L.d + "·(" + L.k + " − 1) − 1) / " + L.s + ") + 1 = " +
    AX.convOut(i, L.k, L.s, L.p, L.d, L.ceil);
};
AX.SPATIAL = {Conv2d: 1, MaxPool2d: 1, AvgPool2d: 1};

// Walk a layer list (alexnet_lib.explore.model_spec) for a square input of `size` pixels.
// Returns {rows: [{name, kind, shape, params, flops, layer, size_in, error}], params, flops, error, stop}.
// opts.adaptLinear: the first Linear takes whatever the flattened features are (a redesigned network).
AX.trace = function (spec, size, opts) {
  opts = opts || {};
  var c = spec.in_channels, h = size, feat = null, rows = [], P = 0, F = 0, error = null;
  var firstLinear = true;
  for (var n = 0; n < spec.layers.length; n++) {
    var L = spec.layers[n], row = {name: L.name, kind: L.kind, layer: L, size_in: h, params: 0, flops: 0};
    // The classifier of a model without a Flatten layer (torchvision's) gets torch.flatten in forward().
    if (feat === null && L.name.indexOf("classifier") === 0 && L.kind !== "Flatten") feat = c * h * h;
    if (AX.SPATIAL[L.kind]) {
      var o = AX.convOut(h, L.k, L.s, L.p, L.d, L.ceil);
      if (L.kind === "Conv2d") {
        row.params = L.cout * (L.cin / L.groups) * L.k * L.k + (L.bias ? L.cout : 0);
        if (o > 0) row.flops = 2 * L.cout * o * o * (L.cin / L.groups) * L.k * L.k;
        c = L.cout;
      }
      row.shape = [c, o, o];
      if (o <= 0) {
        row.error = L.name + " (" + L.kind + ", kernel " + L.k + ", stride " + L.s + ", padding " + L.p +
          (L.d !== 1 ? ", dilation " + L.d : "") + ") receives a " + h + "x" + h + " map: " +
          AX.formula(h, L) + ", an empty output";
        error = row.error; rows.push(row); break;
      }
      h = o;
    } else if (L.kind === "AdaptiveAvgPool2d" || L.kind === "AdaptiveMaxPool2d") {
      h = L.out; row.shape = [c, h, h];
    } else if (L.kind === "Flatten") {
      feat = c * h * h; row.shape = [feat];
    } else if (L.kind === "Linear") {
      if (feat === null) feat = c * h * h;  // torch.flatten in forward() (torchvision's AlexNet)
      var fin = L.in;
      if (firstLinear && opts.adaptLinear) fin = feat;
      firstLinear = false;
      if (feat !== fin) {
        row.error = L.name + " (Linear) expects " + AX.fmtInt(fin) + " input features but gets " +
          AX.fmtInt(feat) + (h ? " (" + c + "×" + h + "×" + h + ")" : "");
        row.shape = [L.out]; error = row.error; rows.push(row); break;
      }
      row.params = fin * L.out + (L.bias ? L.out : 0);
      row.flops = 2 * fin * L.out;
      feat = L.out; row.shape = [feat];
    } else {
      row.params = L.params || 0;
      row.shape = feat === null ? [c, h, h] : [feat];
    }
    P += row.params; F += row.flops; rows.push(row);
  }
  return {rows: rows, params: P, flops: F, error: error};
};

// Receptive field and jump after each conv/pool layer of the feature extractor (one axis), as
// alexnet_lib.arithmetic.receptive_fields.
AX.receptiveFields = function (spec, size) {
  var jump = 1, rf = 1, start = 0.5, out = [{name: "input", kind: "input", size: size, jump: 1, rf: 1, start: 0.5}];
  for (var n = 0; n < spec.layers.length; n++) {
    var L = spec.layers[n];
    if (!AX.SPATIAL[L.kind] || L.name.indexOf("features.") !== 0) continue;
    var keff = L.d * (L.k - 1) + 1;
    size = AX.convOut(size, L.k, L.s, L.p, L.d, L.ceil);
    start = start + ((keff - 1) / 2 - L.p) * jump;
    rf = rf + (keff - 1) * jump;
    jump = jump * L.s;
    out.push({name: L.name, kind: L.kind, size: size, jump: jump, rf: rf, start: start});
  }
  return out;
};

// ---- DOM (not used under node) ----------------------------------------------------------------------
AX.h = function (tag, attrs, kids) {
  var el = document.createElement(tag);
  for (var k in attrs || {}) {
    if (k === "text") el.textContent = attrs[k];
    else if (k.slice(0, 2) === "on") el.addEventListener(k.slice(2), attrs[k]);
    else if (attrs[k] !== null && attrs[k] !== undefined && attrs[k] !== false) el.setAttribute(k, attrs[k]);
  }
  (kids || []).forEach(function (c) { if (c !== null) el.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
  return el;
};
// A labelled control. kind: "range" | "number" | "select" | "checkbox". Returns {wrap, input, value()}.
AX.control = function (root, o) {
  AX._n = (AX._n || 0) + 1;
  var id = root.id + "-c" + AX._n, input;
  if (o.kind === "select") {
    input = AX.h("select", {id: id, "class": "axe-input"}, o.options.map(function (opt) {
      var v = Array.isArray(opt) ? opt[0] : opt, t = Array.isArray(opt) ? opt[1] : opt;
      return AX.h("option", {value: v, selected: String(v) === String(o.value) ? "selected" : null, text: t});
    }));
  } else if (o.kind === "checkbox") {
    input = AX.h("input", {id: id, type: "checkbox", checked: o.value ? "checked" : null});
  } else {
    input = AX.h("input", {id: id, type: o.kind, min: o.min, max: o.max, step: o.step || 1, value: o.value,
      "class": "axe-input"});
  }
  if (o.name) input.setAttribute("data-name", o.name);
  var shown = o.kind === "range" ? AX.h("output", {"for": id, "class": "axe-val"}) : null;
  var wrap = AX.h("div", {"class": "axe-ctl"}, [AX.h("label", {"for": id, text: o.label}), input, shown]);
  var api = {
    wrap: wrap, input: input,
    value: function () {
      if (o.kind === "checkbox") return input.checked;
      if (o.kind === "select") return o.numeric ? Number(input.value) : input.value;
      return Number(input.value);
    },
    set: function (v) { if (o.kind === "checkbox") input.checked = !!v; else input.value = v; api.show(); },
    show: function () { if (shown) shown.textContent = o.format ? o.format(api.value()) : String(api.value()); }
  };
  api.show();
  input.addEventListener("input", function () { api.show(); if (o.onchange) o.onchange(); });
  input.addEventListener("change", function () { api.show(); if (o.onchange) o.onchange(); });
  return api;
};
AX.button = function (label, onclick, name) {
  return AX.h("button", {type: "button", "class": "axe-btn", "data-name": name || null, onclick: onclick, text: label});
};
// A canvas that is as wide as its box (at most `w` CSS pixels) and keeps its aspect ratio.
AX.canvas = function (w, h, label) {
  var c = AX.h("canvas", {width: w, height: h, role: "img", "aria-label": label, "class": "axe-canvas"});
  c.style.maxWidth = w + "px";
  return c;
};
AX.table = function (head, rows) {
  return AX.h("div", {"class": "axe-scroll"}, [AX.h("table", {"class": "axe-table"}, [
    AX.h("thead", {}, [AX.h("tr", {}, head.map(function (t) { return AX.h("th", {scope: "col", text: t}); }))]),
    AX.h("tbody", {}, rows.map(function (r) {
      var tr = AX.h("tr", {"class": r.cls || null}, r.cells.map(function (t) { return AX.h("td", {text: String(t)}); }));
      return tr;
    }))])]);
};
// Bar chart on a canvas: series = [{values, color, label}], drawn side by side per index.
AX.bars = function (canvas, series, opts) {
  opts = opts || {};
  var g = canvas.getContext("2d"), W = canvas.width, H = canvas.height, n = series[0].values.length;
  g.clearRect(0, 0, W, H);
  var lo = opts.min !== undefined ? opts.min : 0, hi = opts.max;
  if (hi === undefined) { hi = 1e-12; series.forEach(function (s) { s.values.forEach(function (v) { hi = Math.max(hi, v); }); }); }
  var pad = 24, bw = (W - pad - 4) / n, y0 = H - 16 - (0 - lo) / (hi - lo) * (H - 30);
  g.strokeStyle = "#888"; g.beginPath(); g.moveTo(pad, y0); g.lineTo(W, y0); g.stroke();
  series.forEach(function (s, j) {
    g.fillStyle = s.color;
    s.values.forEach(function (v, i) {
      var x = pad + i * bw + j * bw / series.length, y = H - 16 - (v - lo) / (hi - lo) * (H - 30);
      g.fillRect(x, Math.min(y, y0), Math.max(1, bw / series.length - 1), Math.abs(y0 - y));
    });
  });
  g.fillStyle = "#555"; g.font = "11px sans-serif";
  g.fillText(AX.fmt(hi, 2), 0, 12);
  series.forEach(function (s, j) { g.fillStyle = s.color; g.fillText("■ " + s.label, pad + 10 + j * 150, 12); });
};
AX.start = function (root, data, explorer) {
  root.textContent = "";
  explorer.mount(root, data);
  root.setAttribute("data-ready", "1");
};
