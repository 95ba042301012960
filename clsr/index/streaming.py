"""Row chunks of large arrays, for builds whose memory is bounded by a chunk, not by the corpus.

An index build reads (n, d) embeddings and writes (n, K) codes that at MS MARCO's 8.8M passages are GBs each.
They stay on disk as ``.npy`` files, read and written through memory maps a chunk of rows at a time
(:func:`row_chunks`). A memory map's pages, once touched, count in the process's resident memory until the kernel
needs them back, so reading a 13 GB embeddings file through one would show 13 GB resident at its end: each chunk's
pages are handed back when the chunk is done (:func:`release`), which keeps the resident memory at about a chunk
of each file. The data stay in the page cache, where a second pass finds them.

:func:`order_statistic` and :func:`percentile` give ``np.percentile``'s exact result over the positive values of
an array read in chunks, with 65,536 counters of memory whatever the array's size (see their docstrings).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator

import numpy as np

CHUNK_ROWS = 65_536
"""Rows a build holds at once: (65,536, 128) float16 activations are 16 MB, their float64 and int64 quantising
copies 64 MB each, (65,536, 384) float32 embeddings 96 MB. Small against the JVM's 2 GiB heap; large enough
that a chunk's per-call costs (a matrix product, a bincount) are amortised."""


def row_chunks(rows: int, chunk_rows: int = CHUNK_ROWS) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive chunks of at most ``chunk_rows`` rows covering ``range(rows)``.
    Raises ValueError for ``chunk_rows < 1``."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
    for start in range(0, rows, chunk_rows):
        yield start, min(start + chunk_rows, rows)


def _mapping(array: np.ndarray) -> mmap.mmap | None:
    """The ``mmap`` an array's memory belongs to (an ``np.load(..., mmap_mode=...)`` or ``open_memmap`` array, or a
    view of one), else None; None too for a copy-on-write map (``mmap_mode="c"``), whose changed pages live only
    in this process and would be lost if handed back."""
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        if getattr(base, "mode", None) == "c":  # np.memmap's own record of how it mapped the file
            return None
        base = getattr(base, "base", None)
    return base


def release(array: np.ndarray, start: int = 0, stop: int | None = None) -> None:
    """Hand back to the kernel the resident pages of rows ``start:stop`` of a memory-mapped ``array`` (all rows by
    default), so that a pass over a file larger than memory does not grow the process's resident memory by the
    file's size. Nothing is lost: a read-only map reads the file again, and a shared writable one (``open_memmap``)
    keeps its written pages in the page cache, from which the kernel writes them to the file
    (``madvise(MADV_DONTNEED)``). Does nothing for an array in memory or on a platform without ``madvise``."""
    mapping = _mapping(array)
    if mapping is None or not hasattr(mmap, "MADV_DONTNEED") or array.size == 0:
        return
    stop = len(array) if stop is None else stop
    if stop <= start:
        return
    origin = np.frombuffer(mapping, np.uint8).ctypes.data
    first = array[start:stop].ctypes.data - origin
    last = array[stop - 1].ctypes.data - origin + array[stop - 1].nbytes if array.ndim > 1 else (
        array[stop - 1:stop].ctypes.data - origin + array.itemsize)
    aligned = first - first % mmap.PAGESIZE  # the page holding the chunk's first byte, shared with earlier rows
    mapping.madvise(mmap.MADV_DONTNEED, aligned, last - aligned)


def read_rows(array: np.ndarray, start: int, stop: int, dtype=None) -> np.ndarray:
    """Rows ``start:stop`` of ``array`` as an array in memory (a copy, as ``dtype`` if given), their pages of a
    memory map handed back (:func:`release`)."""
    rows = np.array(array[start:stop], dtype=dtype)
    release(array, start, stop)
    return rows


def open_npy(path: str | os.PathLike, dtype, shape: tuple[int, ...]) -> np.ndarray:
    """A new ``.npy`` file of ``shape`` and ``dtype``, memory-mapped for writing (``open_memmap``): the same bytes,
    header included, as ``np.save`` of the same array once every row is written."""
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(dtype), shape=shape)


# -- exact percentiles from bit patterns ---------------------------------------------------------------------------

_DIGIT_BITS = 16  # a histogram of 2**16 counters per pass; a float16 takes one pass, a float32 two, a float64 four
_UNSIGNED = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def _positive_bits(chunk: np.ndarray) -> np.ndarray:
    """The bit patterns (as unsigned integers) of a chunk's values > 0. For non-negative IEEE floats the patterns,
    read as unsigned integers, sort as the values do, subnormals and +inf included, which is what lets a
    histogram of patterns find an order statistic."""
    flat = np.ascontiguousarray(chunk).reshape(-1)
    return flat[flat > 0].view(_UNSIGNED[flat.dtype.itemsize])


def _digit_counts(array: np.ndarray, shift: int, prefix: int, chunk_rows: int) -> np.ndarray:
    """(65,536,) int64: how many of the positive values' bit patterns have each 16-bit digit at bit ``shift``, of
    those whose higher bits are ``prefix`` (all of them for the top digit); one pass over ``array``."""
    unsigned = _UNSIGNED[array.dtype.itemsize]
    top = shift + _DIGIT_BITS >= 8 * array.dtype.itemsize
    counts = np.zeros(1 << _DIGIT_BITS, np.int64)
    for start, stop in row_chunks(len(array), chunk_rows):
        bits = _positive_bits(read_rows(array, start, stop))
        if not top:
            bits = bits[(bits >> unsigned(shift + _DIGIT_BITS)) == unsigned(prefix)]
        counts += np.bincount(((bits >> unsigned(shift)) & unsigned(0xFFFF)).astype(np.intp),
                              minlength=1 << _DIGIT_BITS)
    return counts


def _check_float(array: np.ndarray) -> None:
    if array.dtype.kind != "f" or array.dtype.itemsize not in _UNSIGNED:
        raise ValueError(f"order statistics of float16, float32 or float64 arrays, not {array.dtype}")


def order_statistic(array: np.ndarray, rank: int, chunk_rows: int = CHUNK_ROWS, top_counts: np.ndarray | None = None):
    """The ``rank``-th smallest (from 0) of the values > 0 of a float ``array`` (any shape; float16, 32 or 64),
    as a scalar of its dtype: exactly what sorting those values and indexing would give, with O(65,536) memory.

    A radix selection over the values' bit patterns (:func:`_positive_bits`): each pass over the array, a chunk of
    rows at a time, counts the next 16 bits of the patterns that share the digits found so far, and keeps the
    digit whose cumulative count passes ``rank``. A float16 needs one pass, a float32 two, a float64 four;
    ``top_counts`` (the first pass's counts, :func:`positive_histogram`) saves the first.
    Raises ValueError for a non-float array or a rank outside the positive values' count.
    """
    _check_float(array)
    width = 8 * array.dtype.itemsize
    prefix, remaining = 0, int(rank)
    for shift in range(width - _DIGIT_BITS, -1, -_DIGIT_BITS):
        counts = (top_counts if shift == width - _DIGIT_BITS and top_counts is not None
                  else _digit_counts(array, shift, prefix, chunk_rows))
        if not 0 <= remaining < counts.sum():
            raise ValueError(f"rank {rank} outside the {counts.sum()} positive values")
        cumulative = np.cumsum(counts)
        digit = int(np.searchsorted(cumulative, remaining, side="right"))  # the first digit whose count passes it
        remaining -= int(cumulative[digit - 1]) if digit else 0
        prefix = (prefix << _DIGIT_BITS) | digit
    return np.array(prefix, _UNSIGNED[array.dtype.itemsize]).view(array.dtype)[()]


def positive_histogram(array: np.ndarray, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """(65,536,) int64 counts of the top 16 bits of the positive values' bit patterns of a float ``array``: for a
    float16 array, how many positive values have each bit pattern, i.e. their exact distribution."""
    _check_float(array)
    return _digit_counts(array, 8 * array.dtype.itemsize - _DIGIT_BITS, 0, chunk_rows)


def percentile(array: np.ndarray, q: float, chunk_rows: int = CHUNK_ROWS, as_dtype=None):
    """``np.percentile(array[array > 0].astype(as_dtype), q)`` (its default, linear interpolation) bit for bit,
    without the copy: the two order statistics it interpolates come from :func:`order_statistic` and the
    interpolation repeats NumPy's own arithmetic (``numpy.lib._function_base_impl._quantile``/``_lerp``, NumPy 2:
    virtual index ``(n - 1) * (q / 100)`` in float64, its fraction as the weight, computed in the values' dtype
    and, past a weight of 0.5, from the upper value down). ``as_dtype`` (default: the array's) is the dtype the
    interpolation is computed in: float32 for float16 activations that NumPy would have seen as float32.
    ``q`` as a Python number, as NumPy is then given it (a weak scalar: the result keeps the values' dtype).
    tests/test_streaming_build.py checks the identity against ``np.percentile`` over sizes and dtypes.
    Raises ValueError when no value is > 0 or ``q`` is outside [0, 100].
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be in [0, 100], not {q}")
    top_counts = positive_histogram(array, chunk_rows)
    count = int(top_counts.sum())
    if count == 0:
        raise ValueError("no positive values to take a percentile of")
    dtype = np.dtype(as_dtype or array.dtype)
    virtual = (count - 1) * np.true_divide(q, 100)
    if virtual >= count - 1:  # NumPy takes the largest value itself (weight 0)
        below = above = count - 1
    else:
        below = int(np.floor(virtual))
        above = below + 1
    lower = np.asarray(order_statistic(array, below, chunk_rows, top_counts), dtype)
    upper = lower if above == below else np.asarray(order_statistic(array, above, chunk_rows, top_counts), dtype)
    weight = float(virtual - below) if above != below else 0.0
    difference = upper - lower
    if weight >= 0.5:
        return (upper - difference * (1 - weight))[()]
    return (lower + difference * weight)[()]
