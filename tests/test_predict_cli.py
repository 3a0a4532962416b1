"""`digitrec predict`: what a user types and sees, for good pictures and bad files."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitrec.checkpoint import save_checkpoint
from digitrec.data import load_mnist
from digitrec.models import create_model
from digitrec.recognize import Recognizer
from digitrec.synth import Style, compose
from conftest import digitrec_cli
from test_preprocess import bad_files, written

@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> Path:
    """A checkpoint with fresh weights: enough to check formats and errors, instantly."""
    folder = tmp_path_factory.mktemp("untrained")
    save_checkpoint(folder, create_model("fast"), {"architecture": "fast", "epoch": 0})
    return folder


def model_args(run_dir):
    return [] if run_dir is None else ["--model", run_dir]


@pytest.fixture
def photo_files(tmp_path, model_dir, real_mnist):
    """Two photos of numbers made of MNIST test digits the model reads right on their own."""
    mnist = load_mnist(real_mnist, download=False)
    probs = Recognizer.from_checkpoint(model_dir).classify(mnist.test_images[:500])
    sure = np.flatnonzero((probs.argmax(1) == mnist.test_labels[:500]) & (probs.max(1) > 0.99))
    pick = {d: mnist.test_images[sure[mnist.test_labels[sure] == d][0]] for d in range(10)}
    files = {}
    for name, text, style in [("scan.png", "3141", Style(scale=4, noise=3)),
                              ("board.jpg", "27\n18", Style(dark_on_light=False, scale=5, light=0.3, noise=5))]:
        lines = text.split("\n")
        sample = compose([[pick[int(c)] for c in ln] for ln in lines], [[int(c) for c in ln] for ln in lines],
                         style, np.random.default_rng(0))
        Image.fromarray(sample.image).save(tmp_path / name, quality=90)
        files[tmp_path / name] = text
    return files


def test_numbers_are_read_for_people_and_as_json(model_dir, photo_files, capsys):
    paths = list(photo_files)
    status, out, err = digitrec_cli("predict", *paths, *model_args(model_dir), capsys=capsys)
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith(f"{paths[0]}: 3141  (lowest confidence ")
    assert lines[1].startswith(f"{paths[1]}: 27 / 18  (lowest confidence ")

    status, out, err = digitrec_cli("predict", "--json", *paths, *model_args(model_dir), capsys=capsys)
    objs = [json.loads(line) for line in out.splitlines()]
    assert status == 0 and [o["file"] for o in objs] == [str(p) for p in paths]
    assert [o["text"] for o in objs] == list(photo_files.values())
    assert all(len(d["top"]) == 3 for o in objs for d in o["digits"])


def test_a_folder_expands_to_its_images(untrained, tmp_path, capsys):
    for name in ["b.png", "a.jpg"]:
        Image.fromarray(written("7", Style(scale=4)).image).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a picture")
    status, out, _ = digitrec_cli("predict", tmp_path, "--json", "--model", untrained, capsys=capsys)
    assert status == 0
    assert [json.loads(line)["file"] for line in out.splitlines()] == [str(tmp_path / "a.jpg"), str(tmp_path / "b.png")]


def test_bad_files_are_reported_and_the_others_still_read(untrained, tmp_path, capsys):
    good = tmp_path / "good.png"
    Image.fromarray(written("42", Style(scale=4)).image).save(good)
    bad = bad_files(tmp_path)
    (tmp_path / "nothing-here").mkdir()
    args = [good, *bad, tmp_path / "nothing-here", good]
    status, out, err = digitrec_cli("predict", "--json", *args, "--model", untrained, capsys=capsys)
    assert status == 1 and "Traceback" not in err
    objs = [json.loads(line) for line in out.splitlines()]
    assert [o["file"] for o in objs] == [str(a) for a in args]
    assert "error" not in objs[0] and "error" not in objs[-1] and len(objs[-1]["digits"]) == 2
    for obj, words in zip(objs[1:], [*bad.values(), "no images"]):
        assert list(obj) == ["file", "error"] and words in obj["error"], obj

    status, out, err = digitrec_cli("predict", *args, "--model", untrained, capsys=capsys)
    assert status == 1 and len(out.splitlines()) == 2
    assert len(err.splitlines()) == len(bad) + 1 and all(": error: " in line for line in err.splitlines())


def test_sixteen_bit_palette_and_animated_images_are_read(untrained, tmp_path, capsys):
    image = written("5", Style(scale=4)).image
    grey = image[:, :, 0].astype(np.uint16) * 257
    Image.fromarray(grey).save(tmp_path / "deep.png")
    Image.fromarray(image).convert("P").save(tmp_path / "palette.png")
    frames = [Image.fromarray(image).convert("P"), Image.new("P", image.shape[1::-1])]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    status, out, err = digitrec_cli("predict", "--json", tmp_path, "--model", untrained, capsys=capsys)
    assert status == 0
    assert [len(json.loads(line)["digits"]) for line in out.splitlines()] == [1, 1, 1]
    assert err.strip() == f"{tmp_path / 'anim.gif'}: note: animated GIF with 2 frames: only the first frame was read"


def test_annotate_writes_marked_copies(untrained, tmp_path, capsys):
    image = written("12\n3", Style(scale=4)).image
    for name in ("one.png", "two.jpg"):
        Image.fromarray(image).save(tmp_path / name)
    out_dir = tmp_path / "marked"
    status, _, _ = digitrec_cli("predict", tmp_path / "one.png", tmp_path / "two.jpg", "--annotate", out_dir,
                                "--model", untrained, capsys=capsys)
    assert status == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["one-annotated.png", "two-annotated.png"]
    marked = np.asarray(Image.open(out_dir / "one-annotated.png"))
    assert marked.shape == image.shape and not np.array_equal(marked, image)

    status, _, _ = digitrec_cli("predict", tmp_path / "one.png", "--annotate", tmp_path / "just-this.jpg",
                                "--model", untrained, capsys=capsys)
    assert status == 0 and Image.open(tmp_path / "just-this.jpg").format == "JPEG"


@pytest.mark.parametrize("args, words", [
    (["--top-k", "0"], "--top-k"),
    (["--top-k", "11"], "only 10 digits"),
    (["b.png", "--annotate", "x.png"], "give a folder"),
    (["--model", "no/such/run"], "no such run directory"),
])
def test_bad_options_are_one_line(untrained, tmp_path, capsys, args, words):
    model = [] if "--model" in args else ["--model", untrained]
    status, _, err = digitrec_cli("predict", tmp_path / "a.png", *args, *model, capsys=capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and words in err, err


def test_top_k(untrained, tmp_path, capsys):
    Image.fromarray(written("9", Style(scale=4)).image).save(tmp_path / "nine.png")
    _, out, _ = digitrec_cli("predict", tmp_path / "nine.png", "--json", "--top-k", "1", "--model", untrained, capsys=capsys)
    assert [len(d["top"]) for d in json.loads(out)["digits"]] == [1]


def test_the_installed_command_never_shows_a_traceback(untrained, tmp_path):
    (tmp_path / "notes.png").write_text("not a picture")
    result = subprocess.run([sys.executable, "-m", "digitrec.cli", "predict", tmp_path / "notes.png",
                             tmp_path / "missing.jpg", "--model", untrained], capture_output=True, text=True)
    assert result.returncode == 1 and result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"{tmp_path / 'notes.png'}: error: not an image, or in a format that cannot be read "
        "(PNG, JPEG, BMP, TIFF, WebP and GIF can)",
        f"{tmp_path / 'missing.jpg'}: error: no such file"]


def test_annotate_never_writes_over_a_picture_being_read(untrained, tmp_path, capsys):
    picture = tmp_path / "mine.png"
    Image.fromarray(np.full((60, 60), 255, np.uint8)).save(picture)
    original = picture.read_bytes()
    status, _, err = digitrec_cli("predict", picture, "--annotate", picture, "--model", untrained, capsys=capsys)
    assert status == 2 and "that is the picture being read" in err and picture.read_bytes() == original
    named = tmp_path / "mine-annotated.png"  # a picture to read that has the name its own copy would get
    named.write_bytes(original)
    status, _, _ = digitrec_cli("predict", named, "--annotate", tmp_path, "--model", untrained, capsys=capsys)
    assert status == 0 and named.read_bytes() == original
    assert (tmp_path / "mine-annotated-annotated.png").is_file()


def test_annotate_to_a_name_that_is_no_picture_is_refused(untrained, tmp_path, capsys):
    picture = tmp_path / "a.png"
    Image.fromarray(np.full((60, 60), 255, np.uint8)).save(picture)
    status, _, err = digitrec_cli("predict", picture, "--annotate", tmp_path / "out.txt", "--model", untrained,
                                  capsys=capsys)
    assert status == 2 and "give a picture file" in err and not (tmp_path / "out.txt").exists()


def test_annotate_works_with_names_near_the_length_limit(untrained, tmp_path, capsys):
    picture = tmp_path / ("x" * 240 + ".png")
    Image.fromarray(np.full((60, 60), 255, np.uint8)).save(picture)
    copy = tmp_path / ("y" * 245 + ".png")
    status, _, err = digitrec_cli("predict", picture, "--annotate", copy, "--model", untrained, capsys=capsys)
    assert status == 0 and copy.is_file(), err
    status, _, err = digitrec_cli("predict", picture, "--annotate", tmp_path / "marked", "--model", untrained,
                                  capsys=capsys)
    assert status == 0 and len(list((tmp_path / "marked").iterdir())) == 1, err
