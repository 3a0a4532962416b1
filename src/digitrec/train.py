"""Training: a config dataclass, the loop, per-epoch checkpoints and resume.

    >>> from digitrec.train import TrainConfig, run
    >>> cfg = TrainConfig.for_model("fast", epochs=1)
    >>> metrics = run(cfg, "runs/my-fast")
    >>> metrics["test_accuracy"] > 0.99
    True

Every epoch ends with its files committed together into `resume/epoch-N/` (weights, description,
history, optimiser moments and a manifest of their sha256, made visible by one rename), then
`model.safetensors`, `model.json` and `history.csv` copied beside it, each atomically. So a kill at
any moment loses at most the epoch in progress, and `run(..., resume=True)` continues from the
last complete epoch and ends with the same weights an uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import re
import shutil
import signal
import time
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from safetensors.torch import save as st_save
from tqdm import tqdm

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; training into one folder twice is not guarded there
    fcntl = None

from digitrec import __version__, distributed
from digitrec.augment import augment_batch, restyle
from digitrec.checkpoint import (FORMAT, META, WEIGHTS, load_tensors, read_json, save_checkpoint,
                                 tensors_metadata, write_json)
from digitrec.data import MNIST, atomic_write_bytes, load_mnist, writable_dir
from digitrec.data import data_dir as resolve_data_dir
from digitrec.distributed import PROCESSES, Processes
from digitrec.errors import UsageError
from digitrec.home import BUNDLED, PERSONAL
from digitrec.evaluate import as_batch, evaluate_model, fit_temperature, predict_logits
from digitrec.models import TemperatureScaled, create_model, get_recipe
from digitrec.optim import AdamW

STATE = "train_state.safetensors"
HISTORY = "history.csv"
METRICS = "metrics.json"
RESUME = "resume"  # folder of the last complete epoch's files, what --resume continues from
MANIFEST = "manifest.json"  # in an epoch folder: the epoch and each file's sha256, written last
PARTIAL = ".partial"  # suffix of an epoch folder still being written
HISTORY_FIELDS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"]
DRY_RUN_STEPS = 5  # optimiser steps per epoch in a dry run
DRY_RUN_EVAL = 500  # images evaluated per split in a dry run
MAX_LR = 10.0  # largest --lr: steps beyond it only diverge, and near 1e38 they overflow float32
BUSY_LOAD = 1.0  # load average (runnable processes) above which the machine counts as busy at the start


RANK_SEED_STRIDE = 7_919  # seeds of one rank's dropout and distortions lie this far from the next rank's


def cpu_cores() -> int:
    return os.cpu_count() or 1


@dataclass
class TrainConfig:
    model: str = "accurate"  # architecture name from the registry (see `digitrec models`)
    epochs: int = 12  # passes over the training images
    batch_size: int = 128  # images per optimiser step
    lr: float = 4e-3  # peak learning rate
    schedule: str = "onecycle"  # "onecycle" (warm-up then cosine decay) or "constant"
    augment: bool = True  # random distortions of training batches
    styles: bool = False  # write some 1s the continental way (up-stroke, foot) and cross some 7s, before distorting
    label_smoothing: float = 0.1  # cross-entropy label smoothing
    weight_decay: float = 5e-4  # AdamW decoupled weight decay; 0 means plain Adam
    seed: int = 0  # seeds weights, shuffling, augmentation and dropout
    val_split: int = 5000  # training images held out for validation (never the test set)
    bf16: bool | None = None  # bfloat16 autocast; None: per device (bf16 where native, fp16 on older GPUs)
    device: str = "auto"  # auto (CUDA, then MPS, then the CPU), cpu, cuda, cuda:N or mps
    threads: int | None = None  # CPU threads for torch; None: torch's default
    dry_run: bool = False  # a few steps per epoch and small evaluations, for smoke tests
    data_dir: str | None = None  # MNIST folder; None: $DIGITREC_DATA or the user cache
    init: str | None = None  # run directory whose weights training starts from; None: random weights
    init_member: int | None = None  # with an ensemble as init: which of its models (0-based)
    extra: str | None = None  # more training digits beside MNIST's: "optdigits", or the path of a file in its format
    extra_share: float = 0.25  # with extra: this share of every batch is drawn from its writers

    @classmethod
    def for_model(cls, model: str, **overrides) -> "TrainConfig":
        """The model's own recipe, with any non-None override applied."""
        recipe = asdict(get_recipe(model))
        recipe.pop("description")
        cfg = cls(model=model, **recipe)
        for key, value in overrides.items():
            if value is not None:
                setattr(cfg, key, value)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        get_recipe(self.model)  # raises for an unknown name
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1 (got {self.epochs})"),
            (self.batch_size >= 2, f"--batch-size must be at least 2, for batch norm (got {self.batch_size})"),
            (0 < self.lr <= MAX_LR, f"--lr must be a positive number up to {MAX_LR:g} (got {self.lr})"),
            (self.schedule in ("onecycle", "constant"), f"unknown schedule {self.schedule!r}"),
            (0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1) (got {self.label_smoothing})"),
            (self.weight_decay >= 0, f"weight decay must not be negative (got {self.weight_decay})"),
            (0 <= self.val_split < 60000, f"--val-split must be between 0 and 59999 (got {self.val_split})"),
            (self.threads is None or self.threads >= 1, f"--threads must be at least 1 (got {self.threads})"),
            (self.threads is None or self.threads <= cpu_cores(),
             f"--threads {self.threads}: this machine has {cpu_cores()} CPU cores, and more threads than cores "
             "only wait for each other"),
            (bool(DEVICE_NAME.fullmatch(str(self.device))),
             f"--device must be auto, cpu, cuda, cuda:N or mps (got {self.device!r})"),
            (self.augment or not self.styles,
             "--styles draws its strokes before the distortions, which --no-augment turns off"),
            (self.init is not None or self.init_member is None, "--member picks a model of --init: give --init too"),
            (0 < self.extra_share < 1, f"--extra-share must be between 0 and 1 (got {self.extra_share})"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)


DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """The torch device for `--device NAME`; `auto` takes CUDA, then Apple's MPS, then the CPU.

    With several processes on a machine, `cuda` means the GPU of this process's local rank.

    >>> resolve_device("auto")      # on a machine without a GPU
    device(type='cpu')
    """
    if not DEVICE_NAME.fullmatch(name):
        raise UsageError(f"--device must be auto, cpu, cuda, cuda:N or mps (got {name!r})")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            built = "this torch was built without CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise UsageError(f"--device {name}: CUDA is not available here ({built}); use --device cpu or auto")
        index = int(name.split(":")[1]) if ":" in name else local_rank
        if index >= torch.cuda.device_count():
            each = "" if ":" in name else f"; process {local_rank} on this machine takes GPU {local_rank}"
            raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                             f"numbered from 0{each}")
        return torch.device("cuda", index)
    if name == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps: Apple's Metal (MPS) is not available here; use --device cpu or auto")
    return torch.device(name)


def resolve_precision(device: torch.device, bf16: bool | None) -> str:
    """'bf16', 'fp16' or 'fp32' autocast for training on `device`; `bf16` forces bf16 on or off.

    Automatic: bf16 where the device does it in hardware; fp16 (with a gradient scaler) on CUDA
    GPUs without bf16; else float32 (MPS included: its mixed precision is not tested here).
    """
    if bf16 is not None:
        return "bf16" if bf16 else "fp32"
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if device.type == "cpu" and bf16_native(device) else "fp32"


def autocast_for(device: torch.device, precision: str):
    """The autocast context the forward passes run in (a null context for float32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def bf16_native(device: torch.device | None = None) -> bool:
    """True where bfloat16 matrix maths is done in hardware (AMX or AVX512-BF16 CPUs, recent GPUs).

    `device` None asks about the GPU where there is one, else the CPU."""
    if (device is None or device.type == "cuda") and torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def lr_at(cfg: TrainConfig, progress: float) -> float:
    """Learning rate at `progress` (0 to 1) through training: 15% linear warm-up, then cosine to ~0."""
    if cfg.schedule == "constant":
        return cfg.lr
    warmup = 0.15
    if progress < warmup:
        return cfg.lr * (0.04 + 0.96 * progress / warmup)
    return cfg.lr * (0.002 + 0.998 * 0.5 * (1 + math.cos(math.pi * (progress - warmup) / (1 - warmup))))


def init_weights(cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """The weights of `cfg.init` (a run directory, `bundled` or `personal`) that `cfg.model` starts from:
    the run's model, or the member `cfg.init_member` of an ensemble.

    >>> init_weights(TrainConfig(model="deep", init="bundled", init_member=2))["1.weight"].shape
    torch.Size([32, 1, 5, 5])
    """
    from digitrec.checkpoint import ENSEMBLE, load_checkpoint, resolve_run_dir

    try:
        source = resolve_run_dir(cfg.init)
    except UsageError as e:
        raise UsageError(f"--init: {e}") from None
    model, meta = load_checkpoint(source)
    model = model.model if isinstance(model, TemperatureScaled) else model
    architecture = meta["architecture"]
    if architecture == ENSEMBLE:
        n = len(model.members)
        if cfg.init_member is None or not 0 <= cfg.init_member < n:
            given = "" if cfg.init_member is None else f", not {cfg.init_member}"
            raise UsageError(f"--init {cfg.init}: an ensemble of {n} models; pick one with --member N, "
                             f"0 to {n - 1}{given}")
        model, architecture = model.members[cfg.init_member], meta["members"][cfg.init_member]["architecture"]
    elif cfg.init_member is not None:
        raise UsageError(f"--init {cfg.init}: one model, not an ensemble; leave out --member")
    if architecture != cfg.model:
        where = "" if cfg.init_member is None else f" model {cfg.init_member}"
        raise UsageError(f"--init {cfg.init}{where} is {architecture!r}, not {cfg.model!r}; "
                         f"leave out --model or give --model {architecture}")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def load_extra(cfg: TrainConfig) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor], str]:
    """((images, labels) trained on, (images, labels) kept out, sha256 of the digits) of --extra:
    uint8 (N, 28, 28) and int64 (N,)."""
    import numpy as np

    from digitrec.optdigits import load_optdigits

    digits = load_optdigits(None if cfg.extra == "optdigits" else cfg.extra, data=cfg.data_dir)
    parts = digits.train(), digits.held_out()
    if not len(parts[0].labels):
        raise UsageError(f"--extra {cfg.extra}: {len(digits.labels)} digits is too few to train on")
    train, held = ((torch.from_numpy(p.images), torch.from_numpy(p.labels.astype(np.int64))) for p in parts)
    return train, held, digits.sha256


def split_train_val(mnist: MNIST, val_split: int) -> tuple[torch.Tensor, ...]:
    """Training and validation tensors; the held-out images are fixed, whatever the seed."""
    order = torch.randperm(len(mnist.train_labels), generator=torch.Generator().manual_seed(1234))
    images = torch.from_numpy(mnist.train_images).unsqueeze(1)  # (N, 1, 28, 28) uint8
    labels = torch.from_numpy(mnist.train_labels).long()
    n_train = len(order) - val_split
    if n_train < 2:  # one batch of two at least: batch norm cannot normalise a single image
        raise UsageError(f"--val-split {val_split} leaves {max(n_train, 0)} training images of the {len(order)}; "
                         "at least 2 are needed")
    tr, va = order[:n_train], order[n_train:]
    return images[tr], labels[tr], images[va], labels[va]


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device = torch.device("cpu")):
    """AdamW: torch's fused kernel on CUDA; on other devices our own, which starts two seconds sooner."""
    # Decay conv and linear weights only; biases and batch-norm scales stay free.
    decay = [p for p in model.parameters() if p.dim() > 1]
    rest = [p for p in model.parameters() if p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    if device.type == "cuda":
        return torch.optim.AdamW(groups, lr=cfg.lr, fused=True)
    return AdamW(groups, lr=cfg.lr)


def optimizer_tensors(opt: AdamW) -> dict[str, torch.Tensor]:
    out = {}
    for i, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            out[f"{i}.{key}"] = torch.as_tensor(value)
    return out


def load_optimizer_tensors(opt: AdamW, tensors: dict[str, torch.Tensor]) -> None:
    sd = opt.state_dict()
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        i, key = name.split(".", 1)
        state.setdefault(int(i), {})[key] = value
    sd["state"] = state
    opt.load_state_dict(sd)


def history_bytes(history: list[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, HISTORY_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buf.getvalue().encode()


def read_history(path: Path) -> list[dict]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UsageError(f"{path}: unreadable history ({e})") from None
    try:
        return [{k: (int(v) if k == "epoch" else float(v) if v not in ("", None) else "") for k, v in row.items()}
                for row in rows]
    except (TypeError, ValueError) as e:
        raise UsageError(f"{path}: malformed history ({e})") from None


HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def interrupts_deferred():
    """Hold Ctrl-C and SIGTERM back while a checkpoint is written, then deliver them."""
    pending: list[int] = []
    previous = {}
    try:
        for sig in HELD_SIGNALS:
            previous[sig] = signal.signal(sig, lambda signum, frame: pending.append(signum))
    except ValueError:  # not the main thread: signals cannot be caught here anyway
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
        for sig in dict.fromkeys(pending):
            signal.raise_signal(sig)  # the handler in place before: KeyboardInterrupt, or SIGTERM's own


def _fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` survive a power cut (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _epoch_dir(out: Path, epoch: int) -> Path:
    return out / RESUME / f"epoch-{epoch}"


def save_epoch(out: Path, model: torch.nn.Module, opt: AdamW, meta: dict, history: list[dict]) -> None:
    """Write an epoch's files so that they appear together or not at all.

    They are written into a fresh folder, the manifest naming the epoch and each file's sha256 last,
    and the folder is renamed into place: that one rename commits the epoch. The user-facing copies
    in `out` follow; a kill between them is repaired by the next --resume.
    """
    epoch = int(meta["epoch"])
    files = {
        STATE: st_save({k: v.detach().cpu().contiguous() for k, v in optimizer_tensors(opt).items()},
                       metadata={"epoch": str(epoch)}),
        WEIGHTS: st_save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                         metadata={"epoch": str(epoch)}),
        META: (json.dumps({"format": FORMAT, **meta}, indent=2) + "\n").encode(),
        HISTORY: history_bytes(history),
    }
    manifest = {"epoch": epoch, "files": {name: hashlib.sha256(b).hexdigest() for name, b in files.items()}}
    files[MANIFEST] = (json.dumps(manifest, indent=2) + "\n").encode()
    final = _epoch_dir(out, epoch)
    staging = final.with_name(f".{final.name}{PARTIAL}")
    with interrupts_deferred():
        try:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            for name, payload in files.items():  # the manifest last: it vouches for the others
                with open(staging / name, "wb") as f:
                    f.write(payload)
                    f.flush()
                    os.fsync(f.fileno())
            _fsync_dir(staging)
            if final.exists():
                shutil.rmtree(final)
            os.rename(staging, final)
            _fsync_dir(final.parent)
        except OSError as e:
            shutil.rmtree(staging, ignore_errors=True)
            kept = complete_epochs(out)
            raise UsageError(f"cannot save epoch {epoch} into {out}: {e.strerror or e}; "
                             + (f"epoch {kept[-1][0]} is kept, and `digitrec train --resume {out}` continues from it"
                                if kept else "no epoch was saved")) from None
        for older, folder in complete_epochs(out):
            if older < epoch:
                shutil.rmtree(folder, ignore_errors=True)
        _publish(out, final)


def _publish(out: Path, folder: Path) -> None:
    """Copy a committed epoch's user-facing files into `out`, the description last (it vouches for the weights)."""
    try:
        for name in (WEIGHTS, HISTORY, META):
            atomic_write_bytes(out / name, (folder / name).read_bytes())
    except OSError as e:
        raise UsageError(f"cannot write {out}: {e.strerror or e}; the last complete epoch is kept in {folder}, "
                         f"and `digitrec train --resume {out}` restores it") from None


def finish_run(out: Path, model: torch.nn.Module, meta: dict, metrics: dict) -> None:
    """The calibrated model and its test metrics, then the resume state goes: the run is finished."""
    with interrupts_deferred():
        try:
            save_checkpoint(out, model, meta)
            write_json(out / METRICS, metrics)
        except OSError as e:
            raise UsageError(f"cannot write the finished model into {out}: {e.strerror or e}; "
                             f"`digitrec train --resume {out}` tries again") from None
        shutil.rmtree(out / RESUME, ignore_errors=True)
        (out / STATE).unlink(missing_ok=True)  # left by runs of digitrec 0.x, which kept it beside the model


def complete_epochs(out: Path) -> list[tuple[int, Path]]:
    """The committed epoch folders under `out` whose manifest vouches for every file, oldest first."""
    found = []
    for folder in (out / RESUME).glob("epoch-*"):
        try:
            epoch = int(folder.name.removeprefix("epoch-"))
            manifest = json.loads((folder / MANIFEST).read_text())
            ok = manifest["epoch"] == epoch and set(manifest["files"]) == {STATE, WEIGHTS, META, HISTORY} and all(
                hashlib.sha256((folder / name).read_bytes()).hexdigest() == sha
                for name, sha in manifest["files"].items())
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
            ok = False
        if ok:
            found.append((epoch, folder))
    return sorted(found)


def remove_stray_files(out: Path) -> None:
    """Temp files and half-written epoch folders that a killed process left behind."""
    for folder in (out, out / RESUME):
        for stray in folder.glob(".*.tmp"):
            stray.unlink(missing_ok=True)
        for stray in folder.glob(f".*{PARTIAL}"):
            shutil.rmtree(stray, ignore_errors=True)


def run_header(cfg: TrainConfig, device: torch.device, precision: str) -> list[str]:
    """The first lines of a run: the config as resolved, a busy machine, what the losses measure."""
    resolved = {**asdict(cfg), "bf16": precision == "bf16", "device": str(device), "precision": precision,
                "threads": torch.get_num_threads(),
                "data_dir": str(resolve_data_dir(cfg.data_dir))}
    for key in ("init", "init_member"):  # said only when training starts from a trained model (member)
        if resolved[key] is None:
            del resolved[key]
    if cfg.extra is None:  # and the extra data's share only when there is some
        del resolved["extra"], resolved["extra_share"]
    lines = ["config: " + " ".join(f"{k}={v}" for k, v in resolved.items())]
    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average on this system
        load = 0.0
    if load >= BUSY_LOAD and torch.get_num_threads() > 1:
        lines.append(f"note: this machine is busy (load average {load:.1f} on {cpu_cores()} cores); training on "
                     f"{torch.get_num_threads()} threads then waits for the other programs, and --threads 1 "
                     "can be several times faster")
    smoothing = f"label smoothing {cfg.label_smoothing:g}" if cfg.label_smoothing else "no label smoothing"
    digits = (" on augmented digits" + (" (some 1s with an up-stroke or foot, some 7s crossed)" if cfg.styles else "")
              if cfg.augment else "")
    start = f"; starting from the weights of {cfg.init}" + (
        f" (model {cfg.init_member})" if cfg.init_member is not None else "") if cfg.init else ""
    lines.append(f"losses: train with {smoothing}{digits}; validation plain "
                 f"cross-entropy on the digits as they are; test after temperature scaling{start}")
    return lines


def prepare_out_dir(out: Path, overwrite: bool) -> None:
    """Called with the folder locked: nothing is deleted before another training's lock is seen."""
    if not overwrite and (any((out / n).exists() for n in (META, HISTORY, WEIGHTS)) or complete_epochs(out)):
        raise UsageError(f"{out} already holds a run; choose another --out, --resume it, or pass --overwrite")
    remove_stray_files(out)
    if overwrite:
        for name in (METRICS, STATE):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / RESUME, ignore_errors=True)


def load_resume(out: Path) -> tuple[TrainConfig, dict]:
    """The config and checkpoint description of the last complete epoch of an interrupted run in `out`."""
    if not out.is_dir():
        raise UsageError(f"--resume: {out} is not a directory")
    epochs = complete_epochs(out)
    if epochs:
        where = epochs[-1][1]
    elif (out / METRICS).is_file():
        raise UsageError(f"--resume: the run in {out} is finished ({METRICS} holds its test results)")
    elif (out / STATE).is_file() and (out / META).is_file():
        where = out  # a run of digitrec 0.x, which kept the optimiser state beside the model
    else:
        raise UsageError(f"--resume: {out} holds no checkpoint to continue from (no complete epoch); "
                         "start it again")
    meta = read_json(where / META, "checkpoint description")
    try:
        cfg = TrainConfig(**{f.name: meta["config"][f.name] for f in fields(TrainConfig) if f.name in meta["config"]})
        if isinstance(cfg.threads, int) and cfg.threads > cpu_cores():  # started on a bigger machine
            cfg.threads = cpu_cores()
    except (KeyError, TypeError) as e:
        raise UsageError(f"--resume: {where / META} has no usable config ({e})") from None
    cfg.validate()
    return cfg, {**meta, RESUME: str(where)} if where != out else meta


def run(cfg: TrainConfig, out: str | Path, *, resume: bool = False, overwrite: bool = False,
        log: Callable[[str], None] = print, progress: bool | None = None) -> dict:
    """Train `cfg.model` on MNIST into the folder `out` and return the final metrics.

    With resume=True, the config saved in `out` is used (only `cfg.data_dir`, `cfg.threads` and
    `cfg.device`, where set, replace the saved ones), and training continues after the last completed
    epoch. `progress` shows a progress bar (None: on a terminal). Started by torchrun, every process
    calls this; rank 0 alone reads and writes `out` and logs. A training that stops before its first
    epoch is saved removes the folders it created.
    """
    out, procs = Path(out), PROCESSES
    created = [p for p in (out, *out.parents) if not p.exists()] if procs.master else []  # deepest first
    distributed.start(procs)
    try:
        with contextlib.ExitStack() as held:
            error = meta = None
            if procs.master:
                try:
                    cfg, meta = _open_run(cfg, out, resume, overwrite, held)
                except UsageError as e:
                    error = str(e)
            cfg, meta, error = distributed.broadcast(procs, (cfg, meta, error))
            if error:
                raise distributed.quiet(UsageError(error))
            try:
                summary = _fit(cfg, out, meta, log if procs.master else (lambda s: None), progress, procs)
                distributed.barrier(procs)
                return summary
            except (RuntimeError, ConnectionError) as e:
                if procs.world_size == 1 or not _collective_failed(e):
                    raise
                raise distributed.peer_lost(procs, out, e) from None
    except BaseException:
        if created:
            _remove_unsaved(out, created)
        raise
    finally:
        distributed.stop(procs)


def _remove_unsaved(out: Path, created: list[Path]) -> None:
    """Remove the folders a training created, if it stopped before saving its first epoch."""
    if (out / META).exists() or complete_epochs(out):
        return
    remove_stray_files(out)
    shutil.rmtree(out / RESUME, ignore_errors=True)  # holds no complete epoch
    for folder in created:
        try:
            folder.rmdir()
        except OSError:  # holds something not ours: keep it, and the folders above it
            break


def _collective_failed(e: Exception) -> bool:
    """True for the errors a process group gives when another rank has gone."""
    import torch.distributed as dist

    return isinstance(e, (dist.DistError, ConnectionError)) or any(
        w in str(e) for w in ("Connection closed", "Connection reset", "Broken pipe", "gloo", "NCCL"))


def _open_run(cfg: TrainConfig, out: Path, resume: bool, overwrite: bool,
              held: contextlib.ExitStack) -> tuple[TrainConfig, dict | None]:
    """Check the options, lock `out` (held until `held` closes), then read or prepare it."""
    if resume:
        if not out.is_dir():
            raise UsageError(f"--resume: {out} is not a directory")
    else:
        cfg.validate()
        resolve_device(cfg.device)
        if cfg.init is not None:
            init_weights(cfg)  # a missing run or a wrong member stops the run before its folder is made
            if cfg.init not in (BUNDLED, PERSONAL):  # recorded so that it still says where from elsewhere
                cfg.init = str(Path(cfg.init).resolve())
        if cfg.extra is not None:
            load_extra(cfg)  # as is a missing or damaged --extra file
            if cfg.extra != "optdigits":
                cfg.extra = str(Path(cfg.extra).resolve())
        writable_dir(out, "the run")
    held.enter_context(exclusive(out))
    # Read or deleted only now that no other process writes here.
    if resume:
        remove_stray_files(out)
        saved, meta = load_resume(out)
        saved.data_dir, saved.threads = cfg.data_dir or saved.data_dir, cfg.threads or saved.threads
        saved.device = cfg.device if cfg.device != "auto" else saved.device
        saved.validate()
        resolve_device(saved.device)  # a device that is not here stops the run before it starts
        return saved, meta
    prepare_out_dir(out, overwrite)
    return cfg, None


@contextlib.contextmanager
def exclusive(out: Path):
    """Refuse to train into a folder that another training process is writing to.

    The lock is taken on the folder itself, so no lock file is left behind.
    """
    if fcntl is None:
        yield
        return
    fd = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"{out} is being written by another digitrec train process") from None
        yield
    finally:
        os.close(fd)


def _fit(cfg: TrainConfig, out: Path, meta: dict | None, log: Callable[[str], None], progress: bool | None,
         procs: Processes = Processes()) -> dict:
    # Device, precision and processes, decided once: the loop below has no branch on any of them.
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device, procs.local_rank)
    precision = resolve_precision(device, cfg.bf16)
    autocast = autocast_for(device, precision)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")  # fp16 gradients would underflow
    rank, world = procs.rank, procs.world_size
    if cfg.batch_size // world < 2:
        raise distributed.quiet(UsageError(
            f"--batch-size {cfg.batch_size} shares out fewer than 2 images to each of {world} processes; "
            f"batch norm needs 2: use --batch-size {2 * world} or more, or fewer processes"))

    mnist = load_mnist(cfg.data_dir)
    train_x, train_y, val_x, val_y = split_train_val(mnist, cfg.val_split)
    extra = extra_held = extra_sha256 = None
    if cfg.extra is not None:
        extra, extra_held, extra_sha256 = load_extra(cfg)
        log(f"--extra {cfg.extra}: {len(extra[1])} digits by its first writers, {cfg.extra_share:.0%} of each batch; "
            f"{len(extra_held[1])} by the last ones kept out, to measure on")
        extra = tuple(t.to(device) for t in extra)
    train_x, train_y = train_x.to(device), train_y.to(device)  # the whole of MNIST fits in any GPU
    eval_n = DRY_RUN_EVAL if cfg.dry_run else None

    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model).to(device, memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg, device)
    # Every rank's share of a batch needs 2 images for batch norm: a shorter last batch is left out.
    steps_per_epoch = len(train_y) // cfg.batch_size + (len(train_y) % cfg.batch_size >= 2 * world)
    if cfg.dry_run:
        steps_per_epoch = min(steps_per_epoch, DRY_RUN_STEPS)
    total_steps = cfg.epochs * steps_per_epoch

    history: list[dict] = []
    start_epoch = 0
    if procs.master and meta is not None:
        start_epoch, history = restore(out, model, opt, meta)
        log(f"resuming {out} after epoch {start_epoch} of {cfg.epochs}")
    elif procs.master and cfg.init is not None:
        model.load_state_dict(init_weights(cfg))
    if world > 1:  # the other ranks start from the master's weights and optimiser state
        start_epoch, history, weights, state = distributed.broadcast(procs, (
            start_epoch, history, {k: v.cpu() for k, v in model.state_dict().items()},
            {k: v.cpu() for k, v in optimizer_tensors(opt).items()}))
        if not procs.master:
            model.load_state_dict(weights)
            if state:
                load_optimizer_tensors(opt, state)
    trainer = distributed.wrap(procs, model, device)
    show_bar = progress if procs.master else False
    for line in run_header(cfg, device, precision):
        log(line)
    log(f"{len(train_y)} training and {len(val_y)} validation images; {device} ({precision}); "
        f"{world} process{'es' if world > 1 else ''} x {torch.get_num_threads()} "
        f"thread{'s' if torch.get_num_threads() > 1 else ''}; "
        f"optimiser {'torch fused AdamW' if isinstance(opt, torch.optim.Optimizer) else 'digitrec AdamW'}")

    def describe(epoch: int, metrics: dict) -> dict:
        return {"architecture": cfg.model, "config": asdict(cfg), "epoch": epoch, "metrics": metrics,
                "train_sha256": mnist.train_sha256, **({"extra_sha256": extra_sha256} if extra_sha256 else {}),
                "digitrec_version": __version__,
                "device": str(device), "precision": precision, "world_size": world,
                "saved": datetime.now().isoformat(timespec="seconds")}

    for epoch in range(start_epoch, cfg.epochs):
        # Every epoch draws from its own seeds, so a resumed run repeats exactly what it missed. All
        # ranks share the permutation; each has its own dropout and distortions.
        epoch_seed = cfg.seed * 100_003 + epoch
        torch.manual_seed(epoch_seed + RANK_SEED_STRIDE * rank)
        order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(epoch_seed)).to(device)
        g = torch.Generator(device).manual_seed(epoch_seed + RANK_SEED_STRIDE * rank)
        model.train()
        t0 = time.perf_counter()
        loss_sum = correct = seen = 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", leave=False,
                   disable=(not show_bar) if show_bar is not None else None, dynamic_ncols=True)
        for step in bar:
            lr = lr_at(cfg, (epoch * steps_per_epoch + step) / total_steps)
            for group in opt.param_groups:
                group["lr"] = lr
            batch = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            idx = batch.tensor_split(world)[rank]  # this rank's disjoint share of the global batch
            x = as_batch(train_x[idx])  # (b, 1, 28, 28) float in [0, 1]
            y = train_y[idx]
            if extra is not None:  # the last places of the batch go to the other writers' digits
                k = round(cfg.extra_share * len(y))
                pick = torch.randint(0, len(extra[1]), (k,), generator=g, device=device)
                x = torch.cat([x[:len(y) - k], as_batch(extra[0][pick])])
                y = torch.cat([y[:len(y) - k], extra[1][pick]])
            if cfg.augment:
                if cfg.styles:  # before the distortions, so that the new strokes are distorted too
                    x = restyle(x, y, g)
                x = augment_batch(x, g).contiguous(memory_format=torch.channels_last)
            with autocast:
                logits = trainer(x)
            # Summed over this share, divided by the global batch: DDP's mean over ranks then gives
            # the gradient of the global batch's mean loss, however the batch was shared out.
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing,
                                   reduction="sum") * (world / len(batch))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

            loss_sum += loss.item() * len(batch) / world
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            elapsed = time.perf_counter() - t0
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.2%}",
                            img_s=f"{seen * world / elapsed:.0f}", refresh=False)
        bar.close()
        loss_sum, correct, seen = distributed.total(procs, [loss_sum, correct, seen])
        seconds = time.perf_counter() - t0
        row = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
               "val_loss": "", "val_accuracy": "", "lr": lr, "seconds": round(seconds, 3)}
        if not procs.master:
            continue
        if len(val_y):
            val = evaluate_model(model, val_x[:eval_n, 0], val_y[:eval_n].numpy())
            row.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
        history.append(row)
        save_epoch(out, model, opt, describe(epoch + 1, {k: v for k, v in row.items() if k != "epoch"}), history)
        val_text = f"val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.2%}  " if len(val_y) else ""
        log(f"epoch {epoch + 1}/{cfg.epochs}  train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.2%}  "
            f"{val_text}{seconds:.1f}s ({seen / seconds:.0f} img/s)")

    if not procs.master:
        return {}
    # Calibrate on the validation images (never the test set): a temperature for the probabilities.
    temperature = None
    if len(val_y):
        temperature = fit_temperature(predict_logits(model, val_x[:eval_n, 0]), val_y[:eval_n].numpy())
    scaled = TemperatureScaled(model, temperature) if temperature else model
    test = evaluate_model(scaled, mnist.test_images[:eval_n], mnist.test_labels[:eval_n])
    last = history[-1]
    if extra_held is not None and len(extra_held[1]):
        held = evaluate_model(scaled, extra_held[0].numpy(), extra_held[1].numpy())
        test.update(extra_held_out_accuracy=held["accuracy"], extra_held_out_n=held["n"])
        log(f"--extra {cfg.extra}, its writers kept out: accuracy {held['accuracy']:.2%} ({held['n']} digits)")
    summary = {"test_accuracy": test["accuracy"], "test_loss": test["loss"], "test_n": test["n"],
               "val_accuracy": last["val_accuracy"], "val_loss": last["val_loss"],
               "train_seconds": round(sum(float(r["seconds"]) for r in history), 3), "epochs": cfg.epochs,
               "model": cfg.model, "temperature": temperature, "dry_run": cfg.dry_run,
               "device": str(device), "precision": precision, "world_size": world}
    final = describe(cfg.epochs, {**{k: v for k, v in last.items() if k != "epoch"},
                                  "test_accuracy": test["accuracy"], "test_loss": test["loss"]})
    finish_run(out, model, {**final, "temperature": temperature}, {**summary, "test": test})
    log(f"test accuracy {test['accuracy']:.2%}  loss {test['loss']:.4f}  ({test['n']} images)"
        + ("  [dry run: not a real result]" if cfg.dry_run else "") + f"  -> {out}")
    return summary


def restore(out: Path, model: torch.nn.Module, opt: AdamW, meta: dict) -> tuple[int, list[dict]]:
    """Load weights, optimiser state and history of the last complete epoch in `out`."""
    folder = Path(meta[RESUME]) if RESUME in meta else out  # runs of digitrec 0.x kept them beside the model
    epoch = int(meta.get("epoch", 0))
    for path in (folder / WEIGHTS, folder / STATE):
        if tensors_metadata(path).get("epoch") != str(epoch):
            raise UsageError(f"--resume: {path} does not belong to epoch {epoch} of {folder / META}; "
                             "the run was killed while saving, so start it again")
    weights, state = load_tensors(folder / WEIGHTS), load_tensors(folder / STATE)
    history = read_history(folder / HISTORY)
    if len(history) < epoch:
        raise UsageError(f"--resume: {folder / HISTORY} has {len(history)} epochs, the checkpoint {epoch}")
    try:
        model.load_state_dict(weights)
        load_optimizer_tensors(opt, state)
    except (RuntimeError, ValueError, KeyError) as e:
        raise UsageError(f"--resume: the checkpoint in {folder} does not fit its config ({str(e).splitlines()[0]})") from None
    if folder != out:
        _publish(out, folder)  # a kill may have left the copies in `out` an epoch apart
    return epoch, history[:epoch]


def validation_temperature(model: torch.nn.Module, val_split: int, data_dir: str | None = None) -> float:
    """Fit the probability temperature of a trained model on the validation images it was trained beside."""
    _, _, val_x, val_y = split_train_val(load_mnist(data_dir), val_split)
    if not len(val_y):
        raise UsageError("calibration needs validation images: the runs were trained with --val-split 0")
    return fit_temperature(predict_logits(model, val_x[:, 0]), val_y.numpy())
