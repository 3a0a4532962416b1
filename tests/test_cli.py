"""The `digitrec` command: what a user types and what they see, good input and bad."""

import json
import subprocess
import sys

import numpy as np
import pytest

from digitrec.data import write_idx
from conftest import assert_one_line_error, digitrec_cli


TINY = ["--model", "fast", "--batch-size", "32", "--val-split", "60", "--threads", "1"]


def test_train_then_evaluate(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "run"
    status, text, _ = digitrec_cli("train", *TINY, "--epochs", "2", "--data-dir", tiny_mnist, "--out", out, capsys=capsys)
    assert status == 0
    assert "epoch 1/2" in text and "epoch 2/2" in text and "test accuracy" in text
    status, text, _ = digitrec_cli("evaluate", out, "--data-dir", tiny_mnist, capsys=capsys)
    assert status == 0
    assert "test accuracy" in text and "confusion matrix" in text and "precision" in text
    status, text, _ = digitrec_cli("evaluate", out, "--data-dir", tiny_mnist, "--json", capsys=capsys)
    m = json.loads(text)
    assert {"accuracy", "loss", "n", "per_class", "confusion_matrix"} <= set(m)
    assert m["n"] == 100 and sum(map(sum, m["confusion_matrix"])) == 100
    assert set(m["per_class"]) == {str(d) for d in range(10)}


@pytest.mark.parametrize("args, words", [
    (["--model", "resnet"], ["unknown model 'resnet'", "fast"]),
    (["--epochs", "0"], ["--epochs", "at least 1"]),
    (["--epochs", "-3"], ["--epochs"]),
    (["--batch-size", "1"], ["--batch-size", "at least 2"]),
    (["--lr", "abc"], ["--lr", "not a number"]),
    (["--val-split", "-1"], ["--val-split"]),
    (["--bogus"], ["unrecognized arguments: --bogus"]),
])
def test_bad_training_options(tiny_mnist, tmp_path, capsys, args, words):
    status, _, err = digitrec_cli("train", "--data-dir", tiny_mnist, "--out", tmp_path / "r", *args, capsys=capsys)
    assert_one_line_error(status, err, *words)
    assert not (tmp_path / "r").exists()


def test_missing_data_dir(tmp_path, capsys):
    status, _, err = digitrec_cli("train", *TINY, "--data-dir", tmp_path / "nope", "--out", tmp_path / "r", capsys=capsys)
    assert_one_line_error(status, err, "does not exist", "nope")


def test_corrupt_and_mismatched_data(tiny_mnist, tmp_path, capsys):
    images = tiny_mnist / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:100])
    status, _, err = digitrec_cli("train", *TINY, "--data-dir", tiny_mnist, "--out", tmp_path / "r1", capsys=capsys)
    assert_one_line_error(status, err, "train-images-idx3-ubyte.gz")
    write_idx(images, np.zeros((300, 28, 28), np.uint8))
    write_idx(tiny_mnist / "train-labels-idx1-ubyte.gz", np.zeros(10, np.uint8))
    status, _, err = digitrec_cli("train", *TINY, "--data-dir", tiny_mnist, "--out", tmp_path / "r2", capsys=capsys)
    assert_one_line_error(status, err, "10 labels for 300 images")


def test_unwritable_output_dir(tiny_mnist, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    status, _, err = digitrec_cli("train", *TINY, "--data-dir", tiny_mnist, "--out", blocker / "run", capsys=capsys)
    assert_one_line_error(status, err, "cannot write the run into")
    assert blocker.read_text() == "not a folder"


def test_resume_without_checkpoint(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    status, _, err = digitrec_cli("train", "--resume", tmp_path / "empty", capsys=capsys)
    assert_one_line_error(status, err, "no checkpoint")
    status, _, err = digitrec_cli("train", "--resume", tmp_path / "missing", capsys=capsys)
    assert_one_line_error(status, err, "not a directory")


def test_existing_run_is_refused_and_kept(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "run"
    assert digitrec_cli("train", *TINY, "--epochs", "1", "--data-dir", tiny_mnist, "--out", out, capsys=capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    status, _, err = digitrec_cli("train", *TINY, "--epochs", "1", "--data-dir", tiny_mnist, "--out", out, capsys=capsys)
    assert_one_line_error(status, err, "already holds a run", "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_evaluate_bad_checkpoints(tiny_mnist, tmp_path, capsys):
    status, _, err = digitrec_cli("evaluate", tmp_path / "nope", capsys=capsys)
    assert_one_line_error(status, err, "no such run directory")
    out = tmp_path / "run"
    assert digitrec_cli("train", *TINY, "--epochs", "1", "--data-dir", tiny_mnist, "--out", out, capsys=capsys)[0] == 0
    (out / "model.safetensors").write_bytes(b"garbage")
    status, _, err = digitrec_cli("evaluate", out, "--data-dir", tiny_mnist, capsys=capsys)
    assert_one_line_error(status, err, "model.safetensors", "not a valid safetensors file")
    (out / "model.json").write_text("{truncated")
    status, _, err = digitrec_cli("evaluate", out, "--data-dir", tiny_mnist, capsys=capsys)
    assert_one_line_error(status, err, "model.json", "not a readable JSON")


def test_the_installed_command_reports_errors_without_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "digitrec.cli", "train", "--epochs", "0"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--epochs" in r.stderr
    r = subprocess.run([sys.executable, "-m", "digitrec.cli", "models"], capture_output=True, text=True)
    assert r.returncode == 0 and "accurate" in r.stdout and "baseline" in r.stdout


def test_a_stopped_training_keeps_its_last_epoch_and_resumes(tiny_mnist, tmp_path):
    import signal

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "digitrec.cli", "train", *TINY, "--epochs", "60", "--data-dir", str(tiny_mnist)]
    proc = subprocess.Popen([*cmd, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("epoch 2/60"):
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "Traceback" not in err
    assert f"digitrec train --resume {out}" in err
    kept = json.loads((out / "model.json").read_text())["epoch"]
    assert 2 <= kept < 60 and not (out / "metrics.json").exists()
    r = subprocess.run([sys.executable, "-m", "digitrec.cli", "train", "--resume", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"after epoch {kept} of 60" in r.stdout
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 60
