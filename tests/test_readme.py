"""README's speed section is generated from the committed benchmark results (tools/readme_bench.py)."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("readme_bench", ROOT / "tools" / "readme_bench.py")
readme_bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme_bench)

META = {"device": "cpu", "cpu": "Test CPU (2 logical cores; torch threads: 2)", "bf16 hardware": "AMX",
        "torch": "2.14.1", "precision": "bfloat16", "date": "2026-12-02", "cores": 2,
        "command": "python -m bench.x", "load_average_start": [0.1, 0.2, 0.3]}


def test_readme_matches_committed_results():
    assert readme_bench.main(["--check"]) == 0, "run: python tools/readme_bench.py"


def test_render_from_results(tmp_path, monkeypatch):
    loop = lambda rate, mfu, prec: dict(img_s=rate, mfu=mfu, precision=prec)  # noqa: E731
    (tmp_path / "throughput.json").write_text(json.dumps(dict(meta=META, results=[dict(
        model="alexnet_d2l", image_size=224, batch_size=128, ratio_fit_vs_tutorial=3.5, ceiling_ratio=19.3,
        peak_gflops={"fp32": 183.0, "bf16": 2213.0},
        loops={"tutorial": loop(20.4, 0.6, "fp32"), "bf16": loop(60.0, 0.15, "bf16"),
               "fit": loop(71.4, 0.17, "bf16")},
        fit_vs={"tutorial": dict(median=3.5, low=3.4, high=3.6, verdict="faster"),
                "bf16": dict(median=1.19, low=1.1, high=1.3, verdict="faster")})])))
    run = lambda seed, acc: dict(recipe=dict(model=dict(name="alexnet_small", width=0.25), fit=dict(  # noqa: E731
        seed=seed, image_size=28, optimizer="sgd", lr=0.1, schedule="onecycle", label_smoothing=0.1,
        batch_size=256, epochs=3)), accuracy=acc, train_eval_s=50.0, reached=3, target=0.9)
    runs = [dict(run(0, .91), time_to_target_s=50.0), dict(run(1, .915), time_to_target_s=None)]
    budget = dict(seconds=40.0, per_run=[39.0, 41.0], within=[False, False], measurements=[dict(
        n_images=6000, model="alexnet_small", image_size=32, img_s=6000 / sec, seconds=sec, steps=8,
        batch_size=128) for sec in (38.0, 40.0, 42.0)])
    (tmp_path / "time_to_accuracy.json").write_text(json.dumps(dict(meta=META, runs=runs, budget=budget)))
    stretch = [dict(run(0, .931), time_to_target_s=190.0, target=0.93, init_s=1.5),
               dict(run(1, .928), time_to_target_s=None, target=0.93, init_s=2.25)]
    for r in stretch:
        r["recipe"]["init"] = "whiten"
    (tmp_path / "time_to_accuracy_stretch.json").write_text(json.dumps(dict(
        meta=META, runs=stretch, budget=None, time_limit=dict(seconds=210.0, within=[True, False]))))
    monkeypatch.setattr(readme_bench, "RESULTS", tmp_path)
    text = readme_bench.render()
    assert "| `alexnet_d2l` at 224 px, batch 128 | 20.4 img/s (60% of the fp32 peak) | 71.4 img/s" in text
    assert "| 3.50x | 19.30x (18% of it reached) | 1.19x `bf16` (1.10-1.30: faster) | 12.09x |" in text
    assert "Test CPU" in text and "bf16 computed by AMX" in text
    assert "torch.compile" not in text  # no compiled rung measured
    assert "91.00% in 50.0 s (seed 0), 91.50% in 50.0 s (seed 1)" in text
    assert "2 of 2 runs reached 90%" in text
    assert ("the time the tutorial loop needs for 6,000 images of `alexnet_small` at 32 px, measured before "
            "every run and after the last, each run compared with the mean of the two measurements around it "
            "(3 measurements, each extrapolated from 8 timed steps of batch 128: mean 40.0 s, 38.0-42.0 s); "
            "time to 90% per seed: 50.0 s (budget 39.0 s), not reached (budget 41.0 s) (0 of 2 within the "
            "budget)") in text
    assert "the stretch recipe (`alexnet_small(width=0.25)` at 28 px" in text
    assert ("3 epochs, the first convolution initialised by patch whitening) reached 93.10% in 50.0 s "
            "(seed 0), 92.80% in 50.0 s (seed 1) of training plus evaluation (counting the model's set-up "
            "and patch whitening before training, 1.50-2.25 s)") in text
    assert "initialised by patch whitening" not in text.split("stretch recipe")[0]  # the fast one has none
    assert "Time limit 210 s of training plus evaluation: 1 of 2 runs reached 93% within it." in text
    # results written before the budget was measured around each run still render
    old = dict(seconds=40.0, within=[True], measurements=[dict(n_images=6000, model="alexnet_small",
                                                               image_size=32)])
    assert "measured before and after the runs (1 measurement: mean 40.0 s); time to 90% per seed: 50.0 s" \
        in readme_bench._budget(old, runs[:1])


def test_compiled_rungs_get_a_sentence_of_their_own():
    loop = dict(img_s=50.0, mfu=0.5, precision="bf16")
    versus = lambda m, lo, hi, v: dict(median=m, low=lo, high=hi, verdict=v)  # noqa: E731
    rates = (("tutorial", 29.0), ("kept_memory", 74.0), ("compiled", 63.5), ("compiled_max_autotune", 80.0),
             ("fit", 76.0))
    loops = {k: dict(loop, img_s=r) for k, r in rates}
    loops["compiled"].update(compile="default", warmup_s=31.4)
    loops["compiled_max_autotune"].update(compile="max-autotune", warmup_s=29.6)
    row = dict(model="alexnet_d2l", image_size=224, batch_size=128, ratio_fit_vs_tutorial=2.6,
               ceiling_ratio=2.9, peak_gflops={"fp32": 200.0, "bf16": 400.0}, loops=loops,
               fit_vs={"tutorial": versus(2.6, 2.3, 2.8, "faster"),
                       "compiled": versus(1.2, 1.12, 1.22, "faster"),
                       "compiled_max_autotune": versus(0.95, 0.9, 1.01, "within noise")},
               compiled_vs_kept_memory={"compiled": versus(0.86, 0.85, 0.88, "slower"),
                                        "compiled_max_autotune": versus(1.08, 1.01, 1.1, "faster")})
    text = "\n".join(readme_bench.throughput_section(dict(meta=dict(META, warmup=2, inductor_cache="empty"),
                                                         results=[row])))
    assert "| 0.95x `compiled_max_autotune` (0.90-1.01: within noise) |" in text  # the fastest other rung
    assert ("`torch.compile` (the `kept_memory` loop with the model compiled; compiling happens in the "
            "warm-up steps, which are not timed" + readme_bench._CACHE_TEXT["empty"] + "): on `alexnet_d2l` "
            "at 224 px `compiled` (mode default) 63.5 img/s, 0.86x the speed of `kept_memory` (rounds "
            "0.85-0.88: slower), `fit` 1.20x its speed (rounds 1.12-1.22: faster), its 2 warm-up steps with "
            "the compiling 31 s, and `compiled_max_autotune` (mode max-autotune) 80.0 img/s, 1.08x the speed "
            "of `kept_memory` (rounds 1.01-1.10: faster), `fit` 0.95x its speed (rounds 0.90-1.01: within "
            "noise), its 2 warm-up steps with the compiling 30 s.") in text


def test_intro_chapter_times_match_the_recorded_full_runs():
    spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "tools" / "run_notebooks.py")
    run_notebooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_notebooks)
    assert run_notebooks.main(["--check"]) == 0, "run: python tools/run_notebooks.py --intro"
    text = run_notebooks.intro_table({"chapters": {"01_x.ipynb": dict(wall_s=30.0, machine=dict(
        cpu="Test CPU", torch="2.14")), "07_full_training.ipynb": dict(wall_s=400.0, machine=dict(
            cpu="Test CPU", torch="2.14"))}})
    assert "on Test CPU, torch 2.14: about 7 minutes for all 2 chapters together" in text
    assert "| {doc}`/notebooks/01_x` | CPU | under a minute |" in text
    assert "a GPU (e.g. Colab) makes full mode much faster | about 7 minutes |" in text
