"""The report of a trained model: its figures as PNG files and one self-contained HTML page.

    >>> from digitrec.report import write_report
    >>> write_report("runs/fast")                 # curves.png ... calibration.png, report.html
    PosixPath('runs/fast/report.html')
    >>> write_report(None, out="bundled-report")  # the bundled model, into a folder of your choice

The page embeds every figure (base64 PNG) and its styles, and links to nothing: it opens offline.
"""

from __future__ import annotations

import base64
import html
import os
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np

from digitrec import __version__
from digitrec.checkpoint import BUNDLED_DIR, load_checkpoint, read_json, resolve_run_dir
from digitrec.data import atomic_write_bytes, load_mnist, writable_dir
from digitrec.errors import UsageError
from digitrec.evaluate import metrics_from_logits, predict_logits
from digitrec.train import DRY_RUN_EVAL, HISTORY, METRICS, read_history, resolve_device

REPORT = "report.html"
# File stem -> (heading, how to read it); the order of the page.
FIGURES = {
    "curves": ("Learning curves", "Loss and accuracy per epoch on the training images (averaged over the "
               "epoch, while the model was still learning, and on augmented images if augmentation is on) and "
               "on the held-out validation images (measured at the end of the epoch). Validation no worse "
               "than training means the model did not overfit."),
    "confusion": ("Confusion matrix", "Rows are the true digits of the test images, columns what the model "
                  "read. The diagonal (green) counts right answers, every other cell (red) a kind of mistake."),
    "samples": ("Sample predictions", "Test digits with the digit the model read and how sure it was; "
                "mistakes are framed in red with the true digit."),
    "mistakes": ("Most confident mistakes", "The test digits the model got wrong while being most sure of "
                 "itself. Many are ambiguous even to people."),
    "per_class": ("Accuracy per digit", "The share of each digit's test images read right, and its F1 "
                  "score, beside the overall accuracy."),
    "calibration": ("Calibration", "When the model says 90%, is it right 90% of the time? Bars on the "
                    "diagonal mean yes. The expected calibration error is the average gap, weighted by "
                    "how many predictions fall in each bin."),
}


def test_predictions(model, images, labels) -> tuple[np.ndarray, dict]:
    """Softmax probabilities (N, 10) and evaluate's metrics of `model` on labelled digits."""
    logits = predict_logits(model, images)  # (N, 10)
    return logits.softmax(1).numpy(), metrics_from_logits(logits, labels)


def make_figures(images, labels, probs, metrics: dict, history: list[dict] | None) -> dict:
    """name -> matplotlib Figure, for every figure of FIGURES (curves only with a history)."""
    from digitrec import plots  # matplotlib is slow to import; only reports need it

    figures = {}
    if history:
        figures["curves"] = plots.learning_curves(history, metrics["accuracy"])
    figures["confusion"] = plots.confusion(metrics["confusion_matrix"])
    figures["samples"] = plots.samples(images, labels, probs)
    figures["mistakes"] = plots.mistakes(images, labels, probs)
    figures["per_class"] = plots.per_class(metrics["per_class"], metrics["accuracy"])
    figures["calibration"] = plots.calibration(probs, labels)
    return figures


def write_report(run_dir: str | os.PathLike | None, out: str | os.PathLike | None = None,
                 data_dir: str | os.PathLike | None = None, log: Callable[[str], None] = print,
                 device: str | None = None) -> Path:
    """Evaluate the model of `run_dir` (None: the bundled model) on the MNIST test set and write
    the figures and report.html into `out` (default: the run directory). Returns the page's path.

    MNIST comes from `data_dir`, else the folder the run was trained from (if it still exists),
    else the usual places (see data.load_mnist). The model runs on `device` (see train.resolve_device;
    default: the CPU)."""
    run_dir = resolve_run_dir(run_dir)
    bundled = run_dir.resolve() == BUNDLED_DIR.resolve()
    if out is None:
        if bundled:
            raise UsageError("the bundled model is part of the installation; give --out DIR for its report")
        out = run_dir
    out = Path(out)
    history = None
    if (run_dir / HISTORY).is_file():
        history = read_history(run_dir / HISTORY)
    if not bundled and not history:
        raise UsageError(f"{run_dir}: no training history ({HISTORY} is missing or empty); "
                         "is it a run directory made by `digitrec train`?")
    writable_dir(out, "the report")

    model, meta = load_checkpoint(run_dir)
    model = model.to(resolve_device(device or "cpu"))
    config = meta.get("config") or {}
    recorded = config.get("data_dir")
    if data_dir is None and recorded and Path(recorded).is_dir():
        data_dir = recorded  # the folder the run was trained from, while it is still there
    mnist = load_mnist(data_dir)
    # A dry run was tested on the first images only; its report looks at the same ones.
    n = DRY_RUN_EVAL if config.get("dry_run") else len(mnist.test_labels)
    images, labels = mnist.test_images[:n], mnist.test_labels[:n]
    probs, metrics = test_predictions(model, images, labels)

    from digitrec import plots

    figures = make_figures(images, labels, probs, metrics, history)
    pngs = {name: plots.png_bytes(fig) for name, fig in figures.items()}
    for name, png in pngs.items():
        atomic_write_bytes(out / f"{name}.png", png)
    page = render_html(meta, run_dir, metrics, history, pngs,
                       stored=read_json(run_dir / METRICS) if (run_dir / METRICS).is_file() else None)
    atomic_write_bytes(out / REPORT, page.encode())
    log(f"report: {out / REPORT} and {len(pngs)} figures (test accuracy {metrics['accuracy']:.2%} "
        f"on {metrics['n']} images)")
    return out / REPORT


def _table(header: list[str], rows: list[list], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(
        f"<td{' class=num' if i >= numeric_from else ''}>{html.escape(str(c))}</td>" for i, c in enumerate(r))
        + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _percent(x) -> str:
    return "" if x in ("", None) else f"{float(x):.2%}"


def _number(x, digits: int = 4) -> str:
    return "" if x in ("", None) else f"{float(x):.{digits}f}"


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1d1d1f;
       background: #f6f7f9; line-height: 1.45; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { margin: 0 0 4px; font-size: 28px; }
h2 { margin: 36px 0 8px; font-size: 21px; border-bottom: 2px solid #dde1e6; padding-bottom: 4px; }
.sub { color: #5a6270; margin: 0 0 20px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { background: white; border: 1px solid #dde1e6; border-radius: 10px; padding: 12px 18px; min-width: 140px; }
.card b { display: block; font-size: 24px; }
.card span { color: #5a6270; font-size: 13px; }
figure { margin: 8px 0 0; background: white; border: 1px solid #dde1e6; border-radius: 10px; padding: 14px; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { color: #414852; margin-top: 8px; font-size: 14px; }
table { border-collapse: collapse; background: white; font-size: 14px; margin: 6px 0; }
th, td { border: 1px solid #dde1e6; padding: 4px 10px; text-align: left; }
th { background: #eef1f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.tables { display: flex; flex-wrap: wrap; gap: 28px; align-items: flex-start; }
footer { color: #5a6270; font-size: 13px; margin-top: 40px; }
"""


def render_html(meta: dict, run_dir: Path, metrics: dict, history: list[dict] | None, pngs: dict[str, bytes],
                stored: dict | None = None) -> str:
    """The report page: headline numbers, every figure (embedded), the metrics, per-class, config and
    history tables. `stored` is the run's metrics.json, shown beside the fresh evaluation."""
    n, acc = metrics["n"], metrics["accuracy"]
    right = round(acc * n)
    seconds = sum(float(r["seconds"]) for r in history) if history else None
    arch = meta.get("architecture", "?")
    cards = [(f"{acc:.2%}", f"test accuracy ({right} of {n})"), (f"{n - right}", "test digits misread"),
             (f"{metrics['loss']:.4f}", "test loss (cross-entropy)"),
             (f"{metrics['ece']:.4f}", "expected calibration error"),
             (str(meta.get("epoch", "?")), "epochs trained")]
    if seconds is not None:
        cards.append((f"{seconds:.0f} s" if seconds < 600 else f"{seconds / 60:.1f} min", "training time"))
    card_html = "".join(f"<div class=card><b>{html.escape(v)}</b><span>{html.escape(k)}</span></div>" for v, k in cards)

    last = history[-1] if history else {}
    metric_rows = [["test accuracy", _percent(acc)], ["test loss", _number(metrics["loss"])],
                   ["test images", n], ["expected calibration error", _number(metrics["ece"])]]
    if last:
        metric_rows += [["final training accuracy", _percent(last.get("train_accuracy"))],
                        ["final training loss", _number(last.get("train_loss"))],
                        ["final validation accuracy", _percent(last.get("val_accuracy"))],
                        ["final validation loss", _number(last.get("val_loss"))]]
    if stored and "test_accuracy" in stored:
        metric_rows.append(["test accuracy recorded at the end of training", _percent(stored["test_accuracy"])])
    per_class_rows = [[d, _percent(c["precision"]), _percent(c["recall"]), _percent(c["f1"]), c["support"],
                       c["support"] - round(c["recall"] * c["support"])] for d, c in metrics["per_class"].items()]
    config_rows = [[k, "" if v is None else v] for k, v in (meta.get("config") or {}).items()]
    config_rows += [["architecture", arch], ["training data sha256", meta.get("train_sha256", "")[:16]],
                    ["trained with digitrec", meta.get("digitrec_version", "?")], ["saved", meta.get("saved", "?")]]

    sections = [] if history else ["<h2 id=curves>Learning curves</h2><p>This model came without its training "
                                   "history, so there are no learning curves.</p>"]
    for name, (heading, caption) in FIGURES.items():
        if name in pngs:
            data = base64.b64encode(pngs[name]).decode()
            sections.append(f'<h2 id="{name}">{html.escape(heading)}</h2><figure>'
                            f'<img src="data:image/png;base64,{data}" alt="{html.escape(heading)}">'
                            f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    metrics_html = (f"<h2 id=metrics>Metrics</h2><div class=tables>{_table(['metric', 'value'], metric_rows)}"
                    f"{_table(['digit', 'precision', 'recall', 'F1', 'test images', 'missed'], per_class_rows)}</div>")
    history_html = ""
    if history:
        history_rows = [[r["epoch"], _number(r["train_loss"]), _percent(r["train_accuracy"]), _number(r["val_loss"]),
                         _percent(r["val_accuracy"]), f"{float(r['lr']):.2e}", f"{float(r['seconds']):.1f}"]
                        for r in history]
        history_html = "<h2 id=history>Training history</h2>" + _table(
            ["epoch", "train loss", "train accuracy", "val loss", "val accuracy", "learning rate", "seconds"],
            history_rows, numeric_from=0)
    config_html = "<h2 id=config>Configuration</h2>" + _table(["setting", "value"], config_rows)
    title = f"digitrec report: {arch} model, {acc:.2%} test accuracy"
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f'<meta name=viewport content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body><main>"
            f"<h1>{html.escape(title)}</h1>"
            f"<p class=sub>Model <code>{html.escape(arch)}</code> from <code>{html.escape(str(run_dir))}</code>, "
            f"after epoch {html.escape(str(meta.get('epoch', '?')))}, evaluated on {n} MNIST test digits.</p>"
            f"<div class=cards>{card_html}</div>{metrics_html}{''.join(sections)}{history_html}{config_html}"
            f"<footer>Written by digitrec {html.escape(__version__)} on {datetime.now():%Y-%m-%d %H:%M}.</footer>"
            f"</main></body></html>\n")
