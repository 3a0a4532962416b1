"""Reading folders with several processes: same output as one, in input order, resumable, flat memory."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitrec import batch
from digitrec.batch import ReadOptions, Task, read_in_order
from digitrec.data import load_mnist
from digitrec.synth import Style, compose
from conftest import assert_one_line_error, digitrec_cli

N_PHOTOS = 40  # enough for two workers (batch.MIN_PER_WORKER each)


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory, real_mnist) -> Path:
    """Small photos of 1-4 MNIST test digits, and one file that is not a picture."""
    folder = tmp_path_factory.mktemp("photos")
    mnist = load_mnist(real_mnist, download=False)
    rng = np.random.default_rng(3)
    for i in range(N_PHOTOS):
        pick = rng.integers(0, 1000, size=int(rng.integers(1, 5)))
        sample = compose([[mnist.test_images[j] for j in pick]], [[int(mnist.test_labels[j]) for j in pick]],
                         Style(scale=3, noise=2), rng)
        Image.fromarray(sample.image).save(folder / f"p{i:03d}.png")
    (folder / "p017.png").write_bytes(b"not a picture")
    return folder


def test_two_jobs_give_the_output_of_one(photo_dir, capsys):
    one = digitrec_cli("predict", photo_dir, "--json", "--jobs", 1, capsys=capsys)
    two = digitrec_cli("predict", photo_dir, "--json", "--jobs", 2, capsys=capsys)
    assert one[0] == two[0] == 1  # the file that is not a picture
    assert one[1] == two[1]
    records = [json.loads(line) for line in two[1].splitlines()]
    assert [r["file"] for r in records] == [str(photo_dir / f"p{i:03d}.png") for i in range(N_PHOTOS)]
    assert "error" in records[17] and sum("text" in r for r in records) == N_PHOTOS - 1


def test_a_stopped_run_continues_where_it_was(photo_dir, tmp_path, capsys):
    full = tmp_path / "full.jsonl"
    assert digitrec_cli("predict", photo_dir, "--jobs", 2, "--output", full, capsys=capsys)[0] == 1
    lines = full.read_text().splitlines(keepends=True)
    assert len(lines) == N_PHOTOS

    # A run stopped after 25 pictures, in the middle of writing the 26th line.
    stopped = tmp_path / "stopped.jsonl"
    stopped.write_text("".join(lines[:25]) + lines[25][:30])
    status, out, err = digitrec_cli("predict", photo_dir, "--jobs", 2, "--output", stopped, capsys=capsys)
    assert status == 1 and out == ""  # the unreadable picture of the first part still counts
    assert stopped.read_text() == full.read_text()
    assert "15 read" in err and "25 already there" in err


def test_pictures_already_in_the_output_are_not_read_again(photo_dir, tmp_path, capsys):
    done = tmp_path / "done.jsonl"
    done.write_text(json.dumps({"file": str(photo_dir / "p000.png"), "text": "kept", "digits": []}) + "\n")
    status, _, err = digitrec_cli("predict", photo_dir / "p000.png", photo_dir / "p001.png", "--output", done,
                                  capsys=capsys)
    records = [json.loads(line) for line in done.read_text().splitlines()]
    assert status == 0 and records[0]["text"] == "kept" and records[1]["file"].endswith("p001.png")


def test_an_output_file_of_something_else_is_refused(photo_dir, tmp_path, capsys):
    other = tmp_path / "notes.txt"
    other.write_text("my notes\n")
    status, _, err = digitrec_cli("predict", photo_dir, "--output", other, capsys=capsys)
    assert_one_line_error(status, err, "line 1")
    assert other.read_text() == "my notes\n"


def test_a_model_that_cannot_be_loaded_is_one_line_with_workers(photo_dir, tmp_path, capsys):
    status, out, err = digitrec_cli("predict", photo_dir, "--jobs", 2, "--model", tmp_path / "nothing", capsys=capsys)
    assert_one_line_error(status, err, "no such run directory")
    assert out == ""


def test_jobs_zero_is_refused(photo_dir, capsys):
    status, _, err = digitrec_cli("predict", photo_dir, "--jobs", 0, capsys=capsys)
    assert_one_line_error(status, err, "--jobs")


def test_a_progress_bar_on_a_terminal(photo_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    status, _, err = digitrec_cli("predict", photo_dir, "--jobs", 1, "--output", tmp_path / "o.jsonl", capsys=capsys)
    assert f"{N_PHOTOS}/{N_PHOTOS}" in err and "picture" in err


def test_memory_stays_flat_however_many_pictures(model_dir, monkeypatch):
    # Pictures are pulled from the input only as fast as results go out: a bounded window.
    pulled = 0

    def tasks():
        nonlocal pulled
        for i in range(3000):
            pulled += 1
            yield Task(f"missing-{i}.png", None, "no such file")

    ahead = 0
    for i, result in enumerate(read_in_order(tasks(), ReadOptions(), jobs=2)):
        assert result.name == f"missing-{i}.png" and result.error == "no such file"
        ahead = max(ahead, pulled - i)
    assert i == 2999
    assert ahead <= 2 * batch.WINDOW_PER_JOB * batch.CHUNK + batch.CHUNK


def test_a_few_pictures_are_read_in_this_process():
    assert batch.workers_for(3, jobs=8) == 1
    assert batch.workers_for(1000, jobs=8) == 8
    assert batch.workers_for(40, jobs=8) == 2
