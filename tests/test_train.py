"""alexnet_lib.train: a real (short) training run, evaluate, checkpoints and exact resume, divergence, DDP."""

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, TinyCNN, make_image_data, write_image_folder
from torch import nn

from alexnet_lib.checkpoint import load_checkpoint
from alexnet_lib.data import image_folder_loader
from alexnet_lib.models import get_model
from alexnet_lib.train import (
    CheckpointMismatchError,
    History,
    TrainingDivergedError,
    evaluate,
    fit,
    seed_everything,
)


@pytest.fixture(scope="module")
def small(fashion):
    """600 training and 300 test images of the real Fashion-MNIST."""
    return fashion[0].subset(600, seed=0), fashion[1].subset(300, seed=0)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bad_arguments():
    d = make_image_data(n=8)
    for kw, match in [(dict(epochs=0), "epochs"), (dict(epochs=1, optimizer="adam"), "optimizer"),
                      (dict(epochs=1, schedule="linear"), "schedule"),
                      (dict(epochs=1, precision="fp8"), "precision"),
                      (dict(epochs=1, resume=True), "out_dir")]:
        with pytest.raises(ValueError, match=match):
            fit(TinyCNN(), d, progress=False, **kw)


# --- a real training run ----------------------------------------------------------------------------------


def test_fit_learns_fashion_mnist(fashion, tmp_path, capsys):
    train, test = fashion[0].subset(4000, seed=0), fashion[1].subset(1000, seed=0)
    seed_everything(0)
    model = get_model("lenet5", modern=True)
    h = fit(model, train, test, epochs=2, batch_size=32, lr=3e-3, optimizer="adamw", schedule="onecycle",
            device="cpu", out_dir=tmp_path, progress=True)
    first, last = sum(h.step_loss[:20]) / 20, sum(h.step_loss[-20:]) / 20
    assert first > 2.0 and last < 0.8, (first, last)
    assert h.test_top1[-1] > 0.70 and h.test_top5[-1] > 0.97, h.test_top1
    assert h.epoch == [1, 2] and len(h.step_loss) == len(h.step_lr) == 2 * (4000 // 32)
    assert h.train_loss[1] < h.train_loss[0] and 0 < h.train_acc[0] < h.train_acc[1] <= 1
    assert all(v > 0 for v in h.images_per_sec) and h.wall_time[1] == pytest.approx(sum(h.epoch_time))
    assert max(h.step_lr) == pytest.approx(3e-3, rel=0.01) and h.step_lr[-1] < 1e-5  # one-cycle shape
    assert h.config["model"] == "LeNet5" and h.config["amp"] in ("bf16", "fp32")
    # JSON round trip; history.json is the same as the returned history
    assert History.from_dict(json.loads(json.dumps(h.to_dict()))) == h
    assert History.load(tmp_path / "history.json") == h
    out = capsys.readouterr().out
    assert "epoch   2/2" in out and "top-1" in out and "img/s" in out
    assert {p.name for p in tmp_path.iterdir()} == {"checkpoint.pt", "history.json"}  # no temp files left


def test_fit_with_image_folder_loaders(tmp_path):
    root = write_image_folder(tmp_path / "folder")
    kw = dict(image_size=16, batch_size=6, num_workers=0)
    train, val = image_folder_loader(root, True, **kw), image_folder_loader(root, False, **kw)
    h = fit(TinyCNN(in_channels=3, num_classes=3), train, val, epochs=2, lr=0.05, progress=False)
    assert len(h) == 2 and len(h.step_loss) == 2 * 3 and h.test_top1[-1] is not None


# --- evaluate ---------------------------------------------------------------------------------------------


def test_evaluate_hand_made_example():
    logits = torch.tensor([[5.0, 4, 3, 2, 1, 0, -1],   # label 0: top-1 hit
                           [5.0, 4, 3, 2, 1, 0, -1],   # label 4: top-5 hit only
                           [0.0, 1, 2, 3, 4, 5, 6],    # label 0: miss (rank 7)
                           [0.0, 0, 9, 0, 0, 0, 0]])   # label 2: top-1 hit
    labels = torch.tensor([0, 4, 0, 2])
    batches = [(logits[:3], labels[:3]), (logits[3:], labels[3:])]
    r = evaluate(nn.Identity(), batches, device="cpu", precision="fp32")
    assert r["n"] == 4 and r["top1"] == 0.5 and r["top5"] == 0.75
    assert r["loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)
    r = evaluate(nn.Identity(), batches, device="cpu", topk=(1, 2, 3))
    assert (r["top1"], r["top2"], r["top3"]) == (0.5, 0.5, 0.5)


def test_evaluate_image_data_keeps_training_mode(small):
    model = TinyCNN()
    model.train()
    r = evaluate(model, small[1], batch_size=128, max_batches=2)
    assert r["n"] == 256 and 0 <= r["top1"] <= r["top5"] <= 1 and model.training


# --- checkpoints and resume ---------------------------------------------------------------------------


class CrashAfter:
    """An identity 'augmentation' that raises after n batches: an interrupted run."""

    def __init__(self, n):
        self.n = n

    def __call__(self, x):
        self.n -= 1
        if self.n < 0:
            raise KeyboardInterrupt
        return x


@pytest.mark.parametrize("precision,schedule", [("fp32", "cosine"), ("auto", "step"), ("fp16", "onecycle")])
def test_interrupted_run_resumes_exactly(small, tmp_path, precision, schedule):
    kw = dict(batch_size=100, lr=0.05, schedule=schedule, precision=precision, device="cpu", progress=False)
    seed_everything(0)
    whole = TinyCNN()
    h_whole = fit(whole, *small, epochs=2, out_dir=tmp_path / "a", **kw)

    seed_everything(0)
    with pytest.raises(KeyboardInterrupt):
        fit(TinyCNN(), *small, epochs=2, out_dir=tmp_path / "b", augment=CrashAfter(6 + 3), **kw)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["epoch"] == 1
    seed_everything(123)  # a different initialisation and RNG state: everything must come from the checkpoint
    resumed = TinyCNN()
    h_resumed = fit(resumed, *small, epochs=2, out_dir=tmp_path / "b", resume=True, **kw)
    assert _same_weights(_state(whole), _state(resumed))
    assert h_resumed.step_loss == h_whole.step_loss and h_resumed.test_top1 == h_whole.test_top1
    assert h_resumed.lr == h_whole.lr
    ck = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert h_resumed.config["amp"] == {"fp32": "fp32", "fp16": "fp16"}.get(precision, h_resumed.config["amp"])
    if precision == "fp16":  # the loss scaler's state travels with the checkpoint
        assert ck["scaler"]["scale"] > 0
    else:
        assert ck["scaler"] is None


def test_one_epoch_plus_resume_equals_two_epochs(small, tmp_path):
    kw = dict(batch_size=100, lr=0.05, device="cpu", progress=False)
    seed_everything(0)
    whole = TinyCNN()
    fit(whole, *small, epochs=2, out_dir=tmp_path / "a", **kw)
    seed_everything(0)
    part = TinyCNN()
    fit(part, *small, epochs=1, out_dir=tmp_path / "b", **kw)
    h = fit(TinyCNN(), *small, epochs=2, out_dir=tmp_path / "b", resume=True, **kw)
    assert len(h) == 2 and h.config["epochs"] == 2

    # resuming a finished run trains nothing and returns the stored history (and weights)
    ckpt = tmp_path / "b" / "checkpoint.pt"
    digest = _digest(ckpt)
    again = TinyCNN()
    h2 = fit(again, *small, epochs=2, out_dir=tmp_path / "b", resume=True, **kw)
    assert h2 == History.load(tmp_path / "b" / "history.json") and _digest(ckpt) == digest
    assert _same_weights(_state(whole), _state(again))
    with pytest.warns(UserWarning, match=r"changed arguments.*'batch_size': \(100, 50\)"):
        fit(TinyCNN(), *small, epochs=2, out_dir=tmp_path / "b", resume=True, **{**kw, "batch_size": 50})


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    h = fit(TinyCNN(), make_image_data(n=32, size=28), epochs=1, batch_size=16, out_dir=tmp_path / "new",
            resume=True, progress=False)
    assert len(h) == 1 and (tmp_path / "new" / "checkpoint.pt").exists()


def test_a_finished_onecycle_run_cannot_be_extended(tmp_path):
    d = make_image_data(n=32, size=28)
    fit(TinyCNN(), d, epochs=1, batch_size=16, schedule="onecycle", out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="onecycle schedule ends after 1 epochs"):
        fit(TinyCNN(), d, epochs=2, batch_size=16, schedule="onecycle", out_dir=tmp_path, resume=True)


def test_resume_with_another_model_is_a_clear_error(tmp_path):
    d = make_image_data(n=32, size=28)
    fit(TinyCNN(), d, epochs=1, batch_size=16, out_dir=tmp_path, progress=False)
    with pytest.raises(CheckpointMismatchError, match=r"(?s)TinyCNN.*LeNet5.*another out_dir"):
        fit(get_model("lenet5", num_classes=4), d, epochs=2, out_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(CheckpointMismatchError, match="features"):
        fit(TinyCNN(width=4), d, epochs=2, out_dir=tmp_path, resume=True, progress=False)


# --- divergence -------------------------------------------------------------------------------------------


class NaNAt(nn.Module):
    """Wraps a model and returns NaN logits from training step `step` on."""

    def __init__(self, model, step):
        super().__init__()
        self.model, self.step, self.calls = model, step, 0

    def forward(self, x):
        self.calls += self.training
        out = self.model(x)
        return out * float("nan") if self.training and self.calls >= self.step else out


@pytest.mark.parametrize("log_every", [None, 4])  # syncing every step (CPU default) or every 4 (as on GPUs)
def test_nan_loss_names_epoch_step_and_lr(log_every):
    d = make_image_data(n=64, size=28)
    with pytest.raises(TrainingDivergedError, match=r"epoch 1/2, step 3/4 \(learning rate 0\.02\)") as e:
        fit(NaNAt(TinyCNN(), step=3), d, epochs=2, batch_size=16, lr=0.02, log_every=log_every,
            progress=False)
    assert isinstance(e.value, FloatingPointError)
    assert (e.value.epoch, e.value.step, e.value.lr, e.value.checkpoint) == (1, 3, 0.02, None)
    assert "out_dir=None" in str(e.value)


def test_huge_lr_diverges_and_keeps_last_checkpoint(small, tmp_path):
    kw = dict(batch_size=100, device="cpu", progress=False, out_dir=tmp_path)
    fit(TinyCNN(), *small, epochs=1, lr=0.05, **kw)
    ckpt, hist = tmp_path / "checkpoint.pt", tmp_path / "history.json"
    digests = _digest(ckpt), _digest(hist)
    with pytest.raises(TrainingDivergedError) as e:
        fit(TinyCNN(), *small, epochs=3, lr=1e6, resume=True, **kw)  # resume, now with a far too high lr
    msg = str(e.value)
    assert e.value.epoch == 2 and e.value.lr == 1e6 and e.value.checkpoint == ckpt
    assert "epoch 2/3" in msg and "lr=1e+05" in msg and str(ckpt) in msg and "end of epoch 1" in msg
    assert (_digest(ckpt), _digest(hist)) == digests  # the last good checkpoint is intact
    # ... and training continues from it with a sane learning rate
    h = fit(TinyCNN(), *small, epochs=2, lr=0.05, resume=True, **kw)
    assert len(h) == 2 and torch.isfinite(torch.tensor(h.step_loss)).all()


# --- DistributedDataParallel ----------------------------------------------------------------------------

DDP_SCRIPT = textwrap.dedent("""
    import json, os, sys, torch
    sys.path.insert(0, sys.argv[2])
    from conftest import TinyCNN, make_image_data
    from alexnet_lib.train import fit
    train, test = make_image_data(n=96, size=28, seed=0), make_image_data(n=40, size=28, seed=1)
    torch.manual_seed(int(os.environ["RANK"]))  # different initial weights: DDP must broadcast rank 0's
    model = TinyCNN(num_classes=4)
    h = fit(model, train, test, epochs=2, batch_size=16, lr=0.05, device="cpu", out_dir=sys.argv[1],
            progress=False)
    w = torch.cat([p.detach().flatten() for p in model.parameters()])
    json.dump(dict(rank=int(os.environ["RANK"]), steps=len(h.step_loss), wsum=w.double().sum().item(),
                   test_top1=h.test_top1, train_loss=h.train_loss),
              open(os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.json"), "w"))
""")


def test_ddp_two_processes_gloo(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(script), str(tmp_path), str(REPO / "tests")]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    assert ranks[0]["wsum"] == pytest.approx(ranks[1]["wsum"], rel=1e-6)  # replicas stay identical
    assert ranks[0]["steps"] == 2 * 3  # 96 images / 2 ranks / 16 per batch
    assert ranks[0]["test_top1"] == ranks[1]["test_top1"]  # all-reduced metrics
    assert ranks[0]["train_loss"] == ranks[1]["train_loss"]
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")  # written by rank 0
    assert ckpt["epoch"] == 2 and ckpt["history"]["config"]["world_size"] == 2


def test_on_epoch_end_sees_each_epoch(tmp_path):
    data = make_image_data(n=32, size=28, classes=10)
    calls = []

    def probe(model, history):
        calls.append((len(history), evaluate(model, data, device="cpu")["top1"],
                      (tmp_path / "checkpoint.pt").exists()))

    h = fit(TinyCNN(), data, epochs=3, batch_size=16, device="cpu", progress=False, out_dir=tmp_path,
            on_epoch_end=probe)
    assert [c[0] for c in calls] == [1, 2, 3] and all(c[2] for c in calls)  # after the checkpoint
    assert len(h) == 3 and all(0.0 <= c[1] <= 1.0 for c in calls)


def test_a_setting_added_since_a_checkpoint_counts_as_its_default_on_resume():
    from alexnet_lib.train import FitConfig

    cfg = FitConfig(epochs=2, schedule="onecycle")
    old = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "cycle_momentum"}  # an older checkpoint
    assert cfg.changed_from(old) == {}
    assert FitConfig(epochs=2, schedule="onecycle", cycle_momentum=False).changed_from(old) == {
        "cycle_momentum": (True, False)}
    with pytest.raises(TypeError, match="cycle_momentum must be True or False"):
        FitConfig(epochs=2, cycle_momentum="no")
