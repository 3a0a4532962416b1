"""The report: figures and report.html after training and on demand, and clear errors for bad input."""

import base64
import json
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from conftest import assert_one_line_error, digitrec_cli, write_mnist
from digitrec import checkpoint, home, report
from digitrec.data import load_mnist
from digitrec.train import TrainConfig, run

FIGURES = ["curves", "confusion", "samples", "mistakes", "per_class", "calibration"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A `fast` model trained for two epochs on tiny data, with no report yet."""
    data = write_mnist(tmp_path_factory.mktemp("mnist"))
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig.for_model("fast", epochs=2, batch_size=32, val_split=60, threads=1, data_dir=str(data))
    run(cfg, out, overwrite=True, log=lambda _: None)
    return out, data


class Page(HTMLParser):
    """What a browser would fetch and show: images, links, section ids, table cells."""

    def __init__(self, text):
        super().__init__()
        self.images, self.links, self.ids, self.cells, self._cell = [], [], [], [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        for key in ("href", "src"):
            if key in attrs and tag != "img":
                self.links.append(attrs[key])
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "td":
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag == "td":
            self.cells.append(self._cell)
            self._cell = None


def test_report_holds_every_figure_and_the_metrics(tiny_run, tmp_path):
    run_dir, data = tiny_run
    page_path = report.write_report(run_dir, out=tmp_path, log=lambda _: None)
    assert page_path == tmp_path / "report.html"
    text = page_path.read_text()
    page = Page(text)
    embedded = {img["alt"]: base64.b64decode(img["src"].removeprefix("data:image/png;base64,")) for img in page.images}
    assert len(embedded) == len(FIGURES)
    for name in FIGURES:
        png = (tmp_path / f"{name}.png").read_bytes()
        assert png in embedded.values(), name  # the page shows exactly the files written beside it
        with Image.open(tmp_path / f"{name}.png") as im:
            assert im.format == "PNG" and im.width >= 500 and im.height >= 100
        assert name in page.ids
    assert all(img["src"].startswith("data:image/png;base64,") for img in page.images)
    assert page.links == [] and "http" not in text  # nothing to fetch: it opens offline

    stored = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert f"{stored['accuracy']:.2%}" in page.cells
    assert f"{stored['loss']:.4f}" in page.cells
    for c in stored["per_class"].values():
        assert f"{c['f1']:.2%}" in page.cells and str(c["support"]) in page.cells
    assert "fast" in text and "batch_size" in page.cells  # the run's config


def test_figures_agree_with_the_metrics_of_the_run(tiny_run):
    run_dir, data = tiny_run
    stored = json.loads((run_dir / "metrics.json").read_text())
    model, _ = checkpoint.load_checkpoint(run_dir)
    mnist = load_mnist(data)
    probs, metrics = report.test_predictions(model, mnist.test_images, mnist.test_labels)
    figures = report.make_figures(mnist.test_images, mnist.test_labels, probs, metrics, history=[])
    assert "curves" not in figures  # no history, no curves
    ax = figures["confusion"].axes[0]
    cm = sum(np.ma.filled(mesh.get_array(), 0).reshape(10, 10) for mesh in ax.collections[:2])
    assert cm.sum() == stored["test_n"] == 100
    assert np.trace(cm) / cm.sum() == pytest.approx(stored["test_accuracy"])
    assert (cm == np.array(stored["test"]["confusion_matrix"])).all()


def test_train_writes_the_report_unless_told_not_to(tiny_mnist, tmp_path, capsys):
    tiny = ["--model", "fast", "--batch-size", "32", "--val-split", "60", "--threads", "1", "--epochs", "1",
            "--data-dir", tiny_mnist]
    status, text, _ = digitrec_cli("train", *tiny, "--out", tmp_path / "with", capsys=capsys)
    assert status == 0 and "report:" in text
    assert all((tmp_path / "with" / f"{name}.png").is_file() for name in FIGURES)
    assert (tmp_path / "with" / "report.html").is_file()
    status, text, _ = digitrec_cli("train", *tiny, "--no-report", "--out", tmp_path / "without", capsys=capsys)
    assert status == 0 and "report:" not in text
    assert not list((tmp_path / "without").glob("*.png")) and not (tmp_path / "without" / "report.html").exists()


def test_report_command_on_demand(tiny_run, tmp_path, capsys):
    run_dir, data = tiny_run
    status, text, err = digitrec_cli("report", run_dir, "--out", tmp_path / "a" / "b", capsys=capsys)
    assert status == 0, err
    assert "report.html" in text and (tmp_path / "a" / "b" / "report.html").is_file()


def test_report_of_the_bundled_model_needs_an_output_folder(tiny_run, tmp_path, capsys, monkeypatch):
    run_dir, data = tiny_run
    bundled = tmp_path / "weights"
    shutil.copytree(run_dir, bundled)
    for name in FIGURES + ["report", "history"]:
        for f in bundled.glob(f"{name}.*"):
            f.unlink()  # a bundled model ships weights and description only
    monkeypatch.setattr(home, "BUNDLED_DIR", bundled)
    monkeypatch.setattr(report, "BUNDLED_DIR", bundled)
    status, _, err = digitrec_cli("report", capsys=capsys)
    assert_one_line_error(status, err, "--out")
    status, _, err = digitrec_cli("report", "--out", tmp_path / "bundled-report", "--data-dir", data, capsys=capsys)
    assert status == 0, err
    made = sorted(p.stem for p in (tmp_path / "bundled-report").glob("*.png"))
    assert made == sorted(set(FIGURES) - {"curves"})  # no history shipped, so no learning curves
    assert not list(bundled.glob("*.png"))


def test_bad_input_is_one_clear_line(tiny_run, tmp_path, capsys):
    run_dir, data = tiny_run
    no_history = tmp_path / "no-history"
    shutil.copytree(run_dir, no_history)
    (no_history / "history.csv").unlink()
    status, _, err = digitrec_cli("report", no_history, capsys=capsys)
    assert_one_line_error(status, err, "history.csv", "no-history")

    no_checkpoint = tmp_path / "no-checkpoint"
    no_checkpoint.mkdir()
    (no_checkpoint / "history.csv").write_text((run_dir / "history.csv").read_text())
    status, _, err = digitrec_cli("report", no_checkpoint, capsys=capsys)
    assert_one_line_error(status, err, "no checkpoint")

    status, _, err = digitrec_cli("report", tmp_path / "nowhere", capsys=capsys)
    assert_one_line_error(status, err, "no such run directory")

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    status, _, err = digitrec_cli("report", run_dir, "--out", blocker, capsys=capsys)
    assert_one_line_error(status, err, "cannot write the report", "a-file")
    status, _, err = digitrec_cli("report", run_dir, "--out", blocker / "sub", capsys=capsys)
    assert_one_line_error(status, err, "cannot write the report")


def test_report_of_a_real_mnist_dry_run(real_mnist, tmp_path, capsys):
    out = tmp_path / "dry"
    status, text, err = digitrec_cli("train", "--model", "fast", "--dry-run", "--threads", "2", "--data-dir", real_mnist,
                                 "--out", out, capsys=capsys)
    assert status == 0, err
    stored = json.loads((out / "metrics.json").read_text())
    assert f"test accuracy {stored['test_accuracy']:.2%} on {stored['test_n']} images" in text
    page = Page((out / "report.html").read_text())
    assert len(page.images) == len(FIGURES)
    assert f"{stored['test_accuracy']:.2%}" in page.cells
