"""alexnet_lib.speed and the bench/ commands: FLOP counts, peaks, the ladder's loops, time to accuracy.

Tiny sizes only: these check that the measurements are computed correctly, not how fast anything is
(speed is measured by `make bench`, which prints ratios from one process)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO, make_image_data
from torch import nn

from alexnet_lib.arithmetic import forward_flops, train_flops
from alexnet_lib.models import get_model
from alexnet_lib.speed import (
    ABLATION_COMPARE,
    ABLATIONS,
    COMPILED_RUNGS,
    FAST_RECIPE,
    RUNGS,
    STRETCH_RECIPE,
    DeviceLoop,
    FitLoop,
    LadderResult,
    LoopResult,
    ablation_summary,
    ladder,
    measure_loops,
    paired_verdict,
    predicted_epoch_time,
    recipe_model,
    t_quantile,
    time_to_accuracy,
    vary_recipe,
    whiten_first_conv,
)

TINY = dict(width=0.25, norm="batch")


def test_forward_flops_matches_hand_count():
    model = nn.Sequential(nn.Conv2d(3, 8, 5, stride=2, padding=2), nn.ReLU(), nn.Conv2d(8, 16, 3, groups=2),
                          nn.Flatten(), nn.Linear(16 * 14 * 14, 10))
    model.in_channels = 3
    conv1 = 2 * 16 * 16 * 8 * 3 * 25  # 32 px -> 16 px, stride 2
    conv2 = 2 * 14 * 14 * 16 * (8 // 2) * 9  # groups=2: each kernel sees half the channels
    fc = 2 * 16 * 14 * 14 * 10
    assert forward_flops(model, 32) == conv1 + conv2 + fc
    assert train_flops(model, 32) == 3 * (conv1 + conv2 + fc)
    assert model.training  # restored


def test_alexnet_d2l_flops_and_epoch_prediction():
    m = get_model("alexnet_d2l", in_channels=1, num_classes=10)
    f = forward_flops(m, 224)
    # conv1..5 + fc6..8 of d2l's AlexNet on 1-channel 224 px input, counted by hand
    convs = (54 * 54 * 96 * 121 + 26 * 26 * 256 * 96 * 25 + 12 * 12 * 384 * 256 * 9
             + 12 * 12 * 384 * 384 * 9 + 12 * 12 * 256 * 384 * 9)
    hand = 2 * (convs + 6400 * 4096 + 4096 * 4096 + 4096 * 10)
    assert f == hand
    assert predicted_epoch_time(3 * f, 100.0, 60_000) == pytest.approx(60_000 * 3 * f / 100e9)


def test_loop_result_statistics():
    r = LoopResult("x", images=[100, 100, 100], wall=[1.0, 2.0, 4.0], cpu=[2.0, 4.0, 8.0])
    assert r.rates == [100.0, 50.0, 25.0]
    assert r.rate == 50.0  # median
    assert r.cpu_rate == pytest.approx(300 / 14)
    assert r.cpus == pytest.approx(2.0)


def test_device_loop_and_fit_loop_count_images_and_keep_losses():
    data = make_image_data(n=64, size=28, classes=10)
    losses = []
    old = torch.get_float32_matmul_precision()
    for cls in ("device", "fit"):
        torch.manual_seed(0)
        m = get_model("alexnet_small", in_channels=1, num_classes=10, dropout=0.0, **TINY)
        if cls == "device":
            lp = DeviceLoop(m, torch.device("cpu"), data, 28, 16, channels_last=True, sync_every_step=False)
        else:
            lp = FitLoop(m, torch.device("cpu"), data, 28, 16, precision="fp32")
        n, wall, cpu, faults = lp.run(2)
        assert n == 32 and wall > 0 and cpu > 0 and (faults is None or faults >= 0)
        losses.append(lp.losses)
    assert [len(x) for x in losses] == [2, 2] and all(torch.isfinite(torch.tensor(x)).all() for x in losses)
    torch.set_float32_matmul_precision(old)


def test_measure_loops_interleaves_and_records_peaks():
    data = make_image_data(n=64, size=28, classes=10)
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    loops = [DeviceLoop(get_model("alexnet_small", in_channels=1, num_classes=10, **TINY), cpu, data, 28, 8,
                        name=f"loop{i}") for i in range(2)]
    calls = []
    for lp in loops:
        run = lp.run
        lp.run = lambda k, run=run, name=lp.name: calls.append(name) or run(k)
    res, peak, peak_cpu = measure_loops(loops, steps=1, rounds=2, warmup=0, peak_dtypes=(torch.float32,),
                                        device="cpu", warmup_rounds=1)
    assert calls == ["loop0", "loop1"] * 2 + ["loop1", "loop0"]  # one unrecorded round, then alternating
    assert list(res) == ["loop0", "loop1"]
    assert all(len(r.images) == 2 and r.images[0] == 8 for r in res.values())
    assert set(peak) == {("fp32", "matmul"), ("fp32", "conv")}
    assert all(len(v) == 2 and min(v) > 0 for v in peak.values())  # one burst per round
    assert set(peak_cpu) == set(peak)


def test_compare_names_a_direction_only_when_every_round_agrees_beyond_the_spread():
    r = LadderResult("m", 28, 8, "cpu", 1, 1e9, {}, {"fp32": 1.0}, {})

    def with_rates(a, b):
        r.results = {"a": LoopResult("a", [1] * len(a), [1 / x for x in a], [1] * len(a)),
                     "b": LoopResult("b", [1] * len(b), [1 / x for x in b], [1] * len(b))}
        return r.compare("a", "b")

    c = with_rates([11, 12, 13], [10, 10, 10])
    assert c["verdict"] == "faster" and c["median"] == pytest.approx(1.2)
    assert (c["low"], c["high"]) == (pytest.approx(1.1), pytest.approx(1.3))
    assert with_rates([9, 8, 9.5], [10, 10, 10])["verdict"] == "slower"
    assert with_rates([9, 11, 10.5], [10, 10, 10])["verdict"] == "within noise"  # rounds disagree
    assert with_rates([10.1, 13, 10.2], [10, 10, 10])["verdict"] == "within noise"  # spread > effect
    assert with_rates([12], [10])["verdict"] == "one round"


def test_ladder_every_rung_on_real_fashion_mnist(fashion):
    train, _ = fashion
    r = ladder("alexnet_small", 28, 16, rungs=RUNGS, steps=1, rounds=1, warmup=0, device="cpu", data=train,
               isolate=False, **TINY)
    assert list(r.results) == list(RUNGS)
    assert r.ratio("tutorial") == 1.0
    assert r.train_flops == train_flops(get_model("alexnet_small", in_channels=1, **TINY), 28)
    for rung in RUNGS:
        assert r.rate(rung) > 0 and 0 < r.mfu(rung) and 0 < r.mfu_cpu(rung)
        assert r.results[rung].faults_per_step is None or r.results[rung].faults_per_step >= 0
    assert r.precision["tutorial"] == "fp32"
    text = r.table()
    assert all(rung in text for rung in RUNGS) and "MFU" in text and "faults/step" in text
    with pytest.raises(ValueError, match="unknown rung"):
        ladder("alexnet_small", 28, 16, rungs=("warp",), data=train, **TINY)


def test_ladder_runs_each_rung_in_a_process_of_its_own(fashion):
    train, _ = fashion
    r = ladder("alexnet_small", 28, 16, rungs=("bf16", "kept_memory"), steps=2, rounds=2, warmup=1,
               device="cpu", data=train, **TINY)
    assert list(r.results) == ["bf16", "kept_memory"]
    assert all(len(x.wall) == 2 and x.rate > 0 for x in r.results.values())
    assert r.results["kept_memory"].steps == [2, 2]
    if r.memory["bf16"] is not None:
        assert r.memory["bf16"] > 2**20 and "peak resident memory (GiB) of each process" in r.table()
    with pytest.raises(TypeError):  # the model's arguments are checked here, before any process starts
        ladder("alexnet_small", 28, 16, rungs=("bf16",), data=train, widht=0.25)


@pytest.fixture
def aot_eager(monkeypatch):
    """torch.compile with the backend aot_eager (dynamo and AOTAutograd, no code generation): inductor
    needs 20-40 s to compile even a tiny model on 2 cores, and `make bench` compiles for real. Yields the
    modes it was called with."""
    modes, compile = [], torch.compile

    def fake(model, mode):
        modes.append(mode)
        return compile(model, backend="aot_eager")

    monkeypatch.setattr(torch, "compile", fake)
    yield modes
    torch._dynamo.reset()


def test_compiled_rungs_compile_the_kept_memory_loop_in_their_mode(fashion, aot_eager):
    # (isolate=True, the path of `make bench`, spawns processes that the monkeypatch cannot reach)
    train, _ = fashion
    rungs = ("kept_memory", *COMPILED_RUNGS)
    r = ladder("alexnet_small", 28, 16, rungs=rungs, steps=1, rounds=2, warmup=1, device="cpu", data=train,
               isolate=False, **TINY)
    assert aot_eager == ["default", "max-autotune"] and list(r.results) == list(rungs)
    assert all(r.precision[k] == r.precision["kept_memory"] for k in COMPILED_RUNGS)
    assert all(r.rate(k) > 0 and r.results[k].warmup_s > 0 for k in rungs)
    head, *rows = r.table().splitlines()[1:1 + len(rungs)]
    end = head.index("img/s") + len("img/s")  # the names do not push the numbers out of their column
    assert all(row[end - 1].isdigit() and row[end] == " " for row in rows)
    with pytest.raises(ValueError, match="warmup >= 1"):
        ladder("alexnet_small", 28, 16, rungs=("compiled",), warmup=0, device="cpu", data=train, **TINY)


def test_a_compiled_loop_trains_the_models_own_parameters_as_the_plain_loop_does(aot_eager):
    data = make_image_data(n=64, size=28, classes=10)
    cpu, losses = torch.device("cpu"), []
    for compile in (None, "default"):
        torch.manual_seed(0)
        m = get_model("alexnet_small", in_channels=1, num_classes=10, dropout=0.0, **TINY)
        before = [p.detach().clone() for p in m.parameters()]
        lp = DeviceLoop(m, cpu, data, 28, 16, channels_last=True, amp=torch.bfloat16, compile=compile)
        lp.run(3)
        assert lp.model is m and m.features[0].weight.is_contiguous(memory_format=torch.channels_last)
        assert all(not torch.equal(a, b) for a, b in zip(before, m.parameters()))  # the optimizer steps them
        m.eval()
        x = torch.randn(4, 1, 28, 28).contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(lp.forward(x), m(x))  # and the compiled forward reads them
        losses.append(lp.losses)
    assert aot_eager == ["default"]
    assert losses[1] == pytest.approx(losses[0], rel=2e-2)  # same batches, same arithmetic up to rounding


def test_throughput_command_measures_the_compiled_rungs_only_when_asked():
    from bench.throughput import rungs_to_measure

    assert rungs_to_measure(True, False) == list(RUNGS)
    assert rungs_to_measure(False, False) == ["tutorial", "fit"]
    assert rungs_to_measure(True, True) == [*RUNGS[:-1], *COMPILED_RUNGS, "fit"]
    assert rungs_to_measure(False, True) == ["tutorial", *COMPILED_RUNGS, "fit"]


def test_time_to_accuracy_reports_times_and_target(fashion):
    train, test = fashion
    recipe = dict(model=dict(name="alexnet_small", **TINY),
                  fit=dict(image_size=28, epochs=1, batch_size=64, lr=0.05, schedule="onecycle",
                           label_smoothing=0.1, seed=0))
    r = time_to_accuracy(recipe, target=0.0, train=train, test=test.subset(256), n_train=512, progress=False)
    assert r["n_train"] == 512 and len(r["history"].test_top1) == 1
    assert r["reached"] == 1 and r["time_to_target_s"] == r["train_eval_s"] > 0
    assert r["total_s"] >= r["train_eval_s"] and 0.0 <= r["accuracy"] <= 1.0
    r2 = time_to_accuracy(recipe, target=1.01, train=train, test=test, n_train=512, n_test=256,
                          progress=False)
    assert r2["reached"] is None and r2["time_to_target_s"] is None and r2["n_test"] == 256


def _bench(module, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", f"bench.{module}", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_throughput_command_prints_ratio_and_mfu(fashion_root, tmp_path):
    out = tmp_path / "t.json"
    p = _bench("throughput", "--models", "alexnet_small@28:width=0.25,norm=batch", "--batch-size", "16",
               "--steps", "1", "--rounds", "1", "--warmup", "0", "--warmup-rounds", "0", "--device", "cpu",
               "--json", str(out))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "RATIO" in p.stdout and "MFU" in p.stdout and "peak GFLOP/s" in p.stdout
    doc = json.loads(out.read_text())
    (row,) = doc["results"]
    meta = doc["meta"]
    assert meta["bf16 hardware"] and meta["date"] and "bench.throughput" in meta["command"]
    assert row["model"] == "alexnet_small" and row["kwargs"] == TINY and row["image_size"] == 28
    assert set(row["loops"]) == {"tutorial", "fit"} and row["ratio_fit_vs_tutorial"] > 0


def test_throughput_command_rejects_bad_model_spec(fashion_root):
    p = _bench("throughput", "--models", "alexnet_small@big")
    assert p.returncode != 0 and "name@size" in p.stderr


def test_time_to_accuracy_command_exit_status(fashion_root, tmp_path):
    out = tmp_path / "r.json"
    args = ["--epochs", "1", "--width", "0.25", "--n-train", "512", "--n-test", "256", "--batch-size", "64",
            "--json", str(out), "--budget-steps", "1"]
    p = _bench("time_to_accuracy", *args, "--target", "0")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "target 0% reached after epoch 1" in p.stdout and "budget: the tutorial loop needs" in p.stdout
    (r,) = json.loads(out.read_text())["runs"]
    assert r["n_train"] == 512 and r["recipe"]["fit"]["epochs"] == 1 and len(r["history"]["test_top1"]) == 1
    budget = json.loads(out.read_text())["budget"]  # the default budget, measured before and after the run
    assert budget["within"] == [True] and len(budget["measurements"]) == 2 and len(budget["per_run"]) == 1
    assert "budget around this run" in p.stdout
    args += ["--budget-images", "0", "--init", "whiten"]  # no budget; a target no run reaches, two seeds
    p = _bench("time_to_accuracy", *args, "--target", "1.01", "--seeds", "0", "1")
    assert p.returncode == 1 and p.stdout.count("NOT reached") == 2, p.stderr[-3000:]
    assert "2 seeds: test accuracy" in p.stdout and "target reached by 0" in p.stdout
    runs = json.loads(out.read_text())["runs"]
    assert [r["recipe"]["fit"]["seed"] for r in runs] == [0, 1] and runs[0]["recipe"]["init"] == "whiten"


def test_time_to_accuracy_command_stretch_recipe(fashion_root, tmp_path):
    out = tmp_path / "s.json"
    small = ["--epochs", "1", "--n-train", "256", "--n-test", "128", "--batch-size", "64"]
    p = _bench("time_to_accuracy", "--recipe", "stretch", *small, "--json", str(out))
    assert out.exists(), p.stderr[-3000:]
    doc = json.loads(out.read_text())
    (r,) = doc["runs"]
    assert r["target"] == 0.93 and r["recipe"] == vary_recipe(STRETCH_RECIPE, fit=dict(
        epochs=1, batch_size=64, seed=0))  # the stretch recipe, width 0.5 included, and its target
    assert doc["time_limit"]["seconds"] == 210 and "time limit:" in p.stdout
    assert doc["budget"] is None  # the stretch recipe is not compared with the tutorial budget by default
    assert p.returncode == (0 if r["reached"] else 1)
    p = _bench("time_to_accuracy", "--recipe", "stretch", "--ablation", *small)
    assert p.returncode == 2 and "--ablation varies the fast recipe" in p.stderr
    p = _bench("time_to_accuracy", "--recipe", "stretch", "--init", "none", *small, "--json", str(out))
    assert json.loads(out.read_text())["runs"][0]["recipe"]["init"] is None, p.stderr[-3000:]
    p = _bench("time_to_accuracy", "--init", "whiten", "--width", "1")  # 64 filters: refused at once
    assert p.returncode == 2 and "at most 2 x 25" in p.stderr and "cpu:" not in p.stdout


def test_recipe_ablation_changes_one_thing_per_seed_and_reports_divergence(monkeypatch):
    import alexnet_lib.speed as speed
    from alexnet_lib.train import TrainingDivergedError

    seen = []

    def fake(recipe, **kw):
        seen.append(recipe)
        if recipe["fit"]["lr"] > 1:
            raise TrainingDivergedError("loss is nan at epoch 1, step 3\nmore detail", epoch=1, step=3,
                                        lr=10.0, checkpoint=None)
        ls, seed = recipe["fit"]["label_smoothing"], recipe["fit"]["seed"]
        return dict(recipe=recipe, accuracy=0.9 - ls + 0.001 * seed, train_eval_s=10.0 + seed,
                    reached=1 if ls == 0 else None, time_to_target_s=5.0)

    monkeypatch.setattr(speed, "time_to_accuracy", fake)
    base = vary_recipe(FAST_RECIPE, fit=dict(label_smoothing=0.1, epochs=2))
    variants = {"base": {}, "no ls": dict(fit=dict(label_smoothing=0.0)), "boom": dict(fit=dict(lr=10.0))}
    out = speed.recipe_ablation(variants, base=base, seeds=(0, 1, 2), n_train=7)
    assert list(out) == ["base", "no ls", "boom"] and all(len(v) == 3 for v in out.values())
    # interleaved: every variant for seed 0, then in reverse order for seed 1, ...
    assert [(r["fit"]["seed"], r["fit"]["label_smoothing"], r["fit"]["lr"]) for r in seen[:6]] == [
        (0, 0.1, base["fit"]["lr"]), (0, 0.0, base["fit"]["lr"]), (0, 0.1, 10.0),
        (1, 0.1, 10.0), (1, 0.0, base["fit"]["lr"]), (1, 0.1, base["fit"]["lr"])]
    assert seen[1] == {"model": base["model"], "fit": {**base["fit"], "label_smoothing": 0.0, "seed": 0}}
    assert out["boom"][0]["diverged"] == "loss is nan at epoch 1, step 3"
    summary = ablation_summary(out, compare={})
    # paired per seed: the seed term cancels, so the difference is exactly +10 points with no spread
    assert summary["no ls"]["acc_diff"] == pytest.approx([10.0] * 3)
    assert summary["no ls"]["acc"]["sign"] == 1 and summary["no ls"]["compared_with"] == "base"
    text = speed.ablation_table(out, compare={})
    assert "+10.00 ± 0.00" in text and "diverged" in text and "3 of 3 runs diverged" in text
    assert "3/3" in text and "0/3" in text
    # one seed: no verdict
    one = speed.recipe_ablation(variants, base=base, n_train=7)
    assert all(len(v) == 1 for v in one.values())
    assert "one seed: no conclusion" in speed.ablation_table(one, compare={})


def test_paired_verdict_needs_the_difference_to_leave_its_confidence_interval():
    assert t_quantile(2) == pytest.approx(4.303) and t_quantile(100) == pytest.approx(1.984, abs=2e-3)
    try:
        from scipy import stats
    except ImportError:
        pass
    else:
        for df in (1, 2, 5, 30, 31, 60, 200):
            assert t_quantile(df) == pytest.approx(stats.t.ppf(0.975, df), rel=2e-3), df
    clear = paired_verdict([-1.0, -1.2, -0.9])
    assert clear["sign"] == -1 and clear["verdict"].startswith("lower by 1.03 points (95% CI ±")
    noisy = paired_verdict([0.3, -0.2, 0.1])
    assert noisy["sign"] == 0 and noisy["verdict"].startswith("no difference beyond the noise (+0.07 points")
    sd = noisy["sd"]
    assert noisy["half"] == pytest.approx(4.303 * sd / 3 ** 0.5, rel=1e-3)
    assert paired_verdict([0.5])["verdict"] == "one seed: no conclusion (+0.50 points)"
    assert paired_verdict([float("nan")])["verdict"] == "no run to compare"
    t = paired_verdict([45.0, 50.0, 48.0], unit="%", more="slower", less="faster", digits=0)
    assert t["verdict"].startswith("slower by 48% (95% CI")


def test_cycle_momentum_false_fixes_the_momentum_and_changes_nothing_else():
    from alexnet_lib.train import _make_schedule

    schedules = {}
    for cycle in (True, False):
        opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1, momentum=0.9)
        sched, per_step = _make_schedule("onecycle", opt, 3, 10, cycle_momentum=cycle)
        assert per_step
        lrs, moms = [], []
        for _ in range(30):
            lrs.append(opt.param_groups[0]["lr"]), moms.append(opt.param_groups[0]["momentum"])
            opt.step()
            sched.step()
        schedules[cycle] = lrs, moms
    (lr_cycle, mom_cycle), (lr_fixed, mom_fixed) = schedules[True], schedules[False]
    assert lr_cycle == pytest.approx(lr_fixed) and lr_cycle[0] == pytest.approx(0.1 / 25)
    assert max(mom_cycle) == pytest.approx(0.95) and min(mom_cycle) < 0.86  # PyTorch's default cycle
    assert set(mom_fixed) == {0.9}  # SGD's momentum, untouched


def test_time_to_accuracy_passes_cycle_momentum_to_fit(fashion):
    train, test = fashion
    recipe = dict(model=dict(name="alexnet_small", **TINY), fit=dict(
        image_size=28, epochs=1, batch_size=64, lr=0.05, schedule="onecycle", cycle_momentum=False, seed=0))
    seen = []
    original = torch.optim.SGD.step

    def step(self, *a, **k):
        seen.append(self.param_groups[0]["momentum"])
        return original(self, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.SGD, "step", step)
        r = time_to_accuracy(recipe, train=train, test=test, n_train=256, n_test=128, progress=False)
    assert seen and set(seen) == {0.9}
    assert r["history"].config["cycle_momentum"] is False


def _effective(recipe: dict) -> dict:
    """The settings that act: ``cycle_momentum`` only matters under the one-cycle schedule."""
    fit = dict(recipe["fit"])
    fit["cycle_momentum"] = fit.get("schedule") == "onecycle" and fit.get("cycle_momentum", True)
    return {**{f"model.{k}": v for k, v in recipe["model"].items()},
            **{f"fit.{k}": v for k, v in fit.items()}}


def test_every_ablation_row_differs_in_one_setting_from_the_row_it_is_compared_with():
    first = next(iter(ABLATIONS))
    assert ABLATIONS[first] == {}
    for name, change in ABLATIONS.items():
        if name == first:
            continue
        other, what = ABLATION_COMPARE.get(name, (first, ""))
        assert other in ABLATIONS and what, name
        a = _effective(vary_recipe(FAST_RECIPE, **change))
        b = _effective(vary_recipe(FAST_RECIPE, **ABLATIONS[other]))
        differ = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
        assert len(differ) == 1, (name, other, differ)


def test_bench_ablation_writes_seeds_and_summary(monkeypatch, tmp_path, capsys):
    sys.path.insert(0, str(REPO))
    import bench.time_to_accuracy as bench_tta

    def fake(base=None, seeds=None, **kw):
        seeds = seeds or [0]
        return {name: [dict(recipe=vary_recipe(base, **ch), accuracy=0.9 + 0.01 * i + 0.001 * s,
                            train_eval_s=10.0 + s, reached=1, time_to_target_s=5.0) for s in seeds]
                for i, (name, ch) in enumerate(ABLATIONS.items())}

    monkeypatch.setattr(bench_tta, "recipe_ablation", fake)
    out = tmp_path / "a.json"
    assert bench_tta.main(["--ablation", "--seeds", "0", "1", "2", "--json", str(out)]) == 0
    assert "no label smoothing vs fast recipe" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["meta"]["command"] and set(doc["runs"]) == set(ABLATIONS)
    assert all(len(v) == 3 for v in doc["runs"].values())
    assert doc["summary"]["no label smoothing"]["acc_diff"] == pytest.approx([1.0] * 3)


def test_bench_compares_each_run_with_the_budget_measured_around_it(monkeypatch, tmp_path):
    sys.path.insert(0, str(REPO))
    import bench.time_to_accuracy as bench_tta

    budgets = iter([10.0, 20.0, 40.0])  # before seed 0, between the seeds, after seed 1
    monkeypatch.setattr(bench_tta, "tutorial_seconds", lambda n, **kw: dict(
        seconds=next(budgets), img_s=1.0, n_images=n, model="alexnet_small", image_size=32, batch_size=128,
        steps=8))
    run = dict(accuracy=0.91, train_eval_s=18.0, total_s=19.0, cpu_s=30.0, reached=1, time_to_target_s=18.0,
               load_before=None, load_after=None, n_train=1, n_test=1)
    history = type("H", (), dict(test_top1=[0.91], to_dict=lambda self: {}, __len__=lambda self: 1))()
    monkeypatch.setattr(bench_tta, "time_to_accuracy", lambda recipe, **kw: dict(
        run, recipe=recipe, history=history))
    out = tmp_path / "b.json"
    assert bench_tta.main(["--seeds", "0", "1", "--json", str(out)]) == 0
    budget = json.loads(out.read_text())["budget"]
    assert budget["per_run"] == [15.0, 30.0] and budget["within"] == [False, True]  # 18 s: over 15, under 30
    assert budget["seconds"] == pytest.approx(70 / 3)


def test_recipes_name_only_what_get_model_and_fit_accept():
    import inspect

    from alexnet_lib.train import fit

    fit_args = set(inspect.signature(fit).parameters)
    stretch = dict(model={"width": STRETCH_RECIPE["model"]["width"]}, fit=dict(STRETCH_RECIPE["fit"]),
                   init=STRETCH_RECIPE.get("init"))
    images = make_image_data(n=16, size=28)
    for name, change in {"FAST_RECIPE": {}, "STRETCH_RECIPE": stretch, **ABLATIONS}.items():
        recipe = vary_recipe(FAST_RECIPE, **change)
        assert set(change) <= {"model", "fit", "init"}, name
        assert set(recipe["fit"]) <= fit_args, name
        model = recipe_model(recipe, images)  # get_model accepts the model settings (and init its images)
        assert isinstance(model, nn.Module)
    # vary_recipe copies: the shared recipe is never changed
    before = json.dumps(FAST_RECIPE)
    vary_recipe(FAST_RECIPE, model=dict(width=1.0), fit=dict(epochs=9))["fit"]["lr"] = 1.0
    assert json.dumps(FAST_RECIPE) == before


def _smooth_images(n=300, size=12, seed=0):
    """ImageData whose neighbouring pixels are correlated (random 4x4 images enlarged), as in real images."""
    from alexnet_lib.data import ImageData

    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 1, 4, 4, generator=g)
    images = (255 * nn.functional.interpolate(small, size=size, mode="bilinear")).round().to(torch.uint8)
    # normalised with a mean far from theirs, so that a covariance that is not centred would fail
    return ImageData(images, torch.arange(n) % 4, [f"c{i}" for i in range(4)], "smooth", mean=(0.2,),
                     std=(0.25,))


def test_whiten_first_conv_makes_the_patch_responses_uncorrelated_with_unit_variance():
    from alexnet_lib.data import DeviceLoader

    data = _smooth_images()
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3))
    second = model[2].weight.detach().clone()
    conv = whiten_first_conv(model, data, image_size=12, n_images=len(data))
    assert conv is model[0] and torch.equal(conv.weight[4:], -conv.weight[:4]) and not conv.bias.any()
    assert torch.equal(model[2].weight, second)  # only the first convolution is set
    x = next(iter(DeviceLoader(data, batch_size=len(data), image_size=12)))[0]  # the images it saw
    responses = nn.functional.conv2d(x, conv.weight[:4], padding=1).transpose(0, 1).reshape(4, -1).double()
    # the 4 leading directions of these smooth images have eigenvalues far above eps: variance ~1 each,
    # over every position the convolution computes (its zero padding included)
    torch.testing.assert_close(torch.cov(responses), torch.eye(4, dtype=torch.float64), atol=0.01, rtol=0)
    # ... and they are the leading ones: the variance along each filter's direction, largest first, is the
    # largest eigenvalues of the patches' covariance; each direction's largest component is positive
    patches = nn.functional.unfold(x.double(), 3, padding=1).transpose(1, 2).reshape(-1, 9)
    eigenvalues = torch.linalg.eigvalsh(torch.cov(patches.T)).flip(0)
    units = conv.weight[:4].detach().flatten(1).double()
    units = units / units.norm(dim=1, keepdim=True)
    torch.testing.assert_close(torch.cov(units @ patches.T).diag(), eigenvalues[:4], rtol=1e-3, atol=0)
    assert (units.gather(1, units.abs().argmax(1, keepdim=True)) > 0).all()


def test_whiten_first_conv_refuses_what_it_cannot_whiten():
    data = _smooth_images(n=20)
    for model, match in [(nn.Sequential(nn.Linear(4, 4)), "no nn.Conv2d"),
                         (nn.Conv2d(1, 7, 3), "even number of filters"),
                         (nn.Conv2d(1, 20, 3), r"at most 2 x 9"),
                         (nn.Conv2d(2, 8, 3, groups=2), "groups=1"),
                         (nn.Conv2d(1, 8, 3, padding="same"), "zero padding given as numbers"),
                         (nn.Conv2d(1, 8, 3, padding=1, padding_mode="reflect"), "zero padding"),
                         (nn.Conv2d(3, 8, 3), "1 channel")]:
        with pytest.raises(ValueError, match=match):
            whiten_first_conv(model, data, image_size=12)
    with pytest.raises(TypeError, match="ImageData"):
        whiten_first_conv(nn.Conv2d(1, 8, 3), torch.zeros(4, 1, 12, 12))
    with pytest.raises(ValueError, match="eps must be > 0"):
        whiten_first_conv(nn.Conv2d(1, 8, 3), data, eps=0)
    with pytest.raises(ValueError, match="n_images must be >= 1"):
        whiten_first_conv(nn.Conv2d(1, 8, 3), data, n_images=0)


def test_a_recipe_init_is_kept_by_vary_recipe_and_applied_by_recipe_model():
    whitened = vary_recipe(FAST_RECIPE, init="whiten")
    assert "init" not in FAST_RECIPE and vary_recipe(whitened, fit=dict(seed=3))["init"] == "whiten"
    assert vary_recipe(whitened, init=None)["init"] is None
    data = _smooth_images(n=40, size=28)
    plain, white = recipe_model(FAST_RECIPE, data), recipe_model(whitened, data)
    # the same draw of weights (the recipe's seed) except the first convolution, set from the images
    assert not plain.features[0].weight.equal(white.features[0].weight)
    assert plain.features[4].weight.equal(white.features[4].weight)
    with pytest.raises(ValueError, match=r"pass them as recipe_model\(recipe, data=train\)"):
        recipe_model(whitened)
    with pytest.raises(ValueError, match="init must be one of"):
        vary_recipe(FAST_RECIPE, init="pca")
    bad = {**FAST_RECIPE, "init": "pca"}  # already in a recipe
    with pytest.raises(ValueError, match="init must be one of"):
        vary_recipe(bad, fit=dict(seed=1))
    with pytest.raises(ValueError, match="the recipe's init must be one of"):
        recipe_model(bad, data)
    with pytest.raises(TypeError, match="unknown entries"):
        vary_recipe(FAST_RECIPE, inits="whiten")


def test_the_stretch_recipe_is_what_chapter_8_says():
    # chapter 8 describes it: width 0.5, five epochs, peak lr 0.2, whitening of the 32 5x5 filters of the
    # first convolution (16 eigenvectors and their negatives) from 5,000 training images
    import inspect

    assert STRETCH_RECIPE["model"]["width"] == 0.5 and STRETCH_RECIPE["init"] == "whiten"
    assert STRETCH_RECIPE["fit"]["epochs"] == 5 and STRETCH_RECIPE["fit"]["lr"] == 0.2
    conv = recipe_model(STRETCH_RECIPE, make_image_data(n=16, size=28)).features[0]
    assert conv.out_channels == 32 and conv.kernel_size == (5, 5) and conv.in_channels == 1
    assert torch.equal(conv.weight[16:], -conv.weight[:16])  # whitened: 16 filters and their negatives
    model = recipe_model(STRETCH_RECIPE, make_image_data(n=16, size=28))
    assert isinstance(model.features[1], nn.BatchNorm2d)  # "BatchNorm right after the convolution"
    assert inspect.signature(whiten_first_conv).parameters["n_images"].default == 5000


def test_time_to_accuracy_counts_the_whitening_in_the_recipes_time():
    train, test = make_image_data(n=64, size=28, seed=0), make_image_data(n=32, size=28, seed=1)
    recipe = vary_recipe(FAST_RECIPE, fit=dict(epochs=1, batch_size=32), init="whiten")
    r = time_to_accuracy(recipe, target=0.0, train=train, test=test, progress=False)
    assert r["init_s"] > 0 and r["reached"] == 1
    assert r["train_eval_s"] == r["init_s"] + r["history"].wall_time[-1]
    assert r["time_to_target_s"] == r["init_s"] + r["history"].wall_time[0]
    plain = time_to_accuracy(vary_recipe(recipe, init=None), target=0.0, train=train, test=test,
                             progress=False)
    assert plain["init_s"] == 0 and plain["train_eval_s"] == plain["history"].wall_time[-1]
