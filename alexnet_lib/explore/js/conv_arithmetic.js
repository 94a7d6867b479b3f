// Chapter 1: convolution arithmetic on the real networks (layer specs from alexnet_lib.explore.model_spec).
AX.explorers.conv_arithmetic = {
  // A copy of a model spec with one spatial layer's geometry replaced (edits: {k, s, p, d}).
  edited: function (spec, layerName, edits) {
    var copy = {in_channels: spec.in_channels, layers: spec.layers.map(function (L) {
      if (L.name !== layerName) return L;
      var M = {}; for (var key in L) M[key] = L[key];
      for (var e in edits || {}) M[e] = edits[e];
      return M;
    })};
    return copy;
  },
  mount: function (root, data) {
    var self = this, state = {edits: {}};
    var body = AX.h("div");
    var model = AX.control(root, {kind: "select", label: "Network", name: "model", value: data.model,
      options: Object.keys(data.models), onchange: function () { state.edits = {}; fillLayers(); update(); }});
    var size = AX.control(root, {kind: "number", label: "Input size (px)", name: "size", min: 1, max: 1024,
      value: data.size, onchange: function () { update(); }});
    var adapt = AX.control(root, {kind: "checkbox", label: "Resize the first Linear to fit", name: "adapt",
      value: false, onchange: function () { update(); }});
    var presets = AX.h("div", {"class": "axe-row", role: "group", "aria-label": "Input size presets"},
      [AX.h("span", {text: "Try:"})].concat([224, 227, 64, 32].map(function (v) {
        return AX.button(v + " px", function () { size.set(v); update(); }, "preset-" + v);
      })));
    var layerSel = AX.control(root, {kind: "select", label: "Edit layer", name: "layer", options: [], value: "",
      onchange: function () { showEdits(); update(); }});
    var geo = {};
    ["k", "s", "p", "d"].forEach(function (key) {
      var names = {k: "kernel k", s: "stride s", p: "padding p", d: "dilation d"};
      geo[key] = AX.control(root, {kind: "number", label: names[key], name: key, min: key === "p" ? 0 : 1,
        max: 64, value: 1, onchange: function () {
          var L = current(), v = geo[key].value();
          if (!L || !(v >= (key === "p" ? 0 : 1)) || Math.floor(v) !== v) return;
          state.edits[L.name] = state.edits[L.name] || {};
          state.edits[L.name][key] = v;
          update();
        }});
    });
    var reset = AX.button("Reset the layer", function () { delete state.edits[layerSel.value()]; showEdits(); update(); }, "reset");
    var formula = AX.h("p", {"class": "axe-out", "aria-live": "polite", "data-name": "formula"});
    var summary = AX.h("p", {"class": "axe-out", "aria-live": "polite", "data-name": "summary"});
    root.appendChild(AX.h("h4", {text: "Convolution arithmetic on the real networks"}));
    root.appendChild(AX.h("div", {"class": "axe-row"}, [model.wrap, size.wrap, adapt.wrap]));
    root.appendChild(presets);
    root.appendChild(AX.h("div", {"class": "axe-row"}, [layerSel.wrap, geo.k.wrap, geo.s.wrap, geo.p.wrap, geo.d.wrap, reset]));
    root.appendChild(formula);
    root.appendChild(summary);
    root.appendChild(body);
    root.appendChild(AX.h("p", {"class": "axe-note", text: "Output size per axis: " + data.formula +
      ". FLOPs count a multiply-add as 2 (convolutions and Linear layers, as layer_table); pools and ReLUs have none."}));

    function spec() {
      var s = data.models[model.value()];
      for (var name in state.edits) s = self.edited(s, name, state.edits[name]);
      return s;
    }
    function current() {
      var name = layerSel.value();
      return spec().layers.filter(function (L) { return L.name === name; })[0];
    }
    function fillLayers() {
      var sel = layerSel.input; sel.textContent = "";
      data.models[model.value()].layers.forEach(function (L) {
        if (AX.SPATIAL[L.kind]) sel.appendChild(AX.h("option", {value: L.name, text: L.name + " (" + L.kind + ")"}));
      });
      showEdits();
    }
    function showEdits() {
      var L = current();
      ["k", "s", "p", "d"].forEach(function (key) { geo[key].set(L ? L[key] : ""); });
    }
    function update() {
      var i = size.value();
      if (!(i >= 1) || Math.floor(i) !== i) { summary.textContent = "The input size must be a whole number >= 1."; return; }
      var t = AX.trace(spec(), i, {adaptLinear: adapt.value()});
      var sel = layerSel.value(), selRow = t.rows.filter(function (r) { return r.name === sel; })[0];
      formula.textContent = selRow ? sel + ": o = " + AX.formula(selRow.size_in, selRow.layer) +
        (AX.convOut(selRow.size_in, selRow.layer.k, selRow.layer.s, selRow.layer.p, selRow.layer.d, selRow.layer.ceil) < 1
          ? "  (less than 1: no window fits)" : "") : sel + ": not reached (an earlier layer fails)";
      formula.className = "axe-out" + (selRow && selRow.error ? " axe-err" : "");
      summary.textContent = "";
      summary.appendChild(document.createTextNode(t.error ? "" : "Total: " + AX.fmtInt(t.params) +
        " parameters, " + AX.fmt(t.flops) + " FLOPs per image (forward)."));
      if (t.error) summary.appendChild(AX.h("span", {"class": "axe-err", text: "Error: " + t.error + "."}));
      var lin = t.rows.filter(function (r) { return r.kind === "Linear"; })[0];
      if (adapt.value() && lin) summary.appendChild(document.createTextNode(" The first Linear is resized to take " +
        AX.fmtInt(lin.params / lin.layer.out - (lin.layer.bias ? 1 : 0)) + " inputs (the network has " +
        AX.fmtInt(lin.layer.in) + ")."));
      body.textContent = "";
      body.appendChild(AX.table(["layer", "type", "k/s/p/d", "output shape", "params", "FLOPs"],
        t.rows.map(function (r) {
          var L = r.layer;
          return {cls: r.error ? "axe-bad" : (r.name === sel ? "axe-sel" : null), cells: [
            r.name, r.kind, AX.SPATIAL[r.kind] ? L.k + "/" + L.s + "/" + L.p + "/" + L.d : "",
            r.shape.join("×"), AX.fmtInt(r.params), AX.fmt(r.flops)]};
        })));
    }
    fillLayers();
    update();
  }
};
