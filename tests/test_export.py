"""ONNX export and the onnxruntime backend: same answers as torch, chosen when up to date, no torch needed."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import digitrec
from digitrec.checkpoint import BUNDLED_DIR, WEIGHTS, load_checkpoint, save_checkpoint
from digitrec.cli import main
from digitrec.data import load_mnist
from digitrec.errors import UsageError
from digitrec.export import ONNX, OnnxBackend, load_logits, onnx_is_current
from digitrec.models import create_model
from digitrec.recognize import TorchBackend
from conftest import digitrec_cli

SRC = Path(digitrec.__file__).resolve().parents[1]


@pytest.fixture
def fast_run(tmp_path) -> Path:
    """A `fast` checkpoint with fresh weights: exports like a trained one, instantly."""
    torch.manual_seed(0)
    (tmp_path / "run").mkdir()
    save_checkpoint(tmp_path / "run", create_model("fast"), {"architecture": "fast", "epoch": 0, "temperature": 1.7})
    return tmp_path / "run"


def test_bundled_onnx_matches_torch_on_test_digits(real_mnist):
    mnist = load_mnist(real_mnist, download=False)
    x = mnist.test_images[:1000, None].astype(np.float32) / 255  # (1000, 1, 28, 28)
    model, _ = load_checkpoint(None)
    want = TorchBackend(model)(x)
    got = OnnxBackend(BUNDLED_DIR / ONNX)(x)
    assert got.shape == (1000, 10)
    assert np.abs(got - want).max() < 1e-3
    assert (got.argmax(1) == want.argmax(1)).all()


def test_bundled_onnx_was_exported_from_the_bundled_weights():
    assert onnx_is_current(BUNDLED_DIR, OnnxBackend(BUNDLED_DIR / ONNX))


def test_export_command_writes_a_graph_with_the_temperature_inside(fast_run, capsys):
    status, out, err = digitrec_cli("export", fast_run, capsys=capsys)
    assert status == 0, err
    assert str(fast_run / ONNX) in out
    x = np.random.default_rng(0).random((7, 1, 28, 28), dtype=np.float32)  # a batch size never exported
    model, _ = load_checkpoint(fast_run)
    got, want = OnnxBackend(fast_run / ONNX)(x), TorchBackend(model)(x)
    assert np.abs(got - want).max() < 1e-3
    raw = TorchBackend(model.model)(x)  # without the temperature of 1.7
    assert np.abs(got - raw / 1.7).max() < 1e-3


def test_export_to_another_file(fast_run, tmp_path, capsys):
    status, _, err = digitrec_cli("export", fast_run, "--format", "onnx", "--out", tmp_path / "out" / "m.onnx",
                                  capsys=capsys)
    assert status == 0, err
    assert (tmp_path / "out" / "m.onnx").is_file() and not (fast_run / ONNX).exists()


def test_export_refuses_bad_input_in_one_line(fast_run, tmp_path, capsys):
    status, _, err = digitrec_cli("export", fast_run, "--out", tmp_path / "m.txt", capsys=capsys)
    assert status == 2 and "end in .onnx" in err and "Traceback" not in err
    status, _, err = digitrec_cli("export", tmp_path / "nowhere", capsys=capsys)
    assert status == 2 and "no such run directory" in err


def test_auto_takes_onnx_only_while_it_matches_the_weights(fast_run):
    assert isinstance(load_logits(fast_run, "auto")[0], TorchBackend)  # nothing exported yet
    main(["export", str(fast_run)])
    logits, meta = load_logits(fast_run, "auto")
    assert isinstance(logits, OnnxBackend) and meta["architecture"] == "fast"
    save_checkpoint(fast_run, create_model("fast"), {"architecture": "fast", "epoch": 1})  # retrained
    assert isinstance(load_logits(fast_run, "auto")[0], TorchBackend)
    assert isinstance(load_logits(fast_run, "onnx")[0], OnnxBackend)  # asked for, it is used as it is


def test_onnx_backend_without_a_graph_says_how_to_make_one(fast_run, capsys):
    with pytest.raises(UsageError, match="digitrec export"):
        digitrec.load(fast_run, backend="onnx")
    (fast_run / ONNX).write_bytes(b"not a graph")
    with pytest.raises(UsageError, match="not a usable ONNX model"):
        digitrec.load(fast_run, backend="onnx")


@pytest.mark.parametrize("backend", ["auto", "onnx", "torch"])
def test_predict_reads_the_same_with_every_backend(backend, real_mnist, tmp_path, capsys):
    mnist = load_mnist(real_mnist, download=False)
    picture = np.hstack([255 - mnist.test_images[i] for i in range(4)])  # dark ink on white paper
    from PIL import Image

    Image.fromarray(picture).resize((448, 112)).save(tmp_path / "one.png")
    status, out, err = digitrec_cli("predict", "--backend", backend, tmp_path / "one.png", capsys=capsys)
    assert status == 0, err
    assert out.split(": ")[1].split()[0] == "".join(str(v) for v in mnist.test_labels[:4])


def test_reading_with_onnx_imports_no_torch(tmp_path):
    code = ("import sys; from digitrec.cli import main; import numpy as np; from PIL import Image; "
            f"Image.fromarray(np.full((60, 60), 255, np.uint8)).save({str(tmp_path / 'blank.png')!r}); "
            f"status = main(['predict', {str(tmp_path / 'blank.png')!r}]); "
            "print('torch' in sys.modules, status)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.stdout.splitlines()[-1] == "False 0", r.stdout + r.stderr
    assert "no digits found" in r.stdout


def test_weights_touched_but_unchanged_keep_their_graph(fast_run):
    main(["export", str(fast_run)])
    os.utime(fast_run / WEIGHTS)  # touched but unchanged: still the same model
    assert isinstance(load_logits(fast_run)[0], OnnxBackend)
