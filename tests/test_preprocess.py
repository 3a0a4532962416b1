"""Preprocessing: pictures decoded right, digits found where they are, in reading order, in MNIST's form.

No model and no MNIST here: the digits are drawn with OpenCV's stroke font and composed into photos
by digitrec.synth, so every box and line is known.
"""

import io
import struct
import time
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from digitrec.preprocess import (ImageError, extract_digits, find_ink, images_in, load_image, stroke_width, to_gray,
                                 to_mnist)
from digitrec.synth import Style, compose


def glyph(char: str, thickness: int = 9) -> np.ndarray:
    """A 28x28 uint8 digit, white on black, drawn with a stroke font and fitted like MNIST."""
    canvas = np.zeros((140, 120), np.uint8)
    cv2.putText(canvas, char, (15, 115), cv2.FONT_HERSHEY_SIMPLEX, 3.5, 255, thickness, cv2.LINE_AA)
    ys, xs = np.nonzero(canvas)
    crop = canvas[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    f = 20 / max(crop.shape)
    crop = cv2.resize(crop, (max(1, round(crop.shape[1] * f)), max(1, round(crop.shape[0] * f))), interpolation=cv2.INTER_AREA)
    out = np.zeros((28, 28), np.uint8)
    top, left = (28 - crop.shape[0]) // 2, (28 - crop.shape[1]) // 2
    out[top:top + crop.shape[0], left:left + crop.shape[1]] = crop
    return out


def written(text: str, style: Style, seed: int = 0):
    """A photo of `text` ("31\\n415" for two lines) and its true boxes, lines and text."""
    lines = text.split("\n")
    return compose([[glyph(c) for c in line] for line in lines], [[int(c) for c in line] for line in lines],
                   style, np.random.default_rng(seed))


def iou(a, b) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / (a[2] * a[3] + b[2] * b[3] - ix * iy)


PHOTOS = [
    Style(dark_on_light=True, scale=5, light=0.5, noise=6, blur=0.3, jpeg=60),
    Style(dark_on_light=False, scale=4, light=0.4, noise=6, blur=0.3, jpeg=70),
    Style(dark_on_light=True, scale=7, blue_ink=True, light=0.2, noise=3),
    Style(dark_on_light=False, scale=3, noise=8),
]


@pytest.mark.parametrize("style", PHOTOS, ids=["ink-on-paper", "chalk-on-board", "blue-pen", "small-noisy-board"])
@pytest.mark.parametrize("text", ["7", "3141", "2026\n1789", "12\n345\n6"])
def test_digits_are_found_at_their_places_in_reading_order(style, text):
    sample = written(text, style)
    crops = extract_digits(sample.image)
    assert len(crops) == len(sample.boxes), [c.box for c in crops]
    assert [c.line for c in crops] == sample.lines
    for crop, box in zip(crops, sample.boxes):
        assert iou(crop.box, box) > 0.75, (crop.box, box)
        assert crop.image.shape == (28, 28) and crop.image.dtype == np.uint8


def test_a_page_photographed_on_a_desk():
    sample = written("2718", Style(scale=4, noise=3, light=0.3))
    h, w = sample.image.shape[:2]
    desk = np.zeros((h + 200, w + 240, 3), np.uint8)
    desk[:] = (70, 50, 40)
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), 4, 1.0)
    turn[:, 2] += (120, 100)
    page = cv2.warpAffine(sample.image, turn, desk.shape[1::-1])
    on_page = cv2.warpAffine(np.ones((h, w), np.uint8), turn, desk.shape[1::-1]) > 0
    desk[on_page] = page[on_page]
    crops = extract_digits(desk)
    assert len(crops) == 4 and [c.line for c in crops] == [0] * 4
    xs = [c.box[0] for c in crops]
    assert xs == sorted(xs) and all(120 < c.box[1] < 100 + h for c in crops)


@pytest.mark.parametrize("grid, tilt", [(False, 0), (False, 2.5), (True, 0), (True, -2)])
def test_ruled_and_squared_paper(grid, tilt):
    sample = written("4096", Style(scale=4, noise=3, jpeg=80))
    img = sample.image.astype(np.float32)
    h, w = img.shape[:2]
    rules = np.zeros((h, w), np.float32)
    step = 25 if grid else 45
    rules[10::step] = rules[11::step] = 1  # two pixels thick, through the digits too
    if grid:
        rules[:, 7::step] = rules[:, 8::step] = 1
    else:
        rules[:, 40:43] = 1  # a margin
    ruled = np.minimum(img * (1 - 0.8 * rules[..., None]) + np.array([60, 90, 200]) * 0.8 * rules[..., None], img)
    ruled = cv2.warpAffine(ruled.clip(0, 255).astype(np.uint8), cv2.getRotationMatrix2D((w / 2, h / 2), tilt, 1.0),
                           (w, h), borderMode=cv2.BORDER_REPLICATE)
    crops = extract_digits(ruled)
    assert len(crops) == 4, [c.box for c in crops]
    for crop, box in zip(crops, sample.boxes):
        assert iou(crop.box, box) > (0.75 if tilt == 0 else 0.5)


def test_a_row_of_digits_on_a_printed_baseline_keeps_its_strokes():
    # A small strip as a check amount is cut: three bold, leaning zeros written fast, touching each
    # other and sitting on the printed line under them. Their tops line up across the strip too,
    # but they are no rule: only the printed line goes.
    from digitrec.ink import _erase_rules

    strength = np.zeros((50, 130), np.float32)
    for cx in (25, 62, 99):
        cv2.ellipse(strength, (cx, 27), (19, 15), -25, 0, 360, 1.0, 5, cv2.LINE_AA)
    strokes = strength > 0.5
    strength[44:46] = 1.0
    _erase_rules(strength, 0.3)
    assert ((strength > 0.3) & strokes).sum() >= 0.85 * strokes.sum()
    assert (strength[44:46] > 0.3).mean() <= 0.4  # left only where the zeros stand on it
    assert (strength[8:16] > 0.3).sum() >= 0.95 * strokes[8:16].sum()  # the tops are whole


def test_polarity_is_detected():
    assert find_ink(to_gray(written("42", PHOTOS[0]).image)).dark_on_light
    assert not find_ink(to_gray(written("42", PHOTOS[1]).image)).dark_on_light


def test_a_wavy_line_is_still_one_line_and_the_order_is_left_to_right():
    sample = written("8675309", Style(scale=4), seed=3)
    crops = extract_digits(sample.image)
    xs = [c.box[0] for c in crops]
    assert [c.line for c in crops] == [0] * 7 and xs == sorted(xs)


@pytest.mark.parametrize("name, image", [
    ("white", np.full((300, 400), 255, np.uint8)),
    ("black", np.zeros((300, 400), np.uint8)),
    ("grey", np.full((300, 400, 3), 128, np.uint8)),
    ("lighting gradient", np.tile(np.linspace(60, 250, 400), (300, 1)).astype(np.uint8)),
    ("sensor noise", np.clip(np.random.default_rng(0).normal(180, 10, (300, 400)), 0, 255).astype(np.uint8)),
    ("blurred noise", cv2.GaussianBlur(np.random.default_rng(1).normal(128, 30, (300, 400)).clip(0, 255).astype(np.uint8), (0, 0), 2)),
    ("tiny", np.full((1, 1), 200, np.uint8)),
])
def test_no_ink_gives_no_digits(name, image):
    assert extract_digits(image) == []


def test_specks_rules_and_blots_are_not_digits():
    page = np.full((400, 600), 235, np.uint8)
    rng = np.random.default_rng(0)
    for x, y in rng.integers(0, [600, 400], size=(40, 2)):
        page[y:y + 2, x:x + 2] = 30  # dust
    cv2.line(page, (20, 380), (580, 380), 40, 3)  # a ruled line
    cv2.line(page, (300, 200), (360, 200), 40, 4)  # a dash
    cv2.rectangle(page, (450, 40), (560, 140), 20, cv2.FILLED)  # a blot
    assert extract_digits(page) == []
    digit = cv2.resize(glyph("5"), (140, 140))
    page[150:290, 60:200] = np.minimum(page[150:290, 60:200], 255 - digit)
    ys, xs = np.nonzero(digit > 80)
    crops = extract_digits(page)
    assert len(crops) == 1 and iou(crops[0].box, (60 + xs.min(), 150 + ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1)) > 0.8


def test_the_pieces_of_one_digit_are_joined():
    page = np.full((300, 500), 255, np.uint8)
    # A 5 whose top bar was lifted off the paper, and a 4 whose upright misses the crossbar.
    cv2.line(page, (80, 80), (150, 75), 0, 8)
    cv2.line(page, (70, 95), (65, 150), 0, 8)
    cv2.ellipse(page, (100, 185), (38, 40), 0, -140, 140, 0, 8)
    cv2.line(page, (300, 70), (260, 170), 0, 8)
    cv2.line(page, (260, 170), (345, 170), 0, 8)
    cv2.line(page, (330, 80), (330, 158), 0, 8)
    cv2.line(page, (330, 182), (330, 235), 0, 8)
    crops = extract_digits(page)
    assert len(crops) == 2, [c.box for c in crops]
    five, four = (c.box for c in crops)
    assert five[0] <= 62 and five[1] <= 72 and five[0] + five[2] >= 152  # bar and belly in one box
    assert four[1] <= 67 and four[1] + four[3] >= 237


def test_close_neighbours_stay_apart():
    page = np.full((200, 400), 255, np.uint8)
    for x in (100, 112, 124):  # three 1s, 8 pixels apart
        cv2.line(page, (x, 50), (x, 150), 0, 4)
    cv2.putText(page, "7", (140, 150), cv2.FONT_HERSHEY_SIMPLEX, 4, 0, 8)
    crops = extract_digits(page)
    assert len(crops) == 4 and [c.line for c in crops] == [0] * 4


def test_a_speck_between_two_lines_does_not_join_them():
    page = np.full((600, 500), 255, np.uint8)
    cv2.line(page, (140, 160), (140, 330), 0, 12)  # 1, first line
    cv2.line(page, (270, 200), (370, 200), 0, 12)  # 7, first line
    cv2.line(page, (370, 200), (300, 345), 0, 12)
    cv2.circle(page, (191, 332), 4, 0, -1)  # a speck of dirt just below the lines' gap
    cv2.line(page, (200, 395), (115, 555), 0, 12)  # a slanted 1 on the second line, under the speck
    cv2.ellipse(page, (400, 485), (65, 55), 0, 0, 360, 0, 12)  # 0
    crops = extract_digits(page)
    assert [c.line for c in crops] == [0, 0, 1, 1], [c.box for c in crops]
    assert all(c.box[3] < 200 for c in crops), [c.box for c in crops]


def test_crops_have_mnist_form():
    crop = extract_digits(written("6", Style(scale=8, light=0.3, noise=4)).image)[0].image
    ys, xs = np.nonzero(crop)
    assert max(ys.max() - ys.min(), xs.max() - xs.min()) + 1 in (19, 20, 21)  # fits the 20x20 box
    mass = crop.astype(float) / crop.sum()
    cy, cx = (np.indices(crop.shape) * mass).sum(axis=(1, 2))
    assert abs(cy - 14) <= 0.6 and abs(cx - 14) <= 0.6  # centre of mass at the centre
    assert crop.max() == 255 and 0.15 < (crop >= 128).mean() / max((crop > 0).mean(), 1e-9) < 0.95  # grey edges
    assert crop[0].max() == crop[-1].max() == crop[:, 0].max() == crop[:, -1].max() == 0


def test_an_mnist_sized_digit_comes_back_as_itself():
    digit = glyph("2")  # centred by its box, so the crop may sit a pixel away (centred by mass)
    crop = extract_digits(digit)[0].image.astype(float)
    best = max(np.corrcoef(np.roll(crop, (dy, dx), axis=(0, 1)).ravel(), digit.ravel().astype(float))[0, 1]
               for dy in range(-2, 3) for dx in range(-2, 3))
    assert best > 0.9


@pytest.mark.parametrize("pen", [1, 2, 40])
def test_stroke_width_is_brought_near_mnist(pen):
    page = np.full((400, 300), 255, np.uint8)
    cv2.ellipse(page, (150, 200), (80, 140), 0, 0, 360, 0, pen, cv2.LINE_AA)  # a 0 drawn with a hairline or a marker
    crop = extract_digits(page)[0].image
    width = stroke_width(cv2.resize(crop.astype(np.float32) / 255, (112, 112))) / 4  # in 28x28 pixels
    assert 1.4 < width < 3.6, width  # MNIST's strokes are about 2-3 pixels wide


def test_to_mnist_of_nothing_is_blank():
    assert not to_mnist(np.zeros((30, 30), np.float32)).any()


# --- decoding ------------------------------------------------------------------------------------


def encoded(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def marked(mode="L", size=(60, 40)) -> Image.Image:
    """A light picture with a dark square at the top-left quarter."""
    img = Image.new("RGB", size, (250, 250, 250))
    img.paste((10, 10, 10), (0, 0, size[0] // 2, size[1] // 2))
    return img.convert(mode)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF"])
def test_every_format_decodes(tmp_path, fmt):
    path = tmp_path / f"x.{fmt.lower()}"
    path.write_bytes(encoded(marked("RGB"), fmt))
    gray = to_gray(load_image(path).pixels)
    assert gray.shape == (40, 60)
    assert gray[5, 5] < 60 and gray[35, 55] > 200


def test_exif_orientation_is_honoured(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: turn 90 degrees clockwise to view
    path = tmp_path / "phone.jpg"
    path.write_bytes(encoded(marked("RGB"), "JPEG", exif=exif))
    gray = to_gray(load_image(path).pixels)
    assert gray.shape == (60, 40)
    assert gray[5, 35] < 60 and gray[55, 5] > 200  # the dark corner moved to the top right


def test_transparency_is_composited_on_white():
    ink = np.zeros((20, 20, 4), np.uint8)
    ink[5:15, 8:12, 3] = 255  # black strokes on a fully transparent sheet
    for source in (ink, Image.fromarray(ink, "RGBA"), Image.fromarray(ink, "RGBA").convert("LA"),
                   Image.fromarray(ink, "RGBA").convert("PA")):
        gray = to_gray(load_image(source).pixels)
        assert gray[0, 0] == 255 and gray[10, 10] == 0


def test_sixteen_bit_and_palette_images_are_read(tmp_path):
    deep = np.full((30, 30), 60000, np.uint16)
    deep[10:20, 10:20] = 1000
    (tmp_path / "deep.png").write_bytes(encoded(Image.fromarray(deep), "PNG"))
    gray = to_gray(load_image(tmp_path / "deep.png").pixels)
    assert gray[0, 0] == round(60000 / 257) and gray[15, 15] == round(1000 / 257)
    (tmp_path / "pal.png").write_bytes(encoded(marked("RGB").convert("P"), "PNG"))
    gray = to_gray(load_image(tmp_path / "pal.png").pixels)
    assert gray[5, 5] < 60 and gray[35, 55] > 200


def test_an_animated_gif_gives_its_first_frame_and_says_so(tmp_path):
    frames = [marked("RGB").convert("P"), Image.new("P", (60, 40), 0)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    picture = load_image(path)
    assert to_gray(picture.pixels)[35, 55] > 200
    assert "first frame" in picture.notes[0] and "2 frames" in picture.notes[0]


@pytest.mark.parametrize("source, dtype", [(np.full((4, 4), 1.0), np.float64), (np.ones((4, 4), bool), bool),
                                           (np.full((4, 4, 1), 65535), np.uint16)])
def test_arrays_of_other_types_are_scaled(source, dtype):
    assert (load_image(source.astype(dtype)).pixels == 255).all()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size but holds almost no data: a decompression bomb's calling card."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


def bad_files(folder):
    """Files a user might hand us by mistake, with words their error must contain."""
    jpeg = encoded(marked("RGB", (400, 300)), "JPEG")
    files = {
        "missing.png": (None, "no such file"),
        "empty.png": (b"", "empty"),
        "truncated.jpg": (jpeg[:len(jpeg) // 2], "truncated"),
        "notes.png": (b"shopping list: milk, eggs\n", "not an image"),
        "huge.png": (png_header_only(20000, 20000), "megapixel limit"),
        "large.png": (png_header_only(11000, 10000), "11000x10000"),
    }
    for name, (payload, _) in files.items():
        if payload is not None:
            (folder / name).write_bytes(payload)
    return {folder / name: words for name, (_, words) in files.items()}


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's own, before ours
def test_bad_files_give_one_clear_error(tmp_path):
    for path, words in bad_files(tmp_path).items():
        start = time.perf_counter()
        with pytest.raises(ImageError, match=words):
            load_image(path)
        assert time.perf_counter() - start < 1  # refused from the header, not decoded
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)
    for shape in [(0, 5), (5, 5, 2), (2, 2, 2, 2)]:
        with pytest.raises(ImageError, match="image"):
            load_image(np.zeros(shape, np.uint8))


def test_images_in_a_folder(tmp_path):
    for name in ["b.PNG", "a.jpg", ".hidden.png", "notes.txt", "c.webp"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in images_in(tmp_path)] == ["a.jpg", "b.PNG", "c.webp"]
