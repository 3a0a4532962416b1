"""`digitrec draw`: a window to draw digits in with the mouse or a pen, read live as they are drawn.

    $ digitrec draw                       # the bundled model
    $ digitrec draw --model runs/fast

Tk runs in the main thread and never waits for the model: a LiveReader thread (drawing.py) loads the
model and does every reading, and a timer picks up its results. Strokes go into a Drawing at the same
time as onto the screen, and what is read is that drawing, never a screen grab. The window title
carries the number read ("digitrec — 71"), so that task bars and scripts see it too.

A digit key over a digit, or a right-click on it, stores it with the right label in the sample store
(learn.py) for `digitrec learn fit`; the panel shows the digit's 28x28 input and what decided its
reading (explain.occlusion).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from digitrec.drawing import Drawing, LiveReader, LiveReading, digit_at, focus_digit
from digitrec.errors import UsageError

NO_TK = ("this Python has no Tk (tkinter) to open windows with: install it (Debian/Ubuntu: apt install python3-tk; "
         "a pyenv Python: apt install tk-dev, then reinstall it; Homebrew: brew install python-tk), "
         "or read digits in a browser with `digitrec serve`")
try:
    import tkinter as tk
    from tkinter import filedialog, messagebox, ttk
    from tkinter import font as tkfont
except ImportError:
    raise UsageError(NO_TK) from None

POLL_MS = 30  # how often the window picks up readings; well under the 50 ms a user would notice
BRUSH, BRUSH_RANGE, BRUSH_STEP = 18, (4, 60), 2  # pen width in pixels: 18 suits digits 150-250 high
CANVAS_SIZE, PANEL_WIDTH = (720, 540), 300  # at 96 dpi; larger on denser screens
IMAGE_TYPES = ("*.png", "*.jpg", "*.jpeg", "*.bmp", "*.tif", "*.tiff", "*.webp", "*.gif")
DISPLAY_MAX_SIDE = 2560  # an opened picture is shown from a copy no larger than this
SEEN_SIDE = 84  # the 28x28 input and its saliency map are shown 3x, at 96 dpi
CLOSE_SECONDS = 30  # once the window is closed, how long to let a model still loading or a reading finish

PAPER, BACKGROUND, BORDER = "#ffffff", "#f3f5f8", "#d6dae0"
TEXT, MUTED, SURE, DOUBT, BAR, TRACK = "#1d1d1f", "#646c78", "#1b7a3a", "#e67e00", "#4c72b0", "#e1e5eb"
INK = "#000000"


def run(model: str | None = None, backend: str = "auto") -> None:
    """Open the window and run it until it is closed; the model loads while the window shows.

    Raises UsageError with one line when there is no display, or when the model cannot be loaded.
    """
    try:
        root = tk.Tk(className="Digitrec")
    except tk.TclError as e:
        raise UsageError(f"cannot open a window ({e}); without a display, read digits in a browser "
                         f"with `digitrec serve`") from None
    app = App(root, LiveReader(lambda: _load(model, backend), start=False))
    root.update()  # the window shows before the model's loading competes with it for the processor
    app.reader.start()
    # Ctrl-C or `kill` close the window at the next tick: raised inside a Tk callback, the usual
    # KeyboardInterrupt would only print a traceback.
    previous = {s: signal.signal(s, app.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        root.mainloop()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        app.reader.close(timeout=CLOSE_SECONDS)
    if app.error:
        raise UsageError(app.error)
    if app.signalled:
        raise KeyboardInterrupt


def _load(model: str | None, backend: str):
    from digitrec.export import ONNX
    from digitrec.home import resolve_model
    from digitrec.recognize import load

    if backend == "torch" or not (resolve_model(model) / ONNX).is_file():
        _preload_torch()  # torch is the runtime: load its libraries without freezing the window
    # A few 28x28 digits gain nothing from parallel kernels, and idle cores keep the window smooth.
    return load(model, backend=backend, threads=1)


def _preload_torch() -> None:
    """Map torch's native libraries into the process without holding Python's global lock.

    `import torch` loads several hundred MB of native code while holding the lock, which freezes the
    window for up to a second and turns strokes drawn meanwhile into straight lines. Opened first
    through the C library's dlopen, called as a foreign function (ctypes lets go of the lock for it),
    they are already there when the import asks for them. Where that cannot be done, nothing is.
    """
    import ctypes
    import glob
    import importlib.util
    import os

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations or not hasattr(os, "RTLD_GLOBAL"):
        return
    root = spec.submodule_search_locations[0]
    try:
        dlopen = ctypes.CDLL(None).dlopen
    except (OSError, AttributeError):
        return
    dlopen.restype, dlopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]
    # The same libraries with the same flags as torch's own import (its global deps first, then _C).
    for pattern, flags in (("lib/libtorch_global_deps.*", os.RTLD_NOW | os.RTLD_GLOBAL),
                           ("_C.*", os.RTLD_NOW)):
        for path in glob.glob(os.path.join(root, pattern)):
            dlopen(path.encode(), flags)


class App:
    """The window: a toolbar, the canvas, and a panel with the reading."""

    def __init__(self, root: tk.Tk, reader: LiveReader):
        self.root, self.reader = root, reader
        self.px = max(1.0, root.winfo_fpixels("1i") / 96)  # pixels per 96-dpi pixel
        self.drawing = Drawing((round(CANVAS_SIZE[0] * self.px), round(CANVAS_SIZE[1] * self.px)))
        self.live = LiveReading(self.drawing, reader)
        self.cursor = None  # pointer position on the canvas, None when outside
        self.note = ""  # a passing message: saved to ..., opened ...
        self.error: str | None = None  # why the window closed on its own
        self.signalled = None  # the signal that asked the window to close
        self.background = None  # (PhotoImage, view) of an opened picture on the canvas
        self.loaded = False
        self.store = None  # the sample store, opened at the first correction
        self.seen_key = self.seen_images = None  # the digit shown under "what the model saw", and its Tk images
        self._styles()
        self._build()
        self._bind()
        self._show()
        root.after(POLL_MS, self._poll)

    # ---------------------------------------------------------------------------------------------
    # Building the window

    def _font(self, size: float, bold: bool = False) -> tkfont.Font:
        family = tkfont.nametofont("TkDefaultFont").actual("family")
        return tkfont.Font(root=self.root, family=family, size=-round(size * self.px), weight="bold" if bold else "normal")

    def _styles(self) -> None:
        self.fonts = {"big": self._font(84, True), "quiet": self._font(26), "head": self._font(13, True),
                      "text": self._font(14), "small": self._font(12), "digit": self._font(22, True),
                      "tag": self._font(15, True), "button": self._font(14)}
        style = ttk.Style(self.root)
        style.theme_use("clam")
        style.configure(".", background=BACKGROUND, foreground=TEXT, font=self.fonts["text"])
        style.configure("TButton", font=self.fonts["button"], padding=(10, 5))
        style.configure("Muted.TLabel", foreground=MUTED, font=self.fonts["small"])
        style.configure("Head.TLabel", foreground=MUTED, font=self.fonts["head"])
        self.root.configure(background=BACKGROUND)

    def _build(self) -> None:
        root, px = self.root, self.px
        root.title("digitrec")
        cw, ch = self.drawing.canvas_size
        root.geometry(f"{cw + round((PANEL_WIDTH + 40) * px)}x{ch + round(170 * px)}")
        root.minsize(round(740 * px), round(690 * px))  # the toolbar and the panel fit
        root.columnconfigure(0, weight=1)
        root.rowconfigure(1, weight=1)
        pad = round(12 * px)
        mod = self.mod_name = "Cmd" if root.tk.call("tk", "windowingsystem") == "aqua" else "Ctrl"

        bar = ttk.Frame(root, padding=(pad, pad, pad, 0))
        bar.grid(row=0, column=0, columnspan=2, sticky="ew")
        for text, command in (("Clear  Esc", self.clear), (f"Undo  {mod}+Z", self.undo),
                              (f"Open image…  {mod}+O", self.open_image), (f"Save PNG…  {mod}+S", self.save)):
            ttk.Button(bar, text=text, command=command, takefocus=False).pack(side="left", padx=(0, round(6 * px)))

        self.canvas = tk.Canvas(root, width=cw, height=ch, background=PAPER, highlightthickness=1,
                                highlightbackground=BORDER, cursor="tcross")
        self.canvas.grid(row=1, column=0, sticky="nsew", padx=(pad, 0), pady=pad)

        panel = ttk.Frame(root, width=round(PANEL_WIDTH * px), padding=(pad * 2, pad, pad * 2, pad))
        panel.grid(row=1, column=1, sticky="ns")
        panel.grid_propagate(False)
        panel.columnconfigure(0, weight=1)
        panel.rowconfigure(7, weight=1)
        inner = round((PANEL_WIDTH - 48) * px)
        ttk.Label(panel, text="READING", style="Head.TLabel").grid(row=0, column=0, sticky="w")
        self.number = ttk.Label(panel, font=self.fonts["big"], anchor="w", justify="left")
        self.number.grid(row=1, column=0, sticky="ew")
        self.status = ttk.Label(panel, style="Muted.TLabel", wraplength=inner, justify="left")
        self.status.grid(row=2, column=0, sticky="ew", pady=(0, pad))
        self.focus_head = ttk.Label(panel, style="Head.TLabel")
        self.focus_head.grid(row=3, column=0, sticky="w", pady=(pad, 4))
        self.bars = tk.Canvas(panel, width=inner, height=round(120 * px), background=BACKGROUND, highlightthickness=0)
        self.bars.grid(row=4, column=0, sticky="ew")
        ttk.Label(panel, text="BRUSH", style="Head.TLabel").grid(row=5, column=0, sticky="w", pady=(pad, 4))
        brush = ttk.Frame(panel)
        brush.grid(row=6, column=0, sticky="ew")
        self.brush = tk.IntVar(value=BRUSH)
        ttk.Scale(brush, from_=BRUSH_RANGE[0], to=BRUSH_RANGE[1], takefocus=False, variable=self.brush,
                  command=lambda v: self.set_brush(round(float(v)))).pack(side="left", fill="x", expand=True)
        self.brush_label = ttk.Label(brush, width=6, anchor="e")
        self.brush_label.pack(side="right")
        seen = ttk.Frame(panel)
        seen.grid(row=7, column=0, sticky="new")
        self.seen_head = ttk.Label(seen, text="WHAT THE MODEL SAW", style="Head.TLabel")
        self.seen_head.pack(anchor="w", pady=(pad, 4))
        self.seen = tk.Canvas(seen, width=inner, height=round((SEEN_SIDE + 18) * px), background=BACKGROUND,
                              highlightthickness=0)
        self.seen.pack(anchor="w")
        help_text = (f"Esc clear · {mod}+Z undo · [ ] brush\n{mod}+O open · {mod}+S save · {mod}+Q quit\n"
                     "0-9 or right-click on a digit: correct it")
        ttk.Label(panel, text=help_text, style="Muted.TLabel", wraplength=inner, justify="left").grid(
            row=8, column=0, sticky="sw", pady=(pad, 0))
        self.model_line = ttk.Label(panel, style="Muted.TLabel", wraplength=inner, justify="left")
        self.model_line.grid(row=9, column=0, sticky="sw", pady=(pad, 0))
        self.inner_width = inner
        self.set_brush(BRUSH)

    def _bind(self) -> None:
        c, mod = self.canvas, "Command" if self.mod_name == "Cmd" else "Control"
        c.bind("<ButtonPress-1>", self._pen_down)
        c.bind("<B1-Motion>", self._pen_move)
        c.bind("<ButtonRelease-1>", self._pen_up)
        c.bind("<Motion>", self._hover)
        for button in ("<ButtonPress-3>", "<ButtonPress-2>" if self.mod_name == "Cmd" else "<Control-ButtonPress-1>"):
            c.bind(button, self._correct_menu)
        c.bind("<Leave>", self._leave)
        c.bind("<Configure>", self._resized)
        for key, action in (("<Escape>", self.clear), ("<Delete>", self.clear), (f"<{mod}-z>", self.undo),
                            (f"<{mod}-Z>", self.undo), (f"<{mod}-o>", self.open_image), (f"<{mod}-s>", self.save),
                            (f"<{mod}-q>", self.close), (f"<{mod}-w>", self.close),
                            ("<bracketleft>", lambda: self.set_brush(self.brush.get() - BRUSH_STEP)),
                            ("<bracketright>", lambda: self.set_brush(self.brush.get() + BRUSH_STEP))):
            self.root.bind(key, lambda e, action=action: action())
        for d in range(10):
            self.root.bind(f"<Key-{d}>", lambda e, d=d: self.correct_focus(d))
            self.root.bind(f"<KP_{d}>", lambda e, d=d: self.correct_focus(d))
        self.root.protocol("WM_DELETE_WINDOW", self.close)

    # ---------------------------------------------------------------------------------------------
    # Actions

    def set_brush(self, size: int) -> None:
        size = min(max(size, BRUSH_RANGE[0]), BRUSH_RANGE[1])
        self.brush.set(size)
        self.brush_label.configure(text=f"{size} px")
        self._draw_ring()

    def clear(self) -> None:
        self.drawing.clear()
        self.note = ""
        self._redraw()

    def undo(self) -> None:
        if self.drawing.undo():
            self._redraw()

    def open_image(self) -> None:
        path = filedialog.askopenfilename(parent=self.root, title="Open an image",
                                          filetypes=[("Images", " ".join(IMAGE_TYPES)), ("All files", "*")])
        if not path:
            return
        import warnings

        from PIL import Image

        from digitrec.images import load_image

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # load_image has its own limit
                picture = load_image(path)
        except UsageError as e:
            messagebox.showerror("digitrec", f"{Path(path).name}: {e}", parent=self.root)
            return
        self.drawing.open(picture.pixels)
        self.note = "; ".join((f"opened {Path(path).name}",) + picture.notes)
        self.background = None
        self._redraw()

    def save(self) -> None:
        if self.drawing.empty:
            self.note = "nothing to save yet"
            self._show()
            return
        name = self.live.reading.text.replace("\n", "-") if self.live.reading and self.live.reading.text else "drawing"
        path = filedialog.asksaveasfilename(parent=self.root, title="Save the drawing as PNG", initialfile=f"{name}.png",
                                            defaultextension=".png", filetypes=[("PNG image", "*.png")])
        if not path:
            return
        path = Path(path) if path.lower().endswith(".png") else Path(path + ".png")
        from digitrec.data import atomic_write_bytes

        try:
            atomic_write_bytes(path, self.drawing.sheet().png())
        except OSError as e:
            messagebox.showerror("digitrec", f"cannot save {path}: {e.strerror or e}", parent=self.root)
            return
        self.note = f"saved {path.name}"
        self._show()

    def close(self) -> None:
        self.root.destroy()

    # ---------------------------------------------------------------------------------------------
    # Corrections: a digit read wrong (or right) stored as a sample to learn from

    def _correct_menu(self, e) -> None:
        r = self.live.reading
        digit = digit_at(r, self.drawing.view().to_drawing((e.x, e.y))) if r is not None and not self.drawing.empty else None
        if digit is None:
            return
        menu = tk.Menu(self.root, tearoff=False, font=self.fonts["text"])
        menu.add_command(label="It is…", state="disabled")
        for d in range(10):
            # Underlined digits: typing one while the menu is open picks it.
            menu.add_command(label=f"{d}   (as read)" if d == digit.label else str(d), underline=0,
                             command=lambda d=d: self.correct(digit, d))
        menu.tk_popup(e.x_root, e.y_root)

    def correct_focus(self, label: int) -> None:
        """A digit key: the digit under the cursor (else the one drawn last) is that digit."""
        if self.live.reading is None or self.drawing.empty:
            return
        focus, _ = self._focus()
        if focus is not None:
            self.correct(focus, label)

    def correct(self, digit, label: int) -> None:
        import numpy as np

        from digitrec.learn import Sample, Store

        x, y, w, h = digit.box
        crop = np.asarray(self.drawing.sheet().render())[y:y + h, x:x + w]
        try:
            self.store = store = self.store or Store()
            store.add([Sample(label, digit.image, "draw", crop, digit.label)])
            total = len(store)
        except UsageError as e:
            messagebox.showerror("digitrec", f"cannot store the correction: {e}", parent=self.root)
            return
        what = f"stored {label} (read as {digit.label})" if label != digit.label else f"stored {label} as right"
        self.note = f"{what}; {total} sample{'s' if total != 1 else ''} to learn from"
        self._show()

    def on_signal(self, signum, frame) -> None:
        self.signalled = signum

    # ---------------------------------------------------------------------------------------------
    # Drawing with the pen

    def _pen_down(self, e) -> None:
        self.drawing.pen_down((e.x, e.y), self.brush.get())
        # Tk draws no line through a single point: the dot starts as a line of length 0.01.
        self.pen_item = self.canvas.create_line(e.x, e.y, e.x + 0.01, e.y, width=self.brush.get(), fill=INK,
                                                capstyle="round", joinstyle="round", tags="ink")
        self.pen_points = [e.x, e.y]
        self.canvas.tag_raise("overlay")
        self._hover(e)

    def _pen_move(self, e) -> None:
        if not self.drawing.drawing:
            return
        self.drawing.pen_move((e.x, e.y))
        self.pen_points += [e.x, e.y]
        self.canvas.coords(self.pen_item, *self.pen_points)
        self._hover(e)

    def _pen_up(self, e) -> None:
        self.drawing.pen_up()

    def _hover(self, e) -> None:
        self.cursor = (e.x, e.y)
        self._draw_ring()
        if self.live.reading is not None:
            self._draw_overlay()
            self._show_focus()

    def _leave(self, e) -> None:
        self.cursor = None
        self.canvas.delete("ring")
        if self.live.reading is not None:
            self._draw_overlay()
            self._show_focus()

    def _draw_ring(self) -> None:
        """A circle as wide as the brush follows the pointer."""
        self.canvas.delete("ring")
        if self.cursor is not None:
            x, y = self.cursor
            r = self.brush.get() / 2
            self.canvas.create_oval(x - r, y - r, x + r, y + r, outline="#9aa3af", tags="ring")

    def _resized(self, e) -> None:
        self.drawing.resize((e.width, e.height))
        self._redraw()

    # ---------------------------------------------------------------------------------------------
    # Readings

    def _poll(self) -> None:
        if self.signalled:
            self.close()
            return
        if self.reader.error:
            self.error = self.reader.error
            self.close()
            return
        if self.live.update(time.monotonic()):
            self._draw_overlay()
            self._show()
        elif self.reader.ready != self.loaded:
            self._show()
        self.root.after(POLL_MS, self._poll)

    def _redraw(self) -> None:
        """Everything on the canvas again: after a resize, undo, clear or a picture opened."""
        c, d = self.canvas, self.drawing
        self.live.update(time.monotonic())
        c.delete("all")
        view = d.view()
        if d.background is not None:
            c.create_image(view.dx, view.dy, image=self._picture(view), anchor="nw", tags="picture")
        for s in d.strokes:
            points = [v for p in s.points for v in view.to_canvas(p)]
            if len(points) == 2:
                points += [points[0] + 0.01, points[1]]
            c.create_line(*points, width=s.width * view.scale, fill=INK, capstyle="round", joinstyle="round",
                          tags="ink")
        self._draw_overlay()
        self._draw_ring()
        self._show()

    def _picture(self, view):
        """The opened picture at the view's scale, as a Tk image (kept, or Tk would drop it)."""
        from PIL import Image, ImageTk

        if self.background is None or self.background[1] != view:
            img = Image.fromarray(self.drawing.background)
            img.thumbnail((DISPLAY_MAX_SIDE, DISPLAY_MAX_SIDE), Image.Resampling.BOX)
            w, h = self.drawing.size
            size = (max(1, round(w * view.scale)), max(1, round(h * view.scale)))
            self.background = (ImageTk.PhotoImage(img.resize(size, Image.Resampling.LANCZOS)), view)
        return self.background[0]

    def _focus(self):
        """The digit the panel shows, and whether it is the one under the cursor."""
        view = self.drawing.view()
        under = digit_at(self.live.reading, view.to_drawing(self.cursor)) if self.cursor is not None else None
        return under or focus_digit(self.live.reading, None, self.drawing.last_box()), under is not None

    def _draw_overlay(self) -> None:
        """A box and a label over each digit read; the one in the panel drawn thicker."""
        c = self.canvas
        c.delete("overlay")
        if self.live.reading is None:
            return
        view, (focus, _) = self.drawing.view(), self._focus()
        pad = 4 * self.px
        for digit in self.live.reading.digits:
            bx, by, bw, bh = digit.box
            x0, y0 = view.to_canvas((bx, by))
            x1, y1 = view.to_canvas((bx + bw, by + bh))
            colour = DOUBT if digit.low_confidence else SURE
            c.create_rectangle(x0 - pad, y0 - pad, x1 + pad, y1 + pad, outline=colour,
                               width=(3 if digit is focus else 2) * self.px, tags="overlay")
            tag = f"{digit.label}  {digit.confidence:.0%}"
            ty = y0 - pad - 2 if y0 - pad - 30 * self.px >= 0 else y1 + pad + 28 * self.px
            text = c.create_text(x0 - pad + 7 * self.px, ty - 3 * self.px, text=tag, anchor="sw", fill="white",
                                 font=self.fonts["tag"], tags="overlay")
            left, top, right, bottom = c.bbox(text)
            back = c.create_rectangle(x0 - pad, top - 2 * self.px, right + 7 * self.px, ty, fill=colour, width=0,
                                      tags="overlay")
            c.tag_lower(back, text)
        c.tag_raise("ring")

    def _show(self) -> None:
        """The panel and the title, from the reading shown."""
        self.loaded = self.reader.ready
        r = self.live.reading
        if r is not None and r.digits and not self.drawing.empty:
            lines = r.text.split("\n")
            # As large as fits the panel: a digit is about 0.7 of the font size wide; more lines, smaller.
            size = max(24, min(84 / len(lines) ** 0.75, self.inner_width / self.px / (0.7 * max(map(len, lines)))))
            self.fonts["big"].configure(size=-round(size * self.px))
            self.number.configure(text=r.text, font=self.fonts["big"], foreground=TEXT)
        else:
            self.number.configure(text=self.live.headline, font=self.fonts["quiet"], foreground=MUTED)
        self.root.title(self.live.title)
        self.status.configure(text=self._status_text())
        self._show_focus()
        if self.loaded and not self.model_line.cget("text"):
            meta = self.reader.recognizer.meta or {}
            accuracy = (meta.get("metrics") or {}).get("test_accuracy")
            name = self.reader.recognizer.name or meta.get("architecture", "?")
            self.model_line.configure(text=f"model: {name}" + (
                f"\n{accuracy:.2%} right on MNIST's test digits" if accuracy is not None else ""))

    def _status_text(self) -> str:
        if not self.loaded:
            return "loading the model…"
        if self.live.error:
            return f"cannot read it: {self.live.error}"
        r = self.live.reading
        parts = [self.note] if self.note else []
        if r is not None and r.digits:
            n = len(r.digits)
            unsure = [f"#{i}: {' or '.join(str(label) for label, _ in dg.top[:2])}"
                      for i, dg in enumerate(r.digits, 1) if dg.low_confidence]
            parts.append(f"{n} digit{'s' if n > 1 else ''}, "
                         + (f"unsure of {', '.join(unsure)}" if unsure else
                            f"lowest confidence {min(dg.confidence for dg in r.digits):.0%}"))
        return "\n".join(parts)

    def _show_seen(self, focus) -> None:
        """The focus digit's 28x28 input and its occlusion saliency map, side by side."""
        from PIL import Image, ImageTk

        c, px = self.seen, self.px
        if focus is None or self.drawing.empty:
            c.delete("all")
            self.seen_key = self.seen_images = None
            return
        key = (focus.box, focus.image.tobytes())
        if self.seen_key == key:
            return
        import numpy as np

        from digitrec.explain import occlusion

        self.seen_key = key
        # Square root: the strokes that matter less still show, beside the one that matters most.
        heat = np.sqrt(occlusion(self.reader.recognizer.logits, focus.image[None])[0])  # (28, 28) in [0, 1]
        side = round(SEEN_SIDE * px)
        grey = np.repeat(focus.image[:, :, None], 3, axis=2).astype(np.float32)
        hot = np.stack([np.full_like(heat, 255), 200 * (1 - heat) + 55 * heat, 40 * (1 - heat)], axis=2)  # yellow to red
        blend = grey * (1 - 0.7 * heat[:, :, None]) + hot * 0.7 * heat[:, :, None]
        tiles = [Image.fromarray(a.astype(np.uint8)).resize((side, side), Image.Resampling.NEAREST)
                 for a in (np.repeat(focus.image[:, :, None], 3, axis=2), blend)]
        self.seen_images = [ImageTk.PhotoImage(t) for t in tiles]  # kept, or Tk would drop them
        c.delete("all")
        gap = round(12 * px)
        for i, (img, caption) in enumerate(zip(self.seen_images, ("28x28 input", "what decided"))):
            c.create_image(i * (side + gap), 0, image=img, anchor="nw")
            c.create_text(i * (side + gap), side + 2 * px, text=caption, anchor="nw", font=self.fonts["small"], fill=MUTED)

    def _show_focus(self) -> None:
        """The three likeliest labels of the digit under the cursor, or of the one drawn last."""
        b, px = self.bars, self.px
        b.delete("all")
        focus, under = self._focus() if self.live.reading is not None else (None, False)
        self._show_seen(focus)
        if focus is None:
            self.focus_head.configure(text="TOP 3")
            top = []
        else:
            self.focus_head.configure(text="DIGIT UNDER THE CURSOR" if under else
                                      "LAST DIGIT DRAWN" if self.drawing.strokes else "LAST DIGIT")
            top = focus.top[:3]
        width = self.inner_width
        bar_x0, bar_x1 = 34 * px, width - 52 * px
        for k in range(3):
            y = k * 38 * px + 4 * px
            label, p = top[k] if k < len(top) else ("–", 0.0)
            colour = (DOUBT if focus.low_confidence else SURE) if k == 0 and top else BAR
            b.create_text(4 * px, y + 13 * px, text=str(label), anchor="w", font=self.fonts["digit"],
                          fill=TEXT if top else MUTED)
            b.create_rectangle(bar_x0, y + 3 * px, bar_x1, y + 23 * px, fill=TRACK, width=0)
            if p > 0.005:
                b.create_rectangle(bar_x0, y + 3 * px, bar_x0 + max(4 * px, (bar_x1 - bar_x0) * p), y + 23 * px,
                                   fill=colour, width=0)
            percent = "" if not top else f"{p:.0%}" if p >= 0.005 else "<1%"
            b.create_text(width - 2 * px, y + 13 * px, text=percent, anchor="e",
                          font=self.fonts["text"], fill=TEXT)
