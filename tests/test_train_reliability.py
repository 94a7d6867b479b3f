"""alexnet_lib.train under faults: crafted checkpoints, interruptions (mid-epoch checkpoints, SIGTERM,
SIGINT), weights that blow up in the last step of an epoch, runs into an existing out_dir, bad arguments."""

import errno
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
from dataclasses import asdict

import pytest
import torch
from conftest import REPO, TinyCNN, make_image_data, write_image_folder
from torch.optim.optimizer import register_optimizer_step_post_hook

from alexnet_lib import checkpoint
from alexnet_lib.augment import RandomCropFlip
from alexnet_lib.data import DeviceLoader, image_folder_loader
from alexnet_lib.train import (
    FitConfig,
    History,
    TrainingDivergedError,
    TrainingInterrupted,
    evaluate,
    fit,
    make_loader,
    seed_everything,
)

TIMING = ("images_per_sec", "train_cpu_time", "epoch_time", "wall_time")


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _same_weights(a, b):
    a, b = a.state_dict(), b.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _untimed(h: History) -> dict:
    return {k: v for k, v in h.to_dict().items() if k not in TIMING}


@pytest.fixture(scope="module")
def data():
    """400 training and 100 test images (28 px, 10 classes): 8 steps of 50 per epoch."""
    return (make_image_data(n=400, size=28, classes=10, seed=0),
            make_image_data(n=100, size=28, classes=10, seed=1))


class Augment:
    """Random crops and flips (global RNG, so resume must restore it) that can crash or signal at batch n."""

    def __init__(self, crash_at=None, signal_at=None, sig=signal.SIGINT):
        self.flip, self.calls = RandomCropFlip(28, padding=2), 0
        self.crash_at, self.signal_at, self.sig = crash_at, signal_at, sig

    def __call__(self, x):
        if self.calls == self.crash_at:
            raise RuntimeError("injected crash")
        if self.calls == self.signal_at:
            os.kill(os.getpid(), self.sig)  # a real signal, delivered while this batch is being built
        self.calls += 1
        return self.flip(x)


# --- safe loading -----------------------------------------------------------------------------------------


class Payload:
    """Unpickling this runs code (writes a marker file): what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


@pytest.mark.parametrize("tagged", [True, False], ids=["with the format tag", "old layout"])
def test_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path, tagged):
    out, marker = tmp_path / "run", tmp_path / "pwned"
    out.mkdir()
    state = dict(model=Payload(marker), model_class="TinyCNN", epoch=1)
    if tagged:  # looks like one of ours from the outside
        state = dict(format=checkpoint.FORMAT, sha256="0" * 64, state=state)
    torch.save(state, out / "checkpoint.pt")
    model = TinyCNN()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(checkpoint.CheckpointError, match="checkpoint.pt"):
        fit(model, make_image_data(n=32, size=28), epochs=1, batch_size=16, out_dir=out, resume=True,
            progress=False)
    assert not marker.exists()  # the payload never ran
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# --- nothing lost: mid-epoch checkpoints, signals -------------------------------------------------------


@pytest.mark.parametrize("optimizer,schedule,precision",
                         [("sgd", "cosine", "fp32"), ("adamw", "onecycle", "fp16")])
def test_mid_epoch_checkpoint_resumes_bitwise(data, tmp_path, optimizer, schedule, precision):
    kw = dict(epochs=2, batch_size=50, lr=0.02, optimizer=optimizer, schedule=schedule, precision=precision,
              device="cpu", progress=False, checkpoint_every=3)
    seed_everything(0)
    whole = TinyCNN()
    h_whole = fit(whole, *data, out_dir=tmp_path / "a", augment=Augment(), **kw)

    seed_everything(0)
    with pytest.raises(RuntimeError, match="injected crash"):  # dies building batch 15 (epoch 2, step 7)
        fit(TinyCNN(), *data, out_dir=tmp_path / "b", augment=Augment(crash_at=14), **kw)
    ck = checkpoint.load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert ck["epoch"] == 1 and ck["progress"]["step"] == 4  # saved after global step 12 = epoch 2, step 4
    seed_everything(123)  # another initialisation and RNG state: everything must come from the checkpoint
    resumed = TinyCNN()
    h_resumed = fit(resumed, *data, out_dir=tmp_path / "b", resume=True, augment=Augment(), **kw)
    assert _same_weights(whole, resumed)
    assert _untimed(h_resumed) == _untimed(h_whole)


def test_sigint_stops_after_the_step_saves_and_resumes_exactly(data, tmp_path):
    kw = dict(epochs=2, batch_size=50, lr=0.02, schedule="cosine", device="cpu", progress=False)
    seed_everything(0)
    whole = TinyCNN()
    h_whole = fit(whole, *data, augment=Augment(), **kw)

    previous = signal.getsignal(signal.SIGINT)
    seed_everything(0)
    with pytest.raises(TrainingInterrupted) as e:
        fit(TinyCNN(), *data, out_dir=tmp_path, augment=Augment(signal_at=10), **kw)  # epoch 2, step 3
    assert isinstance(e.value, KeyboardInterrupt)
    assert (e.value.signal, e.value.epoch, e.value.step) == (signal.SIGINT, 2, 3)
    assert e.value.checkpoint == tmp_path / "checkpoint.pt" and "SIGINT" in str(e.value)
    assert signal.getsignal(signal.SIGINT) is previous  # handlers restored
    assert checkpoint.load_checkpoint(e.value.checkpoint)["progress"]["step"] == 3

    resumed = TinyCNN()
    h = fit(resumed, *data, out_dir=tmp_path, resume=True, augment=Augment(), **kw)
    assert _same_weights(whole, resumed) and _untimed(h) == _untimed(h_whole)
    # without out_dir: still a clean stop, nothing saved
    with pytest.raises(TrainingInterrupted) as e:
        fit(TinyCNN(), *data, augment=Augment(signal_at=2, sig=signal.SIGTERM), **kw)
    assert (e.value.signal, e.value.checkpoint, e.value.step) == (signal.SIGTERM, None, 3)


def test_a_second_ctrl_c_stops_at_once_and_threads_get_no_handlers(data):
    class Twice(Augment):
        def __call__(self, x):
            if self.calls == 1:  # Ctrl-C, then Ctrl-C again before the step is done
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
            self.calls += 1
            return x

    previous = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt) as e:
        fit(TinyCNN(), data[0], epochs=1, batch_size=50, augment=Twice(), progress=False)
    assert not isinstance(e.value, TrainingInterrupted) and signal.getsignal(signal.SIGINT) is previous
    # fit in another thread: Python delivers signals to the main thread only, so no handlers there
    result = []
    t = threading.Thread(target=lambda: result.append(fit(TinyCNN(), data[0], epochs=1, batch_size=100,
                                                          progress=False)))
    t.start()
    t.join()
    assert len(result[0]) == 1 and signal.getsignal(signal.SIGINT) is previous


def test_mid_epoch_resume_with_another_batch_size_is_refused(tmp_path):
    d = make_image_data(n=64, size=28)
    kw = dict(epochs=1, device="cpu", progress=False, out_dir=tmp_path, checkpoint_every=1)
    with pytest.raises(RuntimeError, match="injected"):
        fit(TinyCNN(), d, batch_size=16, augment=Augment(crash_at=2), **kw)
    with pytest.raises(ValueError, match="middle of an epoch of 4 steps.*same batch_size"):
        fit(TinyCNN(), d, batch_size=8, resume=True, **kw)


def test_full_disk_and_stale_temp_files(tmp_path, monkeypatch):
    d = make_image_data(n=32, size=28)
    kw = dict(batch_size=16, device="cpu", progress=False, out_dir=tmp_path)
    fit(TinyCNN(), d, epochs=1, **kw)
    stale = tmp_path / ".checkpoint.pt.tmp999999999"  # left by a writer killed long ago (no such PID)
    stale.write_bytes(b"half a checkpoint")
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="no space left.*checkpoint.pt") as e:
        fit(TinyCNN(), d, epochs=2, resume=True, **kw)
    assert e.value.errno == errno.ENOSPC and not stale.exists()
    monkeypatch.setattr(torch, "save", real_save)
    assert checkpoint.load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1  # the last one is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "history.json"]
    assert len(fit(TinyCNN(), d, epochs=2, resume=True, **kw)) == 2


SIGTERM_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys, time, torch
    sys.path.insert(0, sys.argv[3])
    from conftest import TinyCNN, make_image_data
    from alexnet_lib.train import TrainingInterrupted, fit, seed_everything
    torch.set_num_threads(1)
    mode, out = sys.argv[1], sys.argv[2]
    data = make_image_data(n=400, size=28, classes=10, seed=0), make_image_data(n=100, size=28, seed=1)
    kw = dict(epochs=2, batch_size=50, lr=0.02, schedule="cosine", device="cpu", progress=False)

    def wait(x):  # building batch 3: wait (at most 10 s) until the parent has sent its signal
        wait.calls += 1
        if wait.calls == 3 and mode == "run":
            print("ready", flush=True)
            for _ in range(1000):
                if os.path.exists(out + "/sent"):
                    break
                time.sleep(0.01)
        return x
    wait.calls = 0

    seed_everything(0)
    if mode == "run":
        try:
            fit(TinyCNN(), *data, out_dir=out + "/run", augment=wait, **kw)
        except TrainingInterrupted as e:
            json.dump(dict(signal=int(e.signal), epoch=e.epoch, step=e.step, checkpoint=str(e.checkpoint)),
                      open(out + "/interrupted.json", "w"))
            sys.exit(128 + int(e.signal))
    else:
        resumed, whole = TinyCNN(), TinyCNN()
        fit(resumed, *data, out_dir=out + "/run", resume=True, augment=wait, **kw)
        seed_everything(0)
        whole = TinyCNN()
        fit(whole, *data, augment=wait, **kw)
        a, b = resumed.state_dict(), whole.state_dict()
        print("EQUAL" if all(torch.equal(a[k], b[k]) for k in a) else "DIFFERENT")
""")


def test_sigterm_to_a_training_process_saves_and_resumes_exactly(tmp_path):
    script = tmp_path / "train_run.py"
    script.write_text(SIGTERM_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(script), "run", str(tmp_path), str(REPO / "tests")]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGTERM)
    (tmp_path / "sent").touch()
    _, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM, err[-2000:]  # what the CLI exits with: 143
    assert "Traceback" not in err
    info = json.loads((tmp_path / "interrupted.json").read_text())
    assert (info["signal"], info["epoch"], info["step"]) == (signal.SIGTERM, 1, 3)  # the step finished
    ck = checkpoint.load_checkpoint(info["checkpoint"])
    assert ck["progress"]["step"] == info["step"] and checkpoint.all_finite(ck["model"])

    cmd[2] = "resume"
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-1] == "EQUAL"


# --- a checkpoint only of a good state ------------------------------------------------------------------


@pytest.mark.parametrize("factor,with_test", [(1e30, True), (1e30, False), (math.inf, False)])
def test_blow_up_in_the_last_step_keeps_the_last_good_checkpoint(tmp_path, factor, with_test):
    d = make_image_data(n=64, size=28, seed=0)
    test = make_image_data(n=32, size=28, seed=1) if with_test else None
    steps, saved = [0], {}

    def blow_up(optimizer, args, kwargs):  # after update 8 (the last of epoch 2): finite loss, huge weights
        steps[0] += 1
        if steps[0] == 8:
            with torch.no_grad():
                for group in optimizer.param_groups:
                    for p in group["params"]:
                        p.mul_(factor)

    def remember(model, history):
        if len(history) == 1:
            saved.update(ckpt=_digest(tmp_path / "checkpoint.pt"), hist=_digest(tmp_path / "history.json"))

    handle = register_optimizer_step_post_hook(blow_up)
    try:
        with pytest.raises(TrainingDivergedError) as e:
            fit(TinyCNN(), d, test, epochs=3, batch_size=16, lr=0.01, out_dir=tmp_path, progress=False,
                on_epoch_end=remember)
    finally:
        handle.remove()
    ckpt, msg = tmp_path / "checkpoint.pt", str(e.value)
    assert (e.value.epoch, e.value.checkpoint) == (2, ckpt)
    assert "end of epoch 2/3" in msg and f"The last good checkpoint is {ckpt} (end of epoch 1)" in msg
    assert (_digest(ckpt), _digest(tmp_path / "history.json")) == (saved["ckpt"], saved["hist"])
    ck = checkpoint.load_checkpoint(ckpt)
    assert ck["epoch"] == 1 and checkpoint.all_finite(ck["model"])


# --- no silent overwrite ----------------------------------------------------------------------------------


class Counting(TinyCNN):
    calls = 0

    def forward(self, x):
        Counting.calls += 1
        return super().forward(x)


def test_a_run_into_a_used_out_dir_is_refused_before_training(tmp_path):
    d = make_image_data(n=32, size=28)
    kw = dict(batch_size=16, out_dir=tmp_path, progress=False)
    fit(TinyCNN(), d, epochs=1, **kw)
    digest, Counting.calls = _digest(tmp_path / "checkpoint.pt"), 0
    with pytest.raises(checkpoint.RunExistsError, match="resume=True") as e:
        fit(Counting(), d, epochs=1, **kw)
    assert isinstance(e.value, FileExistsError) and Counting.calls == 0
    assert _digest(tmp_path / "checkpoint.pt") == digest
    assert len(fit(TinyCNN(), d, epochs=2, resume=True, **kw)) == 2  # continues
    h = fit(TinyCNN(), d, epochs=1, overwrite=True, **kw)  # starts over
    ck = checkpoint.load_checkpoint(tmp_path / "checkpoint.pt")
    assert len(h) == 1 and ck["epoch"] == 1
    # the settings, captured once, travel with the checkpoint and the history
    cfg = asdict(FitConfig(epochs=1, batch_size=16, progress=False))
    assert ck["config"] == cfg and h.config["device"] == "cpu"  # the device asked for / the one used
    assert all(h.config[k] == v for k, v in cfg.items() if k != "device")


# --- loaders ----------------------------------------------------------------------------------------------


def test_loaders_start_an_epoch_at_a_batch(tmp_path):
    d = make_image_data(n=40, size=28)
    calls = []
    loader = DeviceLoader(d, 8, shuffle=True, augment=lambda x: calls.append(1) or x, seed=3)
    loader.set_epoch(2)
    full = list(loader)
    calls.clear()
    loader.set_epoch(2, start_batch=3)
    tail = list(loader)
    assert len(calls) == 2 and len(tail) == 2  # the skipped batches were neither built nor augmented
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(full[3:], tail))
    assert len(list(loader)) == 5  # only the next pass starts late
    folder = image_folder_loader(write_image_folder(tmp_path / "f"), True, image_size=16, batch_size=4,
                                 num_workers=0)
    folder.set_epoch(1)
    labels = [y for _, y in folder]
    folder.set_epoch(1, start_batch=2)
    assert [y.tolist() for _, y in folder] == [y.tolist() for y in labels[2:]]
    assert len(list(folder)) == len(labels)


def test_make_loader_and_small_class_counts():
    two = make_image_data(n=32, size=14, classes=2)
    loader = make_loader(TinyCNN(num_classes=2), two, batch_size=8, train=True, device="cpu")
    x, _ = next(iter(loader))
    assert x.shape == (8, 1, 28, 28) and x.is_contiguous(memory_format=torch.channels_last)
    assert make_loader(TinyCNN(), [1], batch_size=8, train=False) == [1]  # a loader stays as it is
    r = evaluate(TinyCNN(num_classes=2), two)
    assert set(r) == {"loss", "top1", "top2", "n"} and r["top2"] == 1.0
    calls = []
    h = fit(TinyCNN(num_classes=2), two, two, epochs=1, batch_size=8, progress=False,
            on_epoch_end=[lambda m, h: calls.append("a"), lambda m, h: calls.append("b")])
    assert h.test_top5 == [1.0] and calls == ["a", "b"]  # test_top5: top-min(5, classes)


# --- validation at the boundary ---------------------------------------------------------------------------


def _empty():
    d = make_image_data(n=8, size=28)
    d.images, d.labels = d.images[:0], d.labels[:0]
    return d


_D = make_image_data(n=32, size=28, classes=10)
FIT_CASES = [
    (dict(epochs=2.5), TypeError, "epochs"), (dict(epochs=0), ValueError, "epochs"),
    (dict(epochs="3"), TypeError, "epochs"), (dict(batch_size=0), ValueError, "batch_size"),
    (dict(batch_size=16.0), TypeError, "batch_size"), (dict(lr=float("nan")), ValueError, "lr"),
    (dict(lr=0), ValueError, "lr"), (dict(lr=-0.1), ValueError, "lr"), (dict(lr=math.inf), ValueError, "lr"),
    (dict(lr="0.1"), TypeError, "lr"), (dict(momentum=1.0), ValueError, "momentum"),
    (dict(momentum=-0.1), ValueError, "momentum"), (dict(weight_decay=-1e-4), ValueError, "weight_decay"),
    (dict(label_smoothing=1.0), ValueError, "label_smoothing"),
    (dict(label_smoothing=-0.1), ValueError, "label_smoothing"),
    (dict(optimizer="adam"), ValueError, "optimizer"),
    (dict(schedule="linear"), ValueError, "schedule"), (dict(precision="fp8"), ValueError, "precision"),
    (dict(device="tpu"), ValueError, "device"), (dict(device=3.5), TypeError, "device"),
    (dict(log_every=0), ValueError, "log_every"),
    (dict(max_steps_per_epoch=0), ValueError, "max_steps_per_epoch"),
    (dict(checkpoint_every=0), ValueError, "checkpoint_every"),
    (dict(checkpoint_every=2.0), TypeError, "checkpoint_every"),
    (dict(checkpoint_every=5), ValueError, "out_dir"),
    (dict(image_size=0), ValueError, "image_size"),
    (dict(seed=-1), ValueError, "seed"), (dict(seed=1.5), TypeError, "seed"),
    (dict(channels_last="yes"), TypeError, "channels_last"), (dict(progress=1), TypeError, "progress"),
    (dict(verbose="no"), TypeError, "verbose"), (dict(resume=True), ValueError, "out_dir"),
    (dict(resume=1, out_dir="RUN"), TypeError, "resume"), (dict(overwrite="yes"), TypeError, "overwrite"),
    (dict(resume=True, overwrite=True, out_dir="RUN"), ValueError, "overwrite"),
    (dict(on_epoch_end=42), TypeError, "on_epoch_end"),
    (dict(on_epoch_end=[print, "x"]), TypeError, "on_epoch_end"),
    (dict(augment="flip"), TypeError, "augment"), (dict(out_dir=3), TypeError, "out_dir"),
    (dict(train_data=_empty()), ValueError, "train_data"),
    (dict(train_data=DeviceLoader(_D, 64, drop_last=True)), ValueError, "train_data"),
    (dict(train_data=42), TypeError, "train_data"), (dict(test_data=_empty()), ValueError, "test_data"),
    (dict(model="alexnet"), TypeError, "model"),
]
EVALUATE_CASES = [
    (dict(topk=(1, 20)), ValueError, "topk"), (dict(topk=(0,)), ValueError, "topk"),
    (dict(topk=5), TypeError, "topk"), (dict(topk=(1.5,)), TypeError, "topk"),
    (dict(batch_size=0), ValueError, "batch_size"), (dict(precision="fp8"), ValueError, "precision"),
    (dict(device="tpu"), ValueError, "device"), (dict(max_batches=0), ValueError, "max_batches"),
    (dict(data=_empty()), ValueError, "data"), (dict(data=[]), ValueError, "data"),
    (dict(image_size=-1), ValueError, "image_size"), (dict(channels_last=1), TypeError, "channels_last"),
    (dict(model=None), TypeError, "model"),
    (dict(data=[(torch.zeros(4, 10), torch.zeros(4, dtype=torch.long))], model=torch.nn.Identity(),
          topk=(1, 20)), ValueError, "topk"),  # a loader: checked at its first batch
]


def _id(case):
    return ",".join(f"{k}={v!r}"[:24] for k, v in case[0].items())


@pytest.mark.parametrize("kwargs,error,name", FIT_CASES, ids=[_id(c) for c in FIT_CASES])
def test_bad_fit_arguments_are_refused_before_any_work(tmp_path, kwargs, error, name):
    kw = {**dict(model=Counting(), train_data=_D, test_data=None, epochs=1, batch_size=16, progress=False),
          **{k: tmp_path / "run" if isinstance(v, str) and v == "RUN" else v for k, v in kwargs.items()}}
    Counting.calls = 0
    with pytest.raises(error) as e:
        fit(kw.pop("model"), kw.pop("train_data"), kw.pop("test_data"), **kw)
    assert name in str(e.value), str(e.value)
    assert Counting.calls == 0 and not (tmp_path / "run").exists()


@pytest.mark.parametrize("kwargs,error,name", EVALUATE_CASES, ids=[_id(c) for c in EVALUATE_CASES])
def test_bad_evaluate_arguments_are_refused(kwargs, error, name):
    kw = {**dict(model=Counting(), data=_D, device="cpu"), **kwargs}
    Counting.calls = 0
    with pytest.raises(error) as e:
        evaluate(kw.pop("model"), kw.pop("data"), **kw)
    assert name in str(e.value), str(e.value)
    assert Counting.calls == 0
