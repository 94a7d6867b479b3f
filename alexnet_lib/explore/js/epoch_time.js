// Chapter 8: epoch time = images × FLOPs of one training step per image / achieved FLOP/s, with the
// forward FLOPs of the model at any input size from the same layer arithmetic as chapter 1
// (a training step ≈ 3 × forward, alexnet_lib.arithmetic.train_flops). The Fashion-MNIST presets use the
// models built for 1 channel and 10 classes, the ImageNet preset those for 3 channels and 1,000 classes.
AX.explorers.epoch_time = {
  trainFlops: function (spec, size) { var t = AX.trace(spec, size); return t.error ? null : 3 * t.flops; },
  epochSeconds: function (flopsPerImage, gflops, nImages) { return nImages * flopsPerImage / (gflops * 1e9); },
  mount: function (root, data) {
    var self = this;
    var model = AX.control(root, {kind: "select", label: "Network", name: "model", value: data.model,
      options: Object.keys(data.models), onchange: update});
    var size = AX.control(root, {kind: "number", label: "Image size (px)", name: "size", min: 1, max: 1024, value: data.size, onchange: update});
    var n = AX.control(root, {kind: "number", label: "Images per epoch", name: "n", min: 1, max: 1e8, value: data.n, onchange: update});
    var gf = AX.control(root, {kind: "number", label: "Achieved GFLOP/s", name: "gflops", min: 0.1, max: 1e7, step: 0.1, value: data.gflops, onchange: update});
    var imagenet = false;  // which build of the models: Fashion-MNIST's (1 channel, 10 classes) or ImageNet's
    var out = AX.h("p", {"class": "axe-out", "aria-live": "polite", "data-name": "summary"});
    root.appendChild(AX.h("h4", {text: "Epoch-time calculator"}));
    root.appendChild(AX.h("div", {"class": "axe-row"}, [model.wrap, size.wrap]));
    root.appendChild(AX.h("div", {"class": "axe-row"}, [n.wrap, gf.wrap]));
    root.appendChild(AX.h("div", {"class": "axe-row", role: "group", "aria-label": "Presets"}, [
      AX.button("Fashion-MNIST at 28 px", function () { imagenet = false; size.set(28); n.set(60000); update(); }, "preset-28"),
      AX.button("... resized to 224 px", function () { imagenet = false; size.set(224); n.set(60000); update(); }, "preset-224"),
      AX.button("ImageNet at 224 px", function () { imagenet = true; size.set(224); n.set(1281167); update(); }, "preset-imagenet")]));
    root.appendChild(out);
    root.appendChild(AX.h("p", {"class": "axe-note", text: "Models built for Fashion-MNIST (one input channel, 10 classes), " +
      "or for ImageNet (3 channels, 1,000 classes) after the ImageNet preset; FLOPs count a multiply-add as 2, convolutions and Linear layers only. Put in the GFLOP/s your own loop achieves " +
      "(this chapter measures it); the starting value is only an example."}));
    function update() {
      var spec = (imagenet ? data.imagenet_models : data.models)[model.value()], s = size.value(), t = AX.trace(spec, s);
      if (t.error) { out.className = "axe-out axe-err"; out.textContent = "This network cannot take " + s + " px: " + t.error + "."; return; }
      out.className = "axe-out";
      var f = 3 * t.flops, sec = self.epochSeconds(f, gf.value(), n.value());
      out.textContent = model.value() + (imagenet ? " (3 channels, 1,000 classes)" : " (1 channel, 10 classes)") + " at " + s + " px: " + AX.fmt(t.flops) + " FLOPs forward, ≈ " + AX.fmt(f) +
        " per training image; " + AX.fmtInt(n.value()) + " images × " + AX.fmt(f) + " / " + gf.value() + " GFLOP/s = " +
        AX.fmtSeconds(sec) + " per epoch.";
    }
    update();
  }
};
