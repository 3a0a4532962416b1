import csv
import json

import pytest
import torch
from safetensors.torch import load_file

from digitrec.errors import UsageError
from digitrec.train import TrainConfig, lr_at, run


def tiny_config(data_dir, **kw):
    kw = {"epochs": 2, "batch_size": 32, "val_split": 60, "threads": 1, "data_dir": str(data_dir), **kw}
    return TrainConfig.for_model("fast", **kw)


def test_training_writes_a_complete_run(tiny_mnist, tmp_path):
    out = tmp_path / "run"
    summary = run(tiny_config(tiny_mnist, epochs=3), out, log=lambda s: None)
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "model.json", "history.csv", "metrics.json"}
    meta = json.loads((out / "model.json").read_text())
    assert meta["architecture"] == "fast" and meta["epoch"] == 3 and meta["config"]["epochs"] == 3
    assert len(meta["train_sha256"]) == 64 and meta["digitrec_version"]
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert set(rows[0]) == {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_n"] == 100 and metrics["test_accuracy"] == summary["test_accuracy"]
    # The tiny digits are easy: three short epochs learn them.
    assert summary["test_accuracy"] > 0.9


def test_interrupted_run_resumes_to_the_same_weights(tiny_mnist, tmp_path):
    cfg = tiny_config(tiny_mnist, epochs=3, augment=True)
    run(cfg, tmp_path / "straight", log=lambda s: None)

    def interrupt_after_first_epoch(line):
        if line.startswith("epoch 1/3"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path / "resumed", log=interrupt_after_first_epoch)
    assert json.loads((tmp_path / "resumed" / "model.json").read_text())["epoch"] == 1
    assert not (tmp_path / "resumed" / "metrics.json").exists()
    lines = []
    run(TrainConfig(), tmp_path / "resumed", resume=True, log=lines.append)
    assert "resuming" in lines[0] and "after epoch 1 of 3" in lines[0]

    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    hist = list(csv.DictReader(open(tmp_path / "resumed" / "history.csv")))
    assert [r["epoch"] for r in hist] == ["1", "2", "3"]


def test_a_run_is_never_overwritten_by_accident(tiny_mnist, tmp_path):
    out = tmp_path / "run"
    run(tiny_config(tiny_mnist, epochs=1), out, log=lambda s: None)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(UsageError, match="already holds a run"):
        run(tiny_config(tiny_mnist, epochs=1, seed=5), out, log=lambda s: None)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    run(tiny_config(tiny_mnist, epochs=1, seed=5), out, overwrite=True, log=lambda s: None)
    assert (out / "model.safetensors").read_bytes() != before["model.safetensors"]


def test_resume_checks_the_checkpoint_belongs_together(tiny_mnist, tmp_path):
    out = tmp_path / "run"
    run(tiny_config(tiny_mnist, epochs=1), out, log=lambda s: None)
    meta = json.loads((out / "model.json").read_text())
    meta["epoch"] = 0
    (out / "model.json").write_text(json.dumps(meta))
    with pytest.raises(UsageError, match="killed while saving"):
        run(TrainConfig(), out, resume=True, log=lambda s: None)


def test_one_cycle_warms_up_then_decays():
    cfg = TrainConfig(lr=1.0)
    lrs = [lr_at(cfg, p / 100) for p in range(100)]
    peak = lrs.index(max(lrs))
    assert 10 <= peak <= 20 and lrs[0] < 0.1 and lrs[-1] < 0.01
    assert lr_at(TrainConfig(lr=0.5, schedule="constant"), 0.7) == 0.5


def test_two_trainings_never_write_one_folder(tiny_mnist, tmp_path):
    import fcntl

    out = tmp_path / "run"
    run(tiny_config(tiny_mnist, epochs=1), out, log=lambda s: None)
    with open(out / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UsageError, match="another digitrec train"):
            run(TrainConfig(), out, resume=True, log=lambda s: None)


def test_a_last_batch_of_one_image_does_not_stop_training(tiny_mnist, tmp_path):
    # 300 - 43 = 257 training images = 8 batches of 32 and one image, which batch norm cannot
    # normalise where a model's last conv leaves one value per channel (strided).
    cfg = TrainConfig.for_model("strided", epochs=1, batch_size=32, val_split=43, threads=1, data_dir=str(tiny_mnist))
    summary = run(cfg, tmp_path / "run", log=lambda s: None)
    assert summary["epochs"] == 1 and (tmp_path / "run" / "model.safetensors").is_file()
