"""Training loop: fit / evaluate / checkpoints / resume / device and precision choice.

One function, :func:`fit`, trains any classifier on an in-memory :class:`~alexnet_lib.data.ImageData`
(batches built on the device by a :class:`~alexnet_lib.data.DeviceLoader`) or on any loader yielding
``(images, labels)``. It uses bf16 autocast where the hardware supports it, channels_last, a progress
bar, one atomic checkpoint per epoch (``out_dir/checkpoint.pt`` + ``history.json``), exact resume, and
DistributedDataParallel when started with ``torchrun``. Everything it measured comes back as a
:class:`History`.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from .data import DeviceLoader, ImageData
from .device import DTYPE_NAMES, amp_dtype, autocast, model_device, select_device
from .layers import eval_mode

__all__ = ["CheckpointMismatchError", "History", "TrainingDivergedError", "evaluate", "fit",
           "seed_everything"]

CHECKPOINT, HISTORY = "checkpoint.pt", "history.json"
SCHEDULES = (None, "step", "plateau", "onecycle", "cosine")


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or infinite. Attributes: epoch, step, lr, checkpoint (Path or None)."""

    def __init__(self, message, *, epoch, step, lr, checkpoint):
        super().__init__(message)
        self.epoch, self.step, self.lr, self.checkpoint = epoch, step, lr, checkpoint


class CheckpointMismatchError(RuntimeError):
    """``resume=True`` found a checkpoint of a different model."""


# --- seeds -----------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state(), cuda=cuda)


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda = state["cuda"]
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# --- history ---------------------------------------------------------------------------------------

@dataclass
class History:
    """What :func:`fit` measured. Per epoch (lists indexed by epoch): train loss/accuracy, test
    loss/top-1/top-5 (None without test data), training images/s, epoch and cumulative wall time (s),
    learning rate at the end of the epoch. Per step: loss and learning rate. Accuracies are fractions."""

    epoch: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    test_loss: list = field(default_factory=list)
    test_top1: list = field(default_factory=list)
    test_top5: list = field(default_factory=list)
    images_per_sec: list = field(default_factory=list)
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
        _atomic_write(Path(path), lambda tmp: tmp.write_text(json.dumps(self.to_dict(), indent=1)))

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


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


# --- evaluation ------------------------------------------------------------------------------------

def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@torch.inference_mode()
def evaluate(model: nn.Module, data, device=None, topk=(1, 5), batch_size: int = 512,
             image_size: int | None = None, precision: str = "auto", channels_last: bool | None = None,
             max_batches: int | None = None) -> dict:
    """Mean cross-entropy and top-k accuracies of ``model`` on ``data`` (ImageData or a loader).

    Returns ``{'loss': ..., 'top1': ..., 'top5': ..., 'n': ...}`` (one ``top{k}`` per k). Under DDP the
    sums are all-reduced over ranks, each rank evaluating its shard.
    """
    device = torch.device(device) if device is not None else model_device(model)
    model.to(device)
    amp = amp_dtype(precision, device)
    if channels_last is None:
        channels_last = device.type != "mps"
    if isinstance(data, ImageData):
        rank, world = _world()
        size = image_size or getattr(model, "default_input_size", None)
        data = DeviceLoader(data, batch_size, False, device, size, channels_last=channels_last, rank=rank,
                            world_size=world)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    hits = torch.zeros(len(topk), device=device, dtype=torch.int64)
    n = torch.zeros((), device=device, dtype=torch.int64)
    with eval_mode(model):
        for b, (x, y) in enumerate(data):
            if max_batches is not None and b >= max_batches:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast(device, amp):
                logits = model(x)
            logits = logits.float()
            loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum")
            top = logits.topk(min(max(topk), logits.shape[1]), dim=1).indices == y[:, None]
            hits += torch.stack([top[:, :k].any(1).sum() for k in topk])
            n += len(y)
    if _world()[1] > 1:
        stats = torch.cat([loss_sum[None], hits.double(), n[None].double()])
        dist.all_reduce(stats)
        loss_sum, hits, n = stats[0], stats[1:-1], stats[-1]
    n = int(n)
    out = {"loss": float(loss_sum) / max(n, 1)}
    out.update({f"top{k}": float(h) / max(n, 1) for k, h in zip(topk, hits.tolist())})
    out["n"] = n
    return out


# --- training --------------------------------------------------------------------------------------

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


def _make_schedule(name, opt, epochs, steps):
    """(scheduler, steps_per_batch?) for a schedule name."""
    S = torch.optim.lr_scheduler
    if name is None:
        return None, False
    if name == "step":  # the paper divided the lr by 10 three times during training
        return S.StepLR(opt, step_size=max(1, epochs // 3), gamma=0.1), False
    if name == "plateau":  # ... "when the validation error rate stopped improving"
        return S.ReduceLROnPlateau(opt, mode="min", factor=0.1, patience=2), False
    if name == "onecycle":
        return S.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=epochs * steps), True
    if name == "cosine":
        return S.CosineAnnealingLR(opt, T_max=epochs * steps), True
    raise ValueError(f"schedule must be one of {SCHEDULES}, not {name!r}")


def _diverged(value, epoch, epochs, step, steps, lr, ckpt, done) -> TrainingDivergedError:
    msg = (f"Training diverged: the loss became {value} at epoch {epoch}/{epochs}, step {step}/{steps} "
           f"(learning rate {lr:.3g}). Try a lower learning rate, e.g. lr={lr / 10:.3g}. ")
    if ckpt is not None and done > 0:
        msg += (f"The last good checkpoint is {ckpt} (end of epoch {done}); continue from it with "
                f"resume=True (--resume) and the lower learning rate.")
    else:
        msg += "No checkpoint of a completed epoch exists" + (" (out_dir=None)." if ckpt is None else ".")
    return TrainingDivergedError(msg, epoch=epoch, step=step, lr=lr, checkpoint=ckpt if done else None)


class _LivePlot:
    """Loss and accuracy curves redrawn after every epoch in a notebook; does nothing elsewhere."""

    def __init__(self):
        self.handle = None
        try:
            from IPython import get_ipython
            self.enabled = get_ipython() is not None
        except ImportError:
            self.enabled = False

    def update(self, h: History) -> None:
        if not self.enabled:
            return
        from IPython.display import Image, display
        from matplotlib.figure import Figure  # not pyplot: no global state, works with any backend

        fig = Figure(figsize=(10, 3.5), layout="tight")
        ax1, ax2 = fig.subplots(1, 2)
        per_epoch = len(h.step_loss) / max(len(h), 1)
        ax1.plot([(i + 1) / per_epoch for i in range(len(h.step_loss))], h.step_loss, lw=0.5, alpha=0.4,
                 label="train (step)")
        ax1.plot(h.epoch, h.train_loss, "o-", label="train")
        if h.test_loss[-1] is not None:
            ax1.plot(h.epoch, h.test_loss, "o-", label="test")
            ax2.plot(h.epoch, [100 * a for a in h.test_top1], "o-", label="test top-1")
        ax2.plot(h.epoch, [100 * a for a in h.train_acc], "o-", label="train")
        ax1.set(xlabel="epoch", ylabel="loss")
        ax2.set(xlabel="epoch", ylabel="accuracy (%)")
        ax1.legend(), ax2.legend()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=72)
        image = Image(data=buf.getvalue(), format="png")
        if self.handle is None:
            self.handle = display(image, display_id=True)
        else:
            self.handle.update(image)


_RESUME_IGNORES = {"epochs", "lr", "device", "progress", "verbose", "live_plot", "log_every"}


def _load_checkpoint(path: Path, model, opt, sched, args: dict, warn: bool,
                     scaler=None) -> tuple[History, int]:
    """Restore model, optimizer, scheduler, loss scaler and RNG states from ``path``: (history, epochs
    done)."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in ck["model"].items()}
    if ck["model_class"] != type(model).__name__ or mine != theirs:
        count = lambda shapes: f"{sum(math.prod(s) for s in shapes.values()):,}"  # noqa: E731
        diff = sorted(set(mine.items()) ^ set(theirs.items()))[:3]
        raise CheckpointMismatchError(
            f"{path} holds a checkpoint of a different model ({ck['model_class']}, {count(theirs)} "
            f"parameters) than the one passed ({type(model).__name__}, {count(mine)} parameters); "
            f"first differences: {diff}. Use another out_dir, or resume=False to start over.")
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    if sched is not None and ck["scheduler"] is not None:
        sched.load_state_dict(ck["scheduler"])
    if scaler is not None and scaler.is_enabled() and ck.get("scaler"):
        scaler.load_state_dict(ck["scaler"])
    old = ck["args"]
    if args["schedule"] in ("onecycle", "cosine") and args["epochs"] > old["epochs"]:
        raise ValueError(f"{path}: its {args['schedule']} schedule ends after {old['epochs']} epochs and "
                         f"cannot be stretched to {args['epochs']}; start a new run (resume=False) instead.")
    if old["lr"] != args["lr"]:  # e.g. a lower lr after a divergence: rescale the restored schedule
        factor = args["lr"] / old["lr"]
        for g in opt.param_groups:
            for key in ("lr", "initial_lr", "max_lr", "min_lr"):
                if key in g:
                    g[key] *= factor
        if hasattr(sched, "base_lrs"):
            sched.base_lrs = [b * factor for b in sched.base_lrs]
    changed = {k: (old.get(k), v) for k, v in args.items() if k not in _RESUME_IGNORES and old.get(k) != v}
    if changed and warn:
        warnings.warn(f"resuming {path} with changed arguments (old, new): {changed}", stacklevel=3)
    _set_rng_state(ck["rng"])
    history = History.from_dict(ck["history"])
    history.config.update(epochs=args["epochs"], lr=args["lr"])
    return history, ck["epoch"]


def fit(model: nn.Module, train_data, test_data=None, *, epochs: int, batch_size: int = 128,
        lr: float = 0.01, optimizer: str = "sgd", momentum: float = 0.9, weight_decay: float = 5e-4,
        schedule: str | None = None, label_smoothing: float = 0.0, image_size: int | None = None,
        augment=None, device=None, precision: str = "auto", channels_last: bool | None = None,
        seed: int = 0, out_dir=None, resume: bool = False, progress: bool = True,
        verbose: bool | None = None, live_plot: bool = False, log_every: int | None = None,
        max_steps_per_epoch: int | None = None, on_epoch_end=None) -> History:
    """Train ``model`` for ``epochs`` epochs and return its :class:`History`.

    ``train_data``/``test_data``: ImageData (batched on the device at ``image_size``, default
    ``model.default_input_size``, with ``augment`` applied to training batches) or ready loaders.
    ``optimizer``: 'sgd' (momentum, weight decay as in the paper) or 'adamw'. ``schedule``: None,
    'step' (lr/10 every epochs//3), 'plateau' (lr/10 when the test loss stalls), 'onecycle', 'cosine'.
    ``precision``: 'auto' (bf16 autocast where supported, fp16 with loss scaling on CUDA GPUs without
    bf16), 'bf16', 'fp16' or 'fp32'. ``channels_last``: None =
    yes except on MPS. With ``out_dir`` a checkpoint is written after every epoch and ``resume=True``
    continues from it (a changed ``lr`` rescales the restored schedule). ``progress``: a tqdm bar per
    epoch; ``verbose`` (default: as ``progress``): one printed line per epoch. ``log_every``: steps
    between host syncs (progress bar, NaN check); default 1 on CPU, 25 elsewhere.
    ``max_steps_per_epoch`` cuts epochs short (quick runs). ``on_epoch_end(model, history)`` is called
    after every epoch (after its checkpoint), e.g. to measure something else on the model.
    """
    if epochs < 1:
        raise ValueError("epochs must be >= 1")
    if optimizer not in ("sgd", "adamw"):
        raise ValueError(f"optimizer must be 'sgd' or 'adamw', not {optimizer!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, not {schedule!r}")
    if resume and out_dir is None:
        raise ValueError("resume=True needs out_dir (where the checkpoint is)")
    args = dict(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, momentum=momentum,
                weight_decay=weight_decay, schedule=schedule, label_smoothing=label_smoothing,
                image_size=image_size, precision=precision, channels_last=channels_last, seed=seed,
                max_steps_per_epoch=max_steps_per_epoch, device=str(device), progress=progress,
                verbose=verbose, live_plot=live_plot, log_every=log_every)
    rank, world, device = _setup_distributed(select_device(device))
    master = rank == 0
    verbose = (progress if verbose is None else verbose) and master
    seed_everything(seed + rank)
    amp = amp_dtype(precision, device)
    channels_last = device.type != "mps" if channels_last is None else channels_last
    image_size = image_size or getattr(model, "default_input_size", None)
    log_every = log_every or (1 if device.type == "cpu" else 25)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)

    def as_loader(data, bs, train):
        if not isinstance(data, ImageData):
            return data
        return DeviceLoader(data, bs, shuffle=train, device=device, image_size=image_size,
                            augment=augment if train else None, drop_last=train and len(data) > bs * world,
                            channels_last=channels_last, seed=seed, rank=rank, world_size=world)

    train_loader = as_loader(train_data, batch_size, True)
    test_loader = None if test_data is None else as_loader(test_data, max(2 * batch_size, 256), False)
    steps = min(len(train_loader), max_steps_per_epoch or len(train_loader))
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched, sched_per_step = _make_schedule(schedule, opt, epochs, steps)
    # fp16 has a narrow range: scale the loss up so small gradients survive, unscale before the step
    # (steps whose gradients overflowed are skipped and the scale is lowered)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    history = History(config={**args, "model": type(model).__name__, "device": str(device),
                              "params": sum(p.numel() for p in model.parameters()), "world_size": world,
                              "amp": DTYPE_NAMES[amp]})
    out_dir = Path(out_dir) if out_dir is not None else None
    ckpt_path, start = (out_dir / CHECKPOINT if out_dir is not None else None), 0
    if resume and ckpt_path.exists():
        history, start = _load_checkpoint(ckpt_path, model, opt, sched, args, warn=master, scaler=scaler)
        if start >= epochs:
            if verbose:
                print(f"{ckpt_path}: already trained for {start} epochs (asked for {epochs}); nothing to do.")
            return history
    if out_dir is not None and master:
        out_dir.mkdir(parents=True, exist_ok=True)
    net = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    plot = _LivePlot() if live_plot and master else None
    from tqdm.auto import tqdm

    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        net.train()
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        # running sums stay on the device: the host syncs every log_every steps only
        losses = torch.zeros(steps, device=device)
        loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.int64)
        seen, logged, step_lrs = 0, 0, []
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{epochs}", leave=False,
                   disable=not (progress and master))
        for step, (x, y) in enumerate(train_loader):
            if step >= steps:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                logits = net(x)
                loss = loss_fn(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            step_lrs.append(opt.param_groups[0]["lr"])
            if sched_per_step:
                sched.step()
            losses[step] = loss.detach()
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            if (step + 1) % log_every == 0 or step + 1 == steps:
                window = losses[logged:step + 1]
                bad = ~torch.isfinite(window)
                check = torch.stack([torch.where(bad, 0, window).sum(), bad.sum().float()])
                if world > 1:
                    dist.all_reduce(check)  # every rank must stop together
                wsum, nbad = check.tolist()
                if nbad:
                    bar.close()
                    first = logged + int(bad.nonzero()[0]) if bad.any() else step
                    raise _diverged(losses[first].item() if bad.any() else "NaN/inf (on another rank)",
                                    epoch + 1, epochs, first + 1, steps, step_lrs[first], ckpt_path, epoch)
                rate = seen * world / (time.perf_counter() - t0)
                bar.set_postfix(loss=f"{wsum / ((step + 1 - logged) * world):.4f}", img_s=f"{rate:,.0f}",
                                refresh=False)
                bar.update(step + 1 - logged)
                logged = step + 1
        bar.close()
        sums = torch.stack([loss_sum.double(), correct.double(), torch.tensor(seen, device=device).double()])
        if world > 1:
            dist.all_reduce(sums)
        loss_sum, correct, seen = sums.tolist()
        train_time = time.perf_counter() - t0
        test = evaluate(model, test_loader, device, precision=precision) if test_loader is not None else {}
        if schedule == "plateau":
            sched.step(test.get("loss", loss_sum / seen))
        elif sched is not None and not sched_per_step:
            sched.step()
        epoch_time = time.perf_counter() - t0
        row = dict(epoch=epoch + 1, train_loss=loss_sum / seen, train_acc=correct / seen,
                   test_loss=test.get("loss"), test_top1=test.get("top1"), test_top5=test.get("top5"),
                   images_per_sec=seen / train_time, epoch_time=epoch_time,
                   wall_time=(history.wall_time or [0.0])[-1] + epoch_time, lr=step_lrs[-1])
        for key, value in row.items():
            getattr(history, key).append(value)
        history.step_loss += losses[:len(step_lrs)].tolist()
        history.step_lr += step_lrs
        if master and out_dir is not None:  # atomic: a crash mid-write leaves the previous checkpoint
            state = dict(model=model.state_dict(), model_class=type(model).__name__,
                         optimizer=opt.state_dict(), epoch=epoch + 1,
                         scheduler=sched.state_dict() if sched is not None else None,
                         scaler=scaler.state_dict() if scaler.is_enabled() else None,
                         history=history.to_dict(), rng=_rng_state(), args=args)
            _atomic_write(ckpt_path, lambda tmp, state=state: torch.save(state, tmp))
            history.save(out_dir / HISTORY)
        if verbose:
            print(history.epoch_line(), flush=True)
        if on_epoch_end is not None:
            on_epoch_end(model, history)
        if plot is not None:
            plot.update(history)
    return history
