"""Property-based tests of the IDX reader: whatever the bytes, a DataError or a right-sized array."""

from __future__ import annotations

import gzip
import struct
import tracemalloc

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from digitrec.data import DataError, read_idx, write_idx

SIZES = st.one_of(st.integers(0, 40), st.sampled_from([2**16, 2**31, 2**32 - 1, 60000, 1_370_000]))
CODES = st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0x07, 0xFF])


@st.composite
def idx_files(draw) -> bytes:
    """Bytes near an IDX file: plausible or absurd headers, too little or too much data, gzipped or not."""
    ndim = draw(st.integers(0, 5))
    header = bytes([draw(st.sampled_from([0, 0, 0, 1])), 0, draw(CODES), ndim])
    header += b"".join(draw(SIZES).to_bytes(4, "big") for _ in range(ndim))
    header = header[:draw(st.integers(0, len(header)))] if draw(st.booleans()) else header
    payload = header + draw(st.binary(max_size=300))
    if draw(st.booleans()):
        payload = gzip.compress(payload, mtime=0)
        if payload and draw(st.booleans()):  # damaged on the way: one bit flipped, or cut short
            flipped = bytearray(payload)
            bit = draw(st.integers(0, 8 * len(payload) - 1))
            flipped[bit // 8] ^= 1 << (bit % 8)
            payload = bytes(flipped)[:draw(st.integers(1, len(payload)))]
    return payload


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=idx_files())
@example(blob=b"\x00\x00\x08\x04" + struct.pack(">4I", 0, 2, 1 << 31, 1 << 31))  # no bytes, but sides no array has
def test_any_bytes_give_an_array_or_one_clear_error(tmp_path, blob):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(blob)
    tracemalloc.start()
    try:
        try:
            array = read_idx(path)
        except DataError as e:
            message = str(e)
            assert str(path) in message and "\n" not in message
            array = None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # However large the sizes the header declares, memory stays near what the file really holds.
    assert peak < (2 << 20) + 20 * len(blob), (peak, len(blob))
    if array is not None:
        assert array.nbytes <= 20 * len(blob) + 64 * 1024


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.lists(st.integers(0, 6), min_size=1, max_size=4),
       dtype=st.sampled_from(["u1", "i1", ">i2", ">i4", ">f4", ">f8"]), gz=st.booleans(), seed=st.integers(0, 99))
def test_what_is_written_is_read_back(tmp_path, shape, dtype, gz, seed):
    rng = np.random.default_rng(seed)
    array = (rng.random(shape) * 100).astype(np.dtype(dtype).newbyteorder("="))
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, array)
    back = read_idx(path)
    assert back.shape == array.shape and back.dtype == array.dtype and np.array_equal(back, array)
