"""optdigits as extra training data: the .Z decoder, the file's format, finding it, and training with it."""

import gzip
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from digitrec import optdigits
from digitrec.data import DataError
from digitrec.errors import UsageError
from digitrec.optdigits import Digits, load_optdigits, parse, to_mnist_form, unlzw

REAL = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "realdigits", "optdigits", "optdigits-orig.tra.gz")


def bitmap(label: int) -> list[str]:
    """A 32x32 bitmap of 0s and 1s: a bar whose place and length say its label."""
    rows = [["0"] * 32 for _ in range(32)]
    for r in range(4, 28 - label):
        for c in range(10 + label, 14 + label):
            rows[r][c] = "1"
    return ["".join(r) for r in rows]


def optdigits_text(labels, header=True) -> str:
    lines = ["Creator: a test", "Number of digits: %d" % len(labels)] if header else []
    for label in labels:
        lines += bitmap(label) + [f" {label}"]
    return "\n".join(lines) + "\n"


def compress(payload: bytes, *options: str) -> bytes:
    """payload as unix compress writes it (.Z): the format UCI publishes optdigits in."""
    if shutil.which("compress") is None:
        pytest.fail("these tests need the `compress` program: apt-get install ncompress")
    return subprocess.run(["compress", "-c", "-f", *options], input=payload, capture_output=True, check=True).stdout


def test_compressed_data_decodes_as_compress_wrote_it():
    rng = np.random.default_rng(0)
    text = optdigits_text(list(range(10)) * 30).encode()
    noise = rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes()  # fills the table: wider codes, then a clear
    for payload in (b"", b"a", text, text + noise + text):
        for options in ((), ("-b12",), ("-b10",)):
            assert unlzw(compress(payload, *options)) == payload


def test_data_that_is_not_compress_data_is_refused():
    with pytest.raises(ValueError, match="not compress"):
        unlzw(b"PK\x03\x04 a zip file")
    with pytest.raises(ValueError, match="9-bit"):
        unlzw(compress(b"digits " * 1000, "-b9"))


def test_the_file_reads_the_same_plain_gzipped_or_compressed(tmp_path):
    labels = [3, 1, 4, 1, 5, 9, 2, 6]
    text = optdigits_text(labels)
    for name, payload in (("o.tra", text.encode()), ("o.tra.gz", gzip.compress(text.encode())),
                          ("o.tra.Z", compress(text.encode()))):
        (tmp_path / name).write_bytes(payload)
        digits = load_optdigits(tmp_path / name)
        assert digits.labels.tolist() == labels and digits.images.shape == (8, 28, 28)
    assert load_optdigits(tmp_path / "o.tra.Z").sha256 == load_optdigits(tmp_path / "o.tra").sha256
    # The header lines are not digits: a file without them holds the same ones.
    (tmp_path / "bare").write_text(optdigits_text(labels, header=False))
    assert load_optdigits(tmp_path / "bare").sha256 == digits.sha256


def test_a_bitmap_becomes_a_digit_in_mnists_form():
    bars = np.array([[list(map(int, row)) for row in bitmap(label)] for label in (0, 5)], np.uint8)
    images = to_mnist_form(bars)
    assert images.shape == (2, 28, 28) and images.dtype == np.uint8
    for img in images:  # a bar: tall in the middle of the field, MNIST's 20 pixels high, bright
        rows, cols = np.nonzero(img > 128)
        assert rows.max() - rows.min() + 1 in range(18, 22)
        assert abs(cols.mean() - 13.5) < 1.5 and cols.max() - cols.min() < 10
        assert img.max() > 200


@pytest.mark.parametrize("text, message", [
    ("", "no optdigits bitmaps"),
    ("hello\nworld\n", "no optdigits bitmaps"),
    ("\n".join(bitmap(1)[:20]) + "\n", "cut short"),
    ("\n".join(bitmap(1)) + "\n 12\n", "not a digit"),
    ("\n".join(bitmap(1)) + "\n", "not a digit"),
])
def test_a_damaged_file_is_refused_in_one_line(tmp_path, text, message):
    (tmp_path / "bad.tra").write_text(text)
    with pytest.raises(DataError, match=message) as e:
        load_optdigits(tmp_path / "bad.tra")
    assert "\n" not in str(e.value)


def test_corrupt_huge_or_missing_files_are_refused(tmp_path, monkeypatch):
    good = compress(optdigits_text([1, 2]).encode())
    (tmp_path / "cut.Z").write_bytes(good[:3] + bytes(reversed(good[3:])))
    (tmp_path / "cut.gz").write_bytes(gzip.compress(optdigits_text([1, 2]).encode())[:40])
    (tmp_path / "binary").write_bytes(bytes(range(256)) * 4)
    for name in ("cut.Z", "cut.gz", "binary"):
        with pytest.raises(DataError, match="corrupt or not an optdigits"):
            load_optdigits(tmp_path / name)
    monkeypatch.setattr(optdigits, "MAX_BYTES", 100)
    with pytest.raises(DataError, match="far more than optdigits holds"):
        load_optdigits(tmp_path / "binary")
    with pytest.raises(DataError, match="no such file"):
        load_optdigits(tmp_path / "absent.tra")


def test_it_is_found_in_the_data_folder_and_must_be_ucis(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = tmp_path / "data"
    (data / "optdigits").mkdir(parents=True)
    with pytest.raises(DataError, match="not found"):
        load_optdigits(data=data, download=False)
    (data / "optdigits" / "optdigits-orig.tra").write_text(optdigits_text([7, 7, 1]))
    with pytest.raises(DataError, match="not UCI's"):  # found, so it must be the real one
        load_optdigits(data=data)


def test_ucis_file_holds_the_digits_whose_sha256_the_code_knows(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "optdigits-orig.tra.Z").write_bytes(compress(gzip.open(REAL).read()))
    opt = load_optdigits(data=tmp_path / "data", download=False)
    assert opt.sha256 == optdigits.DIGITS_SHA256 and len(opt.labels) == optdigits.COUNT
    assert np.bincount(opt.labels).min() >= 180  # about as many of each digit
    train, held = opt.train(), opt.held_out()
    assert (len(train.labels), len(held.labels)) == (1289, 645)
    assert np.array_equal(np.concatenate([train.images, held.images]), opt.images)


def test_the_writers_kept_out_are_the_last_third():
    d = Digits(np.zeros((9, 28, 28), np.uint8), np.arange(9, dtype=np.uint8), "x")
    assert d.train().labels.tolist() == list(range(6)) and d.held_out().labels.tolist() == [6, 7, 8]


def test_training_with_extra_digits_mixes_them_into_every_batch(tiny_mnist, tmp_path, monkeypatch):
    from digitrec import train
    from digitrec.train import TrainConfig, run

    (tmp_path / "extra.tra").write_text(optdigits_text([0, 1, 2, 3, 4, 5, 6, 7, 8, 9] * 3))
    seen = []
    real_augment = train.augment_batch

    def augment(x, g):
        seen.append(x.clone())
        return real_augment(x, g)

    monkeypatch.setattr(train, "augment_batch", augment)
    lines = []
    cfg = TrainConfig.for_model("fast", epochs=1, batch_size=32, val_split=60, threads=1, data_dir=str(tiny_mnist), augment=True,
                                extra=str(tmp_path / "extra.tra"), extra_share=0.5, dry_run=True)
    summary = run(cfg, tmp_path / "run", log=lines.append)
    extra = load_optdigits(tmp_path / "extra.tra").train().images.astype(np.float32) / 255
    assert seen and all(len(x) == 32 for x in seen)
    for x in seen:  # the batch's second half is the extra writers' digits, as they are before distortion
        x = x[:, 0].numpy()
        assert all(np.abs(extra - img).max(axis=(1, 2)).min() < 1e-6 for img in x[16:])
        assert not any(np.abs(extra - img).max(axis=(1, 2)).min() < 1e-6 for img in x[:16])
    assert any("20 digits by its first writers, 50% of each batch; 10 by the last ones kept out" in l for l in lines)
    assert any(l.startswith("--extra") and "kept out: accuracy" in l for l in lines)
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["config"]["extra"] == str(tmp_path / "extra.tra") and meta["config"]["extra_share"] == 0.5
    assert meta["extra_sha256"] == load_optdigits(tmp_path / "extra.tra").sha256  # what it was trained on
    assert "extra_held_out_accuracy" in json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert summary["test_accuracy"] >= 0
    with pytest.raises(UsageError, match="no such file"):
        run(TrainConfig.for_model("fast", epochs=1, val_split=60, data_dir=str(tiny_mnist), extra=str(tmp_path / "none")),
            tmp_path / "run2", log=lambda s: None)
    assert not (tmp_path / "run2").exists()  # refused before the run's folder was made
