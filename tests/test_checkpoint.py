"""alexnet_lib.checkpoint: exact round trips, refusal of unsafe/corrupt/foreign files, full disks, stale temp
files, run directories, RNG state."""

import errno
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import TinyCNN
from torch import nn

import alexnet_lib.checkpoint as C
from alexnet_lib.checkpoint import (
    FORMAT,
    CheckpointError,
    RunExistsError,
    all_finite,
    check_run_dir,
    clean_stale_temp_files,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from alexnet_lib.models import get_model


def _same(a, b) -> bool:
    """Bitwise equality of nested states (types, dtypes, shapes and every byte of every tensor)."""
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)))
    if isinstance(a, dict):
        return type(b) is type(a) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(b) is type(a) and len(a) == len(b) and all(map(_same, a, b))
    return type(a) is type(b) and (a == b or a != a and b != b)  # NaN equals NaN here


def _trained(model, optimizer="sgd", steps=2):
    size = model.default_input_size
    x = torch.randn(2, model.in_channels, size, size)
    opt = (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4) if optimizer == "sgd"
           else torch.optim.AdamW(model.parameters(), lr=1e-3))
    for _ in range(steps):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    return opt


def _history():
    return dict(epoch=[1, 2], train_loss=[2.30, 1.87], test_top1=[None, 0.61], lr=[0.01, 0.001],
                step_loss=[2.5, float("nan"), -0.0, 1e-300], config=dict(model="AlexNet", amp="fp32", seed=0))


@pytest.fixture(scope="module")
def real_state():
    """A real AlexNet (alexnet_small, 5.9 M parameters) with SGD momentum, a schedule, history and RNG."""
    torch.manual_seed(0)
    model = get_model("alexnet_small")
    opt = _trained(model, steps=1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.1)
    opt.step()
    sched.step()
    return dict(model=model.state_dict(), model_class="AlexNet", optimizer=opt.state_dict(), epoch=3,
                scheduler=sched.state_dict(), scaler=None, history=_history(), rng=rng_state(),
                args=dict(lr=0.01, schedule="step", device="cpu", image_size=None))


# --- round trips -----------------------------------------------------------------------------------

def test_real_model_round_trip_is_bitwise_exact_and_safe_to_load(real_state, tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, real_state)
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # no temp file left behind
    raw = torch.load(path, weights_only=True)  # the file itself needs no unpickling of arbitrary objects
    assert raw["format"] == FORMAT and len(raw["sha256"]) == 64
    back = load_checkpoint(path)
    assert _same(real_state, back)
    model = get_model("alexnet_small")
    model.load_state_dict(back["model"])
    torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9).load_state_dict(back["optimizer"])


@pytest.mark.parametrize("schedule", ["step", "plateau", "onecycle", "cosine"])
def test_buffers_adamw_and_every_schedule_round_trip(tmp_path, schedule):
    model = TinyCNN()  # BatchNorm: float running stats and an int64 num_batches_tracked
    opt = _trained(model, "adamw")
    sched = {"step": lambda: torch.optim.lr_scheduler.StepLR(opt, 1),
             "plateau": lambda: torch.optim.lr_scheduler.ReduceLROnPlateau(opt),
             "onecycle": lambda: torch.optim.lr_scheduler.OneCycleLR(opt, 0.1, total_steps=10),
             "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(opt, 10)}[schedule]()
    opt.step()
    sched.step(1.0) if schedule == "plateau" else sched.step()
    state = dict(model=model.state_dict(), optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                 scaler=torch.amp.GradScaler("cpu", enabled=True).state_dict(), shape=torch.Size([2, 3]),
                 bf16=torch.randn(5).bfloat16(), mask=torch.tensor([True, False]), empty=torch.zeros(0))
    save_checkpoint(tmp_path / "c.pt", state)
    assert _same(state, load_checkpoint(tmp_path / "c.pt", map_location=None))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_map_location_moves_every_tensor(tmp_path):
    save_checkpoint(tmp_path / "c.pt", dict(w=torch.randn(3, device="cuda"), nested=[dict(b=torch.ones(2))]))
    cpu = load_checkpoint(tmp_path / "c.pt")
    gpu = load_checkpoint(tmp_path / "c.pt", map_location="cuda")
    assert not cpu["w"].is_cuda and not cpu["nested"][0]["b"].is_cuda
    assert gpu["w"].is_cuda and gpu["nested"][0]["b"].is_cuda and torch.equal(gpu["w"].cpu(), cpu["w"])


def test_save_replaces_the_previous_checkpoint(tmp_path):
    path = str(tmp_path / "checkpoint.pt")  # str paths work as well as Paths
    save_checkpoint(path, dict(epoch=1))
    save_checkpoint(path, dict(epoch=2))
    assert load_checkpoint(path) == dict(epoch=2) and os.listdir(tmp_path) == ["checkpoint.pt"]


def test_save_refuses_what_a_safe_load_could_not_read(tmp_path):
    with pytest.raises(TypeError, match=r"state\['rng'\]\['numpy'\].*numpy.ndarray"):
        save_checkpoint(tmp_path / "c.pt", dict(rng=dict(numpy=np.zeros(3))))
    with pytest.raises(TypeError, match="state must be a dict"):
        save_checkpoint(tmp_path / "c.pt", [torch.zeros(1)])
    assert os.listdir(tmp_path) == []


# --- files that are not usable checkpoints ---------------------------------------------------------

class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("zip_format", [True, False])
def test_a_checkpoint_that_would_run_code_is_refused_unread(tmp_path, zip_format):
    path, marker = tmp_path / "checkpoint.pt", tmp_path / "MARKER"
    torch.save(dict(model={}, evil=Evil(marker)), path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(CheckpointError, match=str(path)) as e:
        load_checkpoint(path)
    assert not marker.exists()
    if zip_format:
        assert "posix.system" in str(e.value) or "nt.system" in str(e.value)


def _old_format(path):
    """What alexnet_lib.train wrote before format 2: a plain torch.save with NumPy and tuples inside."""
    model = TinyCNN()
    opt = _trained(model, steps=1)
    rng = dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state(), cuda=None)
    torch.save(dict(model=model.state_dict(), model_class="TinyCNN", optimizer=opt.state_dict(), epoch=1,
                    scheduler=None, scaler=None, history=_history(), rng=rng, args=dict(lr=0.01)), path)


def _damaged(tmp_path, how):
    path = tmp_path / f"{how}.pt"
    good = tmp_path / "good.pt"
    save_checkpoint(good, dict(model=nn.Linear(256, 256).state_dict(), epoch=1))  # mostly tensor bytes
    data = good.read_bytes()
    if how == "truncated":
        path.write_bytes(data[:len(data) // 2])
    elif how == "truncated_end":
        path.write_bytes(data[:-30])
    elif how.startswith("flipped"):
        data = bytearray(data)
        data[len(data) * int(how[-1]) // 4] ^= 0x10
        path.write_bytes(bytes(data))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "random":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    elif how == "json":
        path.write_text(json.dumps(dict(model="AlexNet", epoch=1)))
    elif how == "directory":
        path.mkdir()
    elif how == "old_format":
        _old_format(path)
    elif how == "foreign":
        torch.save(dict(weights=torch.zeros(3)), path)
    elif how == "newer":
        torch.save(dict(format="alexnet_lib.checkpoint/3", sha256="", state={}), path)
    return path  # "missing": never written


@pytest.mark.parametrize("how", ["truncated", "truncated_end", "flipped1", "flipped2", "flipped3", "empty",
                                 "random", "json", "directory", "missing", "old_format", "foreign", "newer"])
def test_unusable_files_raise_checkpoint_error_naming_them(tmp_path, how):
    path = _damaged(tmp_path, how)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    message = str(e.value)
    assert str(path) in message and isinstance(e.value, ValueError)
    if how.startswith("flipped2"):  # the middle of the file: the weights' bytes
        assert "checksum" in message
    if how == "old_format":
        assert "older alexnet_lib" in message and "weights_only=False" in message
    elif how not in ("missing", "directory", "newer"):
        assert "overwrite=True / --overwrite" in message


def test_the_suggested_re_save_of_an_old_checkpoint_works(tmp_path):
    path = tmp_path / "checkpoint.pt"
    _old_format(path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    code = "\n".join(line.strip() for line in str(e.value).splitlines()[1:])
    exec(code, {})  # the user trusts this file
    state = load_checkpoint(path)
    assert state["model_class"] == "TinyCNN" and set(state["rng"]) == {"python", "numpy", "torch", "cuda"}


def test_unreadable_file(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, dict(epoch=1))
    path.chmod(0)
    with pytest.raises(CheckpointError, match=f"{path} cannot be read"):
        load_checkpoint(path)


# --- failures while writing ------------------------------------------------------------------------

@pytest.mark.parametrize("code", [errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)])
def test_full_disk_names_the_file_and_leaves_no_temp_file(tmp_path, monkeypatch, code):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, dict(epoch=1))
    real_save = torch.save

    def full_disk(obj, f):
        real_save(obj, f)  # a partial temp file exists now
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(C.torch, "save", full_disk)
    with pytest.raises(OSError) as e:
        save_checkpoint(path, dict(epoch=2, w=torch.zeros(2**20)))
    assert e.value.errno == code
    assert "no space left on device while writing checkpoint" in str(e.value) and str(path) in str(e.value)
    assert "about 4 MB needed" in str(e.value)
    assert os.listdir(tmp_path) == ["checkpoint.pt"] and load_checkpoint(path) == dict(epoch=1)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_real_enospc_from_the_kernel(tmp_path, monkeypatch):
    """/dev/full fails every write with ENOSPC, as a full disk does (torch.save to a path would say
    'unexpected pos ...' instead)."""
    monkeypatch.setattr(C, "open", lambda p, mode: open("/dev/full", mode), raising=False)
    with pytest.raises(OSError, match="no space left on device") as e:
        save_checkpoint(tmp_path / "checkpoint.pt", dict(w=torch.zeros(2**20)))
    assert e.value.errno == errno.ENOSPC and os.listdir(tmp_path) == []


def test_read_only_directory_names_the_path(tmp_path, monkeypatch):
    def denied(obj, f):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(C.torch, "save", denied)
    with pytest.raises(PermissionError, match=f"cannot write checkpoint {tmp_path}.*not writable"):
        save_checkpoint(tmp_path / "checkpoint.pt", dict(epoch=1))
    assert os.listdir(tmp_path) == []


def test_missing_directory_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nope'} does not exist"):
        save_checkpoint(tmp_path / "nope" / "checkpoint.pt", dict(epoch=1))


def test_interrupted_write_leaves_no_temp_file(tmp_path, monkeypatch):
    def interrupted(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(C.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "checkpoint.pt", dict(epoch=1))
    assert os.listdir(tmp_path) == []


# --- stale temporary files -------------------------------------------------------------------------

def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temp_files_are_removed_live_writers_kept(tmp_path):
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = _dead_pid()
        stale = [tmp_path / f".checkpoint.pt.tmp{dead}", tmp_path / f".history.json.tmp{dead}",
                 tmp_path / f".checkpoint.pt.tmp{os.getpid()}"]  # our PID, reused, not being written
        kept = [tmp_path / f".checkpoint.pt.tmp{alive.pid}", tmp_path / "checkpoint.pt",
                tmp_path / ".hidden", tmp_path / "x.tmp123", tmp_path / ".a.tmpxyz"]
        for p in stale + kept:
            p.write_bytes(b"x" * 100)
        assert sorted(clean_stale_temp_files(tmp_path)) == sorted(stale)
        assert sorted(tmp_path.iterdir()) == sorted(kept)
    finally:
        alive.kill()
        alive.wait()
    assert clean_stale_temp_files(tmp_path / "missing") == []


def test_cleaning_never_removes_a_temp_file_being_written(tmp_path, monkeypatch):
    real_save, removed = torch.save, []

    def save_and_clean(obj, f):
        real_save(obj, f)
        removed.extend(clean_stale_temp_files(tmp_path))

    monkeypatch.setattr(C.torch, "save", save_and_clean)
    save_checkpoint(tmp_path / "checkpoint.pt", dict(epoch=1))
    assert removed == [] and load_checkpoint(tmp_path / "checkpoint.pt") == dict(epoch=1)


# --- run directories -------------------------------------------------------------------------------

def test_check_run_dir(tmp_path):
    check_run_dir(tmp_path / "new", resume=False, overwrite=False)  # nothing there yet
    check_run_dir(tmp_path, resume=False, overwrite=False)  # empty
    save_checkpoint(tmp_path / "checkpoint.pt", dict(epoch=1))
    with pytest.raises(RunExistsError) as e:
        check_run_dir(tmp_path, resume=False, overwrite=False)
    assert isinstance(e.value, FileExistsError)
    for words in (str(tmp_path), "resume=True / --resume", "overwrite=True / --overwrite", "--out"):
        assert words in str(e.value)
    check_run_dir(tmp_path, resume=True, overwrite=False)
    check_run_dir(tmp_path, resume=False, overwrite=True)
    with pytest.raises(ValueError, match="choose one"):
        check_run_dir(tmp_path, resume=True, overwrite=True)
    with pytest.raises(TypeError, match="resume must be True or False"):
        check_run_dir(tmp_path, resume=1, overwrite=False)
    with pytest.raises(NotADirectoryError, match=str(tmp_path / "checkpoint.pt")):
        check_run_dir(tmp_path / "checkpoint.pt", resume=True, overwrite=False)


# --- random number generators ----------------------------------------------------------------------

def _draw():
    cuda = [torch.rand(3, device=f"cuda:{i}") for i in range(torch.cuda.device_count())]
    return (random.random(), random.gauss(0, 1), random.getrandbits(64), np.random.rand(3).tolist(),
            np.random.randn(3).tolist(), torch.rand(3).tolist(), torch.randn(3).tolist(),
            [c.tolist() for c in cuda])


def test_rng_round_trip_is_exact(tmp_path):
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    random.gauss(0, 1)  # leaves a cached Gaussian in both Python and NumPy
    np.random.randn()
    _draw()
    save_checkpoint(tmp_path / "c.pt", dict(rng=rng_state()))
    first = _draw()
    assert _draw() != first  # the generators moved on
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert _draw() == first


# --- finiteness --------------------------------------------------------------------------------------

def test_all_finite():
    model = TinyCNN()
    opt = _trained(model, steps=1)
    assert all_finite(model) and all_finite(model.state_dict()) and all_finite(opt.state_dict())
    assert all_finite({}) and all_finite(nn.ReLU())
    model.features[1].running_var[0] = float("inf")  # a buffer
    assert not all_finite(model) and not all_finite(model.state_dict())
    model = TinyCNN()
    with torch.no_grad():
        model.classifier[2].weight[0, 0] = float("nan")  # a parameter
    assert not all_finite(model) and not all_finite(dict(nested=[model.state_dict()]))
