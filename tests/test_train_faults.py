"""A training killed with SIGKILL at random moments, also while it writes an epoch's files, resumes.

Each attempt runs `digitrec train` in a process of its own that is killed either after a random
delay or at a random file operation (just before a rename or fsync, or with the file being written
cut in half, as a kill in the middle of a write leaves it). After every kill no file a user sees is
half-written; every `--resume` continues or says in one line why it cannot; the weights at the end
are those of a run never interrupted.
"""

from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing
import os
import random
import shutil
import signal
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

KILLS = 10  # killed attempts before one is let finish
FILE_OPS = 50  # about the renames and fsyncs of a 3-epoch run: the kill lands somewhere among them


def _child(argv: list[str], output: str, kill_at: int | None, half: bool) -> None:
    """Run the command, SIGKILLing itself at file operation number `kill_at` (counting from 1)."""
    for stream in (1, 2):
        os.dup2(os.open(f"{output}.{stream}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC), stream)
    if kill_at is not None:
        count = [0]

        def kill_at_op(real, is_fsync=False):
            def op(*args, **kwargs):
                count[0] += 1
                if count[0] == kill_at:
                    if is_fsync and half:
                        size = os.fstat(args[0]).st_size
                        if size:
                            os.ftruncate(args[0], size // 2)
                    os.kill(os.getpid(), signal.SIGKILL)
                return real(*args, **kwargs)
            return op

        os.fsync = kill_at_op(os.fsync, is_fsync=True)
        os.replace = kill_at_op(os.replace)
        os.rename = kill_at_op(os.rename)
    from digitrec.cli import main

    code = main(argv)
    sys.stderr.flush()
    os._exit(code)


@pytest.fixture(scope="module")
def ctx():
    # Children are forked from a server that has imported torch but run nothing: quick to start,
    # and free of the thread pools a fork would otherwise copy in a broken state.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["digitrec.cli", "digitrec.train"])
    return ctx


def attempt(ctx, argv, tmp_path, kill_at=None, half=False, delay=None) -> tuple[int, str, str]:
    """(exit status, negative for a signal; stdout; stderr) of one `digitrec` process."""
    output = tmp_path / "output"
    p = ctx.Process(target=_child, args=([str(a) for a in argv], str(output), kill_at, half))
    p.start()
    p.join(delay)
    if p.is_alive():
        p.kill()
    p.join(120)
    out, err = (Path(f"{output}.{n}") for n in (1, 2))
    return p.exitcode, out.read_text() if out.exists() else "", err.read_text() if err.exists() else ""


def assert_nothing_half_written(out: Path) -> None:
    for path in out.rglob("*"):
        inside_partial = any(part.endswith(".partial") for part in path.relative_to(out).parts)
        if not path.is_file() or path.name.endswith(".tmp") or inside_partial:
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            load_file(path)
        elif path.suffix == ".csv":
            rows = list(csv.DictReader(open(path)))
            assert rows and all(None not in r.values() and None not in r for r in rows), path
    for folder in (out / "resume").glob("epoch-*"):  # committed epochs: each file as its manifest says
        manifest = json.loads((folder / "manifest.json").read_text())
        for name, sha in manifest["files"].items():
            assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == sha, folder / name


def test_sigkill_at_random_moments_never_loses_the_run(ctx, tiny_mnist, tmp_path):
    common = ["--threads", "1", "--data-dir", tiny_mnist, "--no-report"]
    recipe = ["--model", "fast", "--epochs", "3", "--batch-size", "32", "--val-split", "60", "--augment"]
    code, _, err = attempt(ctx, ["train", *recipe, *common, "--out", tmp_path / "straight"], tmp_path)
    assert code == 0, err

    straight = load_file(tmp_path / "straight" / "model.safetensors")
    out = tmp_path / "killed"
    rng = random.Random(0)
    kills = finished = 0
    saved = False  # whether an attempt on `out` reported a saved epoch (its line comes after the save)
    for trial in range(4 * KILLS):
        if out.exists():
            argv = ["train", "--resume", out, *common]
        else:
            argv = ["train", *recipe, *common, "--out", out]
        kill = {}
        if kills < KILLS:
            kill = (dict(kill_at=rng.randint(1, FILE_OPS), half=rng.random() < 0.5) if rng.random() < 0.7
                    else dict(delay=rng.uniform(0.2, 3.0)))
        code, log, err = attempt(ctx, argv, tmp_path, **kill)
        if code == 2:  # a resume refused: only before any epoch was saved, and in one line saying why
            lines = err.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in err, err
            assert not saved, f"a saved epoch was lost: {lines[0]}"
            code, log, err = attempt(ctx, ["train", *recipe, *common, "--out", out], tmp_path, **kill)
        saved = saved or "epoch 1/3" in log
        if out.exists():
            assert_nothing_half_written(out)
        if code == 0:
            weights = load_file(out / "model.safetensors")
            assert weights.keys() == straight.keys() and all(torch.equal(weights[k], straight[k]) for k in weights)
            assert sorted(p.name for p in out.iterdir()) == ["history.csv", "metrics.json", "model.json",
                                                           "model.safetensors"]
            finished += 1
            saved = False
            if kills >= KILLS:
                break
            shutil.rmtree(out)  # and once more from the start, to be killed elsewhere
            continue
        assert code == -signal.SIGKILL, err
        kills += 1
    assert kills == KILLS and finished >= 1, (kills, finished)
