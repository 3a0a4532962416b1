"""End to end on the real MNIST files: what a user gets from the README's commands."""

import json
import re
import subprocess
import sys
from pathlib import Path

import digitrec
from digitrec.checkpoint import BUNDLED_DIR, read_json
from digitrec.cli import main
from digitrec.data import load_mnist


def test_dry_run_train_then_evaluate_on_real_mnist(real_mnist, tmp_path, capsys):
    out = tmp_path / "dry"
    assert main(["train", "--model", "accurate", "--dry-run", "--data-dir", str(real_mnist), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "55000 training and 5000 validation images" in text and "dry run" in text
    assert main(["evaluate", str(out), "--json", "--data-dir", str(real_mnist)]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["n"] == 10000 and sum(map(sum, m["confusion_matrix"])) == 10000


def test_one_epoch_of_the_fast_model_reads_mnist(real_mnist, tmp_path):
    """The README's promise: `digitrec train --model fast --epochs 1` is already a good reader."""
    out = tmp_path / "fast"
    r = subprocess.run([sys.executable, "-m", "digitrec.cli", "train", "--model", "fast", "--epochs", "1",
                        "--data-dir", str(real_mnist), "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_n"] == 10000 and metrics["test_accuracy"] >= 0.985
    assert "test accuracy" in r.stdout


def test_the_bundled_model_scores_what_its_model_card_says(real_mnist):
    """The README's model card and model.json quote the bundled model's test accuracy: it must hold."""
    mnist = load_mnist(real_mnist, download=False)
    probs = digitrec.load().classify(mnist.test_images)  # the backend predict uses
    accuracy = float((probs.argmax(1) == mnist.test_labels).mean())
    recorded = read_json(BUNDLED_DIR / "model.json", "bundled model")["metrics"]["test_accuracy"]
    assert abs(accuracy - recorded) <= 0.0002  # ONNX and torch may differ on a digit or two
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    card = re.search(r"ensemble \*\*(\d+\.\d+)%\*\*", readme)
    assert card, "the model card's ensemble accuracy is missing from the README"
    assert f"{accuracy:.2%}" == card.group(1) + "%"


def test_the_bundled_model_reads_other_writers_as_its_model_card_says():
    """The model card quotes how many optdigits pictures by the writers it never trained on (the file's
    last third: 30 writers outside MNIST's, 20 of them trained on) the whole reader reads right."""
    from digitrec import optdigits

    folder = Path(__file__).resolve().parents[1].parent / "shared" / "realdigits" / "optdigits"
    labels = json.loads((folder / "labels.json").read_text())
    kept_out = {name: truth for name, truth in labels.items() if int(Path(name).stem) >= optdigits.FIRST_HELD_OUT}
    rec = digitrec.load("bundled")
    right = sum(rec.read(folder / name).text == truth for name, truth in kept_out.items())
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    card = re.search(r"optdigits writers never trained on\s+\*\*(\d+\.\d+)%\*\* \((\d+) of (\d+)\)", readme)
    assert card, "the model card's optdigits accuracy is missing from the README"
    assert (right, len(kept_out)) == (int(card.group(2)), int(card.group(3)))
    assert f"{right / len(kept_out):.2%}" == card.group(1) + "%"
    assert right / len(kept_out) >= 0.99  # the target for other writers' digits
