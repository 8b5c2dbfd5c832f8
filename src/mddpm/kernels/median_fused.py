"""The 3-D median's merging networks fused into one compiled pass per block of the volume (CPU).

Hand-written with numba because the NumPy execution of the same networks is bound by memory
traffic: each of its ~440 minima/maxima per voxel streams whole arrays. Here a block (one output
z-plane, ``BLOCK_ROWS`` output rows) is copied into a buffer, and every merge step of the plan
runs over the block's flat positions in runs of ``RUN`` voxels: each op reads its operands where
they lie (input lists at a flat shift, or scratch rows that stay in the L1 cache) and only a step's
needed ranks are stored for the next step. Shifts along z, y and x are flat offsets of the block
buffer, so every op reads contiguous memory; rows and x positions are stored even then odd so that
the y and x axes share work between neighbouring windows as ``median.py`` does (471 minima and
maxima per output voxel for k = 5). Positions whose window would
wrap past a row or plane edge hold garbage that no valid output reads. Same result as
``scipy.ndimage.median_filter`` (tests); NaN must already be replaced by +inf.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numba
import numpy as np
import torch

from mddpm.kernels.median_networks import axis_plans
from mddpm.parallel import threaded_map

RUN = 256  # voxels computed together by each op of the interpreted program
BLOCK_ROWS = 32  # output rows per block (the fastest of 4 … 32 where measured: docs/speed.md)
FUSED_DTYPES = (torch.float32, torch.float64, torch.int16, torch.int32, torch.int64, torch.uint8)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _run_steps(buf, steps, ops):  # pragma: no cover - compiled
    """Execute the program on the block buffer ``buf`` [rows, N] (its last rows: scratch for one
    run). ``steps`` [S, 4]: (first op, n ops, first position, end position), a step once per range of
    positions it computes; ``ops`` [.., 10]:
    (0 = min / 1 = max / 2 = copy, then for the output and the operands a and b: buffer row, flat
    shift, 1 if the operand moves with the run (a data row) or 0 (a scratch row))."""
    for s in range(steps.shape[0]):
        o0, no, lo, hi = steps[s]
        for start in range(lo, hi, RUN):
            n = min(RUN, hi - start)  # no write past the range: another step may own what follows
            for o in range(o0, o0 + no):
                dst = buf[ops[o, 1], ops[o, 2] + start * ops[o, 3]:]
                a = buf[ops[o, 4], ops[o, 5] + start * ops[o, 6]:]
                if ops[o, 0] == 2:
                    for lane in range(n):
                        dst[lane] = a[lane]
                    continue
                b = buf[ops[o, 7], ops[o, 8] + start * ops[o, 9]:]
                if ops[o, 0]:
                    for lane in range(n):
                        dst[lane] = a[lane] if a[lane] > b[lane] else b[lane]
                else:
                    for lane in range(n):
                        dst[lane] = a[lane] if a[lane] < b[lane] else b[lane]


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _median_blocks(padded, out, k, block_rows, n_rows, width, steps, ops, final_row):  # pragma: no cover
    """For every block (output plane z, rows y0 … y0 + block_rows − 1): copy its input box into
    the buffer's row 0, run the program, copy the final row's valid positions into ``out``."""
    zp, hp, wp = padded.shape
    z_out, h_out, w_out = out.shape
    row = (wp + 1) // 2
    half_y = (block_rows + k) // 2 * row
    half_x = 2 * half_y
    buf = np.zeros((n_rows, max(width, 2 * k * half_x)), padded.dtype)
    for z in range(z_out):
        for y0 in range(0, h_out, block_rows):
            rows = min(block_rows, h_out - y0)
            for dz in range(k):
                for dy in range(rows + k - 1):
                    at = dz * 2 * half_x + dy % 2 * half_y + dy // 2 * row
                    for x in range(wp):
                        buf[0, at + x % 2 * half_x + x // 2] = padded[z + dz, y0 + dy, x]
            _run_steps(buf, steps, ops)
            for dy in range(rows):
                at = dy % 2 * half_y + dy // 2 * row
                for x in range(w_out):
                    out[z, y0 + dy, x] = buf[final_row, at + x % 2 * half_x + x // 2]


@dataclass
class _Program:
    """The flat program of one (k, row width, block rows) layout, as :func:`_run_steps` reads it."""

    steps: np.ndarray
    ops: np.ndarray
    n_rows: int  # data rows and scratch rows
    final_row: int
    width: int  # buffer columns


@functools.lru_cache(maxsize=None)
def _program(k: int, width: int, block_rows: int) -> _Program:
    """Lay the plans of :func:`mddpm.kernels.median_networks.axis_plans` out on the buffer of a
    block: one output z-plane, ``block_rows`` output rows, rows of padded width ``width``. Row 0
    holds the voxels of the block's k planes; within a plane the even x positions come first, then
    the odd ones (``half_x`` apart), and within each the even rows, then the odd ones (``half_y``
    apart). Along z the list of width w at position p merges the lists of width w/2 at p and
    p + w/2, and the window at p merges the core (lists p + 1 … p + k − 1) with the list at p.
    Along y and x, as in ``median.py``, the doubling and the core are computed at odd positions
    2i + 1 only, stored at i, and windows 2i and 2i + 1 both merge core i (the even window with list
    2i, the odd one with list 2i + k), written to the even and the odd half of their rows."""
    row = (width + 1) // 2  # flat offset of one row (i along y within a half)
    half_y = (block_rows + k) // 2 * row
    half_x = 2 * half_y
    records, n_rows = [], 1  # (step, [(rows by rank, flat shift)], output rows by rank, own positions)

    def add(step, inputs, rows=None, own=None):
        nonlocal n_rows
        if rows is None:
            rows = {r: n_rows + i for i, r in enumerate(sorted(step.outputs))}
            n_rows += len(rows)
        records.append((step, inputs, rows, own))
        return rows

    along_z, along_y, along_x = axis_plans(k)
    levels = {1: ({0: 0}, 0)}  # width -> (rows by rank, shift of position 0)
    for w, step in along_z.doubling:
        rows, shift = levels[w // 2]
        levels[w] = (add(step, [(rows, shift), (rows, shift + w // 2 * 2 * half_x)]), 0)
    core = [(levels[w][0], levels[w][1] + (1 + offset) * 2 * half_x) for w, offset in along_z.core.inputs]
    if along_z.core.ops or len(core) > 1:
        core = [(add(along_z.core, core), 0)]
    base = add(along_z.final, core + [({0: 0}, 0)])
    finals = []
    for plan, half, unit in ((along_y, half_y, row), (along_x, half_x, 1)):
        def list_at(t: int) -> int:  # flat shift of the base list at position 2i + t from position i
            return t % 2 * half + t // 2 * unit

        levels = {}  # width -> rows at the odd positions 2i + 1, stored at i
        for w, step in plan.doubling:
            pair = [(base, list_at(1)), (base, list_at(2))] if w == 2 else \
                [(levels[w // 2], 0), (levels[w // 2], w // 4 * unit)]
            levels[w] = add(step, pair)
        core = [(levels[w], offset // 2 * unit) for w, offset in plan.core.inputs]  # k − 1 even: no width-1 piece
        if plan.core.ops or len(core) > 1:
            core = [(add(plan.core, core), 0)]
        final = add(plan.final, core + [(base, list_at(0))], own=(2 * half, 0, half))
        add(plan.final, [(rows, shift - half) for rows, shift in core] + [(base, list_at(k) - half)], final,
            own=(2 * half, half, 2 * half))
        finals.append(len(records) - 2)
        base = final
    rows_out = (block_rows + 1) // 2 * row  # output rows of one half along y
    need = {finals[1]: [(y, y + rows_out) for y in (0, half_y)],
            finals[1] + 1: [(half_x + y, half_x + y + rows_out) for y in (0, half_y)]}
    return _flatten(records, need, base, n_rows)


def _union(segments: list[tuple[int, int]], own: tuple[int, int, int] | None) -> list[tuple[int, int]]:
    """The ranges [lo, hi) of ``segments`` joined where they overlap or touch, in order; with ``own``
    = (period, start, stop) only their positions p with start <= p mod period < stop."""
    if own is not None:
        period, start, stop = own
        segments = [(max(lo, m + start), min(hi, m + stop)) for lo, hi in segments
                    for m in range(lo // period * period, hi, period)]
        segments = [(lo, hi) for lo, hi in segments if lo < hi]
    out = []
    for lo, hi in sorted(segments):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _flatten(records: list, need: dict[int, list], final: dict[int, int], n_data: int) -> _Program:
    """The arrays of :func:`_run_steps`. A step's input wires are read where they lie (data row,
    shift), its outputs written to their data rows, its other wires to scratch rows reused once
    read for the last time; each step computes only the positions its readers need (``need``:
    those of the last steps), in one or more ranges."""
    producers: dict[int, set[int]] = {}
    for i, (_, _, rows, _) in enumerate(records):
        for r in rows.values():
            producers.setdefault(r, set()).add(i)
    for i in range(len(records) - 1, -1, -1):
        need[i] = _union(need.get(i, []), records[i][3])
        for rows, shift in records[i][1]:
            for j in {j for r in rows.values() for j in producers.get(r, ())} - {i}:
                need[j] = need.get(j, []) + [(lo + shift, hi + shift) for lo, hi in need[i]]
    steps, ops, n_scratch, width = [], [], 0, 0
    for i, (step, inputs, out_rows, _) in enumerate(records):
        home = {wire: (rows[rank], shift, 1) for (rows, shift), wires in zip(inputs, step.input_wires)
                for rank, wire in enumerate(wires) if rank in rows}
        outputs = {wire: (out_rows[rank], 0, 1) for rank, wire in step.outputs.items()}
        first = len(ops)
        ops += [(2, *outputs[w], *home[w], 0, 0, 0) for w in outputs if w in home]  # inputs passed on unchanged
        free, used = [], 0
        for out, kind, a, b, drop in step.ops:
            if out in outputs:
                target = outputs[out]
            else:
                slot = free.pop() if free else used
                used = max(used, slot + 1)
                target = home[out] = (n_data + slot, 0, 0)
            ops.append((kind, *target, *home[a], *home[b]))
            free += [home[w][0] - n_data for w in drop if w in home and home[w][2] == 0]
            home.update({out: outputs[out]} if out in outputs else {})
        n_scratch = max(n_scratch, used)
        reach = max(shift for _, shift, _ in home.values())
        for lo, hi in need[i]:
            steps.append((first, len(ops) - first, lo, hi))
            width = max(width, hi + reach)
    (final_row,) = final.values()
    return _Program(np.array(steps, np.int64), np.array(ops, np.int64), n_data + n_scratch, final_row,
                    max(width, RUN))


def median_valid_fused(padded: np.ndarray, k: int, threads: int = 1) -> np.ndarray:
    """Median of every k×k×k window lying fully inside ``padded`` [Z, H, W] (float, no NaN); the
    output planes are split between ``threads`` threads (the kernel runs without the GIL)."""
    out = np.empty(tuple(n - k + 1 for n in padded.shape), padded.dtype)
    if out.size == 0:
        return out
    rows = min(BLOCK_ROWS, out.shape[1])
    p = _program(k, padded.shape[2], rows)
    padded = np.ascontiguousarray(padded)

    def planes(bounds: tuple[int, int]) -> None:
        z0, z1 = bounds
        _median_blocks(padded[z0:z1 + k - 1], out[z0:z1], k, rows, p.n_rows, p.width, p.steps, p.ops, p.final_row)

    cuts = np.linspace(0, out.shape[0], min(max(1, threads), out.shape[0]) + 1).astype(int)
    list(threaded_map(planes, zip(cuts[:-1], cuts[1:]), len(cuts) - 1))
    return out
