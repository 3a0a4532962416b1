"""UCI optdigits: 1934 digits by 30 writers of Bogazici University on preprinted forms, as more training
data beside MNIST's (`digitrec train --extra optdigits`).

NIST's form tools cut each digit out and stretched it to fill a 32x32 bitmap: fat 1s, wide 7s, and
the continental 1s and crossed 7s of writers outside MNIST's population. `load_optdigits` finds the
original file (`optdigits-orig.tra`, compressed as `.Z` the way UCI publishes it, as `.gz`, or plain)
or downloads it, checks its digits against their sha256, and brings each digit into MNIST's form the
way the reader does with a picture of it.

    >>> opt = load_optdigits()                 # --data-dir > $DIGITREC_DATA > the user cache
    >>> opt.images.shape, opt.labels[:4]
    ((1934, 28, 28), array([0, 0, 7, 4], dtype=uint8))
    >>> opt.train().images.shape               # the writers trained on; opt.held_out() the others
    (1289, 28, 28)
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitrec.data import DataError, atomic_write_bytes, content_sha256, data_dir
from digitrec.data import cache_dir as mnist_cache_dir

NAME = "optdigits-orig.tra"
# The file as UCI publishes it (unix compress), from the data set's folder and from its archive page.
SOURCES = (
    "https://archive.ics.uci.edu/ml/machine-learning-databases/optdigits/optdigits-orig.tra.Z",
    "https://archive.ics.uci.edu/static/public/80/optical+recognition+of+handwritten+digits.zip",
)
# sha256 of the digits themselves (the 1934 bitmaps as 0/1 bytes, then the labels): the same whether the
# file came compressed, plain, or with UCI's header lines.
DIGITS_SHA256 = "0a3ac3a41895c34eaf61db02429e16ee3a25a348a68a10e1d8ed5a369abd8047"
COUNT = 1934
SIDE = 32  # the bitmaps' side
HELD_OUT_SHARE = 1 / 3  # the file's last third is never trained on: about 10 of its 30 writers, as its digits seem to come writer by writer
FIRST_HELD_OUT = COUNT - round(HELD_OUT_SHARE * COUNT)  # UCI's file: digits from this one on are never trained on
UPSCALE = 2  # the bitmap drawn at twice its size, as a picture of it would be ...
BLUR_SIGMA = 0.7  # ... with edges this soft (pixels), as the reader's ink is: the form closest to what it sees
MAX_BYTES = 8 << 20  # no copy of the file is larger (2 MB plain)


@dataclass
class Digits:
    images: np.ndarray  # (N, 28, 28) uint8, white on black, in MNIST's form
    labels: np.ndarray  # (N,) uint8
    sha256: str  # of the digits as read (DIGITS_SHA256 for the whole file)

    @property
    def split(self) -> int:
        """The first digit kept out (FIRST_HELD_OUT for UCI's file)."""
        return len(self.labels) - round(HELD_OUT_SHARE * len(self.labels))

    def train(self) -> "Digits":
        """The writers trained on: all but the last third of the digits."""
        return Digits(self.images[:self.split], self.labels[:self.split], self.sha256)

    def held_out(self) -> "Digits":
        """The last third of the digits, by writers never trained on."""
        return Digits(self.images[self.split:], self.labels[self.split:], self.sha256)


def cache_dir() -> Path:
    """Beside MNIST's in the user cache: ~/.cache/digitrec/optdigits."""
    return mnist_cache_dir().parent / "optdigits"


def unlzw(data: bytes) -> bytes:
    """Decompress unix `compress` (.Z) data: LZW with codes of 9 bits growing to at most 10-16 (16 unless
    compress was told otherwise; `-b9` streams are refused), in groups of eight codes.

    >>> unlzw(open("optdigits-orig.tra.Z", "rb").read())[:4]
    b'1934'
    """
    if len(data) < 3 or data[:2] != b"\x1f\x9d":
        raise ValueError("not compress (.Z) data")
    max_bits, block = data[2] & 0x1F, bool(data[2] & 0x80)
    if not 10 <= max_bits <= 16:
        raise ValueError(f"compress data with {max_bits}-bit codes")
    body = data[3:] + b"\0\0\0"  # a code never spans more than three bytes
    total = 8 * (len(data) - 3)
    entries: list[bytes] = [bytes([i]) for i in range(256)] + ([b""] if block else [])
    bits, pos, read = 9, 0, 0  # code width, bit position, codes read at this width
    out = bytearray()
    prev: bytes | None = None
    while True:
        if len(entries) > (1 << bits) - 1 and bits < max_bits:
            # The table outgrew the width: the rest of this group of eight codes is padding.
            pos += bits * (-read % 8)
            bits, read = bits + 1, 0
        if pos + bits > total:
            break
        i = pos >> 3
        code = (int.from_bytes(body[i:i + 3], "little") >> (pos & 7)) & ((1 << bits) - 1)
        pos, read = pos + bits, read + 1
        if block and code == 256:
            pos += bits * (-read % 8)
            bits, read, prev = 9, 0, None
            del entries[257:]
            continue
        if code < len(entries) and (code != 256 or not block):
            word = entries[code]
        elif code == len(entries) and prev is not None:
            word = prev + prev[:1]  # the entry being made: the last word and its own first byte
        else:
            raise ValueError(f"bad code {code} at bit {pos - bits}")
        out += word
        if prev is not None and len(entries) < 1 << max_bits:
            entries.append(prev + word[:1])
        prev = word
    return bytes(out)


def parse(text: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The bitmaps (N, 32, 32) of 0/1 and labels (N,) of an optdigits-orig file; header lines are skipped."""
    lines = text.splitlines()
    bitmaps, labels = [], []
    i = 0
    while i < len(lines):
        if len(lines[i]) == SIDE and set(lines[i]) <= {"0", "1"}:
            rows, label = lines[i:i + SIDE], lines[i + SIDE].strip() if i + SIDE < len(lines) else ""
            if len(rows) < SIDE or any(len(r) != SIDE or not set(r) <= {"0", "1"} for r in rows):
                raise DataError(f"{where}: digit {len(labels) + 1} is cut short (a bitmap needs {SIDE} rows of {SIDE} 0s and 1s)")
            if label not in tuple("0123456789"):
                raise DataError(f"{where}: digit {len(labels) + 1} has label {label!r}, not a digit 0-9")
            bitmaps.append(np.frombuffer("".join(rows).encode(), np.uint8).reshape(SIDE, SIDE) - ord("0"))
            labels.append(int(label))
            i += SIDE + 1
        else:
            i += 1
    if not labels:
        raise DataError(f"{where}: no optdigits bitmaps in it (32 rows of 32 0s and 1s, then the label)")
    return np.stack(bitmaps), np.array(labels, np.uint8)


def to_mnist_form(bitmaps: np.ndarray) -> np.ndarray:
    """32x32 0/1 bitmaps -> 28x28 uint8 digits in MNIST's form, as the reader would bring a picture of each."""
    import cv2

    from digitrec.shape import to_mnist

    out = np.empty((len(bitmaps), 28, 28), np.uint8)
    for n, b in enumerate(bitmaps):
        big = cv2.resize(b.astype(np.float32), (SIDE * UPSCALE,) * 2, interpolation=cv2.INTER_NEAREST)
        out[n] = to_mnist(cv2.GaussianBlur(big, (0, 0), BLUR_SIGMA))
    return out


def _text(payload: bytes, where: str) -> str:
    try:
        if payload[:2] == b"\x1f\x9d":
            payload = unlzw(payload)
        elif payload[:2] == b"\x1f\x8b":
            payload = gzip.decompress(payload)
        elif payload[:4] == b"PK\x03\x04":  # UCI's archive of the whole data set
            import io
            import zipfile

            with zipfile.ZipFile(io.BytesIO(payload)) as z:
                return _text(z.read(NAME + ".Z"), f"{where}:{NAME}.Z")
        return payload.decode("ascii")
    except (ValueError, OSError, EOFError, zlib.error, KeyError) as e:  # UnicodeDecodeError is a ValueError
        raise DataError(f"{where}: corrupt or not an optdigits-orig file ({e})") from None


def _read(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise DataError(f"{path}: {size} bytes, far more than optdigits holds; not an optdigits-orig file")
        payload = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: unreadable ({e.strerror})") from None
    return _text(payload, str(path))


def _download(folder: Path) -> Path:
    import urllib.error
    import urllib.request

    errors = []
    for url in SOURCES:
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                text = _text(r.read(MAX_BYTES + 1), url)
            bitmaps, labels = parse(text, url)
        except (urllib.error.URLError, OSError, DataError) as e:
            errors.append(f"{url}: {getattr(e, 'reason', e)}")
            continue
        if content_sha256(bitmaps, labels) != DIGITS_SHA256:
            errors.append(f"{url}: the digits' sha256 differs")
            continue
        target = folder / (NAME + ".gz")
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, gzip.compress(text.encode()))
        return target
    raise DataError(f"optdigits ({NAME}) not found in the data folder and could not be downloaded "
                    f"({'; '.join(errors)}); put it there (.Z, .gz or plain), or give its path to --extra")


def find(explicit: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The optdigits file: in the data folder (as for MNIST) or its optdigits/ folder, or the user cache,
    else downloaded into the cache."""
    given = data_dir(explicit)
    folders = [given, given / "optdigits", cache_dir()]
    for folder in folders:
        for suffix in (".Z", ".gz", ""):
            if (folder / (NAME + suffix)).is_file():
                return folder / (NAME + suffix)
    if not download:
        raise DataError(f"optdigits ({NAME}) not found in {', '.join(map(str, folders))}")
    try:
        return _download(cache_dir())
    except OSError as e:
        raise DataError(f"cannot write {cache_dir()}: {e.strerror}") from None


def load_optdigits(path: str | os.PathLike | None = None, data: str | os.PathLike | None = None,
                   download: bool = True) -> Digits:
    """The optdigits digits in MNIST's form: from the file at `path`, else found (or downloaded) by find.

    A file found or downloaded must hold exactly UCI's digits (DIGITS_SHA256); one given by path may be
    any file in the format (a subset, or another set written the same way)."""
    given = path is not None
    path = Path(path) if given else find(data, download)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    bitmaps, labels = parse(_read(path), str(path))
    sha = content_sha256(bitmaps, labels)
    if not given and sha != DIGITS_SHA256:
        raise DataError(f"{path}: its digits are not UCI's optdigits-orig.tra (sha256 differs); "
                        "delete it to download it again")
    return Digits(to_mnist_form(bitmaps), labels, sha)
