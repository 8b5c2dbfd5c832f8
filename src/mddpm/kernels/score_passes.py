"""Compiled single passes over pooled scores (CPU; hand-written with numba because NumPy needs a
temporary array and a second pass for each of them).

Scores are binned by the top ``HIST_BITS`` bits of an order-preserving unsigned key of their float
bits (sign bit set: all bits flipped; else the sign bit set), so bin order is score order and
every bin holds a contiguous range of scores.
"""

from __future__ import annotations

import numba
import numpy as np

HIST_BITS = 16


def key_bits(x: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(the unsigned view of float ``x``, its sign bit, the shift that leaves ``HIST_BITS`` bits)."""
    width = x.dtype.itemsize * 8
    view = x.view(f"u{x.dtype.itemsize}")
    return view, view.dtype.type(1 << (width - 1)), view.dtype.type(width - HIST_BITS)


def key_bins(x: np.ndarray) -> np.ndarray:
    """The key bin of every element of 1-D float ``x`` (NumPy; for a few elements)."""
    bits, sign, shift = key_bits(x)
    return (np.where(bits & sign, ~bits, bits | sign) >> shift).astype(np.int64)


@numba.njit(cache=True, nogil=True)
def _histogram(bits, sign, shift, hist):  # pragma: no cover - compiled
    sub = np.zeros((4, hist.size), np.int64)  # four sub-histograms: runs of one bin do not wait on one counter
    for i in range(bits.size):
        b = bits[i]
        sub[i & 3, ((~b) if b & sign else (b | sign)) >> shift] += 1
    for k in range(4):
        hist += sub[k]


def histogram(x: np.ndarray) -> np.ndarray:
    """Counts of 1-D float ``x`` per key bin: int64 [2 ** HIST_BITS]."""
    hist = np.zeros(1 << HIST_BITS, np.int64)
    _histogram(*key_bits(x), hist)
    return hist


@numba.njit(cache=True, nogil=True)
def _select_bins(x, bits, sign, shift, keep):  # pragma: no cover - compiled
    n = 0
    for i in range(bits.size):
        b = bits[i]
        n += keep[((~b) if b & sign else (b | sign)) >> shift]
    out = np.empty(n, x.dtype)
    n = 0
    for i in range(bits.size):
        b = bits[i]
        if keep[((~b) if b & sign else (b | sign)) >> shift]:
            out[n] = x[i]
            n += 1
    return out


def select_bins(x: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The elements of 1-D float ``x`` whose key bin is marked in bool ``keep`` [2 ** HIST_BITS], in order."""
    bits, sign, shift = key_bits(x)
    return _select_bins(x, bits, sign, shift, keep)


@numba.njit(cache=True, nogil=True)
def count_greater(x, q):  # pragma: no cover - compiled
    """Number of elements of 1-D ``x`` greater than ``q``: one pass, no temporary array."""
    n = 0
    for i in range(x.size):
        n += x[i] > q
    return n


@numba.njit(cache=True, nogil=True)
def split_into(s, positive, zero, lowest, values, positives):  # pragma: no cover - compiled
    """Write the scores of 1-D ``s`` (plus ``zero``: −0 becomes +0) above ``lowest`` into
    ``values`` and those where bool ``positive`` into ``positives``, in order. Branch-free: each
    output needs one element more than it receives (written, never counted)."""
    n = m = 0
    for i in range(s.size):
        v = s[i] + zero
        values[n] = v
        n += v > lowest
        positives[m] = v
        m += positive[i]


@numba.njit(cache=True, nogil=True)
def grid_counts(x, grid, scale, counts):  # pragma: no cover - compiled
    """Add to ``counts`` [G + 1] the number of elements of 1-D ``x`` with exactly b points of the
    ascending ``grid`` [G] below them, for each b; ``x · scale`` estimates b (then corrected).
    Four sub-histograms, so that runs of equal b do not wait on one counter."""
    g = grid.size
    sub = np.zeros((4, g + 1), np.int64)
    for i in range(x.size):
        v = x[i]
        b = min(max(int(v * scale), 0), g)
        while b < g and grid[b] < v:
            b += 1
        while b > 0 and grid[b - 1] >= v:
            b -= 1
        sub[i & 3, b] += 1
    for k in range(4):
        counts += sub[k]
