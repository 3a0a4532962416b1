"""A short video of the model at work: a number written stroke by stroke, read live, then a sweep
of MNIST test digits with what the model reads in each.

    >>> from digitrec.demo import make_demo
    >>> make_demo("demo.mp4")                      # the bundled model; H.264 through ffmpeg
    >>> make_demo("demo.gif", model="runs/fast")   # a GIF needs no video encoder

Every frame of the writing is read through the Recognizer (`digitrec.load(...).read(image)`), exactly
as a photo would be: the video shows what a user of the package gets. Frames are drawn with PIL
and piped to the ffmpeg program as raw RGB.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

import digitrec
from digitrec.checkpoint import BUNDLED_DIR, META
from digitrec.data import atomic_write_bytes, load_mnist, new_file_mode
from digitrec.errors import UsageError

WIDTH, HEIGHT, FPS = 1280, 720, 25  # even sizes: H.264 in yuv420p needs them
GIF_WIDTH, GIF_STEP = 640, 2  # a GIF is half size at half the frame rate, to stay a few MB
NUMBER = "7394"  # written in part one: straight strokes, curves, a loop and a pen lift each
PEN_WIDTH = 22  # pixels: digits about 250 high then have MNIST's proportion of stroke to size
SWEEP_ROWS, SWEEP_COLUMNS = 6, 14  # test digits in part two

PAPER, INK = (255, 255, 255), (22, 32, 92)  # blue-black ink on white paper
BACKGROUND, TEXT, MUTED = (243, 245, 248), (29, 29, 31), (100, 108, 120)
RIGHT, WRONG, DOUBT, BAR = (27, 122, 58), (198, 40, 40), (230, 126, 0), (76, 114, 176)

# Each digit is written as strokes (pen down to pen up); a stroke is pieces of a smooth curve
# through the given points, in a box 1 high and 0.6 wide (x right, y down). Pieces meet in corners.
GLYPHS: dict[str, list[list[list[tuple[float, float]]]]] = {
    "0": [[[(0.55, 0.04), (0.25, 0.1), (0.05, 0.45), (0.12, 0.85), (0.35, 1.0), (0.58, 0.88), (0.66, 0.5),
            (0.6, 0.15), (0.45, 0.02), (0.3, 0.06)]]],
    "1": [[[(0.26, 0.1), (0.38, 0.0)], [(0.38, 0.0), (0.36, 0.5), (0.34, 1.0)]]],
    "2": [[[(0.04, 0.25), (0.2, 0.05), (0.42, 0.0), (0.6, 0.15), (0.55, 0.4), (0.3, 0.7), (0.02, 0.98)],
           [(0.02, 0.98), (0.35, 0.96), (0.66, 0.97)]]],
    "3": [[[(0.05, 0.12), (0.3, 0.0), (0.55, 0.08), (0.55, 0.3), (0.25, 0.46)],
           [(0.25, 0.46), (0.55, 0.58), (0.6, 0.82), (0.35, 1.0), (0.02, 0.9)]]],
    "4": [[[(0.42, 0.0), (0.0, 0.66)], [(0.0, 0.66), (0.66, 0.64)]], [[(0.5, 0.22), (0.48, 1.0)]]],
    "5": [[[(0.14, 0.02), (0.1, 0.45)], [(0.1, 0.45), (0.35, 0.38), (0.58, 0.55), (0.58, 0.8), (0.35, 0.99),
                                          (0.02, 0.9)]],
          [[(0.14, 0.02), (0.62, 0.0)]]],
    "6": [[[(0.55, 0.02), (0.28, 0.18), (0.08, 0.5), (0.08, 0.82), (0.3, 1.0), (0.55, 0.9), (0.6, 0.66),
            (0.38, 0.52), (0.12, 0.66)]]],
    "7": [[[(0.02, 0.04), (0.64, 0.02)], [(0.64, 0.02), (0.4, 0.5), (0.25, 1.0)]]],
    "8": [[[(0.56, 0.12), (0.32, 0.0), (0.08, 0.14), (0.16, 0.36), (0.45, 0.58), (0.6, 0.82), (0.32, 1.0),
            (0.04, 0.84), (0.16, 0.6), (0.48, 0.36), (0.56, 0.12)]]],
    "9": [[[(0.58, 0.16), (0.32, 0.0), (0.06, 0.14), (0.08, 0.38), (0.35, 0.46), (0.58, 0.3), (0.58, 0.16)],
           [(0.58, 0.16), (0.55, 0.6), (0.5, 1.0)]]],
}


def _smooth(points: list[tuple[float, float]], spacing: float) -> np.ndarray:
    """A Catmull-Rom curve through `points`, sampled every `spacing` units: (N, 2)."""
    p = np.asarray(points, float)
    if len(p) == 2:
        n = max(2, int(np.linalg.norm(p[1] - p[0]) / spacing) + 1)
        return p[0] + np.linspace(0, 1, n)[:, None] * (p[1] - p[0])
    ext = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])  # mirrored end points keep the ends straight
    out = []
    for i in range(1, len(ext) - 2):
        p0, p1, p2, p3 = ext[i - 1:i + 3]
        n = max(2, int(np.linalg.norm(p2 - p1) / spacing) + 1)
        t = np.linspace(0, 1, n, endpoint=False)[:, None]
        out.append(0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                          + (3 * p1 - p0 - 3 * p2 + p3) * t ** 3))
    out.append(p[-1:])
    return np.vstack(out)


def handwriting(text: str, box: tuple[int, int, int, int], rng: np.random.Generator) -> list[list[np.ndarray]]:
    """Pen strokes of `text` written into box (x, y, w, h) of a canvas: for each digit, its strokes,
    each an (N, 2) array of canvas points about 2 pixels apart, in writing order.

    Every digit gets its own slant, size and a little wobble, as a hand would give it.
    """
    x0, y0, w, h = box
    advance, extent = 0.85, 0.85  # digit spacing, and a digit's width with its slant, in heights
    height = min(h * 0.8, 0.92 * w / ((len(text) - 1) * advance + extent))
    left = x0 + (w - ((len(text) - 1) * advance + extent) * height) / 2
    digits = []
    for k, ch in enumerate(text):
        size = height * rng.uniform(0.92, 1.05)
        slant = rng.uniform(0.08, 0.22)  # right-leaning, as most hands write
        ox = left + (k * advance + rng.uniform(-0.03, 0.03)) * height
        oy = y0 + (h - size) / 2 + rng.uniform(-0.04, 0.04) * height
        strokes = []
        for stroke in GLYPHS[ch]:
            path = np.vstack([_smooth(piece, 2 / size) for piece in stroke])
            t = np.linspace(0, 1, len(path))[:, None]
            wobble = 0.012 * np.sin(2 * np.pi * (t * rng.uniform(1, 2) + rng.uniform(0, 1, 2)))
            path = path + wobble
            xs = ox + size * (path[:, 0] + slant * (1 - path[:, 1]))
            ys = oy + size * path[:, 1]
            strokes.append(np.stack([xs, ys], 1))
        digits.append(strokes)
    return digits


def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    # DejaVu Sans ships with matplotlib, so every installation has it.
    import matplotlib

    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size)


def _draw_pen(d: ImageDraw.ImageDraw, x: float, y: float, down: bool) -> None:
    """A pen leaning right with its tip at (x, y); lifted, it floats above its shadow."""
    if not down:
        d.ellipse((x - 7, y - 4, x + 7, y + 4), fill=(214, 216, 222))
        y -= 14
    tip, u, n = np.array([x, y]), np.array([0.5, -0.866]), np.array([0.866, 0.5])  # along and across the pen
    base, end = tip + 24 * u, tip + 124 * u

    def poly(*points):
        return [tuple(p) for p in points]

    d.polygon(poly(tip, base + 7 * n, base - 7 * n), fill=(168, 172, 182))  # the metal cone
    d.polygon(poly(tip, tip + 6 * u + 2 * n, tip + 6 * u - 2 * n), fill=INK)  # the nib, wet with ink
    d.polygon(poly(base + 8 * n, base - 8 * n, end - 8 * n, end + 8 * n), fill=(38, 44, 58))  # the barrel
    d.line(poly(base + 30 * u + 3 * n, end - 6 * u + 3 * n), fill=(96, 104, 122), width=3)  # a highlight
    d.ellipse((end[0] - 8, end[1] - 8, end[0] + 8, end[1] + 8), fill=(38, 44, 58))


@dataclass(frozen=True)
class Stroke:
    points: np.ndarray  # (N, 2) canvas points in writing order
    start: float  # seconds into the writing when the pen touches down
    end: float  # seconds when it lifts


def schedule(digits: list[list[np.ndarray]], seconds: float, stroke_pause: float = 0.2,
             digit_pause: float = 0.45) -> list[Stroke]:
    """Times for the strokes: one pen speed throughout, short lifts between strokes, longer between
    digits, the whole taking `seconds`."""
    lengths = [[float(np.linalg.norm(np.diff(s, axis=0), axis=1).sum()) for s in d] for d in digits]
    pauses = sum(len(d) - 1 for d in digits) * stroke_pause + (len(digits) - 1) * digit_pause
    speed = sum(map(sum, lengths)) / (seconds - pauses)  # pixels per second
    out, t = [], 0.0
    for strokes, lens in zip(digits, lengths):
        for i, (points, length) in enumerate(zip(strokes, lens)):
            out.append(Stroke(points, t, t + length / speed))
            t += length / speed + (stroke_pause if i < len(strokes) - 1 else digit_pause)
    return out


class Writing:
    """Ink laid down so far on a canvas (white ink on black, as the strokes are drawn)."""

    def __init__(self, size: tuple[int, int], strokes: list[Stroke], pen_width: float):
        self.ink = np.zeros((size[1], size[0]), np.uint8)
        self.strokes, self.pen_width = strokes, pen_width
        self.drawn = [0] * len(strokes)  # points of each stroke already on the canvas

    def advance(self, t: float) -> tuple[np.ndarray | None, bool]:
        """Draw everything written by time t; returns the pen's position (None once the writing is
        done) and whether it touches the paper."""
        for i, s in enumerate(self.strokes):
            frac = np.clip((t - s.start) / (s.end - s.start), 0, 1)
            upto = int(round(frac * (len(s.points) - 1))) + 1 if t >= s.start else 0
            if upto > self.drawn[i]:
                part = s.points[max(0, self.drawn[i] - 1):upto]
                cv2.polylines(self.ink, [np.round(part * 16).astype(np.int32)], False, 255,
                              int(round(self.pen_width)), cv2.LINE_AA, shift=4)
                self.drawn[i] = upto
        for i, s in enumerate(self.strokes):
            if s.start <= t <= s.end:
                return s.points[self.drawn[i] - 1], True
            following = self.strokes[i + 1] if i + 1 < len(self.strokes) else None
            if following and s.end < t < following.start:  # pen in the air, moving to the next stroke
                a = (t - s.end) / (following.start - s.end)
                return (1 - a) * s.points[-1] + a * following.points[0], False
        return None, False

    # Ink coverage 0-255 -> the RGB colour of paper under that much ink.
    _SHADES = np.round(np.outer(1 - np.arange(256) / 255, PAPER) + np.outer(np.arange(256) / 255, INK)).astype(np.uint8)

    def paper(self) -> np.ndarray:
        """The canvas as a camera would see it: RGB ink on white paper, (H, W, 3) uint8."""
        return self._SHADES[self.ink]


class Frames:
    """Draws the demo's frames (RGB uint8, HEIGHT x WIDTH x 3) one at a time."""

    CANVAS = (40, 112, 820, 520)  # x, y, w, h of the paper
    PANEL_X = 892  # left edge of the reading panel

    def __init__(self, rec, test_images: np.ndarray, test_labels: np.ndarray, seed: int = 0):
        self.rec, self.rng = rec, np.random.default_rng(seed)
        self.images, self.labels = test_images, test_labels
        self.fonts = {(s, b): _font(s, b) for s in (13, 15, 17, 20, 22, 26, 34, 88) for b in (False, True)}
        metrics = (rec.meta or {}).get("metrics") or {}
        accuracy = metrics.get("test_accuracy")
        self.model_line = f"model: {(rec.meta or {}).get('architecture', '?')}" + (
            f", {accuracy:.2%} on the MNIST test set" if accuracy is not None else "")

    def font(self, size: int, bold: bool = False):
        return self.fonts[size, bold]

    def _header(self, subtitle: str) -> Image.Image:
        img = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
        d = ImageDraw.Draw(img)
        d.text((40, 24), "digitrec", font=self.font(34, True), fill=TEXT)
        d.text((222, 36), subtitle, font=self.font(22), fill=MUTED)
        d.text((WIDTH - 40, 38), self.model_line, font=self.font(17), fill=MUTED, anchor="ra")
        d.line((40, 86, WIDTH - 40, 86), fill=(214, 218, 224), width=2)
        return img

    # Part one: a number written stroke by stroke, read on every frame.

    def writing(self, text: str = NUMBER, seconds: float = 7.6, lead: float = 0.6, hold: float = 1.6) -> Iterator[np.ndarray]:
        x, y, w, h = self.CANVAS
        digits = handwriting(text, (0, 0, w, h), self.rng)
        strokes = schedule(digits, seconds)
        writing = Writing((w, h), strokes, PEN_WIDTH)
        base = self._header("reads handwriting as it is written")
        d = ImageDraw.Draw(base)
        d.rounded_rectangle((x - 2, y - 2, x + w + 2, y + h + 2), 8, outline=(200, 205, 212), width=2)
        d.text((x, HEIGHT - 44), "Every frame goes through digitrec.load().read(image), as a photo of writing would.",
               font=self.font(17), fill=MUTED)
        for i in range(round((lead + strokes[-1].end + hold) * FPS)):
            pen, down = writing.advance(i / FPS - lead)
            paper = writing.paper()
            reading = self.rec.read(paper, top_k=10)
            yield self._writing_frame(base, paper, reading, pen, down)

    def _writing_frame(self, base, paper, reading, pen, down) -> np.ndarray:
        x, y, w, h = self.CANVAS
        img = base.copy()
        img.paste(Image.fromarray(paper), (x, y))
        d = ImageDraw.Draw(img)
        for digit in reading.digits:
            bx, by, bw, bh = digit.box
            colour = DOUBT if digit.low_confidence else RIGHT
            d.rounded_rectangle((x + bx - 6, y + by - 6, x + bx + bw + 6, y + by + bh + 6), 6, outline=colour, width=3)
            tag = f"{digit.label} {digit.confidence:.0%}"
            tx, ty = x + bx - 6, max(y + 2, y + by - 36)
            d.rounded_rectangle((tx, ty, tx + d.textlength(tag, font=self.font(20, True)) + 14, ty + 28), 5, fill=colour)
            d.text((tx + 7, ty + 3), tag, font=self.font(20, True), fill=(255, 255, 255))
        if pen is not None:
            _draw_pen(d, x + pen[0], y + pen[1], down)
        self._panel(d, reading, pen)
        return np.asarray(img)

    def _panel(self, d: ImageDraw.ImageDraw, reading, pen) -> None:
        px = self.PANEL_X
        d.text((px, 112), "The model reads", font=self.font(22), fill=MUTED)
        d.text((px, 140), reading.text or "…", font=self.font(88, True), fill=TEXT)
        digit = self._digit_at(reading, pen)
        where = "at the pen" if pen is not None else "last digit"
        y0 = 280
        probs = np.zeros(10)
        if digit is None:
            d.text((px, y0), f"{where}: nothing read yet", font=self.font(20), fill=MUTED)
        else:
            d.text((px, y0), f"{where}: {digit.label} ({digit.confidence:.1%})",
                   font=self.font(20, True), fill=DOUBT if digit.low_confidence else RIGHT)
            for label, p in digit.top:
                probs[label] = p
        best = int(probs.argmax()) if probs.any() else -1
        for k in range(10):
            yk = y0 + 40 + k * 33
            d.text((px + 4, yk), str(k), font=self.font(22, True), fill=TEXT)
            d.rounded_rectangle((px + 36, yk + 4, px + 276, yk + 26), 4, fill=(225, 229, 235))
            if probs[k] > 0.005:
                colour = (RIGHT if not digit.low_confidence else DOUBT) if k == best else BAR
                d.rounded_rectangle((px + 36, yk + 4, px + 36 + max(8, 240 * probs[k]), yk + 26), 4, fill=colour)
            d.text((px + 346, yk + 2), f"{probs[k]:.0%}" if probs[k] >= 0.005 else "", font=self.font(20),
                   fill=TEXT, anchor="ra")

    @staticmethod
    def _digit_at(reading, pen, reach: float = 30):
        """The digit read under the pen (within `reach` pixels sideways), or the last one once the
        pen has gone; None while what is under the pen is not read as a digit yet."""
        if pen is None:
            return reading.digits[-1] if reading.digits else None
        near = [dg for dg in reading.digits if dg.box[0] - reach <= pen[0] <= dg.box[0] + dg.box[2] + reach]
        return min(near, key=lambda dg: abs(dg.box[0] + dg.box[2] / 2 - pen[0]), default=None)

    # Part two: a sweep of test digits, each read as it appears.

    def sweep(self, per_second: float = 16, hold: float = 1.6) -> Iterator[np.ndarray]:
        n = SWEEP_ROWS * SWEEP_COLUMNS
        pick = self.rng.choice(len(self.labels), size=min(n, len(self.labels)), replace=False)
        images, labels = self.images[pick], self.labels[pick]
        probs = self.rec.classify(images)  # (n, 10)
        predicted, confidence = probs.argmax(1), probs.max(1)
        cell_w, cell_h, scale = 84, 92, 2.4
        left = (WIDTH - SWEEP_COLUMNS * cell_w) // 2
        board = self._header("test digits it never saw in training")
        d = ImageDraw.Draw(board)
        right = 0
        total = round((len(pick) / per_second + hold) * FPS)
        for i in range(total):
            shown = min(len(pick), int(i / FPS * per_second) + 1)
            while right < shown:  # reveal new cells on the board, once each
                k = right
                r, c = divmod(k, SWEEP_COLUMNS)
                cx, cy = left + c * cell_w, 104 + r * cell_h
                size = int(28 * scale)
                digit = Image.fromarray(255 - images[k]).resize((size, size), Image.BILINEAR)
                board.paste(digit, (cx + (cell_w - size) // 2, cy))
                ok = predicted[k] == labels[k]
                if ok:
                    d.text((cx + cell_w // 2, cy + size + 2), f"{predicted[k]}  {confidence[k]:.0%}",
                           font=self.font(15, True), fill=RIGHT, anchor="ma")
                else:
                    d.rectangle((cx + 4, cy - 3, cx + cell_w - 4, cy + size + 22), outline=WRONG, width=3)
                    d.text((cx + cell_w // 2, cy + size + 3), f"{predicted[k]}, true {labels[k]}",
                           font=self.font(13, True), fill=WRONG, anchor="ma")
                right += 1
            img = board.copy()
            f = ImageDraw.Draw(img)
            if shown < len(pick):
                r, c = divmod(shown - 1, SWEEP_COLUMNS)
                cx, cy = left + c * cell_w, 104 + r * cell_h
                f.rectangle((cx + 2, cy - 5, cx + cell_w - 2, cy + cell_h - 6), outline=BAR, width=3)
            correct = int((predicted[:shown] == labels[:shown]).sum())
            f.text((40, HEIGHT - 44), f"read {correct} of {shown} right ({correct / shown:.1%})",
                   font=self.font(26, True), fill=TEXT)
            f.text((WIDTH - 40, HEIGHT - 40), "green: read right, red: a mistake, with the true digit",
                   font=self.font(17), fill=MUTED, anchor="ra")
            yield np.asarray(img)

    def all(self) -> Iterator[np.ndarray]:
        yield from self.writing()
        yield from self.sweep()


def find_encoder() -> tuple[str, list[str], str]:
    """The ffmpeg program and the options of the best MP4 video encoder it has: H.264 (libx264),
    else MPEG-4 Part 2. Looks on PATH, then in the imageio-ffmpeg package. Raises UsageError naming
    what it tried and what to install."""
    tried, programs = [], []
    on_path = shutil.which("ffmpeg")
    if on_path:
        programs.append(on_path)
    else:
        tried.append("ffmpeg on PATH (not found)")
    try:
        import imageio_ffmpeg

        programs.append(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError):
        tried.append("the imageio-ffmpeg package (not installed)")
    for program in programs:
        try:
            listing = subprocess.run([program, "-hide_banner", "-encoders"], capture_output=True, text=True,
                                     timeout=30).stdout
        except (OSError, subprocess.SubprocessError) as e:
            tried.append(f"{program} (does not run: {e})")
            continue
        encoders = {line.split()[1] for line in listing.splitlines() if len(line.split()) > 1 and line.startswith(" V")}
        if "libx264" in encoders:
            return program, ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p"], "H.264"
        if "mpeg4" in encoders:
            return program, ["-c:v", "mpeg4", "-q:v", "3", "-pix_fmt", "yuv420p"], "MPEG-4 Part 2"
        tried.append(f"{program} (has neither the libx264 nor the mpeg4 encoder)")
    raise UsageError(f"no H.264 or MPEG-4 video encoder: tried {' and '.join(tried)}; install ffmpeg "
                     "(apt-get install ffmpeg, brew install ffmpeg or winget install ffmpeg) or "
                     "`pip install imageio-ffmpeg`, or write a GIF instead with --out demo.gif")


def write_mp4(frames: Iterator[np.ndarray], path: Path, encoder: tuple[str, list[str], str]) -> int:
    """Pipe RGB frames to ffmpeg into an MP4 at `path` (atomically); returns the frame count."""
    program, options, _ = encoder
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".mp4")
    os.close(fd)
    os.chmod(tmp, new_file_mode())
    command = [program, "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{WIDTH}x{HEIGHT}", "-r", str(FPS), "-i", "-", *options, "-movflags", "+faststart", tmp]
    count = 0
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=errors)
        try:
            for frame in frames:
                process.stdin.write(np.ascontiguousarray(frame).tobytes())
                count += 1
            process.stdin.close()
            status = process.wait()
        except BrokenPipeError:
            status = process.wait()
        except BaseException:
            process.kill()
            process.wait()
            Path(tmp).unlink(missing_ok=True)
            raise
        errors.seek(0)
        message = errors.read().decode(errors="replace").strip().splitlines()
    if status != 0:
        Path(tmp).unlink(missing_ok=True)
        raise UsageError(f"ffmpeg could not write {path}: {message[-1] if message else f'exit status {status}'}")
    os.replace(tmp, path)
    return count


def write_gif(frames: list[Image.Image], path: Path) -> None:
    """Save frames (already at GIF size and rate) as a looping GIF, atomically."""
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=round(1000 * GIF_STEP / FPS),
                   loop=0, optimize=False)
    atomic_write_bytes(path, buf.getvalue())


def make_demo(out: str | os.PathLike = "demo.mp4", model: str | os.PathLike | None = None, gif: bool = False,
              data_dir: str | os.PathLike | None = None, seed: int = 0,
              log: Callable[[str], None] = print) -> list[Path]:
    """Render the demo video of `model` (a run directory; None: the bundled model) into `out`, an
    .mp4 or a .gif; with gif=True an .mp4 also gets a GIF beside it. Returns the files written."""
    out = Path(out)
    if out.suffix.lower() not in (".mp4", ".gif"):
        raise UsageError(f"{out}: the demo is written as .mp4 or .gif; give a name ending in one of them")
    targets = [out] + ([out.with_suffix(".gif")] if gif and out.suffix.lower() == ".mp4" else [])
    if model is None and not (BUNDLED_DIR / META).is_file():
        raise UsageError("this installation has no bundled model; give one with --model RUN_DIR")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for target in targets:
            with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}."):
                pass
    except OSError as e:
        raise UsageError(f"cannot write {out}: {e.strerror or e}") from None
    encoder = find_encoder() if out.suffix.lower() == ".mp4" else None
    rec = digitrec.load(model)
    mnist = load_mnist(data_dir)
    want_gif = targets[-1].suffix.lower() == ".gif"
    gif_frames: list[Image.Image] = []

    def keep_for_gif(stream: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        for i, frame in enumerate(stream):
            if want_gif and i % GIF_STEP == 0:
                small = Image.fromarray(frame).resize((GIF_WIDTH, GIF_WIDTH * HEIGHT // WIDTH), Image.LANCZOS)
                gif_frames.append(small.quantize(colors=128))
            yield frame

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a frame holds four digits at most: one thread is fastest, more contend
    try:
        frames = keep_for_gif(Frames(rec, mnist.test_images, mnist.test_labels, seed).all())
        if encoder:
            count = write_mp4(frames, out, encoder)
            log(f"demo: {out} ({encoder[2]}, {WIDTH}x{HEIGHT}, {count} frames, {count / FPS:.1f} s)")
        else:
            count = sum(1 for _ in frames)
    finally:
        torch.set_num_threads(threads)
    if want_gif:
        write_gif(gif_frames, targets[-1])
        log(f"demo: {targets[-1]} (GIF, {GIF_WIDTH}x{gif_frames[0].height}, {len(gif_frames)} frames, "
            f"{count / FPS:.1f} s)")
    return targets
