"""The drawing window's logic without a display: strokes -> picture -> reading, undo, clear, the blank
canvas, the reading thread, and what `digitrec draw` says where no window can open."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

import digitrec
from digitrec.demo import handwriting
from digitrec.drawing import Drawing, LiveReader, LiveReading, focus_digit
from digitrec.preprocess import load_image


@pytest.fixture(scope="module")
def rec(model_dir):
    return digitrec.load(model_dir)


class Counting:
    """A recognizer that counts the pictures it reads."""

    def __init__(self, rec):
        self.rec, self.meta, self.reads = rec, rec.meta, 0

    def read(self, image):
        self.reads += 1
        return self.rec.read(image)


def write(drawing: Drawing, text: str, box=(40, 60, 720, 380), seed: int = 0, width: float = 18):
    """Write digits on the canvas (box and width in canvas pixels) the way the window passes on mouse moves."""
    for digit in handwriting(text, box, np.random.default_rng(seed)):
        for stroke in digit:
            drawing.pen_down(tuple(stroke[0]), width)
            for p in stroke[1:]:
                drawing.pen_move(tuple(p))
            drawing.pen_up()


def settle(live: LiveReading, timeout: float = 20) -> None:
    """Tick like the window's timer until the reading shown is of the latest drawing."""
    end = time.monotonic() + timeout
    while live.shown != live.drawing.version and time.monotonic() < end:
        live.update(time.monotonic())
        time.sleep(0.01)
    assert live.shown == live.drawing.version, "no reading came"


def test_strokes_are_rendered_in_memory_and_read(rec):
    drawing = Drawing((800, 500))
    write(drawing, "385")
    image = drawing.sheet().render()
    assert image.size == (800, 500) and image.mode == "L"
    pixels = np.asarray(image)
    assert np.median(pixels) == 255 and pixels.min() == 0  # black ink on white paper
    reading = rec.read(image)
    assert reading.text == "385"
    assert all(0 <= x and x + w <= 800 and 0 <= y and y + h <= 500 for x, y, w, h in (d.box for d in reading.digits))


def test_the_brush_size_is_the_stroke_width():
    ink = {}
    for width in (8, 24):
        drawing = Drawing((200, 200))
        drawing.pen_down((100, 20), width)
        drawing.pen_move((100, 180))
        drawing.pen_up()
        columns = (np.asarray(drawing.sheet().render()) < 128).sum(axis=1)  # inked pixels per row
        ink[width] = np.median(columns[40:160])
    assert abs(ink[8] - 8) <= 1 and abs(ink[24] - 24) <= 1


def test_a_tap_leaves_a_dot():
    drawing = Drawing((100, 100))
    drawing.pen_down((50, 50), 20)
    drawing.pen_up()
    dark = np.argwhere(np.asarray(drawing.sheet().render()) < 128)  # (N, 2)
    assert 250 < len(dark) < 380  # a disc 20 pixels across has about 314
    assert np.allclose(dark.mean(axis=0), 50, atol=1)


def test_resizing_the_window_never_changes_what_is_read(rec):
    drawing = Drawing((600, 400))
    write(drawing, "385", box=(20, 40, 560, 320))
    drawing.resize((300, 300))  # the 8 and the 5 are out of sight for now
    assert drawing.sheet().render().size == (600, 400) and rec.read(drawing.sheet().render()).text == "385"
    drawing.resize((900, 350))
    assert drawing.sheet().render().size == (900, 400)
    drawing.clear()
    assert drawing.size == (900, 350)


def test_undo_takes_back_the_last_stroke_and_clear_empties_the_canvas(rec):
    drawing = Drawing((600, 400))
    write(drawing, "71")  # one stroke each
    assert rec.read(drawing.sheet().render()).text == "71"
    assert drawing.undo()
    assert rec.read(drawing.sheet().render()).text == "7"
    assert drawing.undo() and drawing.empty
    assert not drawing.undo()
    write(drawing, "4")
    before = drawing.version
    drawing.clear()
    assert drawing.empty and drawing.sheet().empty and drawing.version > before
    assert np.asarray(drawing.sheet().render()).min() == 255


def test_a_blank_canvas_says_draw_a_digit_and_is_never_read(rec):
    counting = Counting(rec)
    drawing = Drawing((600, 400))
    live = LiveReading(drawing, LiveReader(lambda: counting))
    for _ in range(5):
        live.update(time.monotonic())
        time.sleep(0.02)
    assert (live.headline, live.title, live.reading) == ("draw a digit", "digitrec", None)
    assert counting.reads == 0

    write(drawing, "5")
    settle(live)
    assert (live.headline, live.title) == ("5", "digitrec — 5")

    # Cleared while a reading is on its way: it is dropped, the canvas does not guess.
    write(drawing, "8", box=(400, 60, 180, 300))
    live.update(time.monotonic())
    drawing.clear()
    time.sleep(1)
    for _ in range(5):
        live.update(time.monotonic())
    assert (live.headline, live.title, live.reading) == ("draw a digit", "digitrec", None)
    live.reader.close()


def test_the_reading_follows_the_pen_and_the_latest_drawing_wins(rec):
    counting = Counting(rec)
    reader = LiveReader(lambda: counting)
    drawing = Drawing((800, 500))
    digits = handwriting("2024", (40, 60, 720, 380), np.random.default_rng(0))
    for k, strokes in enumerate(digits):  # all four submitted faster than they can be read
        for stroke in strokes:
            drawing.pen_down(tuple(stroke[0]), 18)
            for p in stroke[1:]:
                drawing.pen_move(tuple(p))
            drawing.pen_up()
        reader.submit(drawing.version, drawing.sheet())
    results = []
    while not results or results[-1].version != drawing.version:
        result = reader.wait(timeout=20)
        assert result is not None, "no reading came"
        results.append(result)
    assert results[-1].reading.text == "2024" and results[-1].seconds > 0
    assert counting.reads < len(digits)  # drawings replaced while waiting were never read
    reader.close()

    # While the pen is down the drawing is sent to be read now and then, not at every move; and at once
    # when the pen lifts.
    class Recorder:
        def __init__(self):
            self.sent = []

        def submit(self, version, sheet):
            self.sent.append(version)

        def poll(self):
            return None

    drawing.clear()
    live = LiveReading(drawing, Recorder(), every=0.25)
    stroke = digits[0][0]  # (N, 2)
    drawing.pen_down(tuple(stroke[0]), 18)
    for i, p in enumerate(stroke[1:]):
        drawing.pen_move(tuple(p))
        live.update(i * 0.01)  # a mouse move every 10 ms
    moving = len(live.reader.sent)
    assert moving == pytest.approx((len(stroke) - 2) * 0.01 / 0.25 + 1, abs=1)
    drawing.pen_up()
    live.update(len(stroke) * 0.01)
    assert len(live.reader.sent) == moving + 1 and live.reader.sent[-1] == drawing.version


def test_reading_in_the_background_never_holds_up_the_window(rec):
    drawing = Drawing((1200, 800))
    write(drawing, "90210", box=(40, 100, 1120, 600))
    reader = LiveReader(lambda: rec)
    sheet = drawing.sheet()
    gaps, done = [], 0
    last = time.perf_counter()
    reader.submit(0, sheet)
    while done < 8:  # a window's timer: how late does each tick come while the thread reads?
        time.sleep(0.005)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
        if reader.poll() is not None:
            done += 1
            reader.submit(done, sheet)
    reader.close(timeout=5)
    # A reading on the main thread, or a lock held through one, would make a late tick of every reading;
    # a machine busy with other work can delay one now and then, whatever the code.
    late = np.percentile(gaps, 99)
    assert late < 0.05 and max(gaps) < 0.15, f"ticks came up to {max(gaps) * 1000:.0f} ms apart (99%: {late * 1000:.0f} ms)"


def test_the_panel_shows_the_digit_under_the_cursor_else_the_one_drawn_last(rec):
    drawing = Drawing((800, 500))
    write(drawing, "38")
    reading = rec.read(drawing.sheet().render())
    three, eight = reading.digits
    x, y, w, h = three.box
    assert focus_digit(reading, cursor=(x + w / 2, y + h / 2)) is three
    assert focus_digit(reading, cursor=(x - 0.2 * h, y)) is three  # just outside the box still counts
    assert focus_digit(reading, cursor=(790, 490)) is eight  # nothing there: the last drawn
    drawing.clear()
    write(drawing, "8", box=(420, 60, 340, 380))
    write(drawing, "3", box=(40, 60, 340, 380))  # drawn last, but first in reading order
    reading = rec.read(drawing.sheet().render())
    assert reading.text == "38"
    assert focus_digit(reading, None, drawing.last_box()).label == 3
    assert focus_digit(rec.read(np.full((50, 50), 255, np.uint8))) is None


def test_an_opened_picture_is_read_drawn_on_and_saved(rec, tmp_path):
    source = Drawing((900, 600))
    write(source, "46", box=(40, 60, 560, 480), width=24)
    (tmp_path / "46.png").write_bytes(source.sheet().png())

    drawing = Drawing((600, 500))  # a canvas smaller than the picture
    drawing.open(load_image(tmp_path / "46.png").pixels)
    view = drawing.view()
    assert drawing.size == (900, 600) and view.scale == pytest.approx(600 / 900)
    assert view.to_canvas((0, 0)) == (0, pytest.approx(50)) and view.to_canvas((900, 600)) == (600, pytest.approx(450))
    assert rec.read(drawing.sheet().render()).text == "46"

    # Strokes on the canvas land on the picture where they were drawn.
    write(drawing, "1", box=(430, 120, 120, 200), width=16)  # right of the 46, in canvas pixels
    assert drawing.strokes[-1].width == pytest.approx(16 / view.scale)
    assert rec.read(drawing.sheet().render()).text == "461"
    (tmp_path / "461.png").write_bytes(drawing.sheet().png())
    assert rec.read(tmp_path / "461.png").text == "461"

    assert drawing.undo() and rec.read(drawing.sheet().render()).text == "46"  # the picture stays
    drawing.clear()
    assert drawing.empty and drawing.size == (600, 500)


def test_a_model_that_cannot_be_loaded_is_reported(tmp_path):
    reader = LiveReader(lambda: digitrec.load(tmp_path / "missing"))
    assert reader.wait(timeout=30) is None
    assert "no such run directory" in reader.error and not reader.ready


def run_draw(env: dict, code: str = "from digitrec.cli import main; sys.exit(main(['draw']))"):
    return subprocess.run([sys.executable, "-c", f"import sys; {code}"], env=env, capture_output=True, text=True,
                          timeout=60)


def test_without_a_display_draw_says_so_in_one_line():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = run_draw(env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("digitrec draw: error: cannot open a window") and "digitrec serve" in result.stderr


def test_a_python_without_tk_is_told_what_to_install():
    result = run_draw(dict(os.environ), "sys.modules['tkinter'] = None; "
                                        "from digitrec.cli import main; sys.exit(main(['draw']))")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "python3-tk" in result.stderr and "digitrec serve" in result.stderr
