"""Marks that are no digit (letters, signs, scribbles) are left out of what is read, with the bundled
digit-or-not network; its training data and command are checked on tiny runs."""

import json

import cv2
import numpy as np
import pytest

import digitrec
from digitrec import marks
from digitrec.data import load_mnist


@pytest.fixture(scope="module")
def rec():
    return digitrec.load()


def written(text: str, font=cv2.FONT_HERSHEY_SCRIPT_COMPLEX, size: float = 4.0, thick: int = 9) -> np.ndarray:
    """`text` written with a pen in a cursive typeface on a grey-white page with a little sensor noise."""
    page = np.zeros((260, 120 + 150 * len(text)), np.uint8)
    cv2.putText(page, text, (60, 180), font, size, 255, thick, cv2.LINE_AA)
    noise = np.random.default_rng(0).normal(0, 2, page.shape)
    return np.clip(235 - page.astype(np.float32) * 0.8 + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("letter", ["A", "K", "x", "R", "$", "#"])
def test_a_lone_letter_or_sign_reads_as_nothing(rec, letter):
    reading = rec.read(written(letter))
    assert reading.text == "" and not reading.digits
    assert [r.reason for r in reading.rejected] == ["not a digit"]
    assert reading.to_dict()["rejected"][0]["reason"] == "not a digit"


def test_a_scribble_reads_as_nothing(rec):
    page = np.full((300, 300), 235, np.uint8)
    pts = np.array([[60, 200], [240, 60], [90, 70], [220, 230], [70, 120], [250, 150], [130, 250]], np.int32)
    cv2.polylines(page, [pts], False, 30, 8, cv2.LINE_AA)
    assert rec.read(page).text == ""


def test_digits_beside_letters_are_read_and_the_letters_left_out(rec):
    reading = rec.read(written("4K7"))
    assert reading.text == "47"
    assert [r.reason for r in reading.rejected] == ["not a digit"]


def test_printed_digits_are_still_digits(rec):
    for font in (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_SCRIPT_COMPLEX):
        assert rec.read(written("2580", font)).text == "2580"


def test_handwritten_mnist_digits_are_almost_never_left_out(real_mnist):
    test = load_mnist(real_mnist).test_images
    p = marks.digit_probability(test)
    assert p.shape == (10_000,) and ((p >= 0) & (p <= 1)).all()
    assert (p < marks.MARK_LEVEL).mean() <= 0.002  # the model card says what was measured


def test_the_check_can_be_turned_off(rec):
    no_marks = digitrec.Recognizer(rec.logits, rec.meta, marks=False)
    assert no_marks.read(written("K")).text != ""


def test_training_marks_are_no_digit_shapes_in_mnist_form():
    m = marks.make_marks(40, seed=0)
    d, labels = marks.make_font_digits(20, seed=0)
    assert m.shape == (40, 28, 28) and m.dtype == np.uint8 and d.shape == (20, 28, 28)
    assert set(labels) <= set(range(10)) and len(set(labels)) > 5
    # In MNIST's form: ink inside the 20x20 centre box, nothing on the border, full strength somewhere.
    assert (m[:, :2].max() == 0) and (m[:, :, :2].max() == 0) and (m.reshape(40, -1).max(axis=1) > 200).all()
    assert not set(marks.NOT_DIGITS) & set("0123456789OoIlZzSsBgqPCLhUVnrt<>")
    ones = marks.continental_ones(10, seed=0)
    assert ones.shape == (10, 28, 28) and (ones.reshape(10, -1).max(axis=1) > 200).all()


def test_clutter_adds_ink_around_inputs_and_keeps_their_range():
    import torch

    x = torch.from_numpy(marks.make_marks(64, seed=1)).float().div(255)[:, None]
    y = marks.clutter(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert (y >= x).all()  # clutter only adds ink
    changed = (y - x).flatten(1).sum(1) > 1
    assert 0.2 < float(changed.float().mean()) < 0.9  # some inputs get clutter, not all


def test_train_and_export_commands(tmp_path, real_mnist, monkeypatch, capsys):
    monkeypatch.setenv("DIGITREC_DATA", str(real_mnist))
    monkeypatch.setattr(marks, "measure", lambda p, mnist: {"measured": True})
    monkeypatch.setattr(marks, "make_marks", lambda n, seed, fonts=None: np.zeros((8, 28, 28), np.uint8))
    monkeypatch.setattr(marks, "make_font_digits", lambda n, seed, fonts=None: (np.zeros((8, 28, 28), np.uint8),
                                                                                  np.zeros(8, int)))
    assert marks.main(["train", "--out", str(tmp_path / "run"), "--steps", "3"]) == 0
    facts = json.loads((tmp_path / "run" / "marks.json").read_text())
    assert facts["steps"] == 3 and facts["measured"]
    dest = tmp_path / "marks.onnx"
    assert marks.main(["export", str(tmp_path / "run"), "--dest", str(dest)]) == 0
    assert dest.stat().st_size > 10_000 and json.loads(dest.with_suffix(".json").read_text())["steps"] == 3
    assert marks.main(["export", str(tmp_path / "nothing")]) == 2
    assert "no marks.safetensors" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        marks.main(["train", "--out", str(tmp_path / "x"), "--steps", "0"])
    assert stop.value.code == 2


def test_a_zero_taken_for_a_mark_between_digits_is_still_read(rec, monkeypatch):
    # Fast, open or looped zeros on checks look more like a letter o than like MNIST's; the
    # digit-or-not network may reject them. Here it rejects every zero it is shown.
    from digitrec import recognize

    real = recognize.digit_probability

    def no_zeros(images):
        p = real(images).copy()
        p[rec.classify(images).argmax(1) == 0] = 0.0
        return p

    monkeypatch.setattr(recognize, "digit_probability", no_zeros)
    picture = written("1000", font=cv2.FONT_HERSHEY_SIMPLEX)
    plain = digitrec.load()
    assert plain.read(picture).text == "1000"  # in a line of digits, of their height, read as a sure 0
    assert plain.read(written("0", font=cv2.FONT_HERSHEY_SIMPLEX)).text == ""  # alone, it stays a mark
    assert plain.read(written("10", font=cv2.FONT_HERSHEY_SIMPLEX)).text == "1"  # one digit beside it is too few
