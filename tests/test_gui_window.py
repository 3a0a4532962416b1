"""`digitrec draw` end to end: a real Tk window on a virtual X display (Xvfb), driven by real mouse
moves and key presses from xdotool, with the reading checked where a user sees it.

Screenshots of the window go to test-artifacts/ for people to look at.
"""

import ctypes
import ctypes.util
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import digitrec
from conftest import need
from digitrec.demo import handwriting

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
SCREEN = (1280, 800)
WRITING_BOX = (40, 110, 700, 400)  # where the test writes, in window pixels: inside the canvas


@pytest.fixture
def display():
    """A fresh X display of its own (Xvfb picks a free number and tells it through a pipe)."""
    need("xdotool", "xdotool")
    read, write = os.pipe()
    xvfb = subprocess.Popen([need("Xvfb", "xvfb"), "-displayfd", str(write), "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24",
                             "-nolisten", "tcp"], pass_fds=[write], stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as f:
        number = f.readline().strip()
    assert number, "Xvfb did not start"
    yield f":{number}"
    xvfb.terminate()
    xvfb.wait(5)


class Window:
    """The `digitrec draw` window, seen and driven from outside as a user would."""

    def __init__(self, display: str, wid: str, app: subprocess.Popen):
        self.env = {**os.environ, "DISPLAY": display}
        self.display, self.wid, self.app = display, wid, app

    def xdotool(self, *args: str) -> str:
        return subprocess.run(["xdotool", *args], env=self.env, check=True, capture_output=True, text=True,
                              timeout=30).stdout.strip()

    @property
    def title(self) -> str:
        if self.app.poll() is not None:
            raise AssertionError(f"the window closed (exit status {self.app.returncode}): {self.app.stderr.read()}")
        return self.xdotool("getwindowname", self.wid)

    def wait_title(self, expected: str, timeout: float) -> str:
        end = time.monotonic() + timeout
        while (title := self.title) != expected and time.monotonic() < end:
            time.sleep(0.1)
        return title

    def keys(self, *keys: str, window: str | None = None) -> None:
        self.xdotool("windowfocus", "--sync", window or self.wid, "key", "--clearmodifiers", *keys)

    def write(self, text: str, seed: int = 0, digits: slice = slice(None)) -> None:
        """Write digits with the mouse, stroke by stroke, in small steps as a hand would move it
        (`digits`: which of the text's digits, laid out as the whole text is)."""
        for digit in handwriting(text, WRITING_BOX, np.random.default_rng(seed))[digits]:
            for stroke in digit:
                points = np.vstack([stroke[::3], stroke[-1:]]).round().astype(int)  # (N, 2), ~6 px apart
                args = ["mousemove", "--window", self.wid, *map(str, points[0]), "mousedown", "1"]
                for x, y in points[1:]:
                    # The pause lets Tk see each move: it merges motion events that queue up.
                    args += ["mousemove", "--window", self.wid, str(x), str(y), "sleep", "0.004"]
                self.xdotool(*args, "mouseup", "1")

    def dialog(self, title: str, path: Path) -> None:
        """Answer Tk's file dialog by typing a full path into its file name field."""
        dialog = self.xdotool("search", "--sync", "--onlyvisible", "--name", f"^{title}$").split()[0]
        time.sleep(0.5)  # a dialog that is mapped may still be building its widgets on a busy machine
        # Ctrl+/ selects all of the file name field (Tk's <<SelectAll>>), so the path typed replaces
        # whatever name the dialog proposed or what a keystroke sent too early left there.
        self.xdotool("windowfocus", "--sync", dialog, "key", "ctrl+slash", "type", "--delay", "2", str(path))
        self.keys("Return", window=dialog)

    def screenshot(self, path: Path) -> Image.Image:
        geometry = dict(line.split("=") for line in self.xdotool("getwindowgeometry", "--shell", self.wid).split())
        img = grab_screen(self.display).crop((int(geometry["X"]), int(geometry["Y"]),
                                              int(geometry["X"]) + int(geometry["WIDTH"]),
                                              int(geometry["Y"]) + int(geometry["HEIGHT"])))
        path.parent.mkdir(exist_ok=True)
        img.save(path)
        return img


class XImage(ctypes.Structure):  # the head of Xlib's XImage, up to the fields read here
    _fields_ = [(name, ctypes.c_int) for name in ("width", "height", "xoffset", "format")] + [
        ("data", ctypes.c_void_p)] + [(name, ctypes.c_int) for name in (
            "byte_order", "bitmap_unit", "bitmap_bit_order", "bitmap_pad", "depth", "bytes_per_line",
            "bits_per_pixel")]


def grab_screen(display: str) -> Image.Image:
    """The whole X screen as an RGB image, through Xlib itself (no screenshot program needed)."""
    x11 = ctypes.CDLL(ctypes.util.find_library("X11"))
    x11.XOpenDisplay.restype, x11.XOpenDisplay.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    x11.XDefaultRootWindow.restype, x11.XDefaultRootWindow.argtypes = ctypes.c_ulong, [ctypes.c_void_p]
    x11.XGetImage.restype = ctypes.POINTER(XImage)
    x11.XGetImage.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_int, ctypes.c_uint,
                              ctypes.c_uint, ctypes.c_ulong, ctypes.c_int]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    x11.XDestroyImage.argtypes = [ctypes.POINTER(XImage)]
    conn = x11.XOpenDisplay(display.encode())
    assert conn, f"cannot connect to {display}"
    try:
        w, h = SCREEN
        all_planes, z_pixmap = 0xFFFFFFFF, 2
        pointer = x11.XGetImage(conn, x11.XDefaultRootWindow(conn), 0, 0, w, h, all_planes, z_pixmap)
        ximage = pointer.contents
        assert ximage.bits_per_pixel == 32 and ximage.byte_order == 0, "expected a 24-bit screen, BGRX in memory"
        raw = ctypes.string_at(ximage.data, ximage.bytes_per_line * h)
        x11.XDestroyImage(pointer)
        bgrx = np.frombuffer(raw, np.uint8).reshape(h, ximage.bytes_per_line)[:, :4 * w].reshape(h, w, 4)
        return Image.fromarray(np.ascontiguousarray(bgrx[:, :, 2::-1]))
    finally:
        x11.XCloseDisplay(conn)


def cpu_seconds(pid: int) -> float:
    """Processor time a process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def find_window(env: dict) -> str | None:
    found = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", "^digitrec"], env=env,
                           capture_output=True, text=True).stdout.split()
    return found[0] if found else None


def test_digits_drawn_with_the_mouse_are_read_live(display, model_dir, tmp_path):
    model = ["--model", str(model_dir)] if model_dir else []
    env = {**os.environ, "DISPLAY": display}
    start = time.monotonic()
    app = subprocess.Popen([sys.executable, "-m", "digitrec.cli", "draw", *model], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while not (found := find_window(env)) and time.monotonic() - start < 20:
            time.sleep(0.02)  # xdotool's own --sync waits half a second between looks
        assert found, "no window came up: " + (app.communicate()[1] if app.poll() is not None else "after 20 s")
        startup, cpu = time.monotonic() - start, cpu_seconds(app.pid)
        window = Window(display, found, app)
        assert window.title == "digitrec"
        # Usable at once: it can be drawn on while the model is still loading. The processor time it took
        # is what a machine busy with other work does not inflate.
        assert cpu < 1.5 and startup < 10, f"the window took {startup:.1f} s ({cpu:.1f} s of processor time) to show"

        # The first digit goes down while the model is still loading, the rest once it has read that one:
        # while the loading holds the interpreter, Tk merges the mouse's moves and a fast stroke loses
        # its curves (a 0 drawn then can come out as a wedge).
        window.write("2071", digits=slice(0, 1))
        assert window.wait_title("digitrec — 2", timeout=60) == "digitrec — 2"  # the model loads meanwhile
        window.write("2071", digits=slice(1, None))
        title = window.wait_title("digitrec — 2071", timeout=60)
        shot = window.screenshot(ARTIFACTS / "draw-window.png")
        assert title == "digitrec — 2071"
        x, y, w, h = WRITING_BOX
        seen = np.asarray(shot)[y:y + h, x:x + w].reshape(-1, 3).astype(int)  # (N, 3) RGB where it wrote
        assert (seen.max(axis=1) < 60).sum() > 2000  # the ink is on the canvas
        assert (np.abs(seen - (27, 122, 58)).sum(axis=1) < 40).sum() > 500  # and green boxes around the digits

        window.keys("ctrl+z")  # the 1 was one stroke
        assert window.wait_title("digitrec — 207", timeout=20) == "digitrec — 207"
        window.keys("Escape")
        assert window.wait_title("digitrec", timeout=20) == "digitrec"

        # Save a drawing as PNG, clear, and open it again: the same number is read from the file.
        window.write("46", seed=1)
        assert window.wait_title("digitrec — 46", timeout=20) == "digitrec — 46"
        window.keys("ctrl+s")
        window.dialog("Save the drawing as PNG", tmp_path / "46.png")
        end = time.monotonic() + 30
        while not (tmp_path / "46.png").is_file() and time.monotonic() < end:
            time.sleep(0.1)
        assert digitrec.load(model_dir).read(tmp_path / "46.png").text == "46"
        window.keys("Delete")
        assert window.wait_title("digitrec", timeout=20) == "digitrec"
        window.keys("ctrl+o")
        window.dialog("Open an image", tmp_path / "46.png")
        assert window.wait_title("digitrec — 46", timeout=20) == "digitrec — 46"
        window.screenshot(ARTIFACTS / "draw-window-opened.png")

        window.keys("ctrl+q")
        out, err = app.communicate(timeout=60)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
    assert app.returncode == 0 and err == ""


def test_a_model_that_cannot_be_loaded_closes_the_window_with_one_line(display, tmp_path):
    result = subprocess.run([sys.executable, "-m", "digitrec.cli", "draw", "--model", str(tmp_path / "missing")],
                            env={**os.environ, "DISPLAY": display}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert result.stderr.startswith("digitrec draw: error:") and "missing" in result.stderr


def test_a_digit_corrected_in_the_window_is_stored_and_what_the_model_saw_is_shown(display, model_dir, user_home):
    from digitrec.learn import Store

    model = ["--model", str(model_dir)] if model_dir else []
    env = {**os.environ, "DISPLAY": display}
    app = subprocess.Popen([sys.executable, "-m", "digitrec.cli", "draw", *model], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 20
        while not (found := find_window(env)) and time.monotonic() < end:
            time.sleep(0.05)
        assert found, "no window came up"
        window = Window(display, found, app)
        window.write("4", seed=2)
        assert window.wait_title("digitrec — 4", timeout=60) == "digitrec — 4"
        time.sleep(1)  # the reading of the whole digit, not of a stroke half drawn
        x, y, w, h = WRITING_BOX
        before = np.asarray(window.screenshot(ARTIFACTS / "draw-window-seen.png"))
        # The panel shows the 28x28 input: white strokes on a black square, right of the canvas.
        panel = before[:, 760:].reshape(-1, 3).astype(int)
        assert (panel.max(axis=1) < 10).sum() > 3000, "no 28x28 input shown in the panel"
        assert ((panel[:, 0] > 200) & (panel[:, 2] < 120) & (panel[:, 1] < 200)).sum() > 40, "no saliency map shown"

        # Typing a digit over it stores it with that label; right-clicking it offers the digits to pick.
        window.xdotool("mousemove", "--window", window.wid, str(x + w // 2), str(y + h // 2))
        window.keys("9")
        end = time.monotonic() + 10
        while len(Store()) < 1 and time.monotonic() < end:
            time.sleep(0.1)
        window.xdotool("mousemove", "--window", window.wid, str(x + w // 2), str(y + h // 2), "click", "3")
        time.sleep(1)
        window.screenshot(ARTIFACTS / "draw-window-correct-menu.png")
        menu = window.xdotool("search", "--onlyvisible", "--class", "Menu").split()
        assert menu, "no menu of digits opened"
        window.xdotool("key", "--window", menu[-1], "4")
        end = time.monotonic() + 10
        while len(Store()) < 2 and time.monotonic() < end:
            time.sleep(0.1)
        window.screenshot(ARTIFACTS / "draw-window-corrected.png")
        samples = Store().samples(with_crops=True)
        assert [(s.label, s.predicted, s.source) for s in samples] == [(9, 4, "draw"), (4, 4, "draw")]
        assert samples[0].image.shape == (28, 28) and samples[0].image.max() > 200
        assert samples[0].crop is not None and samples[0].crop.min() < 50  # the ink of the original drawing
        window.keys("ctrl+q")
        out, err = app.communicate(timeout=60)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
    assert app.returncode == 0 and err == ""
