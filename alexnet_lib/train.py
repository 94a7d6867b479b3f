"""Training loop: fit / evaluate / checkpoints / resume / device and precision choice.

One function, :func:`fit`, trains any classifier on an in-memory :class:`~alexnet_lib.data.ImageData`
(batches built on the device by a :class:`~alexnet_lib.data.DeviceLoader`, see :func:`make_loader`) or
on any loader yielding ``(images, labels)``. It uses bf16 autocast where the hardware supports it,
channels_last, a progress bar, checkpoints (``out_dir/checkpoint.pt`` + ``history.json``) after every
epoch and, with ``checkpoint_every``, every few steps, exact resume (also from the middle of an epoch),
a clean stop on SIGINT/SIGTERM, and DistributedDataParallel when started with ``torchrun``. Everything it
measured comes back as a :class:`History`.

``fit`` reads top to bottom in phases: check the arguments, set up (:func:`_setup`), restore a
checkpoint (:func:`_load_state`), then per epoch the step loop (:func:`_train_epoch`) and the
bookkeeping at its end (:func:`_end_epoch`); :func:`_save_state` is the one place that writes a
checkpoint, after checking that the state is finite.
"""

from __future__ import annotations

import inspect
import itertools
import json
import math
import os
import random
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from . import checkpoint, checks
from .data import DeviceLoader, ImageData
from .device import (
    DTYPE_NAMES,
    PRECISIONS,
    amp_dtype,
    autocast,
    keep_freed_memory,
    model_device,
    select_device,
)
from .layers import eval_mode

__all__ = ["CheckpointMismatchError", "FitConfig", "History", "TrainingDivergedError",
           "TrainingInterrupted", "evaluate", "fit", "make_loader", "seed_everything"]

CHECKPOINT, HISTORY = "checkpoint.pt", "history.json"
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = (None, "step", "plateau", "onecycle", "cosine")


class TrainingDivergedError(FloatingPointError):
    """The loss, a metric or the weights became NaN or infinite. Attributes: epoch, step, lr, checkpoint
    (the last good checkpoint, a Path, or None)."""

    def __init__(self, message, *, epoch, step, lr, checkpoint):
        super().__init__(message)
        self.epoch, self.step, self.lr, self.checkpoint = epoch, step, lr, checkpoint


class CheckpointMismatchError(RuntimeError):
    """``resume=True`` found a checkpoint of a different model."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped :func:`fit` after a finished step. Attributes: signal (a
    ``signal.Signals``), checkpoint (Path of the saved state, or None without ``out_dir``), epoch (the
    epoch in progress, from 1) and step (its steps done).

    A KeyboardInterrupt, not an Exception: it is the user asking to stop, so ``except Exception`` in
    calling code (retry loops, notebook helpers) must not swallow it, and code that already handles
    Ctrl-C keeps working."""

    def __init__(self, message, *, signal, checkpoint, epoch, step):
        super().__init__(message)
        self.signal, self.checkpoint, self.epoch, self.step = signal, checkpoint, epoch, step


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- configuration and history ---------------------------------------------------------------------

@dataclass(frozen=True)
class FitConfig:
    """The settings of one :func:`fit` call (its keyword arguments that are plain values), checked when
    built; stored in every checkpoint and in ``History.config``."""

    epochs: int
    batch_size: int = 128
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str | None = None
    cycle_momentum: bool = True
    label_smoothing: float = 0.0
    image_size: int | None = None
    precision: str = "auto"
    channels_last: bool | None = None
    seed: int = 0
    max_steps_per_epoch: int | None = None
    log_every: int | None = None
    checkpoint_every: int | None = None
    device: str | None = None
    progress: bool = True
    verbose: bool | None = None

    # may differ on resume without a warning (a changed lr rescales the restored schedule)
    RESUMABLE = ("epochs", "lr", "device", "progress", "verbose", "log_every", "checkpoint_every")

    def __post_init__(self):
        i, n, optional = checks.integer, checks.number, checks.optional_integer
        values = dict(
            epochs=i(self.epochs, "epochs"), batch_size=i(self.batch_size, "batch_size"),
            lr=n(self.lr, "lr", minimum=0, min_open=True, hint="e.g. lr=0.01"),
            optimizer=checks.choice(self.optimizer, "optimizer", OPTIMIZERS),
            momentum=n(self.momentum, "momentum", minimum=0, maximum=1, max_open=True),
            weight_decay=n(self.weight_decay, "weight_decay", minimum=0),
            schedule=checks.choice(self.schedule, "schedule", SCHEDULES),
            cycle_momentum=checks.boolean(self.cycle_momentum, "cycle_momentum"),
            label_smoothing=n(self.label_smoothing, "label_smoothing", minimum=0, maximum=1, max_open=True),
            image_size=optional(self.image_size, "image_size"),
            precision=checks.choice(self.precision, "precision", PRECISIONS),
            channels_last=_optional_bool(self.channels_last, "channels_last"),
            seed=i(self.seed, "seed", minimum=0),
            max_steps_per_epoch=optional(self.max_steps_per_epoch, "max_steps_per_epoch"),
            log_every=optional(self.log_every, "log_every"),
            checkpoint_every=optional(self.checkpoint_every, "checkpoint_every"),
            device=_device_name(self.device), progress=checks.boolean(self.progress, "progress"),
            verbose=_optional_bool(self.verbose, "verbose"))
        for name, value in values.items():  # plain Python values: JSON and weights_only checkpoints
            object.__setattr__(self, name, value)

    def changed_from(self, old: dict) -> dict:
        """{name: (old, new)} for the settings that differ from ``old`` and should not on resume."""
        defaults = {f.name: f.default for f in fields(self)}  # a setting added since ``old`` was saved
        return {k: (old.get(k, defaults[k]), v) for k, v in asdict(self).items()
                if k not in self.RESUMABLE and old.get(k, defaults[k]) != v}


def _optional_bool(value, name):
    return None if value is None else checks.boolean(value, name)


def _device_name(device) -> str | None:
    if device is not None and not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a string such as 'cpu' or 'cuda', a torch.device or None, got "
                        f"{device!r} ({type(device).__name__})")
    return None if device is None else str(device)


@dataclass
class History:
    """What :func:`fit` measured. Per epoch (lists indexed by epoch): train loss/accuracy, test
    loss/top-1/top-5 (top-min(5, classes); None without test data), training images/s, the process's CPU
    seconds of the training steps (the span images/s is measured over; all threads), epoch and cumulative
    wall time (s), learning rate at the end of the epoch. Per step: loss and learning rate.
    Accuracies are fractions. ``config``: the :class:`FitConfig` and facts of the run."""

    epoch: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    test_loss: list = field(default_factory=list)
    test_top1: list = field(default_factory=list)
    test_top5: list = field(default_factory=list)
    images_per_sec: list = field(default_factory=list)
    train_cpu_time: list = field(default_factory=list)
    epoch_time: list = field(default_factory=list)
    wall_time: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    step_loss: list = field(default_factory=list)
    step_lr: list = field(default_factory=list)
    config: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.epoch)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> History:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    def save(self, path) -> None:
        path = Path(path)  # atomic: a crash mid-write leaves the previous file
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path) -> History:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def epoch_line(self, i: int = -1) -> str:
        """One line of text summarising epoch ``i``."""
        n = self.config.get("epochs", len(self))
        s = f"epoch {self.epoch[i]:>3}/{n}  train loss {self.train_loss[i]:.4f} acc {self.train_acc[i]:6.2%}"
        if self.test_top1[i] is not None:
            s += (f"  test loss {self.test_loss[i]:.4f} top-1 {self.test_top1[i]:6.2%}"
                  f" top-5 {self.test_top5[i]:6.2%}")
        return s + (f"  {self.images_per_sec[i]:,.0f} img/s  {self.epoch_time[i]:.1f} s"
                    f" (total {self.wall_time[i]:.1f} s)  lr {self.lr[i]:.3g}")


# --- loaders and evaluation ------------------------------------------------------------------------

def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _check_data(data, name: str, *, optional: bool = False) -> None:
    """ImageData with images, or a loader (anything with a length, iterable) with batches."""
    if data is None and optional:
        return
    if isinstance(data, ImageData):
        if len(data) == 0:
            raise ValueError(f"{name} is empty (0 images): pass a dataset with images")
        return
    if not (hasattr(data, "__iter__") and hasattr(data, "__len__")):
        raise TypeError(f"{name} must be an ImageData or a loader yielding (images, labels) batches, got "
                        f"{type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{name} yields no batches (len 0): check its dataset size, batch size and "
                         "drop_last")


def make_loader(model: nn.Module, data, *, batch_size: int, train: bool, device=None,
                image_size: int | None = None, augment=None, channels_last: bool | None = None,
                seed: int = 0):
    """The loader that :func:`fit` and :func:`evaluate` use to feed ``model`` with ``data``.

    An :class:`ImageData` becomes a :class:`DeviceLoader` on ``device`` (default: the model's) at
    ``image_size`` (default ``model.default_input_size``), channels_last unless on MPS (default), with
    ``augment`` (training only), shuffled by ``seed`` and epoch and with the last partial batch dropped
    when ``train``, sharded over the ranks of the process group under DDP. Any other ``data`` is
    taken to be a loader already and returned as it is.
    """
    if not isinstance(data, ImageData):
        return data
    batch_size, train = checks.integer(batch_size, "batch_size"), checks.boolean(train, "train")
    if augment is not None and not (train and callable(augment)):
        raise ValueError("augment must be a callable on a float batch and applies to training loaders only "
                         "(train=True)")
    _check_data(data, "data")
    device = select_device(device) if device is not None else model_device(model)
    size = checks.optional_integer(image_size, "image_size") or getattr(model, "default_input_size", None)
    channels_last = device.type != "mps" if channels_last is None else checks.boolean(channels_last,
                                                                                      "channels_last")
    rank, world = _world()
    return DeviceLoader(data, batch_size, shuffle=train, device=device, image_size=size, augment=augment,
                        drop_last=train and len(data) > batch_size * world, channels_last=channels_last,
                        seed=checks.integer(seed, "seed", minimum=0), rank=rank, world_size=world)


def _topk(topk, num_classes: int | None) -> tuple | None:
    """The ks to measure: ``topk`` checked against the number of classes; by default (1, 5) capped at
    it, so that 'top5' means top-min(5, classes). None while the number of classes is unknown."""
    if topk is None:
        return None if num_classes is None else tuple(sorted({1, min(5, num_classes)}))
    if not isinstance(topk, (tuple, list)) or not topk:
        raise TypeError(f"topk must be a non-empty tuple of integers, e.g. topk=(1, 5); got {topk!r}")
    hint = f"the data has {num_classes} classes" if num_classes is not None else "e.g. topk=(1, 5)"
    return tuple(checks.integer(k, "topk", maximum=num_classes, hint=hint) for k in topk)


@torch.inference_mode()
def evaluate(model: nn.Module, data, device=None, topk=None, batch_size: int = 512,
             image_size: int | None = None, precision: str = "auto", channels_last: bool | None = None,
             max_batches: int | None = None) -> dict:
    """Mean cross-entropy and top-k accuracies of ``model`` on ``data`` (ImageData or a loader).

    Returns ``{'loss': ..., 'top1': ..., 'top5': ..., 'n': ...}`` (one ``top{k}`` per k; by default k = 1
    and min(5, classes); every k must be between 1 and the number of classes). Under DDP the sums are
    all-reduced over ranks, each rank evaluating its shard.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_data(data, "data")
    checks.choice(precision, "precision", PRECISIONS)
    checks.integer(batch_size, "batch_size"), checks.optional_integer(image_size, "image_size")
    _optional_bool(channels_last, "channels_last")
    max_batches = checks.optional_integer(max_batches, "max_batches")
    ks = _topk(topk, data.num_classes if isinstance(data, ImageData) else None)
    device = select_device(device) if device is not None else model_device(model)
    data = make_loader(model, data, batch_size=batch_size, train=False, device=device, image_size=image_size,
                       channels_last=channels_last)
    model.to(device)
    amp = amp_dtype(precision, device)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    hits, n = None, torch.zeros((), device=device, dtype=torch.int64)
    with eval_mode(model):
        for x, y in itertools.islice(data, max_batches):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast(device, amp):
                logits = model(x)
            logits = logits.float()
            if hits is None:  # a loader: the number of classes is known at the first batch
                ks = _topk(topk, logits.shape[1])
                hits = torch.zeros(len(ks), device=device, dtype=torch.int64)
            loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum")
            top = logits.topk(max(ks), dim=1).indices == y[:, None]
            hits += torch.stack([top[:, :k].any(1).sum() for k in ks])
            n += len(y)
    if hits is None:
        raise ValueError("data yielded no batches: nothing to evaluate")
    if _world()[1] > 1:
        stats = torch.cat([loss_sum[None], hits.double(), n[None].double()])
        dist.all_reduce(stats)
        loss_sum, hits, n = stats[0], stats[1:-1], stats[-1]
    n = int(n)
    out = {"loss": float(loss_sum) / max(n, 1)}
    out.update({f"top{k}": float(h) / max(n, 1) for k, h in zip(ks, hits.tolist())})
    out["n"] = n
    return out


# --- set-up ----------------------------------------------------------------------------------------

def _setup_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """Join the torchrun process group when WORLD_SIZE > 1: (rank, world_size, this rank's device)."""
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def _make_schedule(name, opt, epochs, steps, cycle_momentum=True):
    """(scheduler, steps_per_batch?) for a schedule name."""
    S = torch.optim.lr_scheduler
    if name is None:
        return None, False
    if name == "step":  # the paper divided the lr by 10 three times during training
        return S.StepLR(opt, step_size=max(1, epochs // 3), gamma=0.1), False
    if name == "plateau":  # ... "when the validation error rate stopped improving"
        return S.ReduceLROnPlateau(opt, mode="min", factor=0.1, patience=2), False
    if name == "onecycle":
        # PyTorch's defaults: warm-up from lr/25 over 30% of the steps, cosine down to lr/25/1e4; with
        # cycle_momentum, SGD's momentum (AdamW's beta1) is replaced by a 0.95 -> 0.85 -> 0.95 cycle
        return S.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=epochs * steps,
                            cycle_momentum=cycle_momentum), True
    return S.CosineAnnealingLR(opt, T_max=epochs * steps), True


@dataclass
class _Run:
    """What one call of :func:`fit` works with: built by :func:`_setup`, read by the phases."""

    cfg: FitConfig
    model: nn.Module
    net: nn.Module  # the model, wrapped in DistributedDataParallel under torchrun
    device: torch.device
    amp: torch.dtype | None
    rank: int
    world: int
    train_loader: object
    test_loader: object
    steps: int  # per epoch
    log_every: int
    convert_layout: bool  # channels_last wanted and the loader does not make it
    opt: torch.optim.Optimizer
    sched: object
    sched_per_step: bool
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    out_dir: Path | None
    ckpt_path: Path | None
    history: History
    callbacks: tuple
    verbose: bool
    last_good: tuple | None = None  # (path, 'end of epoch 2'): what a divergence error points to
    stop: _StopSignals | None = None


def _setup(model, train_data, test_data, cfg: FitConfig, device, augment, out_dir, callbacks) -> _Run:
    """Process group, seeds, device and layout, loaders, optimizer, schedule, loss scaler, out_dir."""
    rank, world, device = _setup_distributed(device)
    seed_everything(cfg.seed + rank)
    amp = amp_dtype(cfg.precision, device)
    channels_last = device.type != "mps" if cfg.channels_last is None else cfg.channels_last
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    kw = dict(device=device, image_size=cfg.image_size, channels_last=channels_last, seed=cfg.seed)
    train_loader = make_loader(model, train_data, batch_size=cfg.batch_size, train=True, augment=augment,
                               **kw)
    test_loader = None if test_data is None else make_loader(
        model, test_data, batch_size=max(2 * cfg.batch_size, 256), train=False, **kw)
    steps = min(len(train_loader), cfg.max_steps_per_epoch or len(train_loader))
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                              weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched, sched_per_step = _make_schedule(cfg.schedule, opt, cfg.epochs, steps, cfg.cycle_momentum)
    # fp16 has a narrow range: scale the loss up so small gradients survive, unscale before the step
    # (steps whose gradients overflowed are skipped and the scale is lowered)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    out_dir = Path(out_dir) if out_dir is not None else None
    if out_dir is not None and rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        checkpoint.clean_stale_temp_files(out_dir)  # left by a run killed while writing
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                  else None)
    run = _Run(cfg=cfg, model=model, net=net, device=device, amp=amp, rank=rank, world=world,
               train_loader=train_loader, test_loader=test_loader, steps=steps,
               log_every=cfg.log_every or (1 if device.type == "cpu" else 25),
               convert_layout=channels_last and not getattr(train_loader, "channels_last", False),
               opt=opt, sched=sched, sched_per_step=sched_per_step, scaler=scaler,
               loss_fn=nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing), out_dir=out_dir,
               ckpt_path=out_dir / CHECKPOINT if out_dir is not None else None, history=History(),
               callbacks=callbacks,
               verbose=(cfg.progress if cfg.verbose is None else cfg.verbose) and rank == 0)
    run.history.config = _config_dict(run)
    return run


def _config_dict(run: _Run) -> dict:
    return {**asdict(run.cfg), "model": type(run.model).__name__, "device": str(run.device),
            "params": sum(p.numel() for p in run.model.parameters()), "world_size": run.world,
            "amp": DTYPE_NAMES[run.amp]}


# --- the running state of one epoch ----------------------------------------------------------------

@dataclass
class _Epoch:
    """Sums of the epoch in progress, on the device (the host syncs every log_every steps only); a
    mid-epoch checkpoint stores them so that a resumed epoch ends with the same numbers."""

    epoch: int  # from 0
    losses: torch.Tensor  # one per step
    loss_sum: torch.Tensor
    correct: torch.Tensor
    seen: int = 0
    step: int = 0  # steps done
    logged: int = 0  # steps checked for NaN/inf and shown on the bar
    step_lrs: list = field(default_factory=list)
    t0: float = field(default_factory=time.perf_counter)  # when the epoch started (less earlier sessions)
    c0: float = field(default_factory=time.process_time)  # the same in process CPU time
    last_batch: torch.Tensor | None = None  # to check the model's outputs before a save (not saved)

    @classmethod
    def start(cls, epoch: int, run: _Run) -> _Epoch:
        zeros = lambda dtype: torch.zeros((), device=run.device, dtype=dtype)  # noqa: E731
        return cls(epoch, torch.zeros(run.steps, device=run.device), zeros(torch.float32), zeros(torch.int64))

    def to_state(self) -> dict:
        return dict(epoch=self.epoch, losses=self.losses.cpu(), loss_sum=self.loss_sum.cpu(),
                    correct=self.correct.cpu(), seen=self.seen, step=self.step, step_lrs=list(self.step_lrs),
                    elapsed=time.perf_counter() - self.t0, cpu_elapsed=time.process_time() - self.c0)

    @classmethod
    def from_state(cls, s: dict, device) -> _Epoch:
        return cls(s["epoch"], s["losses"].to(device), s["loss_sum"].to(device), s["correct"].to(device),
                   s["seen"], s["step"], s["step"], list(s["step_lrs"]), time.perf_counter() - s["elapsed"],
                   time.process_time() - s.get("cpu_elapsed", 0.0))


# --- checkpoints -----------------------------------------------------------------------------------

def _save_state(run: _Run, ep: _Epoch, mid_epoch: bool) -> Path | None:
    """Check the state, then (with out_dir, on rank 0) write it: at the end of an epoch or in the middle
    of ``ep``. Raises TrainingDivergedError instead of writing a broken state over the last good one."""
    epochs_done = len(run.history)
    what = _broken(run, ep.last_batch)
    if what:
        epoch, step = (ep.epoch + 1, ep.step) if mid_epoch else (epochs_done, None)
        raise _diverged(run, what, epoch, step, run.opt.param_groups[0]["lr"])
    if run.ckpt_path is None:
        return None
    if run.rank == 0:
        sched, scaler = run.sched, run.scaler
        checkpoint.save_checkpoint(run.ckpt_path, dict(
            model=run.model.state_dict(), model_class=type(run.model).__name__,
            optimizer=run.opt.state_dict(), scheduler=sched.state_dict() if sched is not None else None,
            scaler=scaler.state_dict() if scaler.is_enabled() else None, rng=checkpoint.rng_state(),
            config=asdict(run.cfg), history=run.history.to_dict(), epoch=epochs_done,
            steps=run.steps, progress=ep.to_state() if mid_epoch else None))
        if not mid_epoch:
            run.history.save(run.out_dir / HISTORY)
    where = (f"epoch {ep.epoch + 1}, step {ep.step}/{run.steps}" if mid_epoch else
             f"end of epoch {epochs_done}")
    run.last_good = (run.ckpt_path, where)
    return run.ckpt_path


def _broken(run: _Run, batch: torch.Tensor | None) -> str | None:
    """What is wrong with the model, or None: non-finite weights, or finite weights so large (say 1e29,
    after one wild update) that its outputs on the last training batch are not finite (eval mode: no
    RNG draws, no BatchNorm updates, so a resumed run stays bitwise the same)."""
    if not checkpoint.all_finite(run.model):
        return "the weights became NaN or infinite"
    bad = torch.zeros((), device=run.device)
    if batch is not None:
        with torch.no_grad(), eval_mode(run.model), autocast(run.device, run.amp):
            bad += ~torch.isfinite(run.model(batch)).all()
    if run.world > 1:  # each rank looked at its own batch: all must agree
        dist.all_reduce(bad)
    if bad:
        big = max(p.detach().abs().max().item() for p in run.model.parameters())
        return f"the model's outputs became NaN or infinite (weights up to {big:.3g})"
    return None


def _load_state(run: _Run, path: Path) -> _Epoch | None:
    """Restore model, optimizer, schedule, loss scaler, RNG and history from ``path`` (a file that is not
    a checkpoint is a CheckpointError and runs no code); returns the state of an unfinished epoch."""
    ck = checkpoint.load_checkpoint(path)
    keys = {"model", "model_class", "optimizer", "scheduler", "rng", "config", "history", "epoch"}
    missing = keys - set(ck)
    if missing or not all(isinstance(ck[k], dict) for k in ("model", "config", "history", "rng")):
        raise checkpoint.CheckpointError(f"{path} is a checkpoint, but not one written by fit (missing or "
                                         f"malformed: {sorted(missing) or 'model/config/history/rng'}); "
                                         "use another out_dir, or overwrite=True to start over")
    _check_same_model(path, run.model, ck)
    cfg, old = run.cfg, ck["config"]
    if cfg.schedule in ("onecycle", "cosine") and cfg.epochs > old["epochs"]:
        raise ValueError(f"{path}: its {cfg.schedule} schedule ends after {old['epochs']} epochs and "
                         f"cannot be stretched to {cfg.epochs}; start a new run (overwrite=True) instead.")
    progress = ck.get("progress")
    if progress is not None and ck.get("steps") != run.steps:
        raise ValueError(f"{path} was saved in the middle of an epoch of {ck.get('steps')} steps; this run "
                         f"has {run.steps}: resume with the same batch_size and max_steps_per_epoch")
    run.model.load_state_dict(ck["model"])
    run.opt.load_state_dict(ck["optimizer"])
    if run.sched is not None and ck["scheduler"] is not None:
        run.sched.load_state_dict(ck["scheduler"])
    if run.scaler.is_enabled() and ck.get("scaler"):
        run.scaler.load_state_dict(ck["scaler"])
    if old["lr"] != cfg.lr:  # e.g. a lower lr after a divergence: rescale the restored schedule
        _rescale_lr(run, cfg.lr / old["lr"])
    changed = cfg.changed_from(old)
    if changed and run.rank == 0:
        warnings.warn(f"resuming {path} with changed arguments (old, new): {changed}", stacklevel=3)
    checkpoint.set_rng_state(ck["rng"])
    run.history = History.from_dict(ck["history"])
    run.history.config = _config_dict(run)
    done = ck["epoch"]
    run.last_good = (path, f"end of epoch {done}" if progress is None else
                     f"epoch {done + 1}, step {progress['step']}/{run.steps}")
    return None if progress is None else _Epoch.from_state(progress, run.device)


def _check_same_model(path: Path, model: nn.Module, ck: dict) -> None:
    mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in ck["model"].items()}
    if ck["model_class"] != type(model).__name__ or mine != theirs:
        count = lambda shapes: f"{sum(math.prod(s) for s in shapes.values()):,}"  # noqa: E731
        diff = sorted(set(mine.items()) ^ set(theirs.items()))[:3]
        raise CheckpointMismatchError(
            f"{path} holds a checkpoint of a different model ({ck['model_class']}, {count(theirs)} "
            f"parameters) than the one passed ({type(model).__name__}, {count(mine)} parameters); "
            f"first differences: {diff}. Use another out_dir, or overwrite=True to start over.")


def _rescale_lr(run: _Run, factor: float) -> None:
    for g in run.opt.param_groups:
        for key in ("lr", "initial_lr", "max_lr", "min_lr"):
            if key in g:
                g[key] *= factor
    if hasattr(run.sched, "base_lrs"):
        run.sched.base_lrs = [b * factor for b in run.sched.base_lrs]


def _diverged(run: _Run, what: str, epoch: int, step: int | None, lr: float) -> TrainingDivergedError:
    cfg = run.cfg
    where = f"epoch {epoch}/{cfg.epochs}, step {step}/{run.steps}" if step is not None else \
        f"the end of epoch {epoch}/{cfg.epochs}"
    msg = (f"Training diverged: {what} at {where} (learning rate {lr:.3g}). Try a lower learning rate, "
           f"e.g. lr={lr / 10:.3g}. ")
    if run.last_good is not None:
        msg += (f"The last good checkpoint is {run.last_good[0]} ({run.last_good[1]}); continue from it "
                f"with resume=True (--resume) and the lower learning rate.")
    else:
        msg += "No good checkpoint exists" + (" (out_dir=None)." if run.ckpt_path is None else " yet.")
    last = run.last_good[0] if run.last_good is not None else None
    return TrainingDivergedError(msg, epoch=epoch, step=step, lr=lr, checkpoint=last)


# --- stopping on a signal --------------------------------------------------------------------------

class _StopSignals:
    """While training, SIGINT (Ctrl-C, a notebook's interrupt) and SIGTERM (a batch system, ``kill``)
    only note the signal: the current step finishes, then fit saves and raises TrainingInterrupted. A
    second Ctrl-C stops at once. Python delivers signals to the main thread only: elsewhere no handlers
    are installed."""

    def __init__(self):
        self.signal, self._previous = None, {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._note)
        return self

    def _note(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum)

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def _interrupted(run: _Run, ep: _Epoch) -> TrainingInterrupted:
    """Save the state of the epoch in progress (with out_dir) and say where."""
    sig = run.stop.signal or signal.SIGTERM  # under DDP another rank may have received it
    path = _save_state(run, ep, mid_epoch=True) if run.ckpt_path is not None else None
    where = f"after step {ep.step}/{run.steps} of epoch {ep.epoch + 1}/{run.cfg.epochs}"
    then = f"saved {path}; continue with resume=True (--resume)." if path else "nothing saved (out_dir=None)."
    return TrainingInterrupted(f"{sig.name} received: training stopped {where}; {then}", signal=sig,
                               checkpoint=path, epoch=ep.epoch + 1, step=ep.step)


# --- one epoch of steps ----------------------------------------------------------------------------

def _epoch_batches(loader, epoch: int, start: int):
    """The batches of ``epoch`` from batch ``start`` on; loaders with ``set_epoch(epoch, start_batch)``
    skip without building the skipped batches, others are iterated past them."""
    set_epoch = getattr(loader, "set_epoch", None)
    if set_epoch is not None and "start_batch" in inspect.signature(set_epoch).parameters:
        set_epoch(epoch, start_batch=start)
        return iter(loader)
    if set_epoch is not None:
        set_epoch(epoch)
    return itertools.islice(loader, start, None)


def _train_epoch(run: _Run, ep: _Epoch) -> None:
    """Run the steps of ``ep`` from ``ep.step`` to the end of the epoch, with mid-epoch checkpoints every
    ``checkpoint_every`` optimizer steps; raises TrainingDivergedError or TrainingInterrupted."""
    from tqdm.auto import tqdm

    cfg, every = run.cfg, run.cfg.checkpoint_every
    if run.world == 1 and run.stop.signal is not None:  # arrived during the previous epoch's evaluation
        raise _interrupted(run, ep)
    run.net.train()
    bar = tqdm(total=run.steps, initial=ep.step, desc=f"epoch {ep.epoch + 1}/{cfg.epochs}", leave=False,
               disable=not (cfg.progress and run.rank == 0))
    batches = itertools.islice(_epoch_batches(run.train_loader, ep.epoch, ep.step), run.steps - ep.step)
    try:
        for step, (x, y) in enumerate(batches, start=ep.step):
            x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
            if run.convert_layout and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(run.device, run.amp):
                logits = run.net(x)
                loss = run.loss_fn(logits.float(), y)
            run.opt.zero_grad(set_to_none=True)
            run.scaler.scale(loss).backward()
            run.scaler.step(run.opt)
            run.scaler.update()
            ep.step_lrs.append(run.opt.param_groups[0]["lr"])
            if run.sched_per_step:
                run.sched.step()
            ep.losses[step] = loss.detach()
            ep.loss_sum += loss.detach() * len(y)
            ep.correct += (logits.argmax(1) == y).sum()
            ep.seen, ep.step, ep.last_batch = ep.seen + len(y), step + 1, x
            # host sync: every log_every steps, at the end, before a checkpoint, on a signal
            due = (every is not None and run.ckpt_path is not None and ep.step < run.steps
                   and (len(run.history.step_loss) + ep.step) % every == 0)
            stop = run.world == 1 and run.stop.signal is not None
            if ep.step % run.log_every == 0 or ep.step == run.steps or due or stop:
                stop = _sync(run, ep, bar)
            if stop:
                raise _interrupted(run, ep)
            if due:
                _save_state(run, ep, mid_epoch=True)
    finally:
        bar.close()


def _sync(run: _Run, ep: _Epoch, bar) -> bool:
    """Check the losses since the last sync for NaN/inf, update the bar; returns whether a stop signal
    arrived (on any rank: every rank must stop, or diverge, at the same step)."""
    window = ep.losses[ep.logged:ep.step]
    bad = ~torch.isfinite(window)
    stop = torch.tensor(float(run.stop.signal is not None), device=run.device)
    check = torch.stack([torch.where(bad, 0, window).sum(), bad.sum().float(), stop])
    if run.world > 1:
        dist.all_reduce(check)
    wsum, nbad, nstop = check.tolist()
    if nbad:
        first = ep.logged + int(bad.nonzero()[0]) if bad.any() else ep.step - 1
        value = ep.losses[first].item() if bad.any() else "NaN/inf (on another rank)"
        raise _diverged(run, f"the loss became {value}", ep.epoch + 1, first + 1, ep.step_lrs[first])
    rate = ep.seen * run.world / (time.perf_counter() - ep.t0)
    bar.set_postfix(loss=f"{wsum / ((ep.step - ep.logged) * run.world):.4f}", img_s=f"{rate:,.0f}",
                    refresh=False)
    bar.update(ep.step - ep.logged)
    ep.logged = ep.step
    return nstop > 0


# --- the end of an epoch ---------------------------------------------------------------------------

def _end_epoch(run: _Run, ep: _Epoch) -> None:
    """All-reduce the epoch's sums, evaluate, check, step the schedule, record the history row, save a
    checkpoint, print a line, call the callbacks."""
    cfg, h = run.cfg, run.history
    if ep.step == 0:
        raise ValueError("train_data yielded no batches this epoch (its len() promised some)")
    sums = torch.stack([ep.loss_sum.double(), ep.correct.double(),
                        torch.tensor(ep.seen, device=run.device, dtype=torch.float64)])
    if run.world > 1:
        dist.all_reduce(sums)
    loss_sum, correct, seen = sums.tolist()
    train_time, train_cpu = time.perf_counter() - ep.t0, time.process_time() - ep.c0
    test = {} if run.test_loader is None else evaluate(run.model, run.test_loader, run.device,
                                                        precision=cfg.precision)
    for name, value in [("train loss", loss_sum / seen), ("test loss", test.get("loss", 0.0))]:
        if not math.isfinite(value):  # e.g. the last step sent the weights to 1e28
            raise _diverged(run, f"the {name} became {value}", ep.epoch + 1, None, ep.step_lrs[-1])
    if cfg.schedule == "plateau":
        run.sched.step(test.get("loss", loss_sum / seen))
    elif run.sched is not None and not run.sched_per_step:
        run.sched.step()
    epoch_time = time.perf_counter() - ep.t0
    top5 = max((k for k in test if k.startswith("top")), key=lambda k: int(k[3:]), default=None)
    row = dict(epoch=ep.epoch + 1, train_loss=loss_sum / seen, train_acc=correct / seen,
               test_loss=test.get("loss"), test_top1=test.get("top1"), test_top5=test.get(top5),
               images_per_sec=seen / train_time, train_cpu_time=train_cpu, epoch_time=epoch_time,
               wall_time=(h.wall_time or [0.0])[-1] + epoch_time, lr=ep.step_lrs[-1])
    for key, value in row.items():
        getattr(h, key).append(value)
    h.step_loss += ep.losses[:ep.step].tolist()
    h.step_lr += ep.step_lrs
    _save_state(run, ep, mid_epoch=False)
    if run.verbose:
        print(h.epoch_line(), flush=True)
    for callback in run.callbacks:
        callback(run.model, h)


# --- fit -------------------------------------------------------------------------------------------

def _check_fit_inputs(model, train_data, test_data, augment, out_dir, resume, overwrite, checkpoint_every,
                      on_epoch_end):
    """The arguments of fit that are not settings; returns the callbacks as a tuple."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_data(train_data, "train_data")
    _check_data(test_data, "test_data", optional=True)
    if augment is not None and not callable(augment):
        raise TypeError(f"augment must be a callable on a float batch (or None), got "
                        f"{type(augment).__name__}")
    if out_dir is not None and not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a path (str or Path) or None, got {type(out_dir).__name__}")
    checks.boolean(resume, "resume"), checks.boolean(overwrite, "overwrite")
    if resume and out_dir is None:
        raise ValueError("resume=True needs out_dir (where the checkpoint is)")
    if checkpoint_every is not None and out_dir is None:
        raise ValueError(f"checkpoint_every={checkpoint_every} needs out_dir (where to save the checkpoints)")
    if resume and overwrite:
        raise ValueError("resume=True continues the run in out_dir, overwrite=True starts it over: pass one")
    callbacks = on_epoch_end if isinstance(on_epoch_end, (list, tuple)) else (on_epoch_end,)
    callbacks = tuple(c for c in callbacks if c is not None)
    for c in callbacks:
        if not callable(c):
            raise TypeError(f"on_epoch_end must be a callable f(model, history) or a list of them, got "
                            f"{type(c).__name__}")
    return callbacks


def fit(model: nn.Module, train_data, test_data=None, *, epochs: int, batch_size: int = 128,
        lr: float = 0.01, optimizer: str = "sgd", momentum: float = 0.9, weight_decay: float = 5e-4,
        schedule: str | None = None, cycle_momentum: bool = True, label_smoothing: float = 0.0,
        image_size: int | None = None, augment: Callable | None = None, device=None, precision: str = "auto",
        channels_last: bool | None = None, seed: int = 0, out_dir=None, resume: bool = False,
        overwrite: bool = False, progress: bool = True, verbose: bool | None = None,
        log_every: int | None = None, max_steps_per_epoch: int | None = None,
        checkpoint_every: int | None = None, on_epoch_end=None) -> History:
    """Train ``model`` for ``epochs`` epochs and return its :class:`History`.

    ``train_data``/``test_data``: ImageData (batched on the device by :func:`make_loader` at
    ``image_size``, default ``model.default_input_size``, with ``augment`` applied to training batches)
    or ready loaders. ``optimizer``: 'sgd' (momentum, weight decay as in the paper) or 'adamw'.
    ``schedule``: None, 'step' (lr/10 every epochs//3), 'plateau' (lr/10 when the test loss stalls),
    'onecycle', 'cosine'. ``cycle_momentum`` (onecycle only): PyTorch's default, SGD's ``momentum``
    replaced by a cycle from 0.95 to 0.85 and back, opposite to the lr; False keeps ``momentum``.
    ``precision``: 'auto' (bf16 autocast where supported, fp16 with loss scaling
    on CUDA GPUs without bf16), 'bf16', 'fp16' or 'fp32'. ``channels_last``: None = yes except on MPS.
    While it trains, host memory that tensors free stays in the process for the next step
    (:func:`~alexnet_lib.device.keep_freed_memory`; glibc only) and is handed back when it returns.

    With ``out_dir`` a checkpoint is written after every epoch (and every ``checkpoint_every`` optimizer
    steps), each after checking that the weights and metrics are finite; a run into an ``out_dir`` that
    holds one is refused unless ``resume=True`` (continue it, exactly, also from the middle of an epoch;
    a changed ``lr`` rescales the restored schedule) or ``overwrite=True``. SIGINT/SIGTERM finish the
    current step, save, and raise :class:`TrainingInterrupted`. ``progress``: a tqdm bar per epoch;
    ``verbose`` (default: as ``progress``): one printed line per epoch. ``log_every``: steps between host
    syncs (progress bar, NaN check); default 1 on CPU, 25 elsewhere. ``max_steps_per_epoch`` cuts epochs
    short (quick runs). ``on_epoch_end``: ``f(model, history)`` or a list of them, called after every
    epoch (after its checkpoint), e.g. ``plots.LivePlot()``.
    """
    # --- check every argument before any work ---
    cfg = FitConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, momentum=momentum,
                    weight_decay=weight_decay, schedule=schedule, cycle_momentum=cycle_momentum,
                    label_smoothing=label_smoothing,
                    image_size=image_size, precision=precision, channels_last=channels_last, seed=seed,
                    max_steps_per_epoch=max_steps_per_epoch, log_every=log_every,
                    checkpoint_every=checkpoint_every, device=device, progress=progress, verbose=verbose)
    callbacks = _check_fit_inputs(model, train_data, test_data, augment, out_dir, resume, overwrite,
                                  cfg.checkpoint_every, on_epoch_end)
    device = select_device(device)
    if out_dir is not None:
        checkpoint.check_run_dir(out_dir, resume=resume, overwrite=overwrite)

    # --- set up, then continue a saved run ---
    run = _setup(model, train_data, test_data, cfg, device, augment, out_dir, callbacks)
    ep = None
    if resume and run.ckpt_path.exists():
        ep = _load_state(run, run.ckpt_path)
        if len(run.history) >= cfg.epochs:
            if run.verbose:
                print(f"{run.ckpt_path}: already trained for {len(run.history)} epochs (asked for "
                      f"{cfg.epochs}); nothing to do.")
            return run.history
        if run.verbose:
            print(f"resuming {run.ckpt_path} ({run.last_good[1]})", flush=True)

    # --- train: epochs of steps, each followed by its bookkeeping; freed host memory stays in the
    # process for the next step instead of being faulted in again (device.keep_freed_memory) ---
    with _StopSignals() as run.stop, keep_freed_memory():
        for epoch in range(len(run.history), cfg.epochs):
            ep = ep or _Epoch.start(epoch, run)
            _train_epoch(run, ep)
            _end_epoch(run, ep)
            ep = None
    return run.history
