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


def test_models_says_what_the_bundled_model_is_and_was_trained_on():
    r = subprocess.run([sys.executable, "-m", "digitrec.cli", "models"], capture_output=True, text=True)
    bundled = r.stdout[r.stdout.index("\nbundled "):]
    assert "4 models (accurate, accurate, deep, deep)" in bundled and "MNIST test 99.70%" in bundled
    assert "UCI optdigits (20 of its 30 writers)" in bundled and "--extra optdigits --styles" in bundled


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


@pytest.fixture
def tiny_run(tiny_mnist, tmp_path):
    from digitrec.train import TrainConfig, run

    cfg = TrainConfig.for_model("fast", epochs=1, batch_size=32, val_split=60, threads=1, data_dir=str(tiny_mnist))
    run(cfg, tmp_path / "run", log=lambda s: None)
    return tmp_path / "run"


def _digitrec(*args, **popen):
    return subprocess.Popen([sys.executable, "-m", "digitrec.cli", *map(str, args)], stderr=subprocess.PIPE, **popen)


def test_a_closed_pipe_ends_the_command_quietly(tiny_run, tiny_mnist):
    # As in `digitrec evaluate --json | head -c 10`, with the reader gone before anything is written.
    p = _digitrec("evaluate", tiny_run, "--json", "--data-dir", tiny_mnist, stdout=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(60) == 141 and err == ""


def test_output_to_a_full_disk_is_one_line(tiny_run, tiny_mnist):
    with open("/dev/full", "w") as full:
        p = _digitrec("evaluate", tiny_run, "--data-dir", tiny_mnist, stdout=full)
        err = p.stderr.read().decode()
    assert_one_line_error(p.wait(60), err, "No space left on device")


@pytest.mark.parametrize("args, words", [
    (["--val-split", "299"], ["--val-split 299", "leaves 1 training images", "at least 2"]),
    (["--lr", "1e308"], ["--lr", "up to 10"]),
    (["--threads", "100000"], ["--threads 100000", "CPU cores"]),
])
def test_training_options_out_of_range_are_one_line(tiny_mnist, tmp_path, capsys, args, words):
    status, _, err = digitrec_cli("train", "--model", "fast", "--dry-run", "--data-dir", tiny_mnist,
                                  "--out", tmp_path / "run", *args, capsys=capsys)
    assert_one_line_error(status, err, *words)
    assert not (tmp_path / "run").exists()


def test_serve_with_an_invalid_host_name_is_one_line(capsys):
    status, _, err = digitrec_cli("serve", "--host", "not..valid", "--port", "0", capsys=capsys)
    assert_one_line_error(status, err, "--host not..valid")


def test_export_elsewhere_says_where_the_commands_look(tiny_run, tmp_path, capsys):
    status, text, _ = digitrec_cli("export", tiny_run, "--out", tmp_path / "fast.onnx", capsys=capsys)
    assert status == 0 and (tmp_path / "fast.onnx").is_file() and not (tiny_run / "model.onnx").exists()
    assert "beside model.json" not in text and str(tiny_run / "model.onnx") in text and "onnxruntime" in text
    status, text, _ = digitrec_cli("export", tiny_run, capsys=capsys)
    assert status == 0 and f"predict --model {tiny_run}" in text


def test_evaluate_names_the_model_first_and_shows_progress(tiny_run, tiny_mnist, capsys):
    from digitrec.checkpoint import load_checkpoint
    from digitrec.evaluate import evaluate_model
    from digitrec.data import load_mnist

    status, text, _ = digitrec_cli("evaluate", tiny_run, "--data-dir", tiny_mnist, capsys=capsys)
    first = text.splitlines()[0]
    assert status == 0 and first.startswith(f"model {tiny_run}") and "after temperature scaling" in first
    model, _ = load_checkpoint(tiny_run)
    mnist = load_mnist(tiny_mnist)
    evaluate_model(model, mnist.test_images, mnist.test_labels, progress=True)
    assert "evaluating" in capsys.readouterr().err


def test_an_interrupted_first_epoch_does_not_promise_a_resume(tiny_mnist, tmp_path, capsys, monkeypatch):
    from digitrec import train

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "load_mnist", interrupted)
    status, _, err = digitrec_cli("train", *TINY, "--data-dir", tiny_mnist, "--out", tmp_path / "run", capsys=capsys)
    assert status == 130 and "--resume" not in err and "nothing was kept" in err
    assert not (tmp_path / "run").exists()


def test_a_missing_test_program_is_named_with_its_package():
    from conftest import need

    with pytest.raises(pytest.fail.Exception) as e:
        need("Xvfb-not-installed-here", "xvfb")
    assert "Xvfb-not-installed-here" in str(e.value) and "apt-get install xvfb" in str(e.value)


def test_the_readme_lists_every_model_for_train():
    from conftest import REPO
    from digitrec.models import list_models

    row = next(line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("| `--model NAME`"))
    assert all(f"`{name}`" in row for name in list_models()), row


def test_predict_into_a_closed_pipe_ends_quietly():
    from conftest import REPO

    p = _digitrec("predict", "--json", REPO / "docs" / "photo.jpg", REPO / "docs" / "photo.jpg", stdout=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(60) == 141 and err == ""
