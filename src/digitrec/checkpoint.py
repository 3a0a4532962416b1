"""Checkpoints: `model.safetensors` (weights only) beside `model.json` (what the weights are).

Nothing here unpickles: a checkpoint from a stranger can be loaded safely.

    >>> model, meta = load_checkpoint("runs/fast-20261121-101500")
    >>> meta["architecture"], meta["metrics"]["test_accuracy"]
    ('fast', 0.9912)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from digitrec.data import atomic_write_bytes
from digitrec.errors import UsageError
from digitrec.home import BUNDLED_DIR, resolve_model
from digitrec.models import Ensemble, TemperatureScaled, create_model

WEIGHTS = "model.safetensors"
META = "model.json"
ONNX_NAME = "model.onnx"  # the exported graph beside the weights (export.ONNX)
FORMAT = 1
ENSEMBLE = "ensemble"  # architecture name of a checkpoint that combines several trained models


def write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_json(path: Path, what: str = "file") -> dict:
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{path}: not a readable JSON {what} ({e})") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{path}: expected a JSON object")
    return obj


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}  # device-free: reads on any machine
    atomic_write_bytes(path, st_save(tensors, metadata=metadata))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return st_load(path.read_bytes())
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, SafetensorError, ValueError) as e:
        raise UsageError(f"{path}: not a valid safetensors file ({e})") from None


def tensors_metadata(path: Path) -> dict[str, str]:
    """The string metadata stored in a safetensors header, read without loading the tensors."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size)) if 0 < size < 1 << 24 else None
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{path}: not a valid safetensors file ({e})") from None
    if not isinstance(header, dict):
        raise UsageError(f"{path}: not a valid safetensors file")
    return header.get("__metadata__") or {}


def save_checkpoint(run_dir: str | os.PathLike, model: torch.nn.Module, meta: dict) -> None:
    """Write weights, then the description that vouches for them (both atomically)."""
    run_dir = Path(run_dir)
    save_tensors(run_dir / WEIGHTS, model.state_dict(), {"epoch": str(meta.get("epoch", ""))})
    write_json(run_dir / META, {"format": FORMAT, **meta})


def resolve_run_dir(run_dir: str | os.PathLike | None) -> Path:
    """The run folder to load: a path, or "bundled" / "personal"; None is the personal model where
    one exists, else the pretrained model shipped with the package (see home.resolve_model)."""
    return resolve_model(run_dir)


def build_model(meta: dict, where: Path) -> torch.nn.Module:
    """A fresh model of the architecture `meta` describes: a registered name, or an ensemble of them."""
    if meta["architecture"] != ENSEMBLE:
        return create_model(meta["architecture"])
    members = meta.get("members")
    if not isinstance(members, list) or not members:
        raise UsageError(f"{where}: an ensemble checkpoint needs a non-empty list of members")
    return Ensemble([create_model(m["architecture"]) for m in members])


def combine_checkpoints(run_dirs: list[str | os.PathLike], out: str | os.PathLike,
                        temperature: Callable[[torch.nn.Module, dict], float] | None = None) -> dict:
    """Write one ensemble checkpoint to `out` from several trained runs; returns its description.

    `temperature(ensemble, first_member_meta)`, if given, fits the ensemble's probability temperature.

    >>> combine_checkpoints(["runs/a", "runs/b", "runs/c"], "runs/abc")["architecture"]
    'ensemble'
    """
    if len(run_dirs) < 2:
        raise UsageError("an ensemble needs at least two runs")
    out = Path(out)
    loaded = [load_checkpoint(d) for d in run_dirs]
    for d, (_, meta) in zip(run_dirs, loaded):
        if meta["architecture"] == ENSEMBLE:
            raise UsageError(f"{d}: already an ensemble; give the runs it was made of")
    # Members vote with their raw logits; the ensemble gets a temperature of its own.
    model = Ensemble([m.model if isinstance(m, TemperatureScaled) else m for m, _ in loaded])
    members = [{"architecture": meta["architecture"], "config": meta.get("config"), "metrics": meta.get("metrics"),
                "source": Path(d).name, **{k: meta[k] for k in ("extra_sha256",) if meta.get(k)}}
               for d, (_, meta) in zip(run_dirs, loaded)]
    shas = {meta.get("train_sha256") for _, meta in loaded}
    meta = {"architecture": ENSEMBLE, "members": members, "config": {"members": len(members)},
            "train_sha256": shas.pop() if len(shas) == 1 else None, "metrics": {},
            "digitrec_version": loaded[0][1].get("digitrec_version"),
            "temperature": temperature(model, loaded[0][1]) if temperature else None}
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create {out}: {e.strerror or e}") from None
    save_checkpoint(out, model, meta)
    return meta


def load_checkpoint(run_dir: str | os.PathLike | None = None) -> tuple[torch.nn.Module, dict]:
    """Load a trained model (in eval mode) and its description; None loads the bundled model."""
    run_dir = resolve_run_dir(run_dir)
    meta = read_json(run_dir / META, "checkpoint description")
    if meta.get("format") != FORMAT or "architecture" not in meta:
        raise UsageError(f"{run_dir / META}: not a digitrec checkpoint description (format {meta.get('format')!r})")
    model = build_model(meta, run_dir / META)
    state = load_tensors(run_dir / WEIGHTS)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise UsageError(f"{run_dir / WEIGHTS}: weights do not fit architecture {meta['architecture']!r} ({first})") from None
    temperature = meta.get("temperature")
    if temperature is not None:
        if not isinstance(temperature, (int, float)) or not 0 < temperature < 100:
            raise UsageError(f"{run_dir / META}: temperature must be a positive number, got {temperature!r}")
        model = TemperatureScaled(model, float(temperature))
    return model.eval(), meta
