// Chapter 6: the paper's local response normalisation across channels (alexnet_lib.layers.LocalResponseNorm):
// b_i = a_i / (k + alpha * sum_{j in window of n channels around i} a_j^2)^beta, zero beyond the edges.
AX.explorers.lrn = {
  lrn: function (a, k, n, alpha, beta) {
    var C = a.length, half = Math.floor(n / 2), out = {b: [], divisor: [], sum: []};
    for (var i = 0; i < C; i++) {
      var s = 0;
      for (var j = i - half; j <= i + (n - 1 - half); j++) if (j >= 0 && j < C) s += a[j] * a[j];
      var dv = Math.pow(k + alpha * s, beta);
      out.sum.push(alpha * s); out.divisor.push(dv); out.b.push(a[i] / dv);
    }
    return out;
  },
  mount: function (root, data) {
    var self = this;
    var scale = AX.control(root, {kind: "select", label: "Input pixels", name: "scale", value: "normalised",
      options: [["normalised", "normalised (ImageNet mean and std)"], ["raw", "centred raw (0..255 minus the mean)"]], onchange: update});
    var k = AX.control(root, {kind: "range", label: "k", name: "k", min: 0, max: 4, step: 0.1, value: data.k, onchange: update,
      format: function (v) { return v.toFixed(1); }});
    var n = AX.control(root, {kind: "range", label: "n", name: "n", min: 1, max: 15, step: 1, value: data.n, onchange: update});
    var alpha = AX.control(root, {kind: "range", label: "log10 α", name: "alpha", min: -7, max: -1, step: 0.25,
      value: Math.log10(data.alpha), onchange: update, format: function (v) { return v.toFixed(2) + " (α = " + Math.pow(10, v).toExponential(1) + ")"; }});
    var beta = AX.control(root, {kind: "range", label: "β", name: "beta", min: 0, max: 2, step: 0.05, value: data.beta, onchange: update,
      format: function (v) { return v.toFixed(2); }});
    var paper = AX.button("The paper's constants", function () { k.set(data.k); n.set(data.n); alpha.set(Math.log10(data.alpha)); beta.set(data.beta); update(); }, "paper");
    var c = AX.canvas(640, 220, "Bar chart of the channel activations before and after LRN, each scaled to its largest value");
    var out = AX.h("p", {"class": "axe-out", "aria-live": "polite", "data-name": "summary"});
    root.appendChild(AX.h("h4", {text: "Local response normalisation on conv1's channels"}));
    root.appendChild(AX.h("div", {"class": "axe-row"}, [scale.wrap, paper]));
    root.appendChild(AX.h("div", {"class": "axe-row"}, [k.wrap, n.wrap, alpha.wrap, beta.wrap]));
    root.appendChild(out); root.appendChild(c);
    root.appendChild(AX.h("p", {"class": "axe-note", text: "The first " + data.normalised.length + " channels of the paper's conv1 + ReLU " +
      "(its initialisation, seeded) at one position of a small demo image. Bars: a and b = LRN(a), each divided by its own largest value, " +
      "so a constant factor leaves them equal; where they differ LRN changes the pattern across channels."}));
    function update() {
      var a = data[scale.value()], r = self.lrn(a, k.value(), n.value(), Math.pow(10, alpha.value()), beta.value());
      var amax = Math.max.apply(null, a.concat([1e-12])), bmax = Math.max.apply(null, r.b.concat([1e-12]));
      AX.bars(c, [{values: a.map(function (v) { return v / amax; }), color: "#9aa0a6", label: "a / max(a)"},
        {values: r.b.map(function (v) { return v / bmax; }), color: "#1a73e8", label: "b / max(b)"}], {max: 1});
      var ratios = [], i;
      for (i = 0; i < a.length; i++) if (a[i] > 0) ratios.push(r.b[i] / a[i]);
      var lo = Math.min.apply(null, ratios), hi = Math.max.apply(null, ratios), kb = Math.pow(k.value(), -beta.value());
      var smax = Math.max.apply(null, r.sum);
      out.textContent = "Largest α·Σa² = " + smax.toExponential(2) + " (k = " + k.value().toFixed(1) + "). " +
        "b/a ranges from " + lo.toPrecision(4) + " to " + hi.toPrecision(4) + "; k^−β = " + (isFinite(kb) ? kb.toPrecision(4) : "∞") + ". " +
        (hi - lo <= 0.01 * hi ? "LRN is (within 1%) a constant factor here." : "LRN acts: channels next to strong ones are damped more.");
    }
    update();
  }
};
