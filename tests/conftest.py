"""Shared fixtures: tiny MNIST-format data sets written by the tests themselves, and the real one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import digitrec
from digitrec.data import FILES, write_idx

REPO = Path(__file__).resolve().parents[1]
BUNDLED = Path(digitrec.__file__).parent / "weights" / "model.json"


def tiny_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n 28x28 uint8 images whose label is the position of a bright square: learnable, not MNIST."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    images = rng.integers(0, 40, size=(n, 28, 28), dtype=np.uint8)
    for img, label in zip(images, labels):
        r, c = 4 + 6 * (label // 5) * 2, 3 + 5 * (label % 5)
        img[r:r + 6, c:c + 4] = 255
    return images, labels


def write_mnist(folder: Path, n_train: int = 300, n_test: int = 100, gz: bool = True) -> Path:
    """Write the four MNIST files, made of tiny_digits, into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = dict(zip(("train_images", "train_labels"), tiny_digits(n_train, 0)))
    arrays.update(zip(("test_images", "test_labels"), tiny_digits(n_test, 1)))
    for key, (name, _) in FILES.items():
        write_idx(folder / (name if gz else name.removesuffix(".gz")), arrays[key])
    return folder


@pytest.fixture(autouse=True)
def user_home(tmp_path_factory, monkeypatch) -> Path:
    """A data folder of the test's own: samples and personal models never touch the user's."""
    folder = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("DIGITREC_HOME", str(folder))
    return folder


@pytest.fixture
def tiny_mnist(tmp_path) -> Path:
    return write_mnist(tmp_path / "mnist")


@pytest.fixture(scope="session")
def real_mnist() -> Path:
    """The real MNIST files: $DIGITREC_DATA, else ../shared/mnist beside the project."""
    folder = Path(os.environ.get("DIGITREC_DATA") or REPO.parent / "shared" / "mnist").resolve()
    missing = [name for name, _ in FILES.values() if not (folder / name).is_file()]
    assert not missing, f"the real MNIST files are needed in {folder} (set DIGITREC_DATA): missing {missing}"
    return folder


@pytest.fixture(scope="session")
def model_dir():
    """The model reading tests use: the bundled one, which `digitrec.load(None)` loads."""
    assert BUNDLED.is_file(), f"the bundled model is missing: {BUNDLED}"
    return None


def digitrec_cli(*args, capsys):
    """Run the `digitrec` command in-process; returns (exit status, stdout, stderr)."""
    from digitrec.cli import main

    try:
        status = main([str(a) for a in args])
    except SystemExit as e:
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status, err, *words):
    """What every bad input must give: exit status 2 and one line on stderr naming the problem."""
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], lines[0]


def need(program: str, package: str) -> str:
    """The path of a program a test drives; else a failure naming the Debian package that brings it in.

    A failure, not a skip: CI installs these (see .ci/run), and there the tests must run.
    """
    found = shutil.which(program)
    if found is None:
        pytest.fail(f"this test needs the program {program}, not found on PATH: install the Debian package "
                    f"{package} (sudo apt-get install {package}), as .ci/run does", pytrace=False)
    return found
