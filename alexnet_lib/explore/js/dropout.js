// Chapter 4: dropout masks on a stored activation vector; inverted dropout (train: a·m/(1-p), test: a)
// vs the paper's rule (train: a·m, test: a·(1-p)); the mean over many masks.
AX.explorers.dropout = {
  // Keep each unit with probability 1-p (m = 1 when uniform >= p).
  mask: function (n, p, rng) { var m = []; for (var i = 0; i < n; i++) m.push(rng.uniform() >= p ? 1 : 0); return m; },
  inverted: function (a, m, p) { return a.map(function (v, i) { return p < 1 ? v * m[i] / (1 - p) : 0; }); },
  meanOver: function (a, p, draws, seed) {
    var rng = AX.rng(seed), sum = a.map(function () { return 0; }), self = this;
    for (var t = 0; t < draws; t++) {
      var y = self.inverted(a, self.mask(a.length, p, rng), p);
      for (var i = 0; i < a.length; i++) sum[i] += y[i];
    }
    return sum.map(function (s) { return s / draws; });
  },
  mount: function (root, data) {
    var self = this, seed = data.seed, a = data.a;
    var p = AX.control(root, {kind: "range", label: "Drop probability p", name: "p", min: 0, max: 0.9, step: 0.05,
      value: data.p, onchange: update, format: function (v) { return v.toFixed(2); }});
    var mode = AX.control(root, {kind: "select", label: "Show", name: "mode", value: "train",
      options: [["train", "training (one mask)"], ["test", "test (no mask)"]], onchange: update});
    var resample = AX.button("New mask", function () { seed += 1; mode.set("train"); update(); }, "resample");
    var avg = AX.control(root, {kind: "select", label: "Average over", name: "draws", value: 1000, numeric: true,
      options: [[10, "10 masks"], [100, "100 masks"], [1000, "1000 masks"], [10000, "10000 masks"]], onchange: update});
    var c1 = AX.canvas(640, 200, "Bar chart: the stored activations and the output of dropout");
    var c2 = AX.canvas(640, 160, "Bar chart: the activations and the mean of the inverted-dropout output over many masks");
    var out = AX.h("p", {"class": "axe-out", "aria-live": "polite", "data-name": "summary"});
    var out2 = AX.h("p", {"class": "axe-out", "data-name": "mean"});
    root.appendChild(AX.h("h4", {text: "Dropout masks and the train/test scaling"}));
    root.appendChild(AX.h("div", {"class": "axe-row"}, [p.wrap, resample, mode.wrap]));
    root.appendChild(out); root.appendChild(c1);
    root.appendChild(AX.h("div", {"class": "axe-row"}, [avg.wrap]));
    root.appendChild(out2); root.appendChild(c2);
    function sum(v) { return v.reduce(function (s, x) { return s + x; }, 0); }
    function update() {
      var pv = p.value(), m = self.mask(a.length, pv, AX.rng(seed)), y = self.inverted(a, m, pv);
      var paperTrain = a.map(function (v, i) { return v * m[i]; }), paperTest = a.map(function (v) { return v * (1 - pv); });
      if (mode.value() === "train") {
        AX.bars(c1, [{values: a, color: "#9aa0a6", label: "activations a"}, {values: y, color: "#1a73e8", label: "a·m/(1−p) (inverted)"},
          {values: paperTrain, color: "#e8710a", label: "a·m (paper)"}], {});
        out.textContent = "Mask #" + (seed - data.seed + 1) + " keeps " + sum(m) + " of " + a.length + " units. Sum of a: " +
          sum(a).toFixed(2) + "; inverted dropout: " + sum(y).toFixed(2) + "; paper's train output: " + sum(paperTrain).toFixed(2) + ".";
      } else {
        AX.bars(c1, [{values: a, color: "#1a73e8", label: "a (inverted: test = a)"},
          {values: paperTest, color: "#e8710a", label: "a·(1−p) (paper's test rule)"}], {});
        out.textContent = "At test time no unit is dropped. Inverted dropout uses a as it is (it scaled during training); " +
          "the paper multiplies by 1−p = " + (1 - pv).toFixed(2) + " instead (sum " + sum(paperTest).toFixed(2) + ").";
      }
      var mean = self.meanOver(a, pv, avg.value(), data.seed + 1000), err = 0;
      mean.forEach(function (v, i) { err = Math.max(err, Math.abs(v - a[i])); });
      AX.bars(c2, [{values: a, color: "#9aa0a6", label: "a"}, {values: mean, color: "#1a73e8", label: "mean of a·m/(1−p)"}], {});
      out2.textContent = "Mean over " + avg.value() + " masks: largest difference from a is " + err.toFixed(3) +
        " (it shrinks as the number of masks grows: the expected value is a).";
    }
    update();
  }
};
