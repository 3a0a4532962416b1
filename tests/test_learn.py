"""The sample store (add, list, remove, concurrent writers, crashes, bad input), `digitrec learn`, and a
fit that learns a writer's continental 1s."""

import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, assert_one_line_error, digitrec_cli
from digitrec.errors import UsageError
from digitrec.learn import Sample, Store, fit, FitConfig, split_samples

OPTDIGITS = REPO.parent / "shared" / "realdigits" / "optdigits"


def digit(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)


def test_samples_are_stored_listed_and_removed(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    ids = store.add([Sample(3, digit(0), "draw", crop=np.full((40, 30), 9, np.uint8), predicted=8),
                     Sample(3, digit(1), "web"), Sample(7, digit(2), "photo.jpg")])
    assert store.counts() == {3: 2, 7: 1} and len(store) == 3
    assert store.sources() == {"draw": 1, "photo.jpg": 1, "web": 1}
    first = store.samples(with_crops=True)[0]
    assert (first.image == digit(0)).all() and first.crop.shape == (40, 30) and first.predicted == 8
    assert first.id == ids[0] and first.created
    assert store.remove([ids[0]]) == 1
    with pytest.raises(UsageError, match="no sample with id"):
        store.remove([ids[1], 999])
    assert len(store) == 2  # an unknown id removes nothing, not even the known one beside it
    assert store.reset() == 2 and store.counts() == {}
    db = sqlite3.connect(tmp_path / "s.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1


@pytest.mark.parametrize("label", [10, -1, "7", True, 3.0])
def test_a_label_that_is_not_a_digit_is_refused_and_nothing_is_stored(tmp_path, label):
    store = Store(tmp_path / "s.sqlite3")
    with pytest.raises(UsageError, match="0-9"):
        store.add([Sample(1, digit(0), "web"), Sample(label, digit(1), "web")])
    assert len(store) == 0


def _writer(path, worker, n):
    store = Store(path)
    for i in range(n):
        store.add([Sample(worker, digit(100 * worker + i), f"writer-{worker}")])


def test_writers_in_several_processes_at_once_lose_nothing(tmp_path):
    path = tmp_path / "s.sqlite3"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert Store(path).counts() == {0: 25, 1: 25, 2: 25, 3: 25}


CRASH = """
import os, sqlite3, sys
import numpy as np
from digitrec import learn

store = learn.Store(sys.argv[1])
store.add([learn.Sample(1, np.zeros((28, 28), np.uint8), "before")])

class Dying(sqlite3.Connection):
    def execute(self, sql, *args):
        result = super().execute(sql, *args)
        if sql.startswith("INSERT") and args[0][4] == "half":
            os._exit(9)  # killed once the first row of the batch went in, before COMMIT
        return result

connect = sqlite3.connect
learn.sqlite3 = type("sqlite3", (), {**vars(sqlite3), "connect": staticmethod(lambda *a, **k: connect(*a, factory=Dying, **k))})
store.add([learn.Sample(2, np.zeros((28, 28), np.uint8), "half"), learn.Sample(3, np.zeros((28, 28), np.uint8), "half")])
"""


def test_a_crash_in_the_middle_of_a_write_leaves_the_store_as_it_was(tmp_path):
    path = tmp_path / "s.sqlite3"
    result = subprocess.run([sys.executable, "-c", CRASH, str(path)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert result.returncode == 9, result.stderr
    store = Store(path)
    assert store.counts() == {1: 1}  # the sample before the crash, and none of the half-written batch
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store.add([Sample(4, digit(0), "after")])
    assert store.counts() == {1: 1, 4: 1}


def test_a_corrupt_or_locked_store_is_one_line_and_is_left_untouched(tmp_path, capsys, user_home):
    path = user_home / "samples.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    status, _, err = digitrec_cli("learn", "list", capsys=capsys)
    assert_one_line_error(status, err, str(path), "not a readable sample store")
    assert path.read_bytes() == b"this is not a database" * 100
    path.unlink()
    Store().add([Sample(1, digit(0), "draw")])
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        import digitrec.learn as learn
        old, learn.BUSY_MS = learn.BUSY_MS, 200
        try:
            status, _, err = digitrec_cli("learn", "reset", capsys=capsys)
        finally:
            learn.BUSY_MS = old
        assert_one_line_error(status, err, "locked")
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert Store().counts() == {1: 1}


def test_learn_add_stores_the_digits_of_a_picture_and_refuses_a_wrong_count(tmp_path, capsys, model_dir):
    import cv2

    picture = np.full((120, 360), 255, np.uint8)
    for i, c in enumerate("314"):
        cv2.putText(picture, c, (30 + 110 * i, 95), cv2.FONT_HERSHEY_SIMPLEX, 3, 0, 9)
    cv2.imwrite(str(tmp_path / "314.png"), picture)
    status, out, err = digitrec_cli("learn", "add", tmp_path / "314.png", "--text", "31", capsys=capsys)
    assert_one_line_error(status, err, "3 digits found", "nothing stored")
    status, out, err = digitrec_cli("learn", "add", tmp_path / "314.png", "--text", "3x4", capsys=capsys)
    assert_one_line_error(status, err, "0-9")
    status, out, err = digitrec_cli("learn", "add", tmp_path / "314.png", "--text", "317", capsys=capsys)
    assert status == 0, err
    assert "stored 3 samples (1 corrected, 2 confirmed)" in out
    status, out, err = digitrec_cli("learn", "list", "--all", capsys=capsys)
    assert status == 0 and "3 samples" in out and "7 (read as 4)" in out and "314.png (3)" in out
    status, out, err = digitrec_cli("learn", "remove", "2", capsys=capsys)
    assert status == 0 and "2 left" in out
    status, out, err = digitrec_cli("learn", "remove", "2", capsys=capsys)
    assert_one_line_error(status, err, "no sample with id 2")
    status, out, err = digitrec_cli("learn", "reset", capsys=capsys)
    assert status == 0 and len(Store()) == 0


def test_fit_without_samples_and_a_personal_model_that_does_not_exist_are_one_line(capsys, tmp_path):
    status, _, err = digitrec_cli("learn", "fit", capsys=capsys)
    assert_one_line_error(status, err, "no samples")
    for command in (["predict", "--model", "personal", tmp_path / "x.png"], ["evaluate", "personal"],
                    ["export", "personal"], ["explain", "--model", "personal", tmp_path / "x.png"]):
        status, _, err = digitrec_cli(*command, capsys=capsys)
        assert_one_line_error(status, err, "no personal model yet", "learn fit")
    assert not (Path(os.environ["DIGITREC_HOME"]) / "personal").exists()


def test_every_fifth_sample_of_a_digit_is_held_out():
    samples = [Sample(d, digit(i), "x") for i, d in enumerate([1] * 6 + [2] * 3)]
    train, held = split_samples(samples, holdout=True)
    assert [s.label for s in held] == [1] and len(train) == 8
    assert split_samples(samples, holdout=False) == (samples, [])


def optdigits_digits():
    """The first 700 optdigits writers' digits as the reader cuts them out (continental 1s, box-filling digits)."""
    import digitrec

    labels = json.loads((OPTDIGITS / "labels.json").read_text())
    rec = digitrec.load("bundled")
    x, y = [], []
    for name, text in sorted(labels.items())[:700]:
        reading = rec.read(OPTDIGITS / name)
        if len(reading.digits) == 1:
            x.append(reading.digits[0].image)
            y.append(int(text))
    return np.stack(x), np.array(y)


def test_a_short_fit_on_a_few_samples_reads_the_writers_other_digits_better(capsys, real_mnist, tmp_path):
    import digitrec
    from digitrec.train import TrainConfig, run

    # The bundled model learned these writers' digits (--extra optdigits); a model that knows only
    # MNIST's writers misreads them, as it would a new user's hand.
    base = tmp_path / "mnist-only"
    run(TrainConfig.for_model("fast", epochs=2, threads=2, data_dir=str(real_mnist)), base, log=lambda s: None)
    rec = digitrec.load(str(base), threads=2)
    x, y = optdigits_digits()
    rng = np.random.default_rng(0)
    chosen = np.concatenate([rng.choice(np.flatnonzero(y == d), 5, replace=False) for d in range(10)])
    others = np.setdiff1d(np.arange(len(y)), chosen)
    before = int((rec.classify(x[others]).argmax(1) != y[others]).sum())
    assert before >= 10, "a model of MNIST alone should misread some of these writers' digits"
    store = Store()
    store.add([Sample(int(y[i]), x[i], "optdigits") for i in chosen])
    lines = []
    personal = fit(store, FitConfig(base=str(base), steps=40, threads=2, data_dir=str(real_mnist)), log=lines.append)
    assert personal["trained_on"] == 40 and personal["held_out"] == 10
    assert any(line.startswith("held-out samples (10):") for line in lines)
    assert any(line.startswith("MNIST test (2000 digits):") for line in lines)
    assert personal["after"]["mnist"] >= personal["before"]["mnist"] - 0.005
    mine = digitrec.load(threads=2)  # the personal model is now the default
    assert mine.name == "personal, 50 samples"
    after = int((mine.classify(x[others]).argmax(1) != y[others]).sum())
    assert after <= 0.75 * before, (before, after)
    assert digitrec.load("bundled").name == "bundled"

    status, out, err = digitrec_cli("export", "personal", capsys=capsys)
    assert status == 0 and (Path(os.environ["DIGITREC_HOME"]) / "personal" / "model.onnx").is_file()
    onnx = digitrec.load("personal", backend="onnx")
    assert (onnx.classify(x[others]).argmax(1) == mine.classify(x[others]).argmax(1)).mean() > 0.999
    status, _, err = digitrec_cli("learn", "fit", "--base", "personal", capsys=capsys)
    assert_one_line_error(status, err, "start from another model")


def _open_store(path, start, results):
    start.wait()  # all at the same moment
    try:
        len(Store(path))
        results.put("ok")
    except UsageError as e:
        results.put(str(e))


def test_programs_opening_a_new_store_at_once_all_get_in(tmp_path):
    # The window and the server started together both create the store: neither may be refused.
    ctx = multiprocessing.get_context("fork")
    failures = []
    for trial in range(40):
        path, results, start = tmp_path / f"store-{trial}.sqlite3", ctx.Queue(), ctx.Barrier(4)
        procs = [ctx.Process(target=_open_store, args=(path, start, results)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        failures += [r for r in (results.get(timeout=10) for _ in procs) if r != "ok"]
    assert not failures, failures[0]
