"""The 3-D median's merging networks fused into one compiled pass per block of the volume (CPU).

Hand-written with numba because the NumPy execution of the same networks (``median.py``) is bound
by memory traffic: each of its ~440 minima/maxima per voxel streams whole arrays. Here a block of
output rows (one output z-plane, ``BLOCK_ROWS`` rows) is copied into a buffer; every merge step of
the plan runs over the block's flat positions in runs of ``RUN`` voxels whose wires stay in a small
scratch array (L1 cache), and only a step's needed ranks are stored for the next step. Shifts
along z, y and x are flat offsets of the block buffer, so every step reads contiguous memory.
Positions whose window would wrap past a row or plane edge hold garbage that no valid output
reads. Windows are computed at every position (no sharing between neighbouring windows' finals:
simpler and still compute-bound). Same result as :func:`mddpm.evaluation.median._median_valid`
(tests: scipy equality); NaN must already be replaced by +inf.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numba
import numpy as np
import torch

from mddpm.evaluation.median_networks import axis_plans

RUN = 256  # voxels computed together by each op of the interpreted program
BLOCK_ROWS = 32  # output rows per block (measured best of 4 … 32 on the 2-core EPYC: docs/speed.md)
FUSED_DTYPES = (torch.float32, torch.float64, torch.int16, torch.int32, torch.int64, torch.uint8)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _run_steps(buf, steps, reads, ops, writes):  # pragma: no cover - compiled
    """Execute the program on the block buffer ``buf`` [rows, N]. ``steps`` [S, 7]: (first read,
    n reads, first op, n ops, first write, n writes, positions); ``reads`` [.., 3]: (buffer row,
    flat shift, scratch slot); ``ops`` [.., 4]: (out slot, 0 = min / 1 = max, slot a, slot b);
    ``writes`` [.., 2]: (scratch slot, buffer row)."""
    n_slots = 1 + max(reads[:, 2].max(), ops[:, 0].max() if ops.shape[0] else 0)
    env = np.empty((n_slots, RUN), buf.dtype)
    for s in range(steps.shape[0]):
        r0, nr, o0, no, w0, nw, count = steps[s]
        for start in range(0, count, RUN):
            for j in range(r0, r0 + nr):
                src, dst = buf[reads[j, 0], reads[j, 1] + start:], env[reads[j, 2]]
                for lane in range(RUN):
                    dst[lane] = src[lane]
            for o in range(o0, o0 + no):
                dst, a, b = env[ops[o, 0]], env[ops[o, 2]], env[ops[o, 3]]
                if ops[o, 1]:
                    for lane in range(RUN):
                        dst[lane] = a[lane] if a[lane] > b[lane] else b[lane]
                else:
                    for lane in range(RUN):
                        dst[lane] = a[lane] if a[lane] < b[lane] else b[lane]
            for j in range(w0, w0 + nw):
                src, dst = env[writes[j, 0]], buf[writes[j, 1], start:]
                for lane in range(RUN):
                    dst[lane] = src[lane]


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _median_blocks(padded, out, k, block_rows, n_rows, width, steps, reads, ops, writes, final_row):  # pragma: no cover
    """For every block (output plane z, rows y0 … y0 + block_rows − 1): copy its input box into
    the buffer's row 0, run the program, copy the final row's valid positions into ``out``."""
    zp, hp, wp = padded.shape
    z_out, h_out, w_out = out.shape
    box_h = block_rows + k - 1
    n = k * box_h * wp
    buf = np.zeros((n_rows, max(width, n)), padded.dtype)
    for z in range(z_out):
        for y0 in range(0, h_out, block_rows):
            rows = min(block_rows, h_out - y0)
            for dz in range(k):
                for dy in range(rows + k - 1):
                    base = (dz * box_h + dy) * wp
                    for x in range(wp):
                        buf[0, base + x] = padded[z + dz, y0 + dy, x]
            _run_steps(buf, steps, reads, ops, writes)
            for dy in range(rows):
                for x in range(w_out):
                    out[z, y0 + dy, x] = buf[final_row, dy * wp + x]


@dataclass
class _Program:
    """The flat program of one (k, row width) block layout, as the arrays :func:`_run_steps` reads."""

    steps: np.ndarray
    reads: np.ndarray
    ops: np.ndarray
    writes: np.ndarray
    n_rows: int
    final_row: int
    width: int  # buffer columns


def _slots(step, read_wires: list[int]) -> tuple[dict[int, int], list[tuple[int, int, int, int]]]:
    """Scratch slots for a step's wires, reused once a wire is read for the last time."""
    slot, free, used = {}, [], 0
    for w in read_wires:
        slot[w], used = used, used + 1
    ops = []
    for out, kind, a, b, drop in step.ops:
        if free:  # a slot other than the inputs': the compiled loop then needs no overlap fallback
            slot[out] = free.pop()
        else:
            slot[out], used = used, used + 1
        ops.append((slot[out], kind, slot[a], slot[b]))
        free += [slot[w] for w in drop]
    return slot, ops


@functools.lru_cache(maxsize=None)
def _program(k: int, width: int, block_rows: int) -> _Program:
    """Lay the plan of :func:`mddpm.evaluation.median_networks.axis_plans` out on a block buffer of one output
    z-plane and ``block_rows`` output rows of padded width ``width`` (row 0: the voxels). Along
    each axis the list of width w at position p merges the lists of width w/2 at p and p + w/2;
    the window at p merges the core (lists p + 1 … p + k − 1) with the list at p."""
    strides = ((block_rows + k - 1) * width, width, 1)  # flat offset of one position along z, y, x
    records, n_rows = [], 1  # (step, [(rows by rank, flat shift)], output rows by rank)
    base = {0: 0}  # rank -> buffer row of the sorted base lists (width 1) of the current axis

    def add(step, inputs):
        nonlocal n_rows
        rows = {r: n_rows + i for i, r in enumerate(sorted(step.outputs))}
        n_rows += len(rows)
        records.append((step, inputs, rows))
        return rows

    for axis, plan in enumerate(axis_plans(k)):
        levels = {1: (base, 0)}  # width -> (rows by rank, shift of position 0)
        for w, step in plan.doubling:
            (half, shift) = levels[w // 2]
            levels[w] = (add(step, [(half, shift), (half, shift + w // 2 * strides[axis])]), 0)
        core = [(levels[w][0], levels[w][1] + (1 + offset) * strides[axis]) for w, offset in plan.core.inputs]
        if plan.core.ops or len(core) > 1:
            core = [(add(plan.core, core), 0)]
        base = add(plan.final, core + [(base, 0)])
    return _flatten(records, block_rows * width, base)


def _flatten(records: list, n_out: int, final: dict[int, int]) -> _Program:
    """The arrays of :func:`_run_steps`; each step computes the positions its readers need."""
    count = [0] * len(records)
    producer = {row: i for i, (_, _, rows) in enumerate(records) for row in rows.values()}
    count[-1] = n_out
    for i in range(len(records) - 1, -1, -1):
        for rows, shift in records[i][1]:
            for row in rows.values():
                if row in producer:
                    count[producer[row]] = max(count[producer[row]], count[i] + shift)
    steps, reads, ops, writes = [], [], [], []
    for (step, inputs, out_rows), n in zip(records, count):
        used = {w for op in step.ops for w in op[2:4]} | set(step.outputs.values())
        pairs = [(wire, rows[rank], shift) for (rows, shift), wires in zip(inputs, step.input_wires)
                 for rank, wire in enumerate(wires) if wire in used]
        slot, step_ops = _slots(step, [w for w, _, _ in pairs])
        steps.append((len(reads), len(pairs), len(ops), len(step_ops), len(writes), len(out_rows), n))
        reads += [(row, shift, slot[w]) for w, row, shift in pairs]
        ops += step_ops
        writes += [(slot[step.outputs[r]], row) for r, row in out_rows.items()]
    width = max(-(-n // RUN) * RUN + max(s for _, s in rec[1]) for rec, n in zip(records, count))
    (final_row,) = final.values()
    return _Program(np.array(steps, np.int64), np.array(reads, np.int64), np.array(ops, np.int64).reshape(-1, 4),
                    np.array(writes, np.int64), max(producer) + 1, final_row, width)


def median_valid_fused(padded: np.ndarray, k: int) -> np.ndarray:
    """Median of every k×k×k window lying fully inside ``padded`` [Z, H, W] (float, no NaN)."""
    out = np.empty(tuple(n - k + 1 for n in padded.shape), padded.dtype)
    if out.size == 0:
        return out
    rows = min(BLOCK_ROWS, out.shape[1])
    p = _program(k, padded.shape[2], rows)
    _median_blocks(np.ascontiguousarray(padded), out, k, rows, p.n_rows, p.width, p.steps, p.reads, p.ops,
                   p.writes, p.final_row)
    return out
