"""The Python API: digitrec.load() -> Recognizer.read / classify, the Reading it returns, other backends."""

import io
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from PIL import Image

import digitrec
from digitrec.data import load_mnist
from digitrec.preprocess import ImageError
from digitrec.recognize import Recognizer, draw_reading
from digitrec.synth import Style, compose

@pytest.fixture(scope="module")
def rec(model_dir):
    return digitrec.load(model_dir)


@pytest.fixture(scope="module")
def clear_digits(rec, real_mnist):
    """For each label, MNIST test digits the model reads right and surely in their raw 28x28 form."""
    mnist = load_mnist(real_mnist, download=False)
    probs = rec.classify(mnist.test_images[:2000])
    sure = (probs.argmax(1) == mnist.test_labels[:2000]) & (probs.max(1) > 0.99)
    return {d: mnist.test_images[:2000][sure & (mnist.test_labels[:2000] == d)] for d in range(10)}


def photo(text: str, digits: dict, style: Style, seed: int = 0):
    lines = text.split("\n")
    return compose([[digits[int(c)][i] for i, c in enumerate(line)] for line in lines],
                   [[int(c) for c in line] for line in lines], style, np.random.default_rng(seed))


def iou(a, b) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / (a[2] * a[3] + b[2] * b[3] - ix * iy)


@pytest.mark.parametrize("text, style", [
    ("3141", Style(dark_on_light=True, scale=5, light=0.5, noise=5, blur=0.3, jpeg=70)),
    ("27\n1828", Style(dark_on_light=False, scale=4, light=0.4, noise=6, jpeg=80)),
    ("90210", Style(dark_on_light=True, scale=3, blue_ink=True, noise=3, jpeg=60)),
    ("6", Style(dark_on_light=False, scale=8, blur=0.4)),
])
def test_handwritten_numbers_in_photos_are_read(rec, clear_digits, text, style):
    sample = photo(text, clear_digits, style)
    reading = rec.read(sample.image)
    assert reading.text == text
    assert [d.line for d in reading.digits] == sample.lines
    for d, box in zip(reading.digits, sample.boxes):
        assert iou(d.box, box) > 0.75
        assert d.confidence > 0.5 and d.top[0] == (d.label, d.confidence) and len(d.top) == 3
        assert d.image.shape == (28, 28)


def test_every_kind_of_source_reads_the_same(rec, clear_digits, tmp_path):
    image = photo("508", clear_digits, Style(scale=4, noise=3)).image
    path = tmp_path / "number.png"
    Image.fromarray(image).save(path)
    readings = [rec.read(s) for s in (image, path, str(path), path.read_bytes(), Image.open(path),
                                      cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))]
    assert {r.text for r in readings} == {"508"}
    assert len({tuple(d.box for d in r.digits) for r in readings}) == 1


@pytest.mark.parametrize("canvas", [np.full((280, 280), 255, np.uint8), np.zeros((280, 280), np.uint8),
                                    np.zeros((280, 280, 4), np.uint8)], ids=["white", "black", "transparent"])
def test_a_blank_canvas_is_no_digits_not_a_guess(rec, canvas):
    reading = rec.read(canvas)
    assert reading.text == "" and reading.digits == []
    assert reading.to_dict(file="blank.png") == {"file": "blank.png", "text": "", "digits": []}
    assert reading.describe() == "no digits found"


def test_to_dict_is_the_json_line_of_the_design(rec, clear_digits):
    reading = rec.read(photo("31\n41", clear_digits, Style(scale=4)).image, top_k=3)
    obj = json.loads(json.dumps(reading.to_dict(file="photo.jpg")))
    assert list(obj) == ["file", "text", "digits"] and obj["text"] == "31\n41"
    for d in obj["digits"]:
        assert list(d) == ["label", "confidence", "box", "top"]
        assert isinstance(d["label"], int) and all(isinstance(v, int) for v in d["box"]) and len(d["box"]) == 4
        assert d["top"][0] == [d["label"], d["confidence"]] and len(d["top"]) == 3
        assert all(len(repr(p)) <= 6 for _, p in d["top"])  # 0.9981, 0.0004, 3e-06: rounded, not 17 digits
    assert "file" not in reading.to_dict()


def test_classify_gives_probabilities(rec, clear_digits):
    digits = np.stack([clear_digits[d][0] for d in range(10)])
    probs = rec.classify(digits)
    assert probs.shape == (10, 10) and probs.dtype == np.float32
    assert np.allclose(probs.sum(1), 1, atol=1e-5) and (probs.argmax(1) == np.arange(10)).all()
    assert rec.classify(np.zeros((0, 28, 28), np.uint8)).shape == (0, 10)
    with pytest.raises(ValueError, match=r"\(N, 28, 28\)"):
        rec.classify(np.zeros((28, 28), np.uint8))


def test_reads_from_many_threads_agree(rec, clear_digits):
    images = [photo(text, clear_digits, Style(scale=3 + i % 4, noise=4, dark_on_light=i % 2 == 0), seed=i).image
              for i, text in enumerate(["12", "345", "6789", "0", "55\n66", "7", "808", "1234"])]
    alone = [rec.read(im) for im in images]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(rec.read, images * 3))
    for a, b in zip(alone * 3, together):
        assert a.text == b.text and [d.box for d in a.digits] == [d.box for d in b.digits]
        assert [d.confidence for d in a.digits] == pytest.approx([d.confidence for d in b.digits], abs=1e-6)


def test_another_backend_plugs_in_without_touching_preprocessing():
    seen = []

    def always_seven(x: np.ndarray) -> np.ndarray:
        seen.append(x)
        logits = np.zeros((len(x), 10), np.float32)
        logits[:, 7] = 5
        return logits

    page = np.full((200, 300), 255, np.uint8)
    cv2.putText(page, "42", (60, 150), cv2.FONT_HERSHEY_SIMPLEX, 4, 0, 10)
    reading = Recognizer(always_seven, strings=False).read(page)  # the backend alone reads each digit
    assert reading.text == "77" and reading.digits[0].confidence == pytest.approx(np.exp(5) / (np.exp(5) + 9))
    x = seen[-1]  # the digits read (before it, touching-digit candidates may be scored)
    assert x.shape == (2, 1, 28, 28) and x.dtype == np.float32
    assert x.max() == 1 and x[:, :, 0].max() == 0  # white ink on black, values in [0, 1]


def test_unsure_digits_are_flagged():
    unsure = Recognizer(lambda x: np.tile(np.array([[0, 1.0, 0, 0, 0, 0, 0, 0.9, 0, 0]], np.float32), (len(x), 1)))
    page = np.full((200, 200), 255, np.uint8)
    cv2.line(page, (100, 40), (100, 160), 0, 8)
    reading = unsure.read(page)
    assert reading.digits[0].low_confidence and reading.digits[0].top[1][0] == 7
    assert reading.describe() == "1  (lowest confidence 0.21; unsure of digit #1: 1 or 7)"


def test_unreadable_sources_raise_one_clear_error(rec, tmp_path):
    (tmp_path / "notes.png").write_text("not a picture")
    for source, words in [(tmp_path / "missing.png", "no such file"), (tmp_path / "notes.png", "not an image"),
                          (b"", "empty"), (np.zeros((3, 3, 7), np.uint8), "shape"), (42, "int")]:
        with pytest.raises(ImageError, match=words):
            rec.read(source)


def test_draw_reading_marks_each_digit(rec, clear_digits):
    image = photo("47", clear_digits, Style(scale=4)).image
    reading = rec.read(image)
    drawn = draw_reading(image, reading)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    x, y, w, h = reading.digits[0].box
    assert (drawn[y + h // 2, x] == (0, 200, 0)).all()  # the box's left edge
    assert np.array_equal(drawn[-3:, :], image[-3:, :])  # the rest of the picture untouched
    Image.fromarray(drawn).save(io.BytesIO(), format="PNG")


def test_import_stays_light():
    code = ("import sys, digitrec; assert 'torch' not in sys.modules and 'cv2' not in sys.modules; "
            "from digitrec import load, Recognizer, Reading, Digit; import digitrec.recognize as r; "
            "assert load is r.load and Digit is r.Digit")
    subprocess.run([sys.executable, "-c", code], check=True)
