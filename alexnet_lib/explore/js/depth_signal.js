// Chapter 3: activation size and weight-gradient size through a deep stack of Linear layers (no bias),
// weights N(0, gain^2 / width) from a seeded PRNG, inputs N(0, 1), loss = sum(output * r), r ~ N(0, 1).
AX.explorers.depth_signal = {
  act: {
    relu: [function (z) { return z > 0 ? z : 0; }, function (z) { return z > 0 ? 1 : 0; }],
    tanh: [Math.tanh, function (z) { var t = Math.tanh(z); return 1 - t * t; }],
    sigmoid: [function (z) { return 1 / (1 + Math.exp(-z)); }, function (z) { var s = 1 / (1 + Math.exp(-z)); return s * (1 - s); }]
  },
  // The weights and data, in the order the Python reference (tests) draws them: weights layer by layer
  // (row-major, out x in), then inputs (batch x width), then r.
  draw: function (depth, width, batch, gain, seed) {
    var rng = AX.rng(seed), W = [], sd = gain / Math.sqrt(width), l, i;
    for (l = 0; l < depth; l++) { var w = new Float64Array(width * width); for (i = 0; i < w.length; i++) w[i] = rng.normal() * sd; W.push(w); }
    var x = new Float64Array(batch * width); for (i = 0; i < x.length; i++) x[i] = rng.normal();
    var r = new Float64Array(batch * width); for (i = 0; i < r.length; i++) r[i] = rng.normal();
    return {W: W, x: x, r: r};
  },
  // Returns {act: [rms of each layer's output], grad: [Frobenius norm of dLoss/dW of each layer]}.
  compute: function (activation, depth, width, batch, gain, seed) {
    var f = this.act[activation][0], df = this.act[activation][1], D = this.draw(depth, width, batch, gain, seed);
    var hs = [D.x], zs = [], act = [], l, b, i, j, h = D.x;
    for (l = 0; l < depth; l++) {
      var z = new Float64Array(batch * width), o = new Float64Array(batch * width), w = D.W[l], ss = 0;
      for (b = 0; b < batch; b++) for (i = 0; i < width; i++) {
        var acc = 0, wi = i * width, hb = b * width;
        for (j = 0; j < width; j++) acc += w[wi + j] * h[hb + j];
        z[b * width + i] = acc; o[b * width + i] = f(acc); ss += o[b * width + i] * o[b * width + i];
      }
      zs.push(z); hs.push(o); act.push(Math.sqrt(ss / (batch * width))); h = o;
    }
    var g = D.r, grad = new Array(depth);  // g = dLoss/d(output of layer l)
    for (l = depth - 1; l >= 0; l--) {
      var dz = new Float64Array(batch * width), hin = hs[l], wl = D.W[l], gn = 0;
      for (i = 0; i < dz.length; i++) dz[i] = g[i] * df(zs[l][i]);
      for (i = 0; i < width; i++) for (j = 0; j < width; j++) {
        var s = 0; for (b = 0; b < batch; b++) s += dz[b * width + i] * hin[b * width + j];
        gn += s * s;
      }
      grad[l] = Math.sqrt(gn);
      var gp = new Float64Array(batch * width);
      for (b = 0; b < batch; b++) for (j = 0; j < width; j++) {
        var t = 0; for (i = 0; i < width; i++) t += dz[b * width + i] * wl[i * width + j];
        gp[b * width + j] = t;
      }
      g = gp;
    }
    return {act: act, grad: grad};
  },
  mount: function (root, data) {
    var self = this;
    var act = AX.control(root, {kind: "select", label: "Activation", name: "activation", value: data.activation,
      options: ["relu", "tanh", "sigmoid"], onchange: update});
    var depth = AX.control(root, {kind: "range", label: "Depth", name: "depth", min: 2, max: 50, value: data.depth, onchange: update});
    var gain = AX.control(root, {kind: "range", label: "Weight scale (std × √width)", name: "gain", min: 0.25, max: 3,
      step: 0.05, value: 1, onchange: update, format: function (v) { return v.toFixed(2); }});
    var seed = AX.control(root, {kind: "number", label: "Seed", name: "seed", min: 0, max: 9999, value: data.seed, onchange: update});
    var canvas = AX.canvas(640, 300, "Log-scale plot of activation size and gradient norm against layer");
    var out = AX.h("p", {"class": "axe-out", "aria-live": "polite", "data-name": "summary"});
    root.appendChild(AX.h("h4", {text: "Signal and gradient through depth"}));
    root.appendChild(AX.h("div", {"class": "axe-row"}, [act.wrap, depth.wrap, gain.wrap, seed.wrap]));
    root.appendChild(out);
    root.appendChild(canvas);
    root.appendChild(AX.h("p", {"class": "axe-note", text: "A stack of " + data.width + "-wide Linear layers with no bias, " +
      data.batch + " random inputs, computed in the page. Orange: rms of each layer's output; blue: norm of the " +
      "gradient of each layer's weights (log scale, layer 1 = next to the input). Weight scale 1 means std 1/√width; " +
      "with ReLU, √2 ≈ 1.41 (He initialisation) keeps the signal's size through depth."}));
    function update() {
      var res = self.compute(act.value(), depth.value(), data.width, data.batch, gain.value(), seed.value() | 0);
      var g = canvas.getContext("2d"), Wd = canvas.width, H = canvas.height, n = res.act.length;
      var all = res.act.concat(res.grad).filter(function (v) { return v > 0; }).map(Math.log10);
      var lo = Math.floor(Math.min.apply(null, all.concat([-1]))), hi = Math.ceil(Math.max.apply(null, all.concat([1])));
      if (lo < -30) lo = -30;
      g.clearRect(0, 0, Wd, H); g.font = "12px sans-serif";
      var X = function (i) { return 50 + i * (Wd - 70) / Math.max(1, n - 1); };
      var Y = function (v) { var lv = v > 0 ? Math.max(lo, Math.log10(v)) : lo; return H - 24 - (lv - lo) / (hi - lo) * (H - 44); };
      g.strokeStyle = "#ddd"; g.fillStyle = "#555";
      for (var e = lo; e <= hi; e += Math.max(1, Math.ceil((hi - lo) / 8))) {
        g.beginPath(); g.moveTo(45, Y(Math.pow(10, e))); g.lineTo(Wd, Y(Math.pow(10, e))); g.stroke();
        g.fillText("1e" + e, 4, Y(Math.pow(10, e)) + 4);
      }
      g.fillText("layer 1", 40, H - 6); g.fillText("layer " + n, Wd - 60, H - 6);
      [[res.act, "#e8710a", "activation rms"], [res.grad, "#1a73e8", "weight-gradient norm"]].forEach(function (s, k) {
        g.strokeStyle = s[1]; g.lineWidth = 2; g.beginPath();
        s[0].forEach(function (v, i) { if (i) g.lineTo(X(i), Y(v)); else g.moveTo(X(i), Y(v)); });
        g.stroke(); g.fillStyle = s[1]; g.fillText("— " + s[2], 60 + k * 170, 14);
      });
      var ratio = res.grad[0] / res.grad[n - 1];
      out.textContent = act.value() + ", depth " + n + ": last-layer output rms " + res.act[n - 1].toExponential(2) +
        "; gradient norm at layer 1 is " + ratio.toExponential(2) + " × that at layer " + n + ".";
    }
    update();
  }
};
