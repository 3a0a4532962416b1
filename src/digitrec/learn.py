"""Learning the user's handwriting: the sample store (SQLite) and fine-tuning a personal model.

A sample is one digit the user corrected or confirmed: the 28x28 image the model saw, the crop of
the original picture, the right label, where it came from and when. Samples live in
`home()/samples.sqlite3`; `fit` fine-tunes a base model on them into the run directory
`home()/personal`, which every front end then reads with by default.

    >>> store = Store()                               # $DIGITREC_HOME/samples.sqlite3
    >>> store.add([Sample(label=7, image=digit28, source="draw")])
    [1]
    >>> store.counts()
    {7: 1}
    >>> fit(store)                                    # writes home()/personal; see FitConfig

The database is in WAL mode and every write is one transaction, so the window and the server can
write at once, and a crash or a full disk leaves it as it was before the write. Torch is imported
only by `fit`.
"""

from __future__ import annotations

import io
import os
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from digitrec.errors import UsageError
from digitrec.home import home

DB_NAME = "samples.sqlite3"
SCHEMA_VERSION = 1  # PRAGMA user_version of the store this code writes
BUSY_MS = 10_000  # how long a writer waits for another one's transaction before giving up
SETUP_RETRY_S = 0.05  # pause between tries to open a store another program is setting up
SCHEMA = """
CREATE TABLE samples (
    id INTEGER PRIMARY KEY,
    label INTEGER NOT NULL CHECK (label BETWEEN 0 AND 9),
    image BLOB NOT NULL,          -- PNG, 28x28 grey, white ink on black: what the model saw
    crop BLOB,                    -- PNG of the digit's box in the original picture
    predicted INTEGER CHECK (predicted BETWEEN 0 AND 9),  -- what the model read, if known
    source TEXT NOT NULL,         -- where it came from: draw, web, or the file given to learn add
    created TEXT NOT NULL         -- UTC, ISO 8601
);
"""


@dataclass(frozen=True)
class Sample:
    label: int  # the right digit, 0-9
    image: np.ndarray  # (28, 28) uint8, white on black: what the model saw
    source: str  # "draw", "web", or a file name
    crop: np.ndarray | None = None  # (h, w[, 3]) uint8: the digit in the original picture
    predicted: int | None = None  # what the model read (None: not known)
    id: int | None = None  # row id once stored
    created: str | None = None  # when it was stored


def check_label(label) -> int:
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= int(label) <= 9:
        raise UsageError(f"a sample's label must be a digit 0-9, got {label!r}")
    return int(label)


def to_png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def from_png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))


class Store:
    """The samples in an SQLite file (default `home()/samples.sqlite3`). Safe across threads and processes:
    each call opens its own connection.

    Raises UsageError, with one line, for a corrupt, locked or unwritable database.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else home() / DB_NAME

    def _connect(self) -> sqlite3.Connection:
        deadline = time.monotonic() + BUSY_MS / 1000
        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, timeout=BUSY_MS / 1000, isolation_level=None)
            except (OSError, sqlite3.Error) as e:
                raise UsageError(f"{self.path}: cannot open the sample store ({e})") from None
            try:
                self._prepare(db)
                return db
            except sqlite3.OperationalError as e:
                db.close()
                # Two programs opening a new store at once: switching it to WAL is refused at once, without
                # SQLite's busy wait, to all but one of them. Try again until the other has done it.
                if "locked" in str(e) and time.monotonic() < deadline:
                    time.sleep(SETUP_RETRY_S)
                    continue
                raise self._error(e) from None
            except sqlite3.Error as e:
                db.close()
                raise self._error(e) from None
            except BaseException:
                db.close()
                raise

    def _prepare(self, db: sqlite3.Connection) -> None:
        """WAL, full sync, and the schema (made by whichever program gets there first)."""
        db.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")  # a committed sample survives a power cut too
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            db.execute("BEGIN IMMEDIATE")
            if db.execute("PRAGMA user_version").fetchone()[0] == 0:  # not made meanwhile by another writer
                db.execute(SCHEMA)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        elif version != SCHEMA_VERSION:
            raise UsageError(f"{self.path}: a sample store of version {version}, newer than this "
                             f"digitrec reads ({SCHEMA_VERSION}); upgrade digitrec")

    def _error(self, e: sqlite3.Error) -> UsageError:
        text = str(e)
        if isinstance(e, sqlite3.OperationalError) and "locked" in text:
            return UsageError(f"{self.path}: the sample store is locked by another program; try again")
        if isinstance(e, sqlite3.DatabaseError) and not isinstance(e, sqlite3.IntegrityError) and (
                "not a database" in text or "malformed" in text or "corrupt" in text):
            return UsageError(f"{self.path}: not a readable sample store ({text}); move it away to start a new one")
        return UsageError(f"{self.path}: the sample store failed ({text})")

    def _run(self, work, write: bool):
        db = self._connect()
        try:
            if write:
                db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db)
                if write:
                    db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return result
        except sqlite3.Error as e:
            raise self._error(e) from None
        finally:
            db.close()

    def add(self, samples: list[Sample]) -> list[int]:
        """Store the samples, all or none, in one transaction; returns their ids."""
        rows = []
        for s in samples:
            image = np.asarray(s.image)
            if image.shape != (28, 28) or image.dtype != np.uint8:
                raise UsageError(f"a sample's image must be 28x28 uint8, got {image.dtype} {image.shape}")
            predicted = None if s.predicted is None else check_label(s.predicted)
            crop = None if s.crop is None or not np.asarray(s.crop).size else to_png(s.crop)
            rows.append((check_label(s.label), to_png(image), crop, predicted, str(s.source)[:200],
                         s.created or datetime.now(timezone.utc).isoformat(timespec="seconds")))

        def insert(db):
            return [db.execute("INSERT INTO samples (label, image, crop, predicted, source, created) "
                               "VALUES (?, ?, ?, ?, ?, ?)", row).lastrowid for row in rows]
        return self._run(insert, write=True)

    def remove(self, ids: list[int]) -> int:
        """Delete the samples with these ids (all or none: an unknown id changes nothing); returns how many."""
        def delete(db):
            missing = [i for i in ids if db.execute("SELECT 1 FROM samples WHERE id = ?", (i,)).fetchone() is None]
            if missing:
                raise UsageError(f"no sample with id {', '.join(map(str, missing))}; see digitrec learn list")
            return sum(db.execute("DELETE FROM samples WHERE id = ?", (i,)).rowcount for i in ids)
        return self._run(delete, write=True)

    def reset(self) -> int:
        """Delete every sample; returns how many there were."""
        return self._run(lambda db: db.execute("DELETE FROM samples").rowcount, write=True)

    def counts(self) -> dict[int, int]:
        """Samples per label, for the labels that have any."""
        return dict(self._run(lambda db: db.execute(
            "SELECT label, COUNT(*) FROM samples GROUP BY label ORDER BY label").fetchall(), write=False))

    def sources(self) -> dict[str, int]:
        return dict(self._run(lambda db: db.execute(
            "SELECT source, COUNT(*) FROM samples GROUP BY source ORDER BY COUNT(*) DESC, source").fetchall(),
            write=False))

    def samples(self, with_crops: bool = False) -> list[Sample]:
        """Every sample, oldest first."""
        rows = self._run(lambda db: db.execute(
            f"SELECT id, label, image, {'crop' if with_crops else 'NULL'}, predicted, source, created "
            "FROM samples ORDER BY id").fetchall(), write=False)
        try:
            return [Sample(label, from_png(image), source, from_png(crop) if crop else None, predicted, i, created)
                    for i, label, image, crop, predicted, source, created in rows]
        except (OSError, ValueError) as e:
            raise UsageError(f"{self.path}: a sample's image is unreadable ({e})") from None

    def __len__(self) -> int:
        return sum(self.counts().values())


def parse_text(text: str) -> list[int]:
    """The labels of `--text`: digits, with spaces and line breaks between them ignored."""
    labels = [c for c in text if not c.isspace()]
    bad = sorted({c for c in labels if c not in "0123456789"})
    if bad:
        raise UsageError(f"--text: a sample's label must be a digit 0-9, got {' '.join(map(repr, bad))}")
    if not labels:
        raise UsageError("--text: give the digits of the picture, e.g. --text 3141")
    return [int(c) for c in labels]


def samples_from_reading(picture, reading, labels: list[int], source: str) -> list[Sample]:
    """Samples for every digit of a reading, labelled in reading order; refused if the counts differ.

    >>> samples_from_reading(picture, rec.read(picture), [3, 1, 4, 1], "photo.jpg")
    """
    if len(reading.digits) != len(labels):
        raise UsageError(f"{source}: {len(reading.digits)} digits found ('{reading.text.replace(chr(10), ' / ')}'), "
                         f"but the text has {len(labels)}; nothing stored")
    pixels = getattr(picture, "pixels", picture)
    out = []
    for d, label in zip(reading.digits, labels):
        x, y, w, h = d.box
        out.append(Sample(label, d.image, source, pixels[y:y + h, x:x + w], d.label))
    return out


STEPS_PER_EPOCH = 100  # optimiser steps in one --epochs unit; ~30 s on two laptop cores for the bundled model
PERSONAL_BATCH = 48  # the user's samples per step (drawn again and again, each time freshly distorted)
REPLAY_BATCH = 48  # MNIST training digits per step, so that the model does not forget how others write
FIT_LR = 3e-3  # peak learning rate: high, so that a few samples move the model; distillation holds the rest
DISTILL_WEIGHT = 1.0  # weight of the pull towards the base model's outputs on the replay digits, beside their labels
DISTILL_T = 2.0  # temperature softening both models' outputs in that pull, so it carries the runner-up digits too
CHECK_DIGITS = 2000  # MNIST test digits read before and after, and validation digits calibrated on
HOLDOUT_EVERY = 5  # every 5th sample of each digit is held out, to show what the fit does to unseen ones


@dataclass
class FitConfig:
    base: str | None = "bundled"  # model to start from: a run directory, "bundled" or "personal"
    epochs: int | None = None  # units of STEPS_PER_EPOCH steps; None: 1
    steps: int | None = None  # optimiser steps, in place of epochs (short fits for tests)
    holdout: bool = True  # keep every HOLDOUT_EVERY-th sample of each digit out of training, to measure on
    seed: int = 0  # seeds sampling, distortions and replay
    threads: int | None = None  # CPU threads for torch; None: torch's default
    data_dir: str | None = None  # MNIST folder; None: $DIGITREC_DATA or the user cache
    out: str | None = None  # run directory written; None: home()/personal


def split_samples(samples: list[Sample], holdout: bool) -> tuple[list[Sample], list[Sample]]:
    """(trained on, held out): every HOLDOUT_EVERY-th sample of each digit, oldest first, is held out."""
    seen: dict[int, int] = {}
    train, held = [], []
    for s in samples:
        seen[s.label] = seen.get(s.label, 0) + 1
        (held if holdout and seen[s.label] % HOLDOUT_EVERY == 0 else train).append(s)
    return train, held


def fit(store: Store, cfg: FitConfig = FitConfig(), log=print) -> dict:
    """Fine-tune cfg.base on the store's samples, mixed with MNIST replay; write the personal run directory.

    Every member of an ensemble is fine-tuned (batch-norm statistics and dropout frozen: a few dozen
    samples must not move them), then the probabilities are calibrated on MNIST validation digits.
    Returns the numbers it prints: accuracy before/after on held-out samples and on MNIST test digits.

    >>> fit(Store(), FitConfig(epochs=1))["after"]["samples"]
    0.96
    """
    import copy
    import time

    import torch
    import torch.nn.functional as F

    from digitrec import __version__
    from digitrec.augment import augment_batch
    from digitrec.checkpoint import ONNX_NAME, load_checkpoint, resolve_run_dir, save_checkpoint
    from digitrec.data import load_mnist, writable_dir
    from digitrec.evaluate import as_batch, fit_temperature, predict_logits
    from digitrec.models import Ensemble, TemperatureScaled
    from digitrec.train import exclusive, split_train_val

    t0 = time.perf_counter()
    samples = store.samples()
    if not samples:
        raise UsageError(f"no samples in {store.path} to learn from; add some with: digitrec learn add IMAGE --text DIGITS")
    steps = cfg.steps or (cfg.epochs or 1) * STEPS_PER_EPOCH
    if steps < 1 or (cfg.epochs is not None and cfg.epochs < 1):
        raise UsageError(f"--epochs must be at least 1 (got {cfg.epochs})")
    base_dir = resolve_run_dir(cfg.base)
    out = Path(cfg.out) if cfg.out else home() / "personal"
    if out.resolve() == base_dir.resolve():
        raise UsageError(f"--base {cfg.base}: fine-tuning writes {out}; start from another model")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model, base_meta = load_checkpoint(base_dir)
    net = model.model if isinstance(model, TemperatureScaled) else model
    members = list(net.members) if isinstance(net, Ensemble) else [net]
    mnist = load_mnist(cfg.data_dir)
    val_split = (base_meta.get("members") or [base_meta])[0].get("config", {}).get("val_split") or 5000
    train_x, train_y, val_x, val_y = split_train_val(mnist, val_split)
    train, held = split_samples(samples, cfg.holdout)
    if not train:
        raise UsageError("every sample is held out for measuring; add more samples")
    check_x, check_y = mnist.test_images[:CHECK_DIGITS], mnist.test_labels[:CHECK_DIGITS]
    held_x = np.stack([s.image for s in held]) if held else np.zeros((0, 28, 28), np.uint8)
    held_y = np.array([s.label for s in held])

    def accuracy(images, labels) -> float | None:
        if not len(labels):
            return None
        return float((predict_logits(net, images).argmax(1).numpy() == labels).mean())

    before = {"samples": accuracy(held_x, held_y), "mnist": accuracy(check_x, check_y)}
    log(f"fine-tuning {base_dir} on {len(train)} samples ({len(held)} held out) with MNIST replay: "
        f"{steps} steps, {torch.get_num_threads()} threads")

    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    px = as_batch(np.stack([s.image for s in train]))  # (S, 1, 28, 28)
    py = torch.tensor([s.label for s in train])
    net.eval()  # frozen batch norm and no dropout: the features stay those MNIST taught
    teachers = [copy.deepcopy(m).requires_grad_(False) for m in members]  # the base model, as it was
    opt = torch.optim.AdamW(net.parameters(), lr=FIT_LR, weight_decay=0.0)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = FIT_LR * 0.5 * (1 + np.cos(np.pi * step / steps))  # cosine to zero
        ip = torch.randint(0, len(py), (PERSONAL_BATCH,), generator=g)
        ir = torch.randint(0, len(train_y), (REPLAY_BATCH,), generator=g)
        x = augment_batch(torch.cat([px[ip], as_batch(train_x[ir])]), g)  # (B, 1, 28, 28)
        x = x.contiguous(memory_format=torch.channels_last)
        y = torch.cat([py[ip], train_y[ir]])
        # Each member learns on its own, as it was trained: the ensemble's vote stays a vote of equals.
        # On the replay digits it is also pulled towards what it answered before (learning without
        # forgetting): the user's digits may move it far, everyone else's digits keep their readings.
        loss = 0.0
        for m, teacher in zip(members, teachers):
            logits = m(x).float()
            with torch.no_grad():
                target = F.softmax(teacher(x[PERSONAL_BATCH:]).float() / DISTILL_T, 1)
            distill = F.kl_div(F.log_softmax(logits[PERSONAL_BATCH:] / DISTILL_T, 1), target, reduction="batchmean")
            loss = loss + F.cross_entropy(logits, y, label_smoothing=0.1) + DISTILL_WEIGHT * DISTILL_T ** 2 * distill
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    temperature = fit_temperature(predict_logits(net, val_x[:CHECK_DIGITS, 0]), val_y[:CHECK_DIGITS].numpy())
    after = {"samples": accuracy(held_x, held_y), "mnist": accuracy(check_x, check_y)}
    seconds = round(time.perf_counter() - t0, 1)
    personal = {"samples": len(samples), "trained_on": len(train), "held_out": len(held), "base": str(cfg.base),
                "steps": steps, "seed": cfg.seed, "seconds": seconds, "before": before, "after": after,
                "mnist_test_digits": CHECK_DIGITS, "counts": {str(k): v for k, v in sorted(store.counts().items())},
                "saved": datetime.now().isoformat(timespec="seconds")}
    meta = {k: v for k, v in base_meta.items() if k not in ("format", "temperature", "personal", "metrics")}
    meta.update(metrics={"test_accuracy": after["mnist"], "test_n": CHECK_DIGITS}, temperature=temperature,
                personal=personal, digitrec_version=__version__)
    writable_dir(out, "the personal model")
    with exclusive(out):
        (out / ONNX_NAME).unlink(missing_ok=True)  # exported from the old weights
        save_checkpoint(out, net, meta)
    load_checkpoint(out)  # what was written loads back

    def pct(v):
        return "-" if v is None else f"{v:.2%}"
    if held:
        log(f"held-out samples ({len(held)}): {pct(before['samples'])} -> {pct(after['samples'])}")
    log(f"MNIST test ({CHECK_DIGITS} digits): {pct(before['mnist'])} -> {pct(after['mnist'])}; "
        f"probability temperature {temperature}")
    log(f"personal model of {len(samples)} samples written to {out} in {seconds:.0f} s; "
        f"predict, draw and serve now read with it (--model bundled reads without)")
    return personal
