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
    with pytest.raises(KeyboardInterrupt):
        run(tiny_config(tiny_mnist, epochs=2), out, log=stop_after_epoch(1))
    folder = out / "resume" / "epoch-1"
    meta = json.loads((folder / "model.json").read_text())
    meta["epoch"] = 0
    (folder / "model.json").write_text(json.dumps(meta))  # the manifest no longer vouches for it
    with pytest.raises(UsageError, match="no complete epoch"):
        run(TrainConfig(), out, resume=True, log=lambda s: None)


def stop_at(start):
    """A log that stops the training (as Ctrl-C does) at the first line beginning with `start`."""
    def log(line):
        if line.startswith(start):
            raise KeyboardInterrupt
    return log


def stop_after_epoch(n):
    return stop_at(f"epoch {n}/")


def same_weights(a, b):
    a, b = load_file(a), load_file(b)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_kill_while_an_epoch_is_saved_resumes_from_the_last_complete_one(tiny_mnist, tmp_path):
    cfg = tiny_config(tiny_mnist, epochs=3)
    run(cfg, tmp_path / "straight", log=lambda s: None)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        run(cfg, out, log=stop_after_epoch(2))
    # What a kill halfway through saving epoch 3 leaves: a half-written epoch folder, the weights
    # beside model.json already replaced by newer ones, and a temp file.
    partial = out / "resume" / ".epoch-3.partial"
    partial.mkdir()
    (partial / "train_state.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path / "ahead", log=stop_after_epoch(3))
    (out / "model.safetensors").write_bytes((tmp_path / "ahead" / "model.safetensors").read_bytes())
    (out / ".history.csv.k2j4.tmp").write_bytes(b"epoch,tr")

    lines = []
    run(TrainConfig(), out, resume=True, log=lines.append)
    assert "after epoch 2 of 3" in lines[0]
    assert same_weights(tmp_path / "straight" / "model.safetensors", out / "model.safetensors")
    assert sorted(p.name for p in out.iterdir()) == ["history.csv", "metrics.json", "model.json", "model.safetensors"]


def test_a_resume_repairs_the_copies_beside_model_json(tiny_mnist, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run(tiny_config(tiny_mnist, epochs=3), out, log=stop_after_epoch(2))
    committed = (out / "resume" / "epoch-2" / "model.safetensors").read_bytes()
    (out / "model.safetensors").write_bytes(b"killed before the copy")
    with pytest.raises(KeyboardInterrupt):
        run(TrainConfig(), out, resume=True, log=stop_at("resuming"))
    assert (out / "model.safetensors").read_bytes() == committed


def test_sigterm_waits_until_the_epoch_is_saved(monkeypatch):
    import os
    import signal

    from digitrec.train import interrupts_deferred

    got = []
    previous = signal.signal(signal.SIGTERM, lambda *a: got.append("TERM"))
    try:
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            held = list(got)
        assert held == [] and got == ["TERM"]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_full_disk_keeps_the_last_epoch_and_says_so(tiny_mnist, tmp_path, monkeypatch):
    import errno
    import os

    out = tmp_path / "run"
    real_fsync, calls = os.fsync, []

    def full_from_epoch_2(fd):
        if any(line.startswith("epoch 1/") for line in calls):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_from_epoch_2)
    with pytest.raises(UsageError) as e:
        run(tiny_config(tiny_mnist, epochs=3), out, log=calls.append)
    assert "cannot save epoch 2" in str(e.value) and "No space left on device" in str(e.value)
    assert "epoch 1 is kept" in str(e.value)
    monkeypatch.setattr(os, "fsync", real_fsync)
    lines = []
    run(TrainConfig(), out, resume=True, log=lines.append)
    assert "after epoch 1 of 3" in lines[0]


def test_a_finished_run_holds_only_what_the_user_asked_for(tiny_mnist, tmp_path):
    out = tmp_path / "run"
    run(tiny_config(tiny_mnist, epochs=2), out, log=lambda s: None)
    assert sorted(p.name for p in out.iterdir()) == ["history.csv", "metrics.json", "model.json", "model.safetensors"]
    with pytest.raises(UsageError, match="is finished"):
        run(TrainConfig(), out, resume=True, log=lambda s: None)


def test_a_first_training_that_fails_leaves_no_folder(tmp_path):
    out = tmp_path / "runs" / "first"
    with pytest.raises(UsageError, match="does not exist"):
        run(tiny_config(tmp_path / "no-data", epochs=1), out, log=lambda s: None)
    assert not (tmp_path / "runs").exists()


def test_a_refused_overwrite_leaves_the_running_training_alone(tiny_mnist, tmp_path):
    import fcntl
    import os

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run(tiny_config(tiny_mnist, epochs=3), out, log=stop_after_epoch(1))
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    held = os.open(out, os.O_RDONLY)  # as a training still running there holds it
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UsageError, match="another digitrec train"):
            run(tiny_config(tiny_mnist, epochs=1, seed=5), out, overwrite=True, log=lambda s: None)
    finally:
        os.close(held)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_one_cycle_warms_up_then_decays():
    cfg = TrainConfig(lr=1.0)
    lrs = [lr_at(cfg, p / 100) for p in range(100)]
    peak = lrs.index(max(lrs))
    assert 10 <= peak <= 20 and lrs[0] < 0.1 and lrs[-1] < 0.01
    assert lr_at(TrainConfig(lr=0.5, schedule="constant"), 0.7) == 0.5


def test_two_trainings_never_write_one_folder(tiny_mnist, tmp_path):
    import fcntl
    import os

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run(tiny_config(tiny_mnist, epochs=2), out, log=stop_after_epoch(1))
    held = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UsageError, match="another digitrec train"):
            run(TrainConfig(), out, resume=True, log=lambda s: None)
    finally:
        os.close(held)


def test_a_last_batch_of_one_image_does_not_stop_training(tiny_mnist, tmp_path):
    # 300 - 43 = 257 training images = 8 batches of 32 and one image, which batch norm cannot
    # normalise where a model's last conv leaves one value per channel (strided).
    cfg = TrainConfig.for_model("strided", epochs=1, batch_size=32, val_split=43, threads=1, data_dir=str(tiny_mnist))
    summary = run(cfg, tmp_path / "run", log=lambda s: None)
    assert summary["epochs"] == 1 and (tmp_path / "run" / "model.safetensors").is_file()


def test_the_first_lines_say_what_was_resolved_and_what_the_losses_measure(tiny_mnist, tmp_path):
    lines = []
    run(tiny_config(tiny_mnist, epochs=1), tmp_path / "run", log=lines.append)
    config = lines[0]
    assert config.startswith("config: ") and "=None" not in config
    assert "threads=1" in config and f"data_dir={tiny_mnist}" in config and ("bf16=True" in config or "bf16=False" in config)
    losses = next(line for line in lines if line.startswith("losses:"))
    assert "label smoothing" in losses and "temperature scaling" in losses


def test_a_busy_machine_is_pointed_out(monkeypatch):
    import os

    from digitrec import train

    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 3.0, 3.0))
    monkeypatch.setattr(train.torch, "get_num_threads", lambda: 8)
    lines = train.run_header(TrainConfig.for_model("fast"), train.torch.device("cpu"), "fp32")
    note = next(line for line in lines if line.startswith("note:"))
    assert "busy" in note and "load average 3.0" in note and "--threads 1" in note
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    assert not any(line.startswith("note:") for line in train.run_header(TrainConfig.for_model("fast"), train.torch.device("cpu"), "fp32"))


# ------------------------------------------------------------------ writing styles, and starting from a trained run

def test_styles_restyle_the_training_digits_and_are_recorded(tiny_mnist, tmp_path, monkeypatch):
    from digitrec import train

    seen = []

    def restyle(x, labels, g):
        seen.append(labels.clone())
        return x

    monkeypatch.setattr(train, "restyle", restyle)
    lines = []
    run(tiny_config(tiny_mnist, epochs=1, augment=True, styles=True, dry_run=True), tmp_path / "styled", log=lines.append)
    assert seen and all(len(labels) == 32 for labels in seen)  # every training batch, before it is distorted
    assert json.loads((tmp_path / "styled" / "model.json").read_text())["config"]["styles"] is True
    assert "styles=True" in lines[0] and "1s with an up-stroke" in next(l for l in lines if l.startswith("losses:"))
    seen.clear()
    run(tiny_config(tiny_mnist, epochs=1, augment=True, dry_run=True), tmp_path / "plain", log=lambda s: None)
    assert not seen
    with pytest.raises(UsageError, match="--no-augment"):
        tiny_config(tiny_mnist, styles=True, augment=False)


STILL = {"lr": 1e-9, "schedule": "constant", "weight_decay": 0.0}  # training that leaves the weights where they start


def close_to(weights, source, prefix=""):
    """True when every weight (not batch-norm statistics, which training updates) is the source's."""
    return all(torch.allclose(v, source[prefix + k], atol=1e-5) for k, v in weights.items()
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))


def test_init_starts_from_the_trained_weights(tiny_mnist, tmp_path):
    source = tmp_path / "source"
    trained = run(tiny_config(tiny_mnist, epochs=3), source, log=lambda s: None)
    lines = []
    started = run(tiny_config(tiny_mnist, epochs=1, init=str(source), **STILL), tmp_path / "tuned", log=lines.append)
    assert close_to(load_file(tmp_path / "tuned" / "model.safetensors"), load_file(source / "model.safetensors"))
    assert started["val_accuracy"] >= trained["val_accuracy"] - 0.05
    fresh = run(tiny_config(tiny_mnist, epochs=1, **STILL), tmp_path / "fresh", log=lambda s: None)
    assert fresh["val_accuracy"] < 0.5 < trained["val_accuracy"]
    meta = json.loads((tmp_path / "tuned" / "model.json").read_text())
    assert meta["config"]["init"] == str(source.resolve()) and meta["config"]["init_member"] is None
    assert f"starting from the weights of {source.resolve()}" in next(l for l in lines if l.startswith("losses:"))


def tiny_ensemble(tiny_mnist, tmp_path):
    from digitrec.checkpoint import combine_checkpoints

    runs = [tmp_path / f"s{seed}" for seed in (1, 2)]
    for seed, out in zip((1, 2), runs):
        run(tiny_config(tiny_mnist, epochs=1, seed=seed), out, log=lambda s: None)
    combine_checkpoints(runs, tmp_path / "ens")
    return tmp_path / "ens", runs


def test_member_picks_that_model_of_an_ensemble(tiny_mnist, tmp_path):
    ens, (first, second) = tiny_ensemble(tiny_mnist, tmp_path)
    run(tiny_config(tiny_mnist, epochs=1, init=str(ens), init_member=1, **STILL), tmp_path / "m1", log=lambda s: None)
    tuned = load_file(tmp_path / "m1" / "model.safetensors")
    assert close_to(tuned, load_file(second / "model.safetensors"))
    assert not close_to(tuned, load_file(first / "model.safetensors"))
    assert close_to(tuned, load_file(ens / "model.safetensors"), prefix="members.1.")
    assert json.loads((tmp_path / "m1" / "model.json").read_text())["config"]["init_member"] == 1


def test_a_run_started_from_another_resumes_to_the_same_weights(tiny_mnist, tmp_path):
    source = tmp_path / "source"
    run(tiny_config(tiny_mnist, epochs=2), source, log=lambda s: None)
    cfg = tiny_config(tiny_mnist, epochs=3, init=str(source), lr=1e-3, augment=True, styles=True)
    run(cfg, tmp_path / "straight", log=lambda s: None)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path / "resumed", log=stop_after_epoch(1))
    import shutil

    shutil.rmtree(source)  # the resumed run continues from its own checkpoint
    run(TrainConfig(), tmp_path / "resumed", resume=True, log=lambda s: None)
    assert same_weights(tmp_path / "straight" / "model.safetensors", tmp_path / "resumed" / "model.safetensors")


def test_a_wrong_init_is_one_line_and_makes_no_folder(tiny_mnist, tmp_path, capsys):
    from digitrec.cli import main

    ens, (first, _) = tiny_ensemble(tiny_mnist, tmp_path)
    out = tmp_path / "never"
    common = ["train", "--dry-run", "--threads", "1", "--val-split", "60", "--batch-size", "32", "--no-report",
              "--data-dir", str(tiny_mnist), "--out", str(out)]
    cases = [
        (["--init", str(tmp_path / "missing")], "missing: no such run directory"),
        (["--init", str(ens)], "an ensemble of 2 models; pick one with --member N, 0 to 1"),
        (["--init", str(ens), "--member", "2"], "0 to 1, not 2"),
        (["--init", str(ens), "--member", "-1"], "0 to 1, not -1"),
        (["--init", str(first), "--member", "0"], "one model, not an ensemble; leave out --member"),
        (["--init", str(first), "--model", "strided"], "is 'fast', not 'strided'; leave out --model or give --model fast"),
        (["--member", "0"], "--member picks a model of --init"),
    ]
    for extra, message in cases:
        assert main(common + extra) == 2, extra
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (extra, err)
        assert not out.exists()
    assert main(common + ["--init", str(ens), "--member", "1"]) == 0  # --model: the member's own, fast
    assert json.loads((out / "model.json").read_text())["architecture"] == "fast"
