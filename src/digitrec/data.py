"""MNIST on disk: read and write IDX files, find the data, download and verify it.

    >>> from digitrec import data
    >>> mnist = data.load_mnist()          # --data-dir > $DIGITREC_DATA > user cache
    >>> mnist.train_images.shape, mnist.train_images.dtype
    ((60000, 28, 28), dtype('uint8'))
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import math
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitrec.errors import UsageError

# The four original files and their sha256, as published by Yann LeCun's page.
FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
}
# Tried in order; the first is the mirror torchvision and Keras use.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
ENV_VAR = "DIGITREC_DATA"

# IDX type codes (third byte of the magic number) -> numpy dtype (big-endian).
_IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_MAX_IDX_BYTES = 600 << 20  # largest data an IDX header may claim: EMNIST ByClass's 698k digits (547 MB) fit
_READ_CHUNK = 1 << 20  # bytes read at a time, so memory follows the data present, not the size claimed


class DataError(UsageError):
    """A data file is missing, unreadable or not what it claims to be."""


@dataclass
class MNIST:
    train_images: np.ndarray  # (60000, 28, 28) uint8
    train_labels: np.ndarray  # (60000,) uint8
    test_images: np.ndarray  # (10000, 28, 28) uint8
    test_labels: np.ndarray  # (10000,) uint8
    train_sha256: str  # sha256 of the training images and labels, recorded in checkpoints


def _open(path: Path):
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a numpy array.

    >>> read_idx("t10k-labels-idx1-ubyte.gz").shape
    (10000,)
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with _open(path) as f:
            header = f.read(4)
            if len(header) < 4:
                raise DataError(f"{path}: empty or truncated (no IDX header)")
            zero, zero2, code, ndim = header
            if zero or zero2 or code not in _IDX_DTYPES or not 1 <= ndim <= 4:
                raise DataError(f"{path}: not an IDX file (bad magic number 0x{header.hex()})")
            dims_raw = f.read(4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise DataError(f"{path}: truncated IDX header")
            shape = struct.unpack(f">{ndim}I", dims_raw)
            dtype = _IDX_DTYPES[code]
            nbytes = math.prod(shape) * dtype.itemsize  # Python ints: four 32-bit sizes cannot overflow
            if nbytes > _MAX_IDX_BYTES:
                raise DataError(f"{path}: header claims {nbytes} bytes of data, more than any digit data set")
            # An empty set with huge other sides (0 x 2^31 x 2^31) holds no bytes but is no array numpy can shape.
            if math.prod(max(d, 1) for d in shape) * dtype.itemsize > _MAX_IDX_BYTES:
                raise DataError(f"{path}: header claims sides {' x '.join(map(str, shape))}, larger than any digit data set")
            body = bytearray()
            while len(body) < nbytes:
                chunk = f.read(min(_READ_CHUNK, nbytes - len(body)))
                if not chunk:
                    raise DataError(f"{path}: truncated: {len(body)} of {nbytes} data bytes present")
                body += chunk
            if f.read(1):
                raise DataError(f"{path}: trailing data after the {nbytes} bytes the header announces")
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: corrupt or unreadable ({e})") from None
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write an array as an IDX file, gzipped when the name ends in .gz; atomic."""
    array = np.asarray(array)
    codes = {v.newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    header = bytes([0, 0, codes[native], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(_IDX_DTYPES[codes[native]]).tobytes()
    if str(path).endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)
    atomic_write_bytes(path, payload)


@functools.cache
def new_file_mode() -> int:
    """The permissions an ordinary new file gets here (0o666 less the umask); temp files start at 0o600.

    The umask can only be read by setting it, so it is read once, before any writer threads run.
    """
    umask = os.umask(0o077)
    os.umask(umask)
    return 0o666 & ~umask


TEMP_NAME_KEEP = 200  # characters of the final name kept in its temporary file's name


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    """Write bytes to `path` via a temp file in the same folder and a rename."""
    path = Path(path)
    # The temporary name is never longer than the final one could be: names near the 255-byte limit work too.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:TEMP_NAME_KEEP]}.", suffix=".tmp")
    try:
        os.chmod(tmp, new_file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def writable_dir(folder: str | os.PathLike, what: str) -> Path:
    """Create `folder` if needed and prove it takes files; else one clear UsageError about `what`."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"cannot write {what} into {folder}: it is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"cannot write {what} into {folder}: {e.strerror or e}") from None
    return folder


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_dir() -> Path:
    """The per-user cache folder ($XDG_CACHE_HOME/digitrec/mnist or ~/.cache/digitrec/mnist)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "digitrec" / "mnist"


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Where MNIST is looked for: `explicit` (--data-dir), else $DIGITREC_DATA, else the user cache."""
    if explicit:
        return Path(explicit)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    return cache_dir()


def _find(folder: Path, name: str) -> Path | None:
    """The file `name` in `folder`, also accepting its uncompressed form (no .gz)."""
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _download(folder: Path, name: str, sha256: str) -> Path:
    import urllib.error  # here, not at the top: reading digits never downloads, and starts faster
    import urllib.request

    errors = []
    for mirror in MIRRORS:
        try:
            with urllib.request.urlopen(mirror + name, timeout=30) as r:
                payload = r.read()
        except (urllib.error.URLError, OSError) as e:
            errors.append(f"{mirror}: {getattr(e, 'reason', e)}")
            continue
        if hashlib.sha256(payload).hexdigest() != sha256:
            errors.append(f"{mirror}: sha256 mismatch")
            continue
        atomic_write_bytes(folder / name, payload)
        return folder / name
    names = ", ".join(n for n, _ in FILES.values())
    raise DataError(
        f"MNIST not found in {folder} and could not be downloaded ({'; '.join(errors)}). "
        f"Put the four files ({names}) in {folder}, or point --data-dir or ${ENV_VAR} at them."
    )


def locate(explicit: str | os.PathLike | None = None, download: bool = True) -> dict[str, Path]:
    """Paths of the four MNIST files, downloading missing ones into the data folder if allowed."""
    folder = data_dir(explicit)
    if explicit and not folder.is_dir():
        raise DataError(f"data directory {folder} does not exist")
    paths, missing = {}, []
    for key, (name, sha) in FILES.items():
        found = _find(folder, name)
        if found is None:
            missing.append((key, name, sha))
        else:
            paths[key] = found
    if missing:
        if not download:
            raise DataError(f"MNIST file {missing[0][1]} not found in {folder}")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"cannot create data directory {folder}: {e.strerror}") from None
        for key, name, sha in missing:
            paths[key] = _download(folder, name, sha)
    return paths


def load_mnist(explicit: str | os.PathLike | None = None, download: bool = True) -> MNIST:
    """Load MNIST as uint8 arrays, checking shapes and that labels match images."""
    paths = locate(explicit, download)
    arrays = {key: read_idx(p) for key, p in paths.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        ipath, lpath = paths[f"{split}_images"], paths[f"{split}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
            raise DataError(f"{ipath}: expected uint8 images of 28x28, found {images.dtype} {images.shape}")
        if labels.ndim != 1 or labels.dtype != np.uint8:
            raise DataError(f"{lpath}: expected a 1-d uint8 label file, found {labels.dtype} {labels.shape}")
        if len(labels) != len(images):
            raise DataError(f"{lpath}: {len(labels)} labels for {len(images)} images in {ipath.name}")
        if len(labels) and labels.max() > 9:
            raise DataError(f"{lpath}: label {int(labels.max())} is not a digit 0-9")
    return MNIST(arrays["train_images"], arrays["train_labels"], arrays["test_images"],
                 arrays["test_labels"], content_sha256(arrays["train_images"], arrays["train_labels"]))


def content_sha256(*arrays: np.ndarray) -> str:
    """sha256 over the arrays' bytes: the same for .gz and uncompressed copies of the data."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()
