"""Decoding pictures: only the documented formats, one-line errors and notes, memory in proportion."""

import io
import json
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from digitrec.images import ImageError, NotAnImage, TooLarge, load_image
from digitrec.shape import to_mnist

REPRO = Path(__file__).resolve().parents[1].parent / "shared" / "repro"


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def with_chunk(png: bytes, kind: bytes, data: bytes, after: bytes = b"IHDR") -> bytes:
    """A PNG with one more chunk, placed right after the first chunk of type `after`."""
    at = png.index(after) - 4
    end = at + 12 + struct.unpack(">I", png[at:at + 4])[0]
    return png[:end] + chunk(kind, data) + png[end:]


def gif_canvas(width: int, height: int) -> bytes:
    """A GIF of a few dozen bytes: one 1x1 frame on a canvas that declares width x height pixels."""
    gif = bytearray(encode(Image.new("P", (1, 1)), "GIF"))
    gif[6:10] = struct.pack("<HH", width, height)
    return bytes(gif)


def peak_rss_mb(code: str) -> float:
    """Run `code` in a fresh Python with digitrec.images imported; -> its peak memory over the start, in MB."""
    script = ("import resource, sys, numpy, cv2, PIL.Image\nfrom digitrec.images import load_image, ImageError\n"
              "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n" + code +
              "\nprint((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return float(done.stdout.split()[-1])


# ---------------------------------------------------------------------------------------------------
# Each kind of picture that once crashed the reader, made here


# Eleven single black pixels close together on white paper: one piece of ink, and no stroke in it.
DOTS = [(44, 52), (45, 52), (46, 51), (47, 51), (48, 55), (49, 54), (50, 50), (50, 52), (50, 54), (51, 51), (51, 53)]


def test_ink_that_shaping_erases_is_an_empty_field_not_a_crash():
    soft = np.zeros((12, 10), np.float32)
    for y, x in DOTS:
        soft[y - 42, x - 48] = 1
    assert not to_mnist(soft).any()


def test_dots_on_paper_read_as_no_digits(rec):
    paper = np.full((110, 80), 255, np.uint8)
    for y, x in DOTS:
        paper[y, x] = 0
    assert rec.read(paper).text == ""


def test_only_the_documented_formats_are_opened():
    ppm = encode(Image.new("L", (30, 30), 255), "PPM")  # Pillow reads it, but it is no format of ours
    with pytest.raises(NotAnImage, match="PNG, JPEG, BMP, TIFF, WebP and GIF can"):
        load_image(ppm)
    assert load_image(encode(Image.new("L", (30, 30), 255), "BMP")).pixels.shape == (30, 30)


def test_a_palette_png_whose_transparency_names_missing_colours_is_read_opaque():
    img = Image.new("P", (30, 20), 0)
    img.putpalette([255, 255, 255, 0, 0, 0])
    img.paste(1, (10, 5, 20, 15))
    png = with_chunk(encode(img), b"tRNS", b"\x00" * 300, after=b"PLTE")
    pixels = load_image(png).pixels
    assert pixels.shape == (20, 30, 3) and pixels[10, 15].max() == 0 and pixels[0, 0].min() == 255


def test_a_pil_image_with_premultiplied_alpha_is_read():
    img = Image.new("LA", (20, 20), (0, 255)).convert("La")
    pixels = load_image(img).pixels
    assert pixels.shape == (20, 20, 3) and pixels.max() == 0  # opaque black ink


def test_a_decoder_warning_becomes_a_one_line_note():
    png = with_chunk(encode(Image.new("L", (20, 20), 255)), b"acTL", struct.pack(">II", 0, 0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may reach the warnings machinery outside the loader
        picture = load_image(png)
    assert picture.notes == ("the decoder warned: Invalid APNG, will use default PNG image if possible",)


def test_a_damaged_file_is_one_line_naming_no_library_path():
    tiff = bytearray(encode(Image.new("L", (40, 40), 255), "TIFF"))
    tiff[4:8] = struct.pack("<I", len(tiff) + 1000)  # the first page's index points past the end
    with pytest.raises(ImageError) as e:
        load_image(bytes(tiff))
    assert "\n" not in str(e.value) and "/" not in str(e.value)


@pytest.mark.parametrize("name", ["dots-zerodiv.png", "dithered-pencil-5326.png", "tiff-multipage-bad-ifd.tif",
                                  "avif-named-png.png", "png-palette-trns.png", "gif-6300sq.gif", "gif-10000sq.gif",
                                  "webp-anim-6300.webp", "webp-anim-10000.webp", "png-6300sq-la8.png",
                                  "png-10000sq-la8.png"])
def test_each_picture_that_broke_the_reader_gives_a_reading_or_one_line(rec, name):
    try:
        reading = rec.read(REPRO / name)
    except ImageError as e:
        assert "\n" not in str(e) and len(str(e)) < 200
    else:
        assert all(0 <= d.label <= 9 for d in reading.digits)


# ---------------------------------------------------------------------------------------------------
# Memory in proportion to the pixels, not to the canvas a file declares


def test_a_tiny_gif_declaring_a_huge_canvas_decodes_in_little_memory(tmp_path):
    (tmp_path / "big.gif").write_bytes(gif_canvas(10000, 10000))
    mb = peak_rss_mb(f"p = load_image({str(tmp_path / 'big.gif')!r}); assert p.scale == 6, p.scale")
    assert mb < 300  # a full decode in the reader's form took 1.1 GB


def test_a_big_grey_alpha_png_decodes_within_its_own_size():
    mb = peak_rss_mb(f"p = load_image({str(REPRO / 'png-6300sq-la8.png')!r})")
    assert mb < 600  # 6300x6300 took 2 GB


def test_an_animated_webp_over_the_decode_budget_is_refused_before_decoding():
    with pytest.raises(TooLarge, match="10000x10000 pixels would take 1.6 GB to decode"):
        load_image(REPRO / "webp-anim-10000.webp")
    mb = peak_rss_mb(f"p = load_image({str(REPRO / 'webp-anim-6300.webp')!r}); assert p.notes")
    assert mb < 1000  # 6300x6300 took 2.1 GB


def test_a_big_jpeg_is_decoded_reduced_and_its_boxes_are_in_the_files_pixels(rec):
    page = np.full((4000, 8000), 255, np.uint8)
    page[1000:3000, 3900:4100] = 0  # a "1", 2000 pixels tall
    picture = load_image(encode(Image.fromarray(page), "JPEG", quality=90))
    assert picture.scale > 1 and max(picture.pixels.shape) * picture.scale == 8000
    (digit,) = rec.read(picture).digits
    x, y, w, h = digit.box
    assert abs(x - 3900) < 40 and abs(y - 1000) < 40 and abs(h - 2000) < 80


# ---------------------------------------------------------------------------------------------------
# Whatever the bytes, the loader answers with a picture or its own one-line error


def valid_files() -> list[bytes]:
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8))
    frames = [Image.new("P", (16, 16), i) for i in range(3)]
    return [encode(rgb), encode(rgb, "JPEG"), encode(rgb, "BMP"), encode(rgb, "TIFF"), encode(rgb, "WEBP"),
            encode(rgb.convert("P"), "GIF"), encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
            encode(rgb.convert("LA")), encode(rgb.convert("I;16"), "TIFF")]


VALID = valid_files()


def loads_or_one_line(data: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            picture = load_image(data)
        except ImageError as e:
            assert "\n" not in str(e)
        else:
            assert picture.pixels.dtype == np.uint8 and picture.pixels.ndim in (2, 3)
            assert all("\n" not in note for note in picture.notes)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(VALID), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
       st.integers(1, 10**6))
def test_damaged_pictures_give_a_picture_or_one_line(data, flips, cut):
    damaged = bytearray(data[:max(1, cut % (len(data) + 1))])
    for at, value in flips:
        damaged[at % len(damaged)] = value
    loads_or_one_line(bytes(damaged))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_a_picture_or_one_line(data):
    loads_or_one_line(data)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 10000), st.integers(1, 10000))
def test_declared_canvases_cost_their_decoded_size_not_the_declared_one(width, height):
    picture = load_image(gif_canvas(width, height))
    assert picture.pixels.size <= 3 * 3200 * 3200  # never more than the reader's decoding size
    assert max(picture.pixels.shape[:2]) * picture.scale <= max(width, height)


def test_predict_reads_every_broken_picture_and_goes_on():
    files = [REPRO / n for n in ("dots-zerodiv.png", "avif-named-png.png", "tiff-multipage-bad-ifd.tif",
                                 "png-palette-trns.png")]
    done = subprocess.run([sys.executable, "-m", "digitrec.cli", "predict", "--json", *map(str, files)],
                          capture_output=True, text=True, timeout=120)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["file"] for line in lines] == list(map(str, files)) and "Traceback" not in done.stderr
    assert lines[0]["text"] == "" and "error" in lines[1] and "error" in lines[2] and "text" in lines[3]


@pytest.fixture(scope="module")
def rec():
    import digitrec

    return digitrec.load()
