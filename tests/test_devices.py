"""Choosing the device and precision: what `--device` and `auto` pick, and a clear error where it is missing."""

import hashlib
import json

import pytest
import torch

from digitrec.errors import UsageError
from digitrec.models import create_model
from digitrec.optim import AdamW
from digitrec.train import TrainConfig, make_optimizer, resolve_device, resolve_precision, run
from conftest import assert_one_line_error, digitrec_cli


@pytest.fixture
def two_gpus(monkeypatch):
    """Pretend torch sees two CUDA GPUs without bf16 (nothing is run on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)


@pytest.fixture
def no_accelerator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_auto_takes_cuda_then_mps_then_the_cpu(two_gpus, monkeypatch):
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)  # one GPU per process
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_a_gpu_that_is_not_there(two_gpus):
    with pytest.raises(UsageError, match="2 CUDA GPU"):
        resolve_device("cuda:2")
    with pytest.raises(UsageError, match="auto, cpu, cuda, cuda:N or mps"):
        resolve_device("gpu")


def test_precision_per_device(two_gpus, monkeypatch):
    assert resolve_precision(torch.device("cuda", 0), None) == "fp16"  # older GPU: fp16 with a gradient scaler
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision(torch.device("cuda", 0), None) == "bf16"
    assert resolve_precision(torch.device("cuda", 0), False) == "fp32"
    assert resolve_precision(torch.device("mps"), None) == "fp32"
    assert resolve_precision(torch.device("cpu"), True) == "bf16"


def test_cuda_trains_with_torchs_fused_optimiser_the_cpu_with_ours():
    model = create_model("fast")
    cfg = TrainConfig.for_model("fast")
    assert isinstance(make_optimizer(model, cfg, torch.device("cpu")), AdamW)
    fused = make_optimizer(model, cfg, torch.device("cuda", 0))  # built on CPU parameters: no GPU needed
    assert isinstance(fused, torch.optim.AdamW) and fused.defaults["fused"]


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_device_cuda_without_cuda(command, no_accelerator, tiny_mnist, tmp_path, capsys):
    extra = ["--dry-run", "--out", tmp_path / "run", "--data-dir", tiny_mnist] if command == "train" else []
    status, _, err = digitrec_cli(command, "--device", "cuda", *extra, capsys=capsys)
    assert_one_line_error(status, err, "--device cuda", "CUDA is not available")
    assert not (tmp_path / "run").exists()


def test_a_run_records_where_it_was_trained(tiny_mnist, tmp_path):
    cfg = TrainConfig.for_model("fast", epochs=1, batch_size=32, val_split=60, threads=1, device="cpu",
                                bf16=False, data_dir=str(tiny_mnist))
    summary = run(cfg, tmp_path / "run", log=lambda s: None)
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert (meta["device"], meta["precision"], meta["world_size"]) == ("cpu", "fp32", 1)
    assert meta["config"]["device"] == "cpu" and summary["device"] == "cpu"


def test_resume_on_another_device(tiny_mnist, tmp_path, no_accelerator):
    # A run started on a GPU machine (its config says cuda) continues here with --device cpu.
    out = tmp_path / "run"
    cfg = TrainConfig.for_model("fast", epochs=2, batch_size=32, val_split=60, threads=1, data_dir=str(tiny_mnist))

    def stop_after_first_epoch(line):
        if line.startswith("epoch 1/2"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg, out, log=stop_after_first_epoch)
    # What a GPU machine would have saved: the epoch's model.json says cuda, and its manifest vouches for it.
    (epoch,) = (out / "resume").glob("epoch-*")
    meta = json.loads((epoch / "model.json").read_text())
    meta["config"]["device"] = "cuda"
    (epoch / "model.json").write_text(json.dumps(meta))
    manifest = json.loads((epoch / "manifest.json").read_text())
    manifest["files"]["model.json"] = hashlib.sha256((epoch / "model.json").read_bytes()).hexdigest()
    (epoch / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UsageError, match="CUDA is not available"):
        run(TrainConfig(), out, resume=True, log=lambda s: None)
    assert run(TrainConfig(device="cpu"), out, resume=True, log=lambda s: None)["device"] == "cpu"
