"""ONNX export and the onnxruntime backend: the same model, read without torch.

`export_onnx` writes what `load_checkpoint` returns (ensemble vote and temperature included) as one
ONNX graph with a dynamic batch dimension. `OnnxBackend` runs it with onnxruntime as a Logits
callable for the Recognizer. `load_logits` picks the backend; its ONNX path imports no torch, which is
what lets `digitrec predict` answer in well under a second.

    >>> export_onnx("runs/fast")                     # writes runs/fast/model.onnx
    PosixPath('runs/fast/model.onnx')
    >>> logits, meta = load_logits("runs/fast")      # backend "auto": the ONNX file, as it is up to date
    >>> logits(np.zeros((2, 1, 28, 28), np.float32)).shape
    (2, 10)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from digitrec.errors import UsageError
from digitrec.home import read_meta, resolve_model

ONNX = "model.onnx"
BACKENDS = ("auto", "onnx", "torch")
OPSET = 17
PARITY_TOLERANCE = 1e-3  # largest |logit difference| between torch and onnxruntime that export accepts
# Repeated from checkpoint.py, which imports torch: the ONNX path must not.
META, WEIGHTS = "model.json", "model.safetensors"
WEIGHTS_SHA = "weights_sha256"  # key of the ONNX metadata naming the weights it was exported from

Logits = Callable[[np.ndarray], np.ndarray]  # float32 (N, 1, 28, 28) -> logits (N, 10)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_onnx(run_dir: str | os.PathLike | None = None, out: str | os.PathLike | None = None) -> Path:
    """Write a run's model (None: the bundled one) as ONNX; returns the file written.

    The file defaults to model.onnx in the run directory, where `load_logits` looks for it. It is
    checked against torch on random digits before it replaces anything.

    >>> export_onnx("runs/fast", "fast.onnx")
    PosixPath('fast.onnx')
    """
    import warnings

    import torch

    from digitrec.checkpoint import load_checkpoint, resolve_run_dir
    from digitrec.data import atomic_write_bytes

    run_dir = resolve_run_dir(run_dir)
    model, meta = load_checkpoint(run_dir)
    out = Path(out) if out is not None else run_dir / ONNX
    if out.suffix.lower() != ".onnx":
        raise UsageError(f"--out {out}: the file name should end in .onnx")
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of torch.export, which needs the onnxscript
        # package; for these plain CNNs both give the same graph.
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=OPSET,
                          input_names=["pixels"], output_names=["logits"],
                          dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}})
    graph = _with_metadata(buf.getvalue(), {
        WEIGHTS_SHA: file_sha256(run_dir / WEIGHTS), "architecture": meta["architecture"],
        "temperature": str(meta.get("temperature")), "digitrec_version": str(meta.get("digitrec_version")),
        "input": "float32 (N, 1, 28, 28) in [0, 1], white ink on black", "output": "logits (N, 10)"})
    with torch.inference_mode():
        want = model(x).float().numpy()  # (3, 10)
    got = OnnxBackend(graph)(x.numpy())
    if not np.abs(got - want).max() < PARITY_TOLERANCE or (got.argmax(1) != want.argmax(1)).any():
        raise UsageError(f"{run_dir}: the ONNX graph does not reproduce the model (max difference "
                         f"{np.abs(got - want).max():.2g}); not written")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, graph)
    except OSError as e:
        raise UsageError(f"cannot write {out}: {e.strerror or e}") from None
    return out


def _with_metadata(graph: bytes, metadata: dict[str, str]) -> bytes:
    import onnx

    proto = onnx.load_from_string(graph)
    onnx.helper.set_model_props(proto, metadata)
    proto.doc_string = "digitrec digit classifier"
    return proto.SerializeToString()


class OnnxBackend:
    """An ONNX graph (a path or its bytes) as a Logits callable, run by onnxruntime.

    One session; onnxruntime lets several threads run it at once, as the web server does.

    >>> OnnxBackend("runs/fast/model.onnx", threads=1)(np.zeros((1, 1, 28, 28), np.float32)).shape
    (1, 10)
    """

    def __init__(self, graph: str | os.PathLike | bytes, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(graph if isinstance(graph, bytes) else str(graph), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for unreadable graphs
            raise UsageError(f"{graph if not isinstance(graph, bytes) else 'ONNX graph'}: not a usable ONNX model "
                             f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        self.metadata = self.session.get_modelmeta().custom_metadata_map
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: np.ascontiguousarray(x, np.float32)})[0]


def onnx_is_current(run_dir: Path, backend: OnnxBackend) -> bool:
    """Whether the ONNX graph was exported from the weights now in the run directory."""
    weights = run_dir / WEIGHTS
    return weights.is_file() and backend.metadata.get(WEIGHTS_SHA) == file_sha256(weights)


def load_logits(run_dir: str | os.PathLike | None = None, backend: str = "auto",
                threads: int | None = None) -> tuple[Logits, dict]:
    """A run's model as a Logits callable, with its model.json; None is the bundled model.

    backend "onnx" runs model.onnx beside model.json with onnxruntime (no torch imported); "torch"
    loads the safetensors weights; "auto" takes the ONNX file when it was exported from the current
    weights, else torch. `threads` caps the runtime's threads (None: its default).

    >>> logits, meta = load_logits(None, "onnx", threads=1)
    """
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    where = resolve_model(run_dir)
    if backend != "torch" and (where / ONNX).is_file() and (where / META).is_file():
        onnx_model = OnnxBackend(where / ONNX, threads)
        if backend == "onnx" or onnx_is_current(where, onnx_model):
            return onnx_model, read_meta(where / META)
    if backend == "onnx":
        raise UsageError(f"{where}: no {ONNX} with a {META} beside it; make one with: digitrec export {where}")
    return _torch_logits(where, threads)


def _torch_logits(run_dir, threads: int | None) -> tuple[Logits, dict]:
    import torch

    from digitrec.checkpoint import load_checkpoint
    from digitrec.recognize import TorchBackend

    if threads:
        torch.set_num_threads(threads)
    model, meta = load_checkpoint(run_dir)
    return TorchBackend(model), meta
