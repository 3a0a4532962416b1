"""What the drawing window does, without a display: strokes, undo, clear, rendering, live reading.

The window (gui.py) only turns mouse events into calls here and shows the results. Strokes are kept
as points and rendered into an in-memory picture for the Recognizer, never grabbed from the screen.

    >>> drawing = Drawing((600, 400))
    >>> drawing.pen_down((100, 80), width=18); drawing.pen_move((110, 300)); drawing.pen_up()
    >>> image = drawing.sheet().render()          # PIL image: black ink on white, 600x400
    >>> digitrec.load().read(image).text
    '1'

A picture opened from a file becomes the paper: strokes are kept in its pixels, and the window shows it
scaled to fit (`Drawing.view`).
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from digitrec.errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

Point = tuple[float, float]
Box = tuple[float, float, float, float]  # x, y, w, h

INK = 0  # black on white: what a photo of paper looks like, which the preprocessing expects
LIVE_SECONDS = 0.25  # while the pen is down, the drawing is read at most this often
FOCUS_REACH = 0.25  # the cursor picks a digit this far outside its box (a fraction of the box height)


@dataclass(frozen=True)
class Stroke:
    points: tuple[Point, ...]  # pen positions in the drawing's pixels, in drawing order
    width: float  # pen width in the drawing's pixels

    def box(self) -> Box:
        xs, ys = [p[0] for p in self.points], [p[1] for p in self.points]
        r = self.width / 2
        return min(xs) - r, min(ys) - r, max(xs) - min(xs) + self.width, max(ys) - min(ys) + self.width


@dataclass(frozen=True)
class Sheet:
    """A snapshot of a drawing, safe to render and read in another thread."""

    size: tuple[int, int]  # (width, height) in pixels
    strokes: tuple[Stroke, ...]
    background: np.ndarray | None = None  # (H, W) or (H, W, 3) uint8: an opened picture, never changed

    @property
    def empty(self) -> bool:
        return not self.strokes and self.background is None

    def render(self) -> Image.Image:
        """The strokes over white paper (or over the opened picture): mode L, or RGB over a colour picture.

        >>> Drawing((300, 200)).sheet().render().size
        (300, 200)
        """
        # Imported here, not at the top: the window opens before these are loaded (in the reading thread).
        import cv2
        import numpy as np
        from PIL import Image

        if self.background is None:
            img = np.full((self.size[1], self.size[0]), 255, np.uint8)
        else:
            img = self.background.copy()
        ink = INK if img.ndim == 2 else (INK,) * 3
        for s in self.strokes:
            # Anti-aliased, with round caps and joins; coordinates in 1/16 pixel (shift=4).
            points = np.round(np.asarray(s.points, np.float64) * 16).astype(np.int32)  # (N, 2)
            width = max(1, round(s.width))
            if len(points) > 1:
                cv2.polylines(img, [points], False, ink, width, cv2.LINE_AA, shift=4)
            else:
                cv2.circle(img, tuple(points[0]), round(s.width * 8), ink, -1, cv2.LINE_AA, shift=4)
        return Image.fromarray(img)

    def png(self) -> bytes:
        """The rendered sheet as a PNG file's bytes."""
        buf = io.BytesIO()
        self.render().save(buf, format="PNG")
        return buf.getvalue()


@dataclass(frozen=True)
class View:
    """Where the drawing sits on the canvas: canvas = drawing * scale + offset."""

    scale: float = 1.0
    dx: float = 0.0
    dy: float = 0.0

    def to_canvas(self, p: Point) -> Point:
        return p[0] * self.scale + self.dx, p[1] * self.scale + self.dy

    def to_drawing(self, p: Point) -> Point:
        return (p[0] - self.dx) / self.scale, (p[1] - self.dy) / self.scale


class Drawing:
    """Strokes drawn on a canvas so far, over blank paper or an opened picture; every change bumps `version`.

    On blank paper the drawing is the canvas, pixel for pixel: it grows with the canvas, and keeps its size
    when the canvas shrinks (until cleared), so that resizing the window never changes what is read. An
    opened picture keeps its own pixels, and the pen's canvas positions and width are taken into them
    through `view()`.

    >>> d = Drawing((600, 400)); d.pen_down((10, 10), 12); d.pen_up(); d.undo(); d.empty
    True
    """

    def __init__(self, canvas_size: tuple[int, int]):
        self.canvas_size = self._paper = canvas_size
        self.background: np.ndarray | None = None
        self.strokes: list[Stroke] = []
        self.version = 0
        self._pen: list[Point] | None = None  # the stroke being drawn
        self._pen_width = 0.0
        self._pen_view = View()  # where the drawing sat on the canvas when the stroke began

    @property
    def size(self) -> tuple[int, int]:
        if self.background is not None:
            return self.background.shape[1], self.background.shape[0]
        return self._paper

    @property
    def empty(self) -> bool:
        return not self.strokes and self._pen is None and self.background is None

    @property
    def drawing(self) -> bool:
        """The pen is down."""
        return self._pen is not None

    def _changed(self) -> None:
        self.version += 1

    def view(self) -> View:
        """Blank paper: the canvas itself. A picture: scaled to fit the canvas, centred."""
        if self.background is None:
            return View()
        (w, h), (cw, ch) = self.size, self.canvas_size
        scale = min(cw / w, ch / h)
        return View(scale, (cw - w * scale) / 2, (ch - h * scale) / 2)

    def resize(self, canvas_size: tuple[int, int]) -> None:
        self.canvas_size = canvas_size
        paper = (max(self._paper[0], canvas_size[0]), max(self._paper[1], canvas_size[1]))
        if paper != self._paper:
            self._paper = paper
            self._changed()

    def pen_down(self, p: Point, width: float) -> None:
        """Start a stroke at canvas point p, `width` canvas pixels wide (kept in the drawing's pixels)."""
        self._pen_view = self.view()
        self._pen, self._pen_width = [self._pen_view.to_drawing(p)], width / self._pen_view.scale
        self._changed()

    def pen_move(self, p: Point) -> None:
        """Continue the stroke to canvas point p."""
        if self._pen is not None:
            p = self._pen_view.to_drawing(p)
            if p != self._pen[-1]:
                self._pen.append(p)
                self._changed()

    def pen_up(self) -> None:
        if self._pen is not None:
            self.strokes.append(Stroke(tuple(self._pen), self._pen_width))
            self._pen = None
            self._changed()

    def current(self) -> Stroke | None:
        """The stroke being drawn, if the pen is down."""
        return None if self._pen is None else Stroke(tuple(self._pen), self._pen_width)

    def undo(self) -> bool:
        """Take back the last stroke (an opened picture stays); False when there is none."""
        if self._pen is not None or not self.strokes:
            return False
        self.strokes.pop()
        self._changed()
        return True

    def clear(self) -> None:
        """Blank paper again: strokes and any opened picture go."""
        self.strokes, self._pen, self.background = [], None, None
        self._paper = self.canvas_size
        self._changed()

    def open(self, pixels: np.ndarray) -> None:
        """Make a picture, (H, W) or (H, W, 3) uint8 as images.load_image gives it, the paper."""
        self.clear()
        self.background = pixels.copy()
        self.background.flags.writeable = False  # shared with the reading thread

    def sheet(self) -> Sheet:
        strokes = tuple(self.strokes) + ((self.current(),) if self._pen is not None else ())
        return Sheet(self.size, strokes, self.background)

    def last_box(self) -> Box | None:
        """Where the latest stroke is, if any."""
        last = self.current() or (self.strokes[-1] if self.strokes else None)
        return last.box() if last else None


def digit_at(reading, point: Point):
    """The digit read at a point (drawing pixels), within a margin around its box; None if none is.

    >>> digit_at(reading, (130, 200)).label
    7
    """
    x, y = point
    near = []
    for d in reading.digits:
        bx, by, bw, bh = d.box
        m = FOCUS_REACH * bh
        if bx - m <= x <= bx + bw + m and by - m <= y <= by + bh + m:
            near.append(((bx + bw / 2 - x) ** 2 + (by + bh / 2 - y) ** 2, d))
    return min(near, key=lambda t: t[0])[1] if near else None


def focus_digit(reading, cursor: Point | None = None, last: Box | None = None):
    """The digit to show the alternatives of: the one under the cursor, else the one drawn last.

    `cursor` and `last` (the latest stroke's box) are in drawing pixels. The digit drawn last is the
    one the latest stroke overlaps most, else the last in reading order. None when nothing was read.

    >>> focus_digit(reading, cursor=None, last=drawing.last_box()).label
    1
    """
    if not reading.digits:
        return None
    under = digit_at(reading, cursor) if cursor is not None else None
    if under is not None:
        return under
    if last is not None:
        best, i = max((_overlap(d.box, last), i) for i, d in enumerate(reading.digits))
        if best > 0:
            return reading.digits[i]
    return reading.digits[-1]


def _overlap(a: Box, b: Box) -> float:
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h)


@dataclass(frozen=True)
class Result:
    version: int  # the drawing's version that was read
    reading: object | None  # digitrec.Reading; None when reading failed
    error: str | None = None  # why reading failed
    seconds: float = 0.0  # time spent rendering and reading


class LiveReader:
    """Reads drawings in a background thread, so that the window never waits for the model.

    The latest drawing wins: a sheet submitted while another is being read replaces any still
    waiting, so the reading catches up with the pen instead of falling behind it. The model is
    loaded in the same thread, so a window can show up before the model is ready.

    >>> reader = LiveReader(lambda: digitrec.load())
    >>> reader.submit(drawing.version, drawing.sheet())
    >>> reader.poll()               # from the window's timer: the newest reading finished, or None
    Result(version=7, reading=Reading(text='71', ...), error=None, seconds=0.12)
    """

    def __init__(self, load: Callable[[], object], start: bool = True):
        self.recognizer = None  # set once loaded
        self.error: str | None = None  # set when the model could not be loaded
        self._cond = threading.Condition()
        self._job: tuple[int, Sheet] | None = None  # waiting to be read
        self._done: Result | None = None  # newest finished, not yet polled
        self._reading = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, args=(load,), name="digitrec-reader", daemon=True)
        if start:
            self.start()

    def start(self) -> None:
        """Start loading the model (at once, unless made with start=False)."""
        self._thread.start()

    @property
    def ready(self) -> bool:
        return self.recognizer is not None

    @property
    def idle(self) -> bool:
        """Nothing waiting or being read."""
        with self._cond:
            return self._job is None and not self._reading

    def submit(self, version: int, sheet: Sheet) -> None:
        with self._cond:
            self._job = (version, sheet)
            self._cond.notify()

    def poll(self) -> Result | None:
        with self._cond:
            done, self._done = self._done, None
            return done

    def wait(self, timeout: float) -> Result | None:
        """Block until a reading is finished (for scripts and tests; a window polls instead)."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._done is None and self.error is None and time.monotonic() < end:
                self._cond.wait(end - time.monotonic())
            done, self._done = self._done, None
            return done

    def close(self, timeout: float | None = None) -> None:
        """Stop after the reading in progress, if any, waiting up to `timeout` seconds for it.

        A process should not exit in the middle of a reading: the native libraries abort.
        """
        with self._cond:
            self._closed = True
            self._cond.notify()
        if timeout:
            self._thread.join(timeout)

    def _run(self, load) -> None:
        try:
            rec = load()
        except Exception as e:  # whatever it is, the window must say so rather than wait forever
            with self._cond:
                self.error = str(e) if isinstance(e, UsageError) else f"the model could not be loaded ({e!r})"
                self._cond.notify_all()
            return
        self.recognizer = rec
        while True:
            with self._cond:
                while self._job is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                (version, sheet), self._job = self._job, None
                self._reading = True
            start = time.perf_counter()
            reading, error = None, None
            try:
                reading = rec.read(sheet.render())
            except (UsageError, MemoryError) as e:
                error = str(e) or "not enough memory to read it"
            with self._cond:
                self._done = Result(version, reading, error, time.perf_counter() - start)
                self._reading = False
                self._cond.notify_all()


class LiveReading:
    """The reading a window shows, kept up with its drawing: read after every stroke (and every
    LIVE_SECONDS while one is drawn), and never a reading of a blank drawing, so it never guesses.

    >>> live = LiveReading(drawing, LiveReader(digitrec.load))
    >>> live.update(time.monotonic())      # from the window's timer; True when there is something new
    True
    >>> live.headline, live.title
    ('71', 'digitrec — 71')
    """

    def __init__(self, drawing: Drawing, reader: LiveReader, every: float = LIVE_SECONDS):
        self.drawing, self.reader, self.every = drawing, reader, every
        self.reading = None  # the digitrec.Reading shown, None before the first one
        self.error: str | None = None  # why the latest reading failed
        self.shown = drawing.version  # the version of the drawing the reading shown is of
        self._submitted, self._submitted_at = drawing.version, float("-inf")

    def update(self, now: float) -> bool:
        """Send the drawing to be read when it is due, take a finished reading; True if what is shown changed."""
        d = self.drawing
        if d.empty:
            self.reader.poll()  # a reading of what was there before is dropped
            changed = self.reading is not None or self.error is not None or self.shown != d.version
            self.reading, self.error, self.shown = None, None, d.version
            return changed
        if d.version != self._submitted and (not d.drawing or now - self._submitted_at >= self.every):
            self.reader.submit(d.version, d.sheet())
            self._submitted, self._submitted_at = d.version, now
        result = self.reader.poll()
        # Readings finish in order, but one of a drawing since cleared must not come back.
        if result is None or result.version <= self.shown:
            return False
        self.reading, self.error, self.shown = result.reading, result.error, result.version
        return True

    @property
    def headline(self) -> str:
        """The number read, in large type: 'draw a digit' on a blank drawing, never a guess."""
        if self.drawing.empty:
            return "draw a digit"
        if self.reading is None:
            return "reading…"
        return self.reading.text or "no digit yet"

    @property
    def title(self) -> str:
        """The window's title: 'digitrec — 71' ('digitrec — 31 / 41' for two lines), else 'digitrec'."""
        text = self.reading.text if self.reading is not None and not self.drawing.empty else ""
        return f"digitrec — {text.replace(chr(10), ' / ')}" if text else "digitrec"
