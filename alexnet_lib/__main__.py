"""Command line: ``python -m alexnet_lib {train,list,summary}`` (also ``alexnet-lib`` once installed).

Examples::

    python -m alexnet_lib list
    python -m alexnet_lib summary --model alexnet --in-channels 3 --num-classes 1000
    python -m alexnet_lib train --model alexnet_small --data fashion-mnist --epochs 10 --out runs/small
    python -m alexnet_lib train --model alexnet_small --data fashion-mnist --epochs 20 --out runs/small \
        --resume                              # continue it (after Ctrl-C, a crash, or to train longer)
    python -m alexnet_lib train --model alexnet_small --data fashion-mnist --epochs 10 --out runs/small \
        --overwrite                           # start it over
    python -m alexnet_lib train --model alexnet --data ~/imagenet --epochs 90 --schedule step \\
        --checkpoint-every 2000 --skip-corrupt --out runs/in
    torchrun --nproc-per-node 4 -m alexnet_lib train ... --out runs/in   # DistributedDataParallel

``--data`` is a dataset name (fashion-mnist, mnist, cifar10) or a folder in the ImageNet layout
(``DIR/train/<class>/*.jpg``, ``DIR/val/<class>/*.jpg``).

The run directory (``--out``; default ``runs/MODEL-DATA-YYYYmmdd-HHMMSS-PID``, printed at the start)
receives ``checkpoint.pt`` after every epoch and every ``--checkpoint-every`` steps, and ``history.json``.
A directory that holds a checkpoint is never replaced silently: ``--resume`` continues it, ``--overwrite``
starts it over. Ctrl-C or SIGTERM (a preempted job) saves a checkpoint first; a crash or ``kill -9``
loses the steps since the last one. The same command with ``--resume`` then continues to the same
weights as a run that was never interrupted (same ``--seed``, same machine).

Exit status: 0 done; 2 bad input (one line that names the flag or the file; flags are all checked before
any work starts); 1 the loss diverged, or a checkpoint could not be written (full disk, no permission);
128 + the signal number (130 Ctrl-C, 143 SIGTERM) after an interruption saved a checkpoint.
"""

from __future__ import annotations

import argparse
import ast
import errno
import math
import os
import signal
import sys
import time
from pathlib import Path

SCHEDULES = ["none", "step", "plateau", "onecycle", "cosine"]
# Set by the command line from the data, never by --model-arg.
DATA_KEYS = ("num_classes", "in_channels")
# (in_channels, classes) of the named datasets, so that the model (and --model-arg) is checked before
# the data is loaded.
DATA_SHAPES = {"fashion-mnist": (1, 10), "mnist": (1, 10), "cifar10": (3, 10)}
RUNS = Path("runs")
# OSErrors of a run directory that cannot be written: one line and exit 1, not a traceback
WRITE_ERRORS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EACCES, errno.EPERM, errno.EROFS,
                errno.ENOENT, errno.ENOTDIR}
PROG = "python -m alexnet_lib"


class _BadInput(Exception):
    """Bad input found by the command line itself: exit 2 with this one-line message."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG,
                                description="AlexNet book: train models, list them, print layer tables.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{train,list,summary}")

    t = sub.add_parser("train", help="train a model on a dataset")
    t.add_argument("--model", required=True, help="model name (see `list`)")
    t.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra keyword for the model, a Python literal, e.g. norm=batch, modern=True or "
                        "width=0.5 (repeatable); num_classes and in_channels come from the data")
    t.add_argument("--data", required=True,
                   help="fashion-mnist, mnist, cifar10, or a folder with train/ and val/ class folders")
    t.add_argument("--epochs", type=int, required=True)
    t.add_argument("--out", help="run directory for checkpoint.pt and history.json "
                                 "(default runs/MODEL-DATA-YYYYmmdd-HHMMSS-PID)")
    again = t.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    again.add_argument("--overwrite", action="store_true",
                       help="start over in an OUT that holds a run (default: refuse, so that no run is lost)")
    t.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="also save a checkpoint every N steps (default: after every epoch only)")
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=0.01)
    t.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    t.add_argument("--weight-decay", type=float, default=5e-4)
    t.add_argument("--schedule", choices=SCHEDULES, default="none")
    t.add_argument("--label-smoothing", type=float, default=0.0)
    t.add_argument("--image-size", type=int, help="input size (default: the model's default_input_size)")
    t.add_argument("--subset", type=int, metavar="N", help="train on N images (stratified), test on <= N")
    t.add_argument("--max-steps", type=int, metavar="S", help="at most S steps per epoch")
    t.add_argument("--device", help="cuda, cuda:1, mps or cpu (default: best available)")
    t.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"], default="auto")
    t.add_argument("--seed", type=int, default=0, help="seeds the initial weights, data order and dropout")
    t.add_argument("--data-root", help="datasets directory (default: $ALEXNET_DATA)")
    t.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data")
    t.add_argument("--workers", type=int, help="DataLoader workers for image folders")
    t.add_argument("--skip-corrupt", action="store_true",
                   help="image folders: skip images that cannot be read (default: stop, naming the file)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    for name, text in [("list", "list the models with their parameter counts"),
                       ("summary", "print a model's layer table (shapes, parameters, FLOPs)")]:
        s = sub.add_parser(name, help=text)
        if name == "summary":
            s.add_argument("--model", required=True)
            s.add_argument("--input-size", type=int, help="default: the model's default_input_size")
        s.add_argument("--in-channels", type=int, default=None, help="input channels (default 1)")
        s.add_argument("--num-classes", type=int, default=None, help="default 10")
    p.commands = sub.choices  # name -> sub-parser, for error messages
    return p


# --- checks: every flag, before any work -------------------------------------------------------------

# flag -> (test, what the flag must be); None (not given) always passes
RANGES = {
    "--epochs": (lambda v: v >= 1, ">= 1"),
    "--batch-size": (lambda v: v >= 1, ">= 1"),
    "--lr": (lambda v: math.isfinite(v) and v > 0, "> 0 and finite"),
    "--weight-decay": (lambda v: math.isfinite(v) and v >= 0, ">= 0 and finite"),
    "--label-smoothing": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "--image-size": (lambda v: v >= 1, ">= 1"),
    "--subset": (lambda v: v >= 1, ">= 1"),
    "--max-steps": (lambda v: v >= 1, ">= 1"),
    "--workers": (lambda v: v >= 0, ">= 0"),
    "--checkpoint-every": (lambda v: v >= 1, ">= 1 (steps)"),
    "--seed": (lambda v: 0 <= v < 2**32, "between 0 and 2**32 - 1"),
    "--input-size": (lambda v: v >= 1, ">= 1"),
    "--in-channels": (lambda v: v >= 1, ">= 1"),
    "--num-classes": (lambda v: v >= 1, ">= 1"),
}


def _check_ranges(args) -> None:
    for flag, (ok, requirement) in RANGES.items():
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value is not None and not ok(value):
            raise _BadInput(f"argument {flag}: must be {requirement}, got {value}")


def _model_kwargs(pairs: list[str]) -> dict:
    """``--model-arg KEY=VALUE`` pairs as keywords; values are Python literals, anything else a string
    (so ``modern=maybe`` stays ``'maybe'`` and the model refuses it, instead of counting as true)."""
    kw = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise _BadInput(f"argument --model-arg: expected KEY=VALUE with KEY a Python name, got {pair!r}")
        if key in DATA_KEYS:
            raise _BadInput(f"argument --model-arg: {key} comes from the data (--data), not from --model-arg")
        if key in kw:
            raise _BadInput(f"argument --model-arg: {key} given twice")
        try:
            kw[key] = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            kw[key] = value
    return kw


def _check_model_name(name: str) -> str:
    from .models import list_models

    key = name.lower().replace("-", "_")
    if key not in list_models():
        raise _BadInput(f"argument --model: invalid choice: {name!r} "
                        f"(choose from {', '.join(list_models())})")
    return key


def _build_model(name: str, model_kw: dict, **data_kw):
    from .models import get_model

    try:
        return get_model(name, **data_kw, **model_kw)
    except (TypeError, ValueError) as exc:
        flag = "--model-arg" if model_kw else "--model"
        raise _BadInput(f"argument {flag}: cannot build {name} with {model_kw or data_kw}: {exc}") from None


def _check_fits(model, size: int, flag: str) -> None:
    """Refuse an input size the model cannot take (collapses inside, or does not match the classifier),
    with a forward pass of one blank image: the same checks the model makes during training."""
    import torch

    from .arithmetic import InputTooSmallError, check_input_size
    from .layers import eval_mode

    name = type(model).__name__
    try:
        check_input_size(model, size)
        with eval_mode(model), torch.no_grad():
            model(torch.zeros(1, getattr(model, "in_channels", 1), size, size))
    except InputTooSmallError as exc:
        detail = str(exc).removeprefix(f"{name}: ")
        raise _BadInput(f"argument {flag}: {size} does not fit {name}: {detail}") from None


def _run_dir(args, model_key: str, data_label: str) -> Path:
    """The run directory: --out, or a new one under runs/ (so that two runs never share one)."""
    from .checkpoint import RunExistsError, check_run_dir
    from .train import CHECKPOINT

    if args.out:
        out = Path(args.out).expanduser()
        try:  # fit checks again; checking here refuses before the data is loaded
            check_run_dir(out, resume=args.resume, overwrite=args.overwrite, name=CHECKPOINT)
        except (RunExistsError, NotADirectoryError) as exc:
            raise _BadInput(f"argument --out: {exc}") from None
    elif args.resume:
        runs = sorted(str(p) for p in RUNS.glob(f"{model_key}-{data_label}*") if (p / CHECKPOINT).exists())
        found = f"no run of {model_key} on {data_label} under {RUNS}/"
        if runs:
            older = f" (and {len(runs) - 5} older)" if len(runs) > 5 else ""
            found = f"runs of {model_key} on {data_label}: {', '.join(runs[-5:])}{older}"
        raise _BadInput(f"argument --resume: needs --out, the run directory to continue; {found}")
    elif int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise _BadInput("argument --out: required with torchrun, so that every process uses the same run "
                        "directory")
    else:
        out = base = RUNS / f"{model_key}-{data_label}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        n = 1
        while out.exists():  # a second run in the same second from the same process (main() called twice)
            n += 1
            out = base.with_name(f"{base.name}-{n}")
    # the first save comes after an epoch (or --checkpoint-every steps): find out now that it cannot work
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise _BadInput(f"argument --out: cannot create or write {out}: {parent} is not a writable directory")
    return out


# --- commands ----------------------------------------------------------------------------------------

def _cmd_list(args) -> int:
    from .models import get_model, list_models

    _check_ranges(args)
    kw = dict(in_channels=args.in_channels or 1, num_classes=args.num_classes or 10)
    print(f"{'model':<22}{'parameters':>14}  input   (in_channels={kw['in_channels']}, "
          f"num_classes={kw['num_classes']})")
    for name in list_models():
        m = get_model(name, **kw)
        n = sum(p.numel() for p in m.parameters())
        print(f"{name:<22}{n:>14,}  {getattr(m, 'default_input_size', '?')}")
    return 0


def _cmd_summary(args) -> int:
    from .arithmetic import layer_table

    _check_ranges(args)
    key = _check_model_name(args.model)
    kw = {"num_classes": args.num_classes or 10}
    if args.in_channels:
        kw["in_channels"] = args.in_channels
    model = _build_model(key, {}, **kw)
    size = args.input_size or getattr(model, "default_input_size", 224)
    _check_fits(model, size, "--input-size")
    print(layer_table(model, size, getattr(model, "in_channels", None)))
    return 0


def _load_data(args, folder: Path | None, data_name: str | None, size: int):
    """(train, test, size text): an ImageData pair for a named dataset, DataLoaders for a folder."""
    from .data import DatasetNotFoundError, image_folder_loader, load_dataset

    if folder is not None:
        kw = dict(image_size=size, batch_size=args.batch_size, num_workers=args.workers, subset=args.subset,
                  seed=args.seed, skip_corrupt=args.skip_corrupt)
        train = image_folder_loader(folder, True, **kw)
        try:
            test = image_folder_loader(folder, False, **kw)
        except DatasetNotFoundError:  # no val/ split: train only
            test = None
        return train, test, f"{len(train.dataset)} train / {len(test.dataset) if test else 0} val images"
    load = dict(root=args.data_root, download=not args.no_download)
    train, test = load_dataset(data_name, True, **load), load_dataset(data_name, False, **load)
    if args.subset:
        train, test = train.subset(args.subset, args.seed), test.subset(args.subset, args.seed)
    return train, test, f"{len(train)} train / {len(test)} test images"


def _check_train_flags(args) -> tuple[str, dict, Path | None, str | None, str, Path]:
    """Every flag of ``train``, before any work: (model key, model keywords, image folder or None, dataset
    name or None, data label, run directory)."""
    from .data import resolve_name
    from .device import select_device

    _check_ranges(args)
    model_key = _check_model_name(args.model)
    model_kw = _model_kwargs(args.model_arg)
    folder = Path(args.data).expanduser()
    folder, data_name = (folder, None) if folder.is_dir() else (None, args.data)
    if folder is None:
        try:
            data_name = resolve_name(args.data)
        except ValueError:
            raise _BadInput(f"argument --data: invalid choice: {args.data!r} (choose from fashion-mnist, "
                            "mnist, cifar10, or an existing folder with train/<class>/ and val/<class>/ "
                            "images)") from None
        if args.skip_corrupt:
            raise _BadInput(f"argument --skip-corrupt: only for image folders, not for {data_name}")
    try:
        select_device(args.device)
    except ValueError as exc:
        raise _BadInput(f"argument --device: {exc}") from None
    label = data_name or folder.resolve().name
    return model_key, model_kw, folder, data_name, label, _run_dir(args, model_key, label)


def _seeded_model(args, model_key: str, model_kw: dict, folder: Path | None, data_name: str | None):
    """(model, input size, classes): the model for the data, built after seeding (so that two runs with
    the same --seed start from the same weights), and checked to take the input size."""
    from .data import image_folder_classes
    from .train import seed_everything

    if folder is None:
        in_channels, n_classes = DATA_SHAPES[data_name]
    else:
        try:
            in_channels, n_classes = 3, len(image_folder_classes(folder))
        except (ValueError, FileNotFoundError) as exc:
            raise _BadInput(f"argument --data: {exc}") from None
        if n_classes == 0:
            raise _BadInput(f"argument --data: {folder} has no class folders (expected "
                            f"{folder}/train/<class>/*.jpg)")
    seed_everything(args.seed)
    model = _build_model(model_key, model_kw, in_channels=in_channels, num_classes=n_classes)
    size = args.image_size or getattr(model, "default_input_size", 224)
    _check_fits(model, size, "--image-size")
    return model, size, n_classes


def _cmd_train(args) -> int:
    from .train import CHECKPOINT, TrainingDivergedError, TrainingInterrupted, fit

    # 1. every flag, before any work: ranges, model name and keywords, data, device, run directory
    model_key, model_kw, folder, data_name, label, out = _check_train_flags(args)
    # 2. the model, from the seed
    model, size, n_classes = _seeded_model(args, model_key, model_kw, folder, data_name)

    # 3. the data
    say = print if int(os.environ.get("RANK", 0)) == 0 else (lambda *a, **k: None)
    try:
        train, test, sizes = _load_data(args, folder, data_name, size)
    except (ValueError, TypeError, FileNotFoundError) as exc:  # DatasetNotFoundError, unreadable files
        raise _BadInput(f"argument --data: {exc}") from None
    n_params = sum(p.numel() for p in model.parameters())
    say(f"{args.model} ({n_params:,} parameters) on {label}: {sizes} at {size}x{size}, "
        f"{n_classes} classes; run directory {out}")
    if args.resume and not (out / CHECKPOINT).exists():
        say(f"no checkpoint in {out} yet: starting a new run there")

    # 4. training; an interruption (Ctrl-C, SIGTERM) saves a checkpoint, a full disk stops cleanly
    try:
        history = fit(model, train, test, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      optimizer=args.optimizer, weight_decay=args.weight_decay,
                      schedule=None if args.schedule == "none" else args.schedule,
                      label_smoothing=args.label_smoothing, image_size=size, device=args.device,
                      precision=args.precision, seed=args.seed, out_dir=out, resume=args.resume,
                      overwrite=args.overwrite, checkpoint_every=args.checkpoint_every,
                      progress=not args.no_progress, verbose=True, max_steps_per_epoch=args.max_steps)
    except TrainingInterrupted as exc:
        _say_error(f"interrupted by {signal.Signals(exc.signal).name} at epoch {exc.epoch}, step "
                   f"{exc.step}; checkpoint saved in {exc.checkpoint}; to continue, run the same command "
                   f"with --resume --out {out}")
        return 128 + int(exc.signal)
    except TrainingDivergedError as exc:
        _say_error(exc)
        return 1
    except OSError as exc:  # writing the run directory failed: the message names the file
        if exc.errno not in WRITE_ERRORS:
            raise
        last = f"; then continue from the last checkpoint with --resume --out {out}" \
            if (out / CHECKPOINT).exists() else ""
        _say_error(f"{exc}{last}")
        return 1
    finally:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    _report(history, say)
    return 0


def _report(history, say) -> None:
    cfg = history.config
    say(f"device {cfg.get('device')}, precision {cfg.get('amp')}, {len(history)} epochs")
    if history.test_top1 and history.test_top1[-1] is not None:
        say(f"final test accuracy: top-1 {history.test_top1[-1]:.2%}  top-5 {history.test_top5[-1]:.2%}")
    ips = sum(history.images_per_sec) / len(history.images_per_sec)
    say(f"throughput {ips:,.0f} images/s (training, mean over epochs); "
        f"wall time {history.wall_time[-1]:.1f} s")


def _say_error(message, command: str = "train") -> None:
    """One line on stderr: ``python -m alexnet_lib train: error: ...``. Multi-line messages are joined;
    an error re-raised from a DataLoader worker carries the worker's traceback: only its last line is
    kept."""
    text = str(message).strip()
    if "Traceback (most recent call last)" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    print(f"{PROG} {command}: error: {' '.join(text.split())}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    Bad input raises ``SystemExit(2)`` after printing one line that names the flag (argparse's own
    errors, such as a missing flag, also print the usage).
    """
    from .checkpoint import CheckpointError, RunExistsError
    from .data import CorruptImageError, DatasetNotFoundError
    from .train import CheckpointMismatchError

    args = build_parser().parse_args(argv)
    run = {"train": _cmd_train, "list": _cmd_list, "summary": _cmd_summary}[args.command]
    try:
        return run(args)
    except _BadInput as exc:
        _say_error(exc, args.command)
    except RunExistsError as exc:
        _say_error(f"argument --out: {exc}", args.command)
    except (CheckpointError, CheckpointMismatchError) as exc:
        _say_error(f"argument --resume: {exc}", args.command)
    except CorruptImageError as exc:
        _say_error(f"argument --data: {exc} (--skip-corrupt skips unreadable images)", args.command)
    # what the library refuses (its messages name the argument): bad input too
    except (ValueError, TypeError, DatasetNotFoundError) as exc:
        _say_error(exc, args.command)
    except KeyboardInterrupt:  # before training started, or a second Ctrl-C: nothing saved
        _say_error("interrupted", args.command)
        return 128 + signal.SIGINT
    raise SystemExit(2)


if __name__ == "__main__":
    sys.exit(main())
