// Chapter 2: the receptive field (rf) and jump of one unit after each conv/pool layer, drawn on the input.
AX.explorers.receptive_field = {
  mount: function (root, data) {
    var model = AX.control(root, {kind: "select", label: "Network", name: "model", value: data.model,
      options: Object.keys(data.models), onchange: function () { fill(); update(); }});
    var size = AX.control(root, {kind: "range", label: "Input size (px)", name: "size", min: 16, max: 320,
      value: data.size, onchange: function () { update(); }});
    var layer = AX.control(root, {kind: "select", label: "Layer", name: "layer", options: [], value: "",
      onchange: function () { update(); }});
    var canvas = AX.canvas(360, 360, "The input image with the receptive field of the centre unit of the chosen layer");
    var out = AX.h("p", {"class": "axe-out", "aria-live": "polite", "data-name": "summary"});
    var table = AX.h("div");
    root.appendChild(AX.h("h4", {text: "Receptive field of one unit, layer by layer"}));
    root.appendChild(AX.h("div", {"class": "axe-row"}, [model.wrap, size.wrap, layer.wrap]));
    root.appendChild(out);
    root.appendChild(AX.h("div", {"class": "axe-row"}, [AX.h("div", {style: "flex:1 1 16em;max-width:360px"}, [canvas]), table]));
    root.appendChild(AX.h("p", {"class": "axe-note", text: "Blue square: the input pixels one unit of the layer sees (its receptive field rf, " +
      "clipped to the image; the rest falls in the padding). Dots: the centres of that layer's units, one jump apart."}));
    function fill() {
      var sel = layer.input, rows = AX.receptiveFields(data.models[model.value()], 1).slice(1);
      sel.textContent = "";
      rows.forEach(function (r, i) {
        sel.appendChild(AX.h("option", {value: r.name, selected: i === rows.length - 1 ? "selected" : null, text: r.name + " (" + r.kind + ")"}));
      });
    }
    function update() {
      var n = size.value(), rows = AX.receptiveFields(data.models[model.value()], n);
      var r = rows.filter(function (x) { return x.name === layer.value(); })[0] || rows[rows.length - 1];
      table.textContent = "";
      table.appendChild(AX.table(["layer", "units per side", "jump (px)", "rf (px)"], rows.map(function (x) {
        return {cls: x.size < 1 ? "axe-bad" : (x === r ? "axe-sel" : null), cells: [x.name, x.size, x.jump, x.rf]};
      })));
      var g = canvas.getContext("2d"), W = canvas.width, sc = W / n;
      g.clearRect(0, 0, W, W);
      g.fillStyle = "#eef2f5"; g.fillRect(0, 0, W, W);
      g.strokeStyle = "#999"; g.strokeRect(0.5, 0.5, W - 1, W - 1);
      if (r.size < 1) {
        out.textContent = r.name + ": the map is empty at " + n + " px (output size " + r.size + ").";
        out.className = "axe-out axe-err";
        return;
      }
      out.className = "axe-out";
      var c = Math.floor((r.size - 1) / 2), centre = r.start + c * r.jump;  // centre unit
      var x0 = Math.max(0, centre - r.rf / 2), x1 = Math.min(n, centre + r.rf / 2);
      g.fillStyle = "rgba(26,115,232,0.25)"; g.fillRect(x0 * sc, x0 * sc, (x1 - x0) * sc, (x1 - x0) * sc);
      g.strokeStyle = "#1a73e8"; g.lineWidth = 2; g.strokeRect(x0 * sc, x0 * sc, (x1 - x0) * sc, (x1 - x0) * sc);
      g.fillStyle = "#333";
      var step = Math.max(1, Math.ceil(r.size / 40));  // at most ~40 dots per side
      for (var i = 0; i < r.size; i += step) for (var j = 0; j < r.size; j += step) {
        g.fillRect((r.start + i * r.jump) * sc - 1, (r.start + j * r.jump) * sc - 1, 2, 2);
      }
      var frac = Math.min(1, (x1 - x0) * (x1 - x0) / (n * n));
      out.textContent = r.name + ": " + r.size + "×" + r.size + " units, one every " + r.jump +
        " px; each sees " + r.rf + "×" + r.rf + " px of the input (" + Math.round(100 * frac) +
        "% of a " + n + "×" + n + " image for the centre unit).";
    }
    fill();
    update();
  }
};
