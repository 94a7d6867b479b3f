"""The command line under bad input and injected faults: every bad flag exits 2 with one line that names
it; same seed, same weights; kill -9 or SIGTERM then --resume gives the weights of an uninterrupted run,
bit for bit; no run is replaced silently; corrupt checkpoints, truncated datasets, unreadable images and a
full disk end with one line, never a traceback."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, write_image_folder

from alexnet_lib.__main__ import main
from alexnet_lib.checkpoint import load_checkpoint

LENET = ["train", "--model", "lenet5", "--data", "mnist", "--epochs", "1", "--no-download"]
SMALL = ["train", "--model", "alexnet_small", "--model-arg", "width=0.25", "--data", "mnist", "--epochs", "1",
         "--no-download"]
# A tiny run of a real model on real data: 2 epochs of 6 steps, a checkpoint every 2 steps.
TINY = ["train", "--model", "alexnet_small", "--model-arg", "width=0.25", "--data", "fashion-mnist",
        "--subset", "256", "--batch-size", "32", "--epochs", "2", "--max-steps", "6",
        "--checkpoint-every", "2", "--seed", "3", "--device", "cpu", "--precision", "fp32", "--no-progress",
        "--no-download"]
QUICK = ["train", "--model", "lenet5", "--data", "fashion-mnist", "--subset", "200", "--batch-size", "50",
         "--max-steps", "2", "--epochs", "1", "--no-progress", "--no-download"]


def _one_line_error(err: str) -> str:
    """The error line of stderr; anything before it may only be argparse's usage."""
    *usage, line = err.strip().splitlines() or [""]
    assert line.startswith("python -m alexnet_lib") and ": error: " in line, err
    assert not usage or usage[0].startswith("usage:"), err
    assert "Traceback" not in err, err
    return line


def _run_main(capsys, argv) -> tuple[int, str, str]:
    """main(argv) as the shell sees it: (exit status, stdout, stderr)."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def _weights(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "checkpoint.pt")["model"]


def _assert_equal_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors that differ: {different}"


# --- bad input: exit 2, one line naming the flag, no traceback --------------------------------------

def _bad_command_lines(tmp: Path) -> list[tuple[list[str], str]]:
    """(argv, what the error line must contain: the flag)."""
    (tmp / "a_file").write_text("not a directory")
    (tmp / "done").mkdir()
    (tmp / "done" / "checkpoint.pt").write_bytes(b"a finished run")
    (tmp / "flat").mkdir()
    (tmp / "flat" / "img.jpg").write_bytes(b"not a layout")
    (tmp / "empty" / "train").mkdir(parents=True)
    return [
        # ranges
        (LENET[:-3] + ["--epochs", "0"], "--epochs"),
        (LENET[:-3] + ["--epochs", "-3"], "--epochs"),
        (LENET[:-3] + ["--epochs", "one"], "--epochs"),  # argparse
        (LENET[:-3] + ["--epochs", "1.5"], "--epochs"),  # argparse
        (LENET + ["--batch-size", "0"], "--batch-size"),
        (LENET + ["--lr", "0"], "--lr"),
        (LENET + ["--lr", "-1"], "--lr"),
        (LENET + ["--lr", "nan"], "--lr"),
        (LENET + ["--lr", "inf"], "--lr"),
        (LENET + ["--weight-decay", "-1"], "--weight-decay"),
        (LENET + ["--weight-decay", "nan"], "--weight-decay"),
        (LENET + ["--label-smoothing", "2"], "--label-smoothing"),
        (LENET + ["--label-smoothing", "1"], "--label-smoothing"),
        (LENET + ["--label-smoothing", "-0.1"], "--label-smoothing"),
        (LENET + ["--image-size", "0"], "--image-size"),
        (LENET + ["--image-size", "64"], "--image-size"),  # too big for LeNet-5's classifier
        (SMALL + ["--image-size", "8"], "--image-size"),  # too small for its convolutions
        (LENET + ["--subset", "0"], "--subset"),
        (LENET + ["--max-steps", "0"], "--max-steps"),
        (LENET + ["--workers", "-1"], "--workers"),
        (LENET + ["--checkpoint-every", "0"], "--checkpoint-every"),
        (LENET + ["--seed", "-1"], "--seed"),
        (LENET + ["--seed", str(2**64)], "--seed"),
        # choices
        (LENET + ["--device", "tpu"], "--device"),
        (LENET + ["--device", "cuda:99"], "--device"),
        (LENET + ["--device", "banana"], "--device"),
        (LENET + ["--schedule", "linear"], "--schedule"),
        (LENET + ["--optimizer", "adam"], "--optimizer"),
        (LENET + ["--precision", "fp8"], "--precision"),
        (["train", "--model", "resnet50", "--data", "mnist", "--epochs", "1"], "--model"),
        (["train", "--model", "lenet5", "--data", "imagenet", "--epochs", "1"], "--data"),
        (["train", "--model", "lenet5", "--data", "mnist"], "--epochs"),  # missing
        # --model-arg
        (LENET + ["--model-arg", "num_classes=5"], "--model-arg"),
        (LENET + ["--model-arg", "in_channels=3"], "--model-arg"),
        (LENET + ["--model-arg", "modern=maybe"], "--model-arg"),
        (LENET + ["--model-arg", "modern=1"], "--model-arg"),
        (LENET + ["--model-arg", "modern"], "--model-arg"),
        (LENET + ["--model-arg", "=3"], "--model-arg"),
        (LENET + ["--model-arg", "no such=1"], "--model-arg"),
        (LENET + ["--model-arg", "nope=1"], "--model-arg"),
        (SMALL + ["--model-arg", "width=-1"], "--model-arg"),
        (SMALL + ["--model-arg", "width=0.5"], "--model-arg"),  # width given twice
        (["train", "--model", "alexnet", "--model-arg", "norm=nope", "--data", "mnist", "--epochs", "1"],
         "--model-arg"),
        # run directory, data
        (LENET + ["--resume"], "--resume"),  # without --out
        (LENET + ["--resume", "--overwrite", "--out", str(tmp / "done")], "--overwrite"),
        (LENET + ["--out", str(tmp / "a_file")], "--out"),
        (LENET + ["--out", str(tmp / "a_file" / "run")], "--out"),  # cannot be created
        (LENET + ["--out", str(tmp / "done")], "--out"),  # holds a run: neither --resume nor --overwrite
        (LENET + ["--skip-corrupt"], "--skip-corrupt"),  # not an image folder
        (["train", "--model", "lenet5", "--data", str(tmp / "empty"), "--epochs", "1"], "--data"),
        (["train", "--model", "lenet5", "--data", str(tmp / "flat"), "--epochs", "1"], "--data"),
        # summary and list
        (["summary", "--model", "lenet5", "--input-size", "0"], "--input-size"),
        (["summary", "--model", "lenet5", "--input-size", "-5"], "--input-size"),
        (["summary", "--model", "lenet5", "--input-size", "64"], "--input-size"),
        (["summary", "--model", "alexnet", "--input-size", "16"], "--input-size"),
        (["summary", "--model", "lenet5", "--in-channels", "0"], "--in-channels"),
        (["summary", "--model", "lenet5", "--num-classes", "0"], "--num-classes"),
        (["summary", "--model", "vgg16"], "--model"),
        (["summary"], "--model"),
        (["list", "--in-channels", "0"], "--in-channels"),
        (["list", "--num-classes", "-1"], "--num-classes"),
        (["list", "--model", "lenet5"], "--model"),  # list takes no --model
    ]


def test_bad_command_lines_exit_2_with_one_line(capsys, tmp_path):
    cases = _bad_command_lines(tmp_path)
    unclear = []
    for argv, flag in cases:
        code, _, err = _run_main(capsys, argv)
        try:
            assert code == 2, f"exit status {code}"
            line = _one_line_error(err)
            assert flag in line, f"{flag} not named"
        except AssertionError as exc:
            unclear.append(f"{' '.join(argv)}: {exc}\n{err}")
    with capsys.disabled():
        print(f"\nbad command lines: tried {len(cases)} / refused clearly {len(cases) - len(unclear)}")
    assert len(cases) >= 40
    assert not unclear, "\n".join(unclear)
    assert (tmp_path / "done" / "checkpoint.pt").read_bytes() == b"a finished run"  # left alone


def test_messages_say_what_to_do(capsys, tmp_path):
    """A few messages in full: the fix is in them."""
    _, _, err = _run_main(capsys, LENET + ["--model-arg", "num_classes=5"])
    assert "comes from the data" in err
    _, _, err = _run_main(capsys, LENET + ["--image-size", "64"])
    assert "64 does not fit LeNet5" in err and "28x28" in err
    _, _, err = _run_main(capsys, LENET + ["--device", "tpu"])
    assert "'cpu'" in err
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "checkpoint.pt").write_bytes(b"x")
    _, _, err = _run_main(capsys, LENET + ["--out", str(tmp_path / "done")])
    assert "--resume" in err and "--overwrite" in err


# --- same seed, same weights -------------------------------------------------------------------------

def test_same_seed_same_weights(fashion_root, tmp_path, capsys):
    """The seed is set before the model is built: two runs with one seed are equal bit for bit (even in one
    process, where the global RNG has moved on), another seed gives other initial weights."""
    argv = TINY[:] + ["--epochs", "1", "--max-steps", "3"]
    runs = {name: tmp_path / name for name in ("a", "b", "other")}
    for name, out in runs.items():
        seed = ["--seed", "4"] if name == "other" else []
        assert main(argv + seed + ["--out", str(out)]) == 0
    capsys.readouterr()
    _assert_equal_weights(_weights(runs["a"]), _weights(runs["b"]))
    first = "features.0.weight"
    assert not torch.equal(_weights(runs["a"])[first], _weights(runs["other"])[first])


# --- kill -9 and SIGTERM, then --resume ---------------------------------------------------------------

def _env(fashion_root) -> dict:
    return {**os.environ, "ALEXNET_DATA": str(fashion_root), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _start(argv, env, cwd) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "alexnet_lib", *argv], env=env, cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _signal_after_first_checkpoint(runs: dict, timeout: float = 240) -> None:
    """runs: {run_dir: (process, signal)}; send each process its signal as soon as its first checkpoint
    appears (step 2 of 6 of epoch 1: mid-epoch)."""
    deadline, pending = time.monotonic() + timeout, dict(runs)
    while pending:
        for run_dir, (proc, sig) in list(pending.items()):
            if (run_dir / "checkpoint.pt").exists():
                proc.send_signal(sig)
                del pending[run_dir]
            elif proc.poll() is not None:
                pytest.fail(f"{run_dir.name} ended ({proc.returncode}) before a checkpoint: "
                            f"{proc.stderr.read()}")
        if time.monotonic() > deadline:
            for proc, _ in pending.values():
                proc.kill()
            pytest.fail(f"no checkpoint appeared in {list(pending)}")
        time.sleep(0.005)


@pytest.fixture(scope="module")
def interrupted_runs(fashion_root, tmp_path_factory):
    """An uninterrupted run, one killed with SIGKILL and one stopped with SIGTERM after their first
    checkpoint, both then resumed (the three first runs side by side, to save time)."""
    tmp, env = tmp_path_factory.mktemp("interrupted"), _env(fashion_root)
    dirs = {name: tmp / name for name in ("reference", "killed", "terminated")}
    procs = {name: _start(TINY + ["--out", str(d)], env, tmp) for name, d in dirs.items()}
    _signal_after_first_checkpoint({dirs["killed"]: (procs["killed"], signal.SIGKILL),
                                    dirs["terminated"]: (procs["terminated"], signal.SIGTERM)})
    first = {name: (p.wait(timeout=300), *p.communicate()) for name, p in procs.items()}
    at_stop = {name: load_checkpoint(dirs[name] / "checkpoint.pt") for name in ("killed", "terminated")}
    resumed = {name: _start(TINY + ["--out", str(dirs[name]), "--resume"], env, tmp)
               for name in ("killed", "terminated")}
    second = {name: (p.wait(timeout=300), *p.communicate()) for name, p in resumed.items()}
    return dict(dirs=dirs, first=first, at_stop=at_stop, second=second)


def test_uninterrupted_reference(interrupted_runs):
    code, out, err = interrupted_runs["first"]["reference"]
    assert code == 0, err
    assert "epoch   2/2" in out and "final test accuracy" in out


def test_kill_9_then_resume_equals_uninterrupted(interrupted_runs):
    r = interrupted_runs
    code, _, err = r["first"]["killed"]
    assert code == -signal.SIGKILL, f"not killed mid-run: {code} {err[-2000:]}"
    assert r["at_stop"]["killed"]["epoch"] < 2  # the run was not finished when it was killed
    code, out, err = r["second"]["killed"]
    assert code == 0, err
    assert "epoch   2/2" in out
    _assert_equal_weights(_weights(r["dirs"]["killed"]), _weights(r["dirs"]["reference"]))
    assert not list(r["dirs"]["killed"].glob(".*.tmp*"))  # no temporary file left behind


def test_sigterm_exits_143_with_a_checkpoint_resume_continues(interrupted_runs):
    r = interrupted_runs
    code, _, err = r["first"]["terminated"]
    assert code == 128 + signal.SIGTERM, err[-2000:]
    line = _one_line_error(err)
    assert "SIGTERM" in line and "--resume" in line and str(r["dirs"]["terminated"]) in line
    assert r["at_stop"]["terminated"]["progress"] is not None  # saved mid-epoch, where it stopped
    code, _, err = r["second"]["terminated"]
    assert code == 0, err
    _assert_equal_weights(_weights(r["dirs"]["terminated"]), _weights(r["dirs"]["reference"]))


def test_rerun_into_a_finished_run_is_refused(interrupted_runs, capsys):
    """Without --resume or --overwrite the finished run stays as it is, bit for bit."""
    ckpt = interrupted_runs["dirs"]["reference"] / "checkpoint.pt"
    before = ckpt.read_bytes()
    code, _, err = _run_main(capsys, TINY + ["--out", str(ckpt.parent)])
    assert code == 2 and "already holds a run" in _one_line_error(err)
    assert ckpt.read_bytes() == before


# --- default run directories -------------------------------------------------------------------------

def test_default_out_is_new_for_every_run(fashion_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert main(QUICK) == 0
    out = capsys.readouterr().out
    runs = sorted(p for p in (tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all((p / "checkpoint.pt").exists() for p in runs)
    for p in runs:
        assert p.name.startswith("lenet5-fashion-mnist-") and f"run directory runs/{p.name}" in out
    code, _, err = _run_main(capsys, QUICK + ["--resume"])  # which one? say, do not guess
    line = _one_line_error(err)
    assert code == 2 and "--out" in line and all(f"runs/{p.name}" in line for p in runs)


# --- damaged files and a full disk ---------------------------------------------------------------------

@pytest.fixture
def finished_run(fashion_root, tmp_path, capsys) -> Path:
    out = tmp_path / "run"
    assert main(QUICK + ["--out", str(out)]) == 0
    capsys.readouterr()
    return out


def _damaged(finished: Path, tmp: Path, how: str) -> Path:
    good = (finished / "checkpoint.pt").read_bytes()
    out = tmp / how
    out.mkdir()
    if how == "garbage":
        data = b"this is not a checkpoint"
    elif how == "truncated":
        data = good[: len(good) // 2]
    elif how == "flipped":  # one bit in the middle of the file (the weights)
        data = bytearray(good)
        data[len(data) // 2] ^= 0x10
        data = bytes(data)
    else:  # the old format: a bare dict, without the format tag and checksum
        torch.save({"model": load_checkpoint(finished / "checkpoint.pt")["model"], "epoch": 1},
                   out / "checkpoint.pt")
        return out
    (out / "checkpoint.pt").write_bytes(data)
    return out


@pytest.mark.parametrize("how", ["garbage", "truncated", "flipped", "old-format"])
def test_damaged_checkpoint_exit_2_naming_it(finished_run, tmp_path, capsys, how):
    out = _damaged(finished_run, tmp_path, how)
    code, _, err = _run_main(capsys, QUICK + ["--epochs", "2", "--out", str(out), "--resume"])
    line = _one_line_error(err)
    assert code == 2 and "--resume" in line and str(out / "checkpoint.pt") in line


def test_full_disk_exit_1_keeps_the_last_checkpoint(finished_run, capsys, monkeypatch):
    before = (finished_run / "checkpoint.pt").read_bytes()

    def no_space(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", no_space)
    code, _, err = _run_main(capsys, QUICK + ["--epochs", "2", "--out", str(finished_run), "--resume"])
    line = _one_line_error(err)
    assert code == 1 and "no space left" in line and str(finished_run / "checkpoint.pt") in line
    assert "--resume" in line
    assert (finished_run / "checkpoint.pt").read_bytes() == before
    assert not list(finished_run.glob(".*.tmp*"))


def test_truncated_dataset_file_exit_2_naming_it(fashion_root, tmp_path, capsys):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (fashion_root / "FashionMNIST" / "raw").glob("*-ubyte"):
        (raw / f.name).write_bytes(f.read_bytes())
    damaged = raw / "train-images-idx3-ubyte"
    damaged.write_bytes(damaged.read_bytes()[:100_000])  # an interrupted copy
    code, _, err = _run_main(capsys, QUICK + ["--data-root", str(tmp_path), "--out", str(tmp_path / "r")])
    line = _one_line_error(err)
    assert code == 2 and "--data" in line and str(damaged) in line and "Delete" in line


def test_unreadable_image_exit_2_or_skipped(tmp_path, capsys):
    folder = write_image_folder(tmp_path / "folder")
    (folder / "val" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    argv = ["train", "--model", "lenet5", "--data", str(folder), "--epochs", "1", "--batch-size", "4",
            "--workers", "0", "--no-progress"]
    code, _, err = _run_main(capsys, argv + ["--out", str(tmp_path / "a")])
    line = _one_line_error(err)
    assert code == 2 and "broken.jpg" in line and "--skip-corrupt" in line
    with pytest.warns(UserWarning, match="broken.jpg"):
        code, out, err = _run_main(capsys, argv + ["--out", str(tmp_path / "b"), "--skip-corrupt"])
    assert code == 0, err
    assert "18 train / 9 val images" in out
