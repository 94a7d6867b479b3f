"""The command line: python -m alexnet_lib {train,list,summary}, through main(argv) and as a process."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, write_cifar10, write_image_folder

from alexnet_lib.__main__ import main
from alexnet_lib.models import list_models


def _error(capsys, argv):
    """Run main(argv), expect bad input: exit status 2, one error line on stderr (after argparse's usage for
    its own errors), no traceback."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    *usage, line = err.strip().splitlines()
    assert line.startswith("python -m alexnet_lib") and "error:" in line and "Traceback" not in err, err
    assert not usage or usage[0].startswith("usage:"), err
    return err


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in list_models():
        assert name in out
    assert "61,706" in out  # LeNet-5


def test_summary(capsys):
    assert main(["summary", "--model", "lenet5"]) == 0
    out = capsys.readouterr().out
    assert "Conv2d" in out and "1x28x28" in out
    assert main(["summary", "--model", "alexnet", "--in-channels", "3", "--num-classes", "1000"]) == 0
    assert "3x224x224" in capsys.readouterr().out


def test_summary_errors(capsys):
    assert "choose from" in _error(capsys, ["summary", "--model", "vgg16"])
    assert "too small" in _error(capsys, ["summary", "--model", "alexnet", "--input-size", "16"])


@pytest.mark.parametrize("argv,expected", [
    (["--model", "resnet50", "--data", "mnist", "--epochs", "1"], "'resnet50' (choose from alexnet"),
    (["--model", "lenet5", "--data", "imagenet", "--epochs", "1"], "fashion-mnist, mnist, cifar10"),
    (["--model", "lenet5", "--data", "mnist", "--epochs", "0"], "--epochs: must be >= 1"),
    (["--model", "lenet5", "--data", "mnist", "--epochs", "one"], "invalid int value"),
    (["--model", "lenet5", "--data", "mnist", "--epochs", "1", "--lr", "-1"], "--lr: must be > 0"),
    (["--model", "lenet5", "--data", "mnist", "--epochs", "1", "--schedule", "linear"], "invalid choice"),
    (["--model", "lenet5", "--model-arg", "modern", "--data", "mnist", "--epochs", "1"], "KEY=VALUE"),
])
def test_train_bad_input(capsys, argv, expected):
    assert expected in _error(capsys, ["train", *argv])


def test_train_missing_data(capsys, tmp_path):
    err = _error(capsys, ["train", "--model", "lenet5", "--data", "mnist", "--epochs", "1", "--no-download",
                          "--data-root", str(tmp_path)])
    assert f"not found in {tmp_path / 'MNIST'}" in err and "ALEXNET_DATA" in err
    # downloading fails too (the tests have no network): same kind of message, still exit status 2
    err = _error(capsys, ["train", "--model", "lenet5", "--data", "mnist", "--epochs", "1",
                          "--data-root", str(tmp_path)])
    assert "download failed" in err


def test_train_in_process_then_resume(fashion_root, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--model", "lenet5", "--model-arg", "modern=True", "--data", "fashion_mnist",
            "--epochs", "1", "--subset", "500", "--batch-size", "50", "--lr", "0.05", "--out", str(out),
            "--no-progress"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "lenet5 (61,706 parameters) on fashion-mnist: 500 train / 500 test images at 28x28" in text
    assert "epoch   1/1" in text and "final test accuracy: top-1" in text and "images/s" in text
    assert json.loads((out / "history.json").read_text())["config"]["model"] == "LeNet5"
    assert main(argv + ["--resume"]) == 0  # already done: returns at once
    assert "nothing to do" in capsys.readouterr().out
    # the same run directory with another model is bad input
    err = _error(capsys, ["train", "--model", "alexnet_small", "--data", "fashion-mnist", "--epochs", "2",
                          "--subset", "100", "--out", str(out), "--resume"])
    assert "different model" in err


def test_train_cifar10_and_image_folder(tmp_path, capsys, cifar_files_trusted):
    write_cifar10(tmp_path / "data", per_batch=10)
    assert main(["train", "--model", "lenet5", "--data", "cifar10", "--data-root", str(tmp_path / "data"),
                 "--image-size", "28", "--epochs", "1", "--batch-size", "16", "--out", str(tmp_path / "c"),
                 "--no-progress", "--no-download"]) == 0
    assert "on cifar10: 50 train / 10 test images at 28x28, 10 classes" in capsys.readouterr().out
    folder = write_image_folder(tmp_path / "folder")
    assert main(["train", "--model", "lenet5", "--data", str(folder), "--epochs", "1", "--batch-size", "4",
                 "--workers", "0", "--out", str(tmp_path / "f"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "18 train / 9 val images at 28x28, 3 classes" in out and "final test accuracy" in out


def test_python_m_alexnet_lib_train(fashion_root, tmp_path):
    env = {**os.environ, "ALEXNET_DATA": str(fashion_root),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "alexnet_lib", "train", "--model", "lenet5", "--model-arg", "modern=True",
           "--data", "fashion-mnist", "--epochs", "1", "--subset", "300", "--batch-size", "30",
           "--optimizer", "adamw", "--lr", "0.003", "--out", str(tmp_path / "run")]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "final test accuracy: top-1" in r.stdout and "wall time" in r.stdout
    assert "epoch 1/1" in r.stderr  # the progress bar
    top1 = json.loads((tmp_path / "run" / "history.json").read_text())["test_top1"][-1]
    assert 0 < top1 <= 1  # 10 steps: only the wiring is tested here, learning is in test_train.py
    cmd = [sys.executable, "-m", "alexnet_lib", "train", "--model", "nope", "--data", "mnist", "--epochs=2"]
    bad = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "invalid choice: 'nope'" in bad.stderr and "Traceback" not in bad.stderr
