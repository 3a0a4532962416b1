"""The demo video: handwriting the model reads, a video common players open, clear errors."""

import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import digitrec
from digitrec import demo, home
from digitrec.train import TrainConfig, run
from conftest import assert_one_line_error, digitrec_cli, need
from digitrec.errors import UsageError


@pytest.fixture(scope="module")
def fast_run(real_mnist, tmp_path_factory):
    """The `fast` model after one epoch on real MNIST (about 99% right)."""
    out = tmp_path_factory.mktemp("fast")
    run(TrainConfig.for_model("fast", data_dir=str(real_mnist)), out, overwrite=True, log=lambda _: None)
    return out


def decode(path):
    """Decode a video with ffmpeg: (codec, pixel format, frames as an array (N, H, W, 3))."""
    program = demo.find_encoder()[0]
    done = subprocess.run([program, "-hide_banner", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                          capture_output=True, check=True)
    stream = re.search(rb"Video: (\w+).*?, (\w+)(?:\(.*?\))?, (\d+)x(\d+)", done.stderr)
    codec, pix_fmt, w, h = stream[1].decode(), stream[2].decode(), int(stream[3]), int(stream[4])
    return codec, pix_fmt, np.frombuffer(done.stdout, np.uint8).reshape(-1, h, w, 3)


def test_handwriting_stays_in_its_box_and_takes_the_time_given():
    digits = demo.handwriting("7394", (0, 0, 800, 500), np.random.default_rng(1))
    assert len(digits) == 4 and [len(d) for d in digits] == [1, 1, 1, 2]  # a 4 takes two strokes
    points = np.vstack([s for d in digits for s in d])
    assert points.min() >= 0 and points[:, 0].max() <= 800 and points[:, 1].max() <= 500
    lefts = [min(s[:, 0].min() for s in d) for d in digits]
    assert lefts == sorted(lefts)  # written left to right
    strokes = demo.schedule(digits, seconds=6)
    assert strokes[0].start == 0 and strokes[-1].end == pytest.approx(6)
    assert all(a.end < b.start for a, b in zip(strokes, strokes[1:]))  # the pen lifts between strokes


def test_the_model_reads_the_written_number(fast_run):
    rec = digitrec.load(fast_run)
    strokes = demo.schedule(demo.handwriting(demo.NUMBER, (0, 0, 820, 520), np.random.default_rng(0)), 5)
    writing = demo.Writing((820, 520), strokes, demo.PEN_WIDTH)
    writing.advance(2.5)
    half = rec.read(writing.paper()).text
    assert 1 <= len(half) < len(demo.NUMBER) and demo.NUMBER.startswith(half[:-1])
    assert writing.advance(6) == (None, False)
    assert rec.read(writing.paper()).text == demo.NUMBER


def test_demo_video_and_gif(fast_run, real_mnist, tmp_path, capsys):
    out = tmp_path / "videos" / "demo.mp4"
    try:
        demo.find_encoder()
    except UsageError:  # no encoder, from PATH or from the imageio-ffmpeg package: name what to install
        need("ffmpeg", "ffmpeg")
    status, text, err = digitrec_cli("demo", "--model", fast_run, "--out", out, "--gif", "--data-dir", real_mnist,
                                     capsys=capsys)
    assert status == 0, err
    assert "H.264" in text
    codec, pix_fmt, frames = decode(out)
    assert (codec, pix_fmt) == ("h264", "yuv420p")  # what browsers and phones play
    assert frames.shape[1:] == (demo.HEIGHT, demo.WIDTH, 3)
    assert 10 <= len(frames) / demo.FPS <= 20
    first, writing, last = frames[0], frames[5 * demo.FPS], frames[-1]
    canvas = (slice(150, 600), slice(60, 840))
    ink = np.array(demo.INK)
    assert np.abs(first[canvas].astype(int) - ink).sum(-1).min() > 60  # a blank page to begin with
    assert (np.abs(writing[canvas].astype(int) - ink).sum(-1) < 60).mean() > 0.01  # then ink
    assert np.abs(last.astype(int) - writing).mean() > 5  # then the sweep of test digits

    with Image.open(out.with_suffix(".gif")) as gif:
        assert gif.format == "GIF" and gif.size == (demo.GIF_WIDTH, demo.GIF_WIDTH * demo.HEIGHT // demo.WIDTH)
        durations = []
        for i in range(gif.n_frames):  # identical neighbours are stored once, for longer
            gif.seek(i)
            durations.append(gif.info["duration"])
        assert sum(durations) / 1000 == pytest.approx(len(frames) / demo.FPS, abs=0.1)


def test_no_video_encoder_is_one_clear_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # as if not installed
    status, _, err = digitrec_cli("demo", "--model", tmp_path, "--out", tmp_path / "d.mp4", capsys=capsys)
    assert_one_line_error(status, err, "no H.264 or MPEG-4 video encoder", "ffmpeg on PATH (not found)",
                          "imageio-ffmpeg", "apt-get install ffmpeg", "--out demo.gif")
    assert not list(tmp_path.glob("*d.mp4*"))


def test_bad_output_and_model(tmp_path, capsys, monkeypatch):
    status, _, err = digitrec_cli("demo", "--model", tmp_path, "--out", tmp_path / "demo.avi", capsys=capsys)
    assert_one_line_error(status, err, ".mp4 or .gif")
    blocker = tmp_path / "file"
    blocker.write_text("")
    status, _, err = digitrec_cli("demo", "--model", tmp_path, "--out", blocker / "demo.mp4", capsys=capsys)
    assert_one_line_error(status, err, "cannot write", "file")
    status, _, err = digitrec_cli("demo", "--model", tmp_path / "nope", "--out", tmp_path / "d.gif", capsys=capsys)
    assert_one_line_error(status, err, "nope")
    monkeypatch.setattr(home, "BUNDLED_DIR", tmp_path / "weights")
    monkeypatch.setattr(demo, "BUNDLED_DIR", tmp_path / "weights")
    status, _, err = digitrec_cli("demo", "--out", tmp_path / "d.gif", capsys=capsys)
    assert_one_line_error(status, err, "no bundled model", "--model")
