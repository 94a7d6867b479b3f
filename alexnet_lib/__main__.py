"""Command line: ``python -m alexnet_lib {train,list,summary}`` (also ``alexnet-lib`` once installed).

Examples::

    python -m alexnet_lib list
    python -m alexnet_lib summary --model alexnet --in-channels 3 --num-classes 1000
    python -m alexnet_lib train --model alexnet_small --data fashion-mnist --epochs 10 --out runs/small
    python -m alexnet_lib train --model alexnet --data ~/imagenet --epochs 90 --schedule step --out runs/in
    torchrun --nproc-per-node 4 -m alexnet_lib train ...        # DistributedDataParallel

``--data`` is a dataset name (fashion-mnist, mnist, cifar10) or a folder in the ImageNet layout
(``DIR/train/<class>/*.jpg``, ``DIR/val/<class>/*.jpg``). Bad input exits with status 2 and a message.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
from pathlib import Path

SCHEDULES = ["none", "step", "plateau", "onecycle", "cosine"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m alexnet_lib",
                                description="AlexNet book: train models, list them, print layer tables.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{train,list,summary}")

    t = sub.add_parser("train", help="train a model on a dataset")
    t.add_argument("--model", required=True, help="model name (see `list`)")
    t.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra keyword for the model, e.g. norm=batch or modern=True (repeatable)")
    t.add_argument("--data", required=True,
                   help="fashion-mnist, mnist, cifar10, or a folder with train/ and val/ class folders")
    t.add_argument("--epochs", type=int, required=True)
    t.add_argument("--out", help="run directory for checkpoint.pt and history.json (default runs/MODEL-DATA)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
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
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--data-root", help="datasets directory (default: $ALEXNET_DATA)")
    t.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data")
    t.add_argument("--workers", type=int, help="DataLoader workers for image folders")
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


def _model_kwargs(parser, pairs: list[str]) -> dict:
    kw = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            parser.error(f"argument --model-arg: expected KEY=VALUE, got {pair!r}")
        try:
            kw[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kw[key] = value
    return kw


def _check_model_name(parser, name: str) -> None:
    from .models import list_models

    if name.lower().replace("-", "_") not in list_models():
        parser.error(f"argument --model: invalid choice: {name!r} (choose from {', '.join(list_models())})")


def _build_model(parser, name: str, **kw):
    from .models import get_model

    _check_model_name(parser, name)
    try:
        return get_model(name, **kw)
    except (TypeError, ValueError) as exc:
        parser.error(f"cannot build model {name!r} with {kw}: {exc}")


def _cmd_list(parser, args) -> int:
    from .models import get_model, list_models

    kw = dict(in_channels=args.in_channels or 1, num_classes=args.num_classes or 10)
    print(f"{'model':<22}{'parameters':>14}  input   (in_channels={kw['in_channels']}, "
          f"num_classes={kw['num_classes']})")
    for name in list_models():
        m = get_model(name, **kw)
        n = sum(p.numel() for p in m.parameters())
        print(f"{name:<22}{n:>14,}  {getattr(m, 'default_input_size', '?')}")
    return 0


def _cmd_summary(parser, args) -> int:
    from .arithmetic import InputTooSmallError, layer_table

    kw = {"num_classes": args.num_classes or 10}
    if args.in_channels:
        kw["in_channels"] = args.in_channels
    model = _build_model(parser, args.model, **kw)
    size = args.input_size or getattr(model, "default_input_size", 224)
    try:
        print(layer_table(model, size, getattr(model, "in_channels", None)))
    except InputTooSmallError as exc:
        parser.error(str(exc))
    return 0


def _cmd_train(parser, args) -> int:
    from .data import (
        DatasetNotFoundError,
        image_folder_classes,
        image_folder_loader,
        load_dataset,
        resolve_name,
    )
    from .train import CheckpointMismatchError, TrainingDivergedError, fit

    _check_model_name(parser, args.model)
    for flag, value in [("--epochs", args.epochs), ("--batch-size", args.batch_size),
                        ("--subset", args.subset), ("--max-steps", args.max_steps),
                        ("--image-size", args.image_size)]:
        if value is not None and value < 1:
            parser.error(f"argument {flag}: must be >= 1, got {value}")
    if args.lr <= 0:
        parser.error(f"argument --lr: must be > 0, got {args.lr}")
    folder = Path(args.data).expanduser()
    is_folder = folder.is_dir()
    if not is_folder:
        try:
            data_name = resolve_name(args.data)
        except ValueError:
            parser.error(f"argument --data: invalid choice: {args.data!r} (choose from fashion-mnist, mnist, "
                         "cifar10, or an existing folder with train/<class>/ and val/<class>/ images)")
    rank = int(os.environ.get("RANK", 0))
    say = print if rank == 0 else (lambda *a, **k: None)
    model_kw = _model_kwargs(parser, args.model_arg)

    try:
        if is_folder:
            classes, label = image_folder_classes(folder), str(folder)
            model = _build_model(parser, args.model, in_channels=3, num_classes=len(classes), **model_kw)
            size = args.image_size or getattr(model, "default_input_size", 224)
            kw = dict(image_size=size, batch_size=args.batch_size, num_workers=args.workers,
                      subset=args.subset, seed=args.seed)
            train = image_folder_loader(folder, True, **kw)
            try:
                test = image_folder_loader(folder, False, **kw)
            except DatasetNotFoundError:
                test = None
            sizes = f"{len(train.dataset)} train / {len(test.dataset) if test else 0} val images"
        else:
            load = dict(root=args.data_root, download=not args.no_download)
            train, test = load_dataset(data_name, True, **load), load_dataset(data_name, False, **load)
            if args.subset:
                train, test = train.subset(args.subset, args.seed), test.subset(args.subset, args.seed)
            classes, label = train.classes, data_name
            model = _build_model(parser, args.model, in_channels=train.channels, num_classes=len(classes),
                                 **model_kw)
            size = args.image_size or getattr(model, "default_input_size", None) or train.image_size
            sizes = f"{len(train)} train / {len(test)} test images"
    except DatasetNotFoundError as exc:
        parser.error(str(exc))

    from .arithmetic import InputTooSmallError, check_input_size
    try:
        check_input_size(model, size)
    except InputTooSmallError as exc:
        parser.error(str(exc))
    out = Path(args.out or f"runs/{args.model}-{label.replace('/', '_').strip('_')}")
    n_params = sum(p.numel() for p in model.parameters())
    say(f"{args.model} ({n_params:,} parameters) on {label}: {sizes} at {size}x{size}, "
        f"{len(classes)} classes; run directory {out}")
    try:
        history = fit(model, train, test, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      optimizer=args.optimizer, weight_decay=args.weight_decay,
                      schedule=None if args.schedule == "none" else args.schedule,
                      label_smoothing=args.label_smoothing, image_size=size, device=args.device,
                      precision=args.precision, seed=args.seed, out_dir=out, resume=args.resume,
                      progress=not args.no_progress, verbose=True, max_steps_per_epoch=args.max_steps)
    except CheckpointMismatchError as exc:
        parser.error(str(exc))
    except TrainingDivergedError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    finally:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    cfg = history.config
    say(f"device {cfg.get('device')}, precision {cfg.get('amp')}, {len(history)} epochs")
    if history.test_top1 and history.test_top1[-1] is not None:
        say(f"final test accuracy: top-1 {history.test_top1[-1]:.2%}  top-5 {history.test_top5[-1]:.2%}")
    ips = sum(history.images_per_sec) / len(history.images_per_sec)
    say(f"throughput {ips:,.0f} images/s (training, mean over epochs); "
        f"wall time {history.wall_time[-1]:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    Bad input raises ``SystemExit(2)`` after printing an argparse-style message, like any argparse tool.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    run = {"train": _cmd_train, "list": _cmd_list, "summary": _cmd_summary}[args.command]
    return run(parser.commands[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
