"""The string model: its synthetic strings, reading touching digits, and its train/export commands."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from conftest import tiny_digits, write_mnist
from digitrec import strings
from digitrec.data import load_mnist


@pytest.fixture
def maker():
    images, labels = tiny_digits(60, 0)
    return strings.StringMaker(images, labels, seed=0)


def test_strings_are_pictures_of_the_right_shape_with_labels_of_their_digits(maker):
    x, labels, lengths = maker.batch(32)
    assert x.shape[:3] == (32, 1, strings.HEIGHT) and x.shape[3] % strings.WIDTH_STEP == 0
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert set(lengths.tolist()) <= set(range(1, len(strings.LENGTH_WEIGHTS) + 1)) and len(set(lengths.tolist())) > 2
    for row, n in zip(labels.tolist(), lengths.tolist()):
        assert all(0 <= d <= 9 for d in row[:n]) and all(d == -1 for d in row[n:])


def test_separators_add_ink_but_no_labels(monkeypatch):
    images, labels = tiny_digits(60, 0)
    monkeypatch.setattr(strings, "GAP_MODES", (1.0, 0.0, 0.0))  # digits apart, so the marks add ink
    monkeypatch.setattr(strings, "LIGATURE", 0.0)
    plain = strings.StringMaker(images, labels, seed=5)
    monkeypatch.setattr(strings, "SEPARATOR", 0.0)
    x0, lab0, len0 = plain.batch(16)
    marked = strings.StringMaker(images, labels, seed=5)
    monkeypatch.setattr(strings, "SEPARATOR", 1.0)
    x1, lab1, len1 = marked.batch(16)
    assert lab0.tolist() == lab1.tolist() and len0.tolist() == len1.tolist()
    several = len0 > 1
    assert several.any()
    # A dot, comma or dash between each two digits: more ink in the strings of two or more.
    ink0 = float(x0.sum(dim=(1, 2, 3))[several].sum())
    ink1 = float(x1.sum(dim=(1, 2, 3))[several].sum())
    assert ink1 > 1.02 * ink0


def test_amounts_end_in_runs_of_zeros_some_drawn_as_a_fast_pen_writes_them(monkeypatch):
    from digitrec.marks import pen_zeros

    images, labels = tiny_digits(60, 0)
    zeros = pen_zeros(12, seed=0)
    monkeypatch.setattr(strings, "ZERO_RUN", 1.0)
    monkeypatch.setattr(strings, "PEN_ZERO", 1.0)
    x, lab, lengths = strings.StringMaker(images, labels, seed=2, zeros=zeros).batch(64)
    ends = [row[n - 1] for row, n in zip(lab.tolist(), lengths.tolist())]
    assert ends == [0] * 64  # every string ends in a zero ...
    assert any(row[0] != 0 for row, n in zip(lab.tolist(), lengths.tolist()) if n > 1)  # ... and starts with any digit
    monkeypatch.setattr(strings, "ZERO_RUN", 0.0)
    x, lab, lengths = strings.StringMaker(images, labels, seed=2, zeros=zeros).batch(64)
    assert [row[n - 1] for row, n in zip(lab.tolist(), lengths.tolist())] != [0] * 64


def test_fast_zeros_are_loops_in_mnist_form():
    from digitrec.marks import pen_zeros

    z = pen_zeros(20, seed=1)
    assert z.shape == (20, 28, 28) and z.dtype == np.uint8
    assert (z[:, :2].max() == 0) and (z.reshape(20, -1).max(axis=1) > 200).all()
    # A loop: the ink closes round an empty middle, as a 0 does (a 1 or a 7 has none).
    holes = 0
    for im in z:
        filled = (im > 60).astype(np.uint8)
        n, _ = cv2.connectedComponents(1 - filled, connectivity=4)
        holes += n > 2  # the outside, and a hole inside
    assert holes >= 14
    assert len({im.tobytes() for im in z}) == 20


def test_greedy_path_collapses_repeats_and_drops_blanks():
    frames = np.full((7, strings.CLASSES), 0.01, np.float32)
    for t, c in enumerate([0, 4, 4, 0, 4, 8, 0]):  # blank, "3", "3", blank, "3", "7", blank
        frames[t, c] = 0.9
    assert [(d, a, b) for d, _, a, b in strings.greedy(frames)] == [(3, 1, 3), (3, 4, 5), (7, 5, 6)]


def _touching(images, labels, picks, overlap, scale=3):
    """Soft ink (0..1) of MNIST digits written left to right, each overlapping the last by `overlap` of its width."""
    parts = []
    for i in picks:
        ys, xs = np.nonzero(images[i])
        crop = images[i][ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.float32) / 255
        parts.append(cv2.resize(crop, (crop.shape[1] * scale, crop.shape[0] * scale), interpolation=cv2.INTER_CUBIC))
    h = max(p.shape[0] for p in parts)
    canvas = np.zeros((h + 20, sum(p.shape[1] for p in parts) + 20), np.float32)
    x = 10
    for p in parts:
        top = 10 + (h - p.shape[0]) // 2
        region = canvas[top:top + p.shape[0], x:x + p.shape[1]]
        np.maximum(region, p, out=region)
        x += round(p.shape[1] * (1 - overlap))
    return np.clip(canvas, 0, 1)[:, :x + 10], "".join(str(labels[i]) for i in picks)


@pytest.mark.parametrize("picks, overlap", [((50000, 50001), 0.1), ((50002, 50003, 50004), 0.2),
                                            ((50005, 50006), 0.3), ((50007, 50008, 50009), 0.05),
                                            ((50010,), 0.0)])
def test_touching_digits_read_as_their_text_with_spans_in_order(real_mnist, picks, overlap):
    mnist = load_mnist(real_mnist)
    soft, text = _touching(mnist.train_images, mnist.train_labels, picks, overlap)
    found = strings.read(soft)
    assert "".join(str(d) for d, *_ in found) == text
    spans = [(x0, x1) for _, _, x0, x1 in found]
    assert all(0 <= x0 < x1 <= soft.shape[1] for x0, x1 in spans)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    assert all(0 < p <= 1 for _, p, _, _ in found)


def test_empty_ink_reads_nothing():
    assert strings.read(np.zeros((40, 90), np.float32)) == []


def test_train_resumes_and_export_writes_a_graph_that_reads(tmp_path, capsys):
    data = write_mnist(tmp_path / "mnist", n_train=300)
    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--data-dir", str(data), "--pool", "200"]
    assert strings.main(args + ["--steps", "2", "--seed", "3"]) == 0
    assert json.loads((out / strings.META).read_text())["step"] == 2
    assert strings.main(args + ["--steps", "4"]) == 2  # without --resume it does not start over
    assert "--resume" in capsys.readouterr().err
    assert strings.main(args + ["--steps", "4", "--resume", "--continental", "0.5", "--seed", "5"]) == 0
    log = capsys.readouterr().out
    assert "resuming at step 2 of 4" in log
    meta = json.loads((out / strings.META).read_text())
    assert meta["step"] == 4 and meta["held_out"] == "MNIST training images 200-299"
    assert meta["seed"] == 3  # a resumed run goes on making the strings it was making
    # Each stretch of steps says what it learned from.
    assert meta["stages"] == [{"steps": [0, 2], "zero_runs": strings.ZERO_RUN, "continental": strings.STYLED_ONES},
                              {"steps": [2, 4], "zero_runs": strings.ZERO_RUN, "continental": 0.5}]
    assert strings.main(["export", str(out)]) == 0
    facts = json.loads((out / "strings.json").read_text())
    assert facts["step"] == 4 and (out / strings.ONNX_NAME).stat().st_size == facts["bytes"]


def test_the_seed_gives_other_weights_and_strings(tmp_path):
    from digitrec.checkpoint import load_tensors

    data = write_mnist(tmp_path / "mnist", n_train=300)
    weights = []
    for seed in (0, 1):
        out = tmp_path / f"run{seed}"
        argv = ["train", "--out", str(out), "--data-dir", str(data), "--pool", "200", "--steps", "1", "--seed", str(seed)]
        assert strings.main(argv) == 0
        weights.append(load_tensors(out / "model.safetensors"))
    assert any(not np.array_equal(weights[0][k].numpy(), weights[1][k].numpy()) for k in weights[0])


@pytest.mark.parametrize("argv, says", [(["train", "--out", "x", "--steps", "0"], "--steps"),
                                        (["train"], "--out"),
                                        (["train", "--out", "x", "--zero-runs", "1.5"], "--zero-runs"),
                                        (["train", "--out", "{tmp}/run", "--resume"], "nothing to resume"),
                                        (["export", "{tmp}/nowhere"], "no such")])
def test_bad_options_give_one_line(tmp_path, capsys, argv, says):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    try:
        status = strings.main(argv)
    except SystemExit as e:
        status = e.code
    err = capsys.readouterr().err
    assert status == 2 and says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("digits", [[], [5], [3, 3], [1, 2, 3, 3]])
def test_sequence_probability_sums_every_alignment_as_ctc_does(digits):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(len(digits))
    log_probs = F.log_softmax(torch.randn(14, strings.CLASSES, dtype=torch.float64), -1)
    if digits:
        ref = -F.ctc_loss(log_probs[:, None], torch.tensor([digits]) + 1, torch.tensor([14]), torch.tensor([len(digits)]),
                          reduction="sum").item()
    else:  # only blanks spell nothing
        ref = float(log_probs[:, strings.BLANK].sum())
    assert strings.sequence_logprob(log_probs.exp().numpy(), digits) == pytest.approx(ref, abs=1e-6)
    # The best path's own sequence is at least as likely as that one path.
    best = strings.greedy(log_probs.exp().numpy())
    assert strings.sequence_logprob(log_probs.exp().numpy(), [d for d, *_ in best]) >= float(log_probs.max(-1).values.sum()) - 1e-9


def _frames_of(path, sure=0.9):
    """Per-frame probabilities (T, 11) that spell `path` (classes, 0 the blank), each frame this sure."""
    probs = np.full((len(path), strings.CLASSES), (1 - sure) / (strings.CLASSES - 1), np.float32)
    probs[np.arange(len(path)), path] = sure
    return probs


def test_a_digit_found_only_in_the_wider_reading_is_kept_when_likelier(monkeypatch):
    # Read as it is, the piece is a 7 (a 1 hidden in its stroke); drawn wider, a 1 then a 7.
    plain, wide = _frames_of([0, 8, 8, 8, 0, 0]), _frames_of([0, 2, 0, 0, 8, 8, 0, 0])
    monkeypatch.setattr(strings, "_frames_at", lambda soft, s: (plain if s == 1 else wide, 2.0 * s, 0.0))
    monkeypatch.setattr(strings, "STRETCHES", (1.0, 1.3))
    probs, f, first = strings.frames(np.ones((10, 10), np.float32))
    assert [d for d, *_ in strings.greedy(probs)] == [1, 7]
    assert f == pytest.approx(2.6)  # columns map back to the piece's own
    # Unless the plain frames make the extra digit far less likely than the 7 alone.
    plain[:, :] = _frames_of([0, 8, 8, 8, 0, 0], sure=0.999)
    wide[:, :] = _frames_of([0, 2, 0, 0, 8, 8, 0, 0], sure=0.5)
    assert [d for d, *_ in strings.greedy(strings.frames(np.ones((10, 10), np.float32))[0])] == [7]


def test_the_wider_reading_never_replaces_digits_of_the_same_count(monkeypatch):
    plain, wide = _frames_of([0, 10, 0, 4, 0], sure=0.6), _frames_of([0, 9, 9, 0, 3, 3, 0], sure=0.99)
    monkeypatch.setattr(strings, "_frames_at", lambda soft, s: (plain if s == 1 else wide, 2.0 * s, 0.0))
    monkeypatch.setattr(strings, "STRETCHES", (1.0, 1.3))
    probs, f, _ = strings.frames(np.ones((10, 10), np.float32))
    assert [d for d, *_ in strings.greedy(probs)] == [9, 3] and f == 2.0
