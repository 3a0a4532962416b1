import gzip
import os
import stat
import hashlib
import urllib.error
import urllib.request

import numpy as np
import pytest

from digitrec import data
from digitrec.data import DataError, load_mnist, read_idx, write_idx

from conftest import tiny_digits, write_mnist


@pytest.mark.parametrize("name", ["x.idx", "x.idx.gz"])
def test_idx_round_trip(tmp_path, name):
    images, _ = tiny_digits(7, 0)
    write_idx(tmp_path / name, images)
    back = read_idx(tmp_path / name)
    assert back.dtype == np.uint8 and np.array_equal(back, images)


def test_load_reads_gz_and_plain_files_alike(tmp_path):
    a = load_mnist(write_mnist(tmp_path / "gz", gz=True), download=False)
    b = load_mnist(write_mnist(tmp_path / "plain", gz=False), download=False)
    assert a.train_images.shape == (300, 28, 28) and a.test_labels.shape == (100,)
    assert np.array_equal(a.train_images, b.train_images)
    assert a.train_sha256 == b.train_sha256


def _raw(tmp_path, array):
    write_idx(tmp_path / "f.idx", array)
    return (tmp_path / "f.idx").read_bytes()


@pytest.mark.parametrize("mangle, message", [
    (lambda b: b[:-10], "truncated"),
    (lambda b: b[:6], "truncated IDX header"),
    (lambda b: b"", "empty or truncated"),
    (lambda b: b"\x89PNG" + b[4:], "not an IDX file"),
    (lambda b: b + b"extra", "trailing data"),
    (lambda b: b[:4] + (10**6).to_bytes(4, "big") * 3 + b[16:], "more than any digit data set"),
])
def test_bad_idx_files_name_the_file_and_the_problem(tmp_path, mangle, message):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(mangle(_raw(tmp_path, tiny_digits(3, 0)[0])))
    with pytest.raises(DataError) as e:
        read_idx(path)
    assert str(path) in str(e.value) and message in str(e.value)


def test_corrupt_gzip_is_reported(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_raw(tmp_path, tiny_digits(3, 0)[0]))[:40])
    with pytest.raises(DataError, match="train-images"):
        read_idx(path)


def test_labels_must_match_images(tmp_path):
    folder = write_mnist(tmp_path / "m")
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(299, np.uint8))
    with pytest.raises(DataError, match="299 labels for 300 images"):
        load_mnist(folder, download=False)


def test_images_must_be_28x28(tmp_path):
    folder = write_mnist(tmp_path / "m")
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((100, 32, 32), np.uint8))
    with pytest.raises(DataError, match="28x28"):
        load_mnist(folder, download=False)


def test_location_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("DIGITREC_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data.data_dir(tmp_path / "flag") == tmp_path / "flag"
    assert data.data_dir() == tmp_path / "env"
    monkeypatch.delenv("DIGITREC_DATA")
    assert data.data_dir() == tmp_path / "cache" / "digitrec" / "mnist"


def test_missing_data_dir_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")


def test_offline_without_a_copy_says_where_to_put_the_files(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("DIGITREC_DATA", str(tmp_path / "empty"))
    with pytest.raises(DataError) as e:
        load_mnist()
    text = str(e.value)
    assert str(tmp_path / "empty") in text and "train-images-idx3-ubyte.gz" in text and "DIGITREC_DATA" in text


class FakeResponse:
    def __init__(self, payload):
        self.payload = payload

    def read(self):
        return self.payload

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_download_tries_the_next_mirror_and_checks_sha256(tmp_path, monkeypatch):
    source = write_mnist(tmp_path / "source")
    files = {k: (n, hashlib.sha256((source / n).read_bytes()).hexdigest()) for k, (n, _) in data.FILES.items()}
    monkeypatch.setattr(data, "FILES", files)
    monkeypatch.setattr(data, "MIRRORS", ("https://bad.example/", "https://tampered.example/", "https://good.example/"))
    asked = []

    def fake_urlopen(url, timeout):
        asked.append(url)
        if url.startswith("https://bad"):
            raise urllib.error.URLError("refused")
        payload = (source / url.rsplit("/", 1)[1]).read_bytes()
        return FakeResponse(payload + b"x" if url.startswith("https://tampered") else payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    target = tmp_path / "cache"
    monkeypatch.setenv("DIGITREC_DATA", str(target))
    mnist = load_mnist()
    assert mnist.train_images.shape == (300, 28, 28)
    assert sorted(p.name for p in target.iterdir()) == sorted(n for n, _ in files.values())
    assert len(asked) == 12  # each file: refused, tampered (sha256 mismatch), then good


def test_atomic_writes_leave_files_readable_like_any_other(tmp_path):
    old = os.umask(0o022)
    data.new_file_mode.cache_clear()  # read the umask this test sets
    try:
        data.atomic_write_bytes(tmp_path / "model.json", b"{}")
        (tmp_path / "plain.txt").write_bytes(b"")
    finally:
        os.umask(old)
        data.new_file_mode.cache_clear()
    mode = stat.S_IMODE((tmp_path / "model.json").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == 0o644
    assert (tmp_path / "model.json").read_bytes() == b"{}" and not list(tmp_path.glob(".*.tmp"))


def test_a_bit_flipped_gzip_file_is_one_clear_error(tmp_path):
    import zlib

    packed = gzip.compress(_raw(tmp_path, tiny_digits(20, 0)[0]), mtime=0)
    for bit in range(8 * 10, 8 * len(packed) - 64):  # inside the deflate stream, past the gzip header
        flipped = bytearray(packed)
        flipped[bit // 8] ^= 1 << (bit % 8)
        try:
            zlib.decompress(bytes(flipped), wbits=31)
        except zlib.error as e:
            if "invalid" in str(e):  # the stream itself is damaged, not only its checksum
                break
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(bytes(flipped))
    with pytest.raises(DataError, match="corrupt"):
        read_idx(path)


def test_dimensions_whose_product_overflows_are_refused(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte"
    # 2**32 - 1 to the fourth power wraps around to a small number in 64-bit arithmetic.
    path.write_bytes(bytes([0, 0, 8, 4]) + b"\xff\xff\xff\xff" * 4 + b"\x00" * 16)
    with pytest.raises(DataError, match="more than any digit data set"):
        read_idx(path)
    path.write_bytes(bytes([0, 0, 8, 4]) + (2**16).to_bytes(4, "big") * 4 + b"\x00" * 16)
    with pytest.raises(DataError, match="more than any digit data set"):
        read_idx(path)


def test_memory_follows_the_data_present_not_the_size_claimed(tmp_path):
    import tracemalloc

    path = tmp_path / "train-images-idx3-ubyte.gz"
    # Claims 500,000 digits (392 MB), holds 100 bytes of them.
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 3]) + struct_dims(500_000, 28, 28) + b"\x00" * 100))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="truncated: 100 of 392000000"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak


def struct_dims(*dims):
    return b"".join(d.to_bytes(4, "big") for d in dims)
