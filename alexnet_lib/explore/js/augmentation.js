// Chapter 5: crop window, horizontal flip and the paper's PCA colour shift (alexnet_lib.augment.FancyPCA)
// on a small image, all computed in the page.
AX.explorers.augmentation = {
  // RGB shift for alpha (3 numbers): eigvecs @ (alpha * eigvals), in [0, 1] pixel units.
  shift: function (eigval, eigvec, alpha) {
    return [0, 1, 2].map(function (c) { return eigvec[c][0] * alpha[0] * eigval[0] + eigvec[c][1] * alpha[1] * eigval[1] + eigvec[c][2] * alpha[2] * eigval[2]; });
  },
  // pixels: H*W*3 bytes, row-major. Returns the crop (crop x crop x 3, floats in [0,1] before clamping).
  augment: function (pixels, size, crop, x0, y0, flip, rgb) {
    var out = new Float64Array(crop * crop * 3);
    for (var y = 0; y < crop; y++) for (var x = 0; x < crop; x++) {
      var sx = x0 + (flip ? crop - 1 - x : x), sy = y0 + y;
      for (var c = 0; c < 3; c++) out[(y * crop + x) * 3 + c] = pixels[(sy * size + sx) * 3 + c] / 255 + rgb[c];
    }
    return out;
  },
  mount: function (root, data) {
    var self = this, S = data.size, C = data.crop, rng = AX.rng(12345);
    var cx = AX.control(root, {kind: "range", label: "Crop x", name: "x", min: 0, max: S - C, value: Math.floor((S - C) / 2), onchange: update});
    var cy = AX.control(root, {kind: "range", label: "Crop y", name: "y", min: 0, max: S - C, value: Math.floor((S - C) / 2), onchange: update});
    var flip = AX.control(root, {kind: "checkbox", label: "Flip horizontally", name: "flip", value: false, onchange: update});
    var al = [0, 1, 2].map(function (i) {
      return AX.control(root, {kind: "range", label: "α" + (i + 1), name: "alpha" + (i + 1), min: -1, max: 1, step: 0.01, value: 0,
        onchange: update, format: function (v) { return v.toFixed(2); }});
    });
    var draw = AX.button("Draw like the paper (α ~ N(0, " + data.std + "²), random crop and flip)", function () {
      al.forEach(function (a) { a.set((rng.normal() * data.std).toFixed(2)); });
      cx.set(Math.floor(rng.uniform() * (S - C + 1))); cy.set(Math.floor(rng.uniform() * (S - C + 1)));
      flip.set(rng.uniform() < 0.5); update();
    }, "random");
    var reset = AX.button("Reset", function () { al.forEach(function (a) { a.set(0); }); flip.set(false);
      cx.set(Math.floor((S - C) / 2)); cy.set(Math.floor((S - C) / 2)); update(); }, "reset");
    var c1 = AX.canvas(S * 5, S * 5, "The original image with the crop window"), c2 = AX.canvas(C * 5, C * 5, "The augmented crop");
    c1.style.imageRendering = c2.style.imageRendering = "pixelated";
    var out = AX.h("p", {"class": "axe-out", "aria-live": "polite", "data-name": "summary"});
    root.appendChild(AX.h("h4", {text: "Crops, flips and PCA colour shifts"}));
    root.appendChild(AX.h("div", {"class": "axe-row"}, [cx.wrap, cy.wrap, flip.wrap]));
    root.appendChild(AX.h("div", {"class": "axe-row"}, al.map(function (a) { return a.wrap; })));
    root.appendChild(AX.h("div", {"class": "axe-row"}, [draw, reset]));
    root.appendChild(out);
    root.appendChild(AX.h("div", {"class": "axe-row"}, [
      AX.h("figure", {style: "flex:1 1 12em;max-width:" + S * 5 + "px;margin:0"}, [c1, AX.h("figcaption", {"class": "axe-note", text: S + "×" + S + " image, crop window"})]),
      AX.h("figure", {style: "flex:1 1 10em;max-width:" + C * 5 + "px;margin:0"}, [c2, AX.h("figcaption", {"class": "axe-note", text: C + "×" + C + " crop as the network sees it"})])]));
    root.appendChild(AX.h("p", {"class": "axe-note", text: "Eigenvalues (ImageNet, [0, 1] pixels, alexnet_lib.augment): " +
      data.eigval.join(", ") + ". The paper draws α ~ N(0, " + data.std + "²), standard deviation " + data.std + "; the sliders go to ±1 (10 standard deviations) so the shift can be seen."}));
    function paint(canvas, px, w, scale) {
      var g = canvas.getContext("2d"), im = g.createImageData(w, w);
      for (var i = 0; i < w * w; i++) { for (var c = 0; c < 3; c++) im.data[i * 4 + c] = Math.max(0, Math.min(255, Math.round(px[i * 3 + c] * scale))); im.data[i * 4 + 3] = 255; }
      var tmp = document.createElement("canvas"); tmp.width = w; tmp.height = w; tmp.getContext("2d").putImageData(im, 0, 0);
      g.imageSmoothingEnabled = false; g.drawImage(tmp, 0, 0, canvas.width, canvas.height);
    }
    function update() {
      var alpha = al.map(function (a) { return a.value(); }), rgb = self.shift(data.eigval, data.eigvec, alpha);
      paint(c1, data.pixels, S, 1);
      var g = c1.getContext("2d"), k = c1.width / S;
      g.strokeStyle = "#fff"; g.lineWidth = 3; g.strokeRect(cx.value() * k, cy.value() * k, C * k, C * k);
      g.strokeStyle = "#000"; g.lineWidth = 1; g.strokeRect(cx.value() * k, cy.value() * k, C * k, C * k);
      paint(c2, self.augment(data.pixels, S, C, cx.value(), cy.value(), flip.value(), rgb), C, 255);
      out.textContent = "Crop at (" + cx.value() + ", " + cy.value() + ")" + (flip.value() ? ", flipped" : "") +
        "; RGB shift added to every pixel: (" + rgb.map(function (v) { return (v >= 0 ? "+" : "") + v.toFixed(4); }).join(", ") +
        ") = (" + rgb.map(function (v) { return (v >= 0 ? "+" : "") + (v * 255).toFixed(1); }).join(", ") + ") grey levels of 255.";
    }
    update();
  }
};
