"""Checkpoints that are written atomically, verified when read, and safe to load from anywhere.

On disk a checkpoint is an ordinary ``torch.save`` file (a zip archive) holding one dict::

    {"format": "alexnet_lib.checkpoint/2", "sha256": "<64 hex digits>", "state": {...the caller's dict...}}

``state`` may hold only tensors, ``None``, bools, ints, floats, strings and lists/tuples/dicts of them
(model, optimizer, scheduler and loss-scaler ``state_dict()``s are all of this kind; the RNG states come
from :func:`rng_state`). ``sha256`` is computed over every tensor's dtype, shape and bytes and every other
value, walked in a fixed order, so a flipped bit anywhere in the weights is detected.

Guarantees:

- atomic: :func:`save_checkpoint` writes a temporary ``.NAME.tmpPID`` beside the target, fsyncs it and
  renames it over the target, so a crash or a full disk leaves the previous checkpoint intact; the
  temporary file is removed on any failure, and :func:`clean_stale_temp_files` removes those left by
  killed processes;
- verified: :func:`load_checkpoint` refuses a missing, truncated, corrupted, foreign or old-format file
  with a :class:`CheckpointError` that names it and says what to do;
- safe: files are read with ``torch.load(weights_only=True)``, which rebuilds only tensors and plain
  containers and never runs code from the file, so a checkpoint from an untrusted source cannot execute
  anything when loaded.

Not guaranteed: the checksum detects accidents, not tampering (whoever can write the file can recompute
it), and a crafted file can still hold weights that make a model misbehave or be large enough to exhaust
memory; durability depends on the filesystem honouring fsync (some network and synced drives do not);
whether the state fits the model being resumed is the caller's check.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import random
import re
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from .checks import boolean

__all__ = ["FORMAT", "CheckpointError", "RunExistsError", "all_finite", "check_run_dir",
           "clean_stale_temp_files", "load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state"]

FORMAT = "alexnet_lib.checkpoint/2"
_START_OVER = "delete it, or resume from an earlier copy, or start over with overwrite=True / --overwrite"
_TEMP = re.compile(r"^\.(.+)\.tmp(\d+)$")
_writing: set[Path] = set()  # temporary files this process is writing right now


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint of this library; the message names it and says what to do."""


class RunExistsError(FileExistsError):
    """``out_dir`` already holds a checkpoint and neither resume nor overwrite was asked for."""


# --- checksum --------------------------------------------------------------------------------------

def _digest(obj, h, where: str = "state") -> int:
    """Feed ``obj`` into hash ``h`` in a fixed order; return the bytes of tensor data seen. TypeError for
    anything ``torch.load(weights_only=True)`` would refuse."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}".encode())
        h.update(t.view(torch.uint8).numpy())
        return t.numel() * t.element_size()
    if type(obj) in (dict, OrderedDict):
        h.update(f"D{len(obj)}".encode())
        n = 0
        for k, v in obj.items():
            _digest(k, h, f"{where} key")
            n += _digest(v, h, f"{where}[{k!r}]")
        return n
    if type(obj) in (list, tuple, torch.Size):
        h.update(f"{type(obj).__name__[0]}{len(obj)}".encode())
        return sum(_digest(v, h, f"{where}[{i}]") for i, v in enumerate(obj))
    if obj is None or type(obj) in (bool, int, float, str):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
        return 0
    raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}: a checkpoint stores only "
                    "tensors, None, bools, ints, floats, strings and lists/tuples/dicts of them (convert it, "
                    "e.g. with float(), .tolist() or torch.as_tensor())")


# --- save ------------------------------------------------------------------------------------------

def save_checkpoint(path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically, with its format tag and checksum (see the module docstring).

    A full disk raises ``OSError`` (same errno) saying so and how much space is needed; the previous file
    at ``path`` is then unchanged and no temporary file is left behind."""
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    path = Path(path)
    h = hashlib.sha256()
    nbytes = _digest(state, h)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    _writing.add(tmp.resolve())
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, "sha256": h.hexdigest(), "state": state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        raise _write_error(e, path, nbytes) from e
    finally:
        _writing.discard(tmp.resolve())
        tmp.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX only; Windows cannot open a directory)."""
    if os.name == "nt":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # some filesystems refuse: the rename is atomic all the same, only less durable
        pass


def _write_error(e: OSError, path: Path, nbytes: int) -> OSError:
    """The same kind of OSError with the same errno, and a message that names ``path`` and the way out."""
    if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        mb = max(1, round(nbytes / 2**20))
        msg = (f"no space left on device while writing checkpoint {path} (about {mb} MB needed); the "
               "previous checkpoint, if any, is unchanged. Free some space (e.g. delete old runs) or write "
               "to another out_dir / --out")
    elif e.errno == errno.ENOENT:
        msg = f"cannot write checkpoint {path}: the directory {path.parent} does not exist"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        msg = (f"cannot write checkpoint {path}: {path.parent} is not writable ({e.strerror}); fix its "
               "permissions or write to another out_dir / --out")
    else:
        msg = f"{e.strerror or e} while writing checkpoint {path}"
    try:
        return type(e)(e.errno, msg)
    except TypeError:  # an OSError subclass with another constructor
        return OSError(e.errno, msg)


# --- load ------------------------------------------------------------------------------------------

def load_checkpoint(path, map_location="cpu") -> dict:
    """The ``state`` dict saved by :func:`save_checkpoint` at ``path``, its format and checksum verified,
    its tensors moved to the device ``map_location`` (None: the CPU).

    Only tensors and plain containers are rebuilt (``weights_only=True``): nothing in the file can run
    code. Every way the file can be unusable raises :class:`CheckpointError` naming it."""
    path, device = Path(path), torch.device(map_location or "cpu")  # a bad device fails here, not as corrupt
    ck = _read(path)
    if not isinstance(ck, dict) or "format" not in ck:
        if isinstance(ck, dict) and {"model", "model_class"} <= ck.keys():
            raise CheckpointError(_old_format(path))
        raise CheckpointError(f"{path} is not a checkpoint of alexnet_lib (no format tag); {_START_OVER}")
    if ck["format"] != FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {ck['format']!r}, this alexnet_lib reads "
                              f"{FORMAT!r}: upgrade alexnet_lib, or {_START_OVER}")
    h = hashlib.sha256()
    try:
        _digest(ck.get("state"), h)
    except TypeError as e:
        raise CheckpointError(f"checkpoint {path} holds unexpected content ({e}); {_START_OVER}") from None
    if not isinstance(ck.get("state"), dict) or h.hexdigest() != ck.get("sha256"):
        raise CheckpointError(f"checkpoint {path} is corrupted (its checksum does not match its contents, "
                              f"e.g. a disk or copy error); {_START_OVER}")
    return ck["state"] if device.type == "cpu" else _to(ck["state"], device)


def _read(path: Path):
    """``torch.load(weights_only=True)`` of the zip archive at ``path``; every failure a CheckpointError."""
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; pass the checkpoint file inside it")
    try:
        with open(path, "rb") as f:
            is_zip = zipfile.is_zipfile(f)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist; check the path, or start a new "
                              "run") from None
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read ({e.strerror or e}); check its "
                              "permissions") from None
    if not is_zip:  # torch.save writes zip archives: this is truncated, or something else entirely
        raise _unreadable(path, "not a zip archive")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refused an object, or the pickle is damaged
        names = _unsafe_globals(path) if "weights only" in str(e).lower() else []
        if not names:
            raise _unreadable(path, e) from None
        if all(n.startswith("numpy") for n in names):  # the pre-format-2 layout: NumPy RNG state, no tag
            raise CheckpointError(_old_format(path)) from None
        raise CheckpointError(f"checkpoint {path} holds Python objects that a safe load refuses and that "
                              f"could run code ({', '.join(names)}): it is not a checkpoint of this library "
                              f"and was left unread; {_START_OVER}") from None
    except Exception as e:  # the zip reader (RuntimeError, OSError), a truncated pickle (EOFError), ...
        raise _unreadable(path, e) from None


def _to(obj, device: torch.device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return type(obj)((k, _to(v, device)) for k, v in obj.items())
    if type(obj) in (list, tuple):
        return type(obj)(_to(v, device) for v in obj)
    return obj


def _unreadable(path: Path, e) -> CheckpointError:
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
    return CheckpointError(f"checkpoint {path} is truncated, corrupted or not a checkpoint file ({reason}); "
                           f"{_START_OVER}")


def _unsafe_globals(path: Path) -> list[str]:
    """The Python objects (module.name) a full unpickling of ``path`` would create; read, never run."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:
        return []


def _old_format(path: Path) -> str:
    return (f"checkpoint {path} was written by an older alexnet_lib (no format tag, Python objects inside) "
            "and cannot be loaded safely: loading it would unpickle arbitrary objects. Start over with "
            "overwrite=True / --overwrite, or, only if you trust the file, re-save it yourself:\n"
            "    import torch; from alexnet_lib.checkpoint import rng_state, save_checkpoint\n"
            f"    ck = torch.load({str(path)!r}, weights_only=False); ck['rng'] = rng_state(); "
            f"save_checkpoint({str(path)!r}, ck)")


# --- random number generators ----------------------------------------------------------------------

def rng_state() -> dict:
    """The state of Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device),
    as tensors, ints and floats only, so that it survives a ``weights_only=True`` load."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return dict(python=dict(version=version, state=torch.tensor(mt, dtype=torch.int64), gauss=gauss),
                numpy=dict(name=name, keys=torch.from_numpy(keys.astype(np.int64)), pos=int(pos),
                           has_gauss=int(has_gauss), gauss=float(cached)),
                torch=torch.get_rng_state(), cuda=list(cuda))


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned (CUDA: the devices present both then and now)."""
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    np.random.set_state((npy["name"], npy["keys"].cpu().numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["gauss"]))
    torch.set_rng_state(state["torch"].cpu())
    if torch.cuda.is_available():
        for i, s in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s.cpu(), i)


# --- run directories -------------------------------------------------------------------------------

def clean_stale_temp_files(directory) -> list[Path]:
    """Remove the ``.NAME.tmpPID`` files in ``directory`` left by writers that were killed: their process
    is gone, or the PID is this process's (reused after a restart, e.g. in a container) but not one it is
    writing now. Returns the files removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for p in sorted(directory.iterdir()):
        m = _TEMP.match(p.name)
        if not m or not p.is_file() or p.resolve() in _writing:
            continue
        pid = int(m.group(2))
        if pid == os.getpid() or not _pid_alive(pid):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would terminate the process there: ask the kernel instead
        import ctypes
        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        ok = kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return bool(ok) and code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def check_run_dir(out_dir, *, resume: bool, overwrite: bool, name: str = "checkpoint.pt") -> None:
    """Refuse to start a new run over an old one: :class:`RunExistsError` when ``out_dir/name`` exists and
    neither ``resume`` nor ``overwrite`` is set."""
    resume, overwrite = boolean(resume, "resume"), boolean(overwrite, "overwrite")
    if resume and overwrite:
        raise ValueError("resume=True and overwrite=True contradict each other: choose one "
                         "(--resume continues the run in out_dir, --overwrite replaces it)")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"out_dir {out_dir} is a file, not a directory; choose another out_dir "
                                 "/ --out")
    if (out_dir / name).exists() and not (resume or overwrite):
        raise RunExistsError(
            f"{out_dir} already holds a run ({name}). Continue it with resume=True / --resume, replace it "
            "with overwrite=True / --overwrite, or choose another out_dir / --out")


# --- checks ----------------------------------------------------------------------------------------

def all_finite(module_or_state_dict) -> bool:
    """True when every parameter and floating buffer of a module (or every floating tensor of a possibly
    nested state dict) is finite; one device synchronisation."""
    if isinstance(module_or_state_dict, torch.nn.Module):
        tensors = [*module_or_state_dict.parameters(), *module_or_state_dict.buffers()]
    else:
        tensors, todo = [], [module_or_state_dict]
        while todo:
            x = todo.pop()
            if isinstance(x, torch.Tensor):
                tensors.append(x)
            elif isinstance(x, dict):
                todo += x.values()
            elif isinstance(x, (list, tuple)):
                todo += x
    flags = [t.detach().isfinite().all() for t in tensors if t.is_floating_point() or t.is_complex()]
    if not flags:
        return True
    return bool(torch.stack([f.to(flags[0].device) for f in flags]).all())
