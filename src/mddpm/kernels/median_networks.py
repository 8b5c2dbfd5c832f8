"""The merging networks of the exact k×k×k median (hand-written: no library has a fast exact k³
median; ``scipy.ndimage.median_filter`` is the reference it equals, borders and ties included).

A k×k×k window's median is its rank-``(k³ − 1) / 2`` value. Along a first axis every window's k
values are sorted by a merging network; along a second, k of those sorted columns are merged into
sorted k² lists; along a third, k of those are merged down to the one rank needed. Each merge is
Batcher's odd-even merge (the last one a direct selection), and windows share work twice over: the
sorted list of a window of width 2w along an axis is the merge of two width-w lists that
neighbouring windows also use, and windows p and p + 1 (p even) share the k − 1 lists they have in
common, merged once. Every comparison whose output no later step reads is dropped: for k = 5 about
440 minima and maxima per voxel remain. The plans are executed by ``median.py`` (torch ops) and
``median_fused.py`` (compiled, CPU).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass
class MergeStep:
    """One merge along an axis: the sorted lists ``inputs`` (width, offset) merged into one list.

    ``ops`` = (out wire, 0 = min / 1 = max, wire a, wire b, wires read for the last time); the
    first wires are the inputs' ranks in order (``input_wires``); ``outputs`` maps each needed
    rank of the result to its wire."""

    inputs: list[tuple[int, int]]
    input_wires: list[list[int]]
    ops: list
    outputs: dict[int, int]

    def __post_init__(self):
        last = {}
        for i, (_, _, a, b) in enumerate(self.ops):
            last[a] = last[b] = i
        drop: dict[int, list[int]] = {}
        for wire, i in last.items():
            if wire not in self.outputs.values():
                drop.setdefault(i, []).append(wire)
        self.ops = [(*op, tuple(drop.get(i, ()))) for i, op in enumerate(self.ops)]


class Network:
    """A straight-line program of minima and maxima on numbered wires."""

    def __init__(self, n_inputs: int):
        self.n_wires, self.ops = n_inputs, []

    def op(self, kind: int, a: int, b: int) -> int:
        self.ops.append((self.n_wires, kind, a, b))
        self.n_wires += 1
        return self.n_wires - 1

    def merge(self, a: list[int], b: list[int]) -> list[int]:
        """Batcher's odd-even merge of two sorted wire lists of any lengths (Knuth 5.3.4)."""
        if not a or not b:
            return list(a or b)
        if len(a) == 1 and len(b) == 1:
            return [self.op(0, a[0], b[0]), self.op(1, a[0], b[0])]
        even, odd = self.merge(a[0::2], b[0::2]), self.merge(a[1::2], b[1::2])
        out = [even[0]]
        for j, w in enumerate(odd):
            out += [self.op(0, w, even[j + 1]), self.op(1, w, even[j + 1])] if j + 1 < len(even) else [w]
        return out + even[len(odd) + 1:]

    def select(self, a: list[int], b: list[int], rank: int) -> int:
        """Rank ``rank`` of the union of two sorted wire lists: the largest of min(a[i], b[rank − i])
        (a missing element counts as +inf)."""
        terms = [a[rank - len(b)]] if rank >= len(b) else [b[rank - len(a)]] if rank >= len(a) else []
        terms += [self.op(0, a[i], b[rank - i]) for i in range(max(0, rank - len(b) + 1), min(len(a), rank + 1))]
        best = terms[0]
        for t in terms[1:]:
            best = self.op(1, best, t)
        return best

    def prune(self, needed: list[int]) -> set[int]:
        """Drop every op no wire of ``needed`` depends on; return all wires still read or produced."""
        live, kept = set(needed), []
        for op in reversed(self.ops):
            if op[0] in live:
                kept.append(op)
                live.update(op[2:])
        self.ops = kept[::-1]
        return live


def merge_step(inputs: list[tuple[int, int]], base: int, needed: set[int],
                last: bool) -> tuple[MergeStep, dict[int, set[int]]]:
    """Merge the sorted lists ``inputs`` (width in base lists, offset) keeping the ranks ``needed``;
    a single needed rank of two lists (``last``) is selected directly. Returns the step and the
    ranks read of each input width."""
    net = Network(sum(w * base for w, _ in inputs))
    wires, start = [], 0
    for w, _ in inputs:
        wires.append(list(range(start, start + w * base)))
        start += w * base
    if last and len(wires) == 2 and len(needed) == 1:
        (rank,) = needed
        outputs = {rank: net.select(wires[0], wires[1], rank)}
    else:
        merged = wires[0]
        for nxt in wires[1:]:
            merged = net.merge(merged, nxt)
        outputs = {r: merged[r] for r in sorted(needed)}
    live = net.prune(list(outputs.values()))
    reads: dict[int, set[int]] = {}
    for (w, _), ws in zip(inputs, wires):
        reads.setdefault(w, set()).update(r for r, wire in enumerate(ws) if wire in live)
    return MergeStep(inputs, wires, net.ops, outputs), reads


def pieces(width: int) -> list[tuple[int, int]]:
    """``width`` as powers of two, largest first, with their offsets."""
    out, offset = [], 0
    for e in range(width.bit_length() - 1, -1, -1):
        if width & (1 << e):
            out.append((1 << e, offset))
            offset += 1 << e
    return out


@dataclass
class AxisPlan:
    """Windows of k sorted base lists along one axis, computed in pairs: windows p = 2j and 2j + 1
    share the core of lists 2j + 1 … 2j + k − 1 (built by doubling, at odd positions only), then
    each merges it with its own extra list (2j or 2j + k)."""

    doubling: list[tuple[int, MergeStep]]  # (width, step), narrowest first
    core: MergeStep
    final: MergeStep


def axis_plan(k: int, base: int, needed: set[int], last: bool) -> tuple[AxisPlan, set[int]]:
    """The plan of one axis keeping the ranks ``needed``; also the base ranks read."""
    final, reads = merge_step([(k - 1, 0), (1, 0)], base, needed, last)
    core, core_reads = merge_step(pieces(k - 1), base, reads[k - 1], False)
    for w, r in core_reads.items():
        reads.setdefault(w, set()).update(r)
    doubling = []
    for e in range(max(w for w, _ in core.inputs).bit_length() - 1, 0, -1):
        width = 1 << e
        halves = [(width // 2, 0), (width // 2, width // 2)]
        step, step_reads = merge_step(halves, base, reads.get(width, set()), False)
        doubling.append((width, step))
        reads.setdefault(width // 2, set()).update(step_reads[width // 2])
    return AxisPlan(doubling[::-1], core, final), reads.get(1, set())


@functools.lru_cache(maxsize=None)
def axis_plans(k: int) -> tuple[AxisPlan, AxisPlan, AxisPlan]:
    """Plans along z (base: single voxels), y (base: sorted z-columns) and x (base: sorted k² lists)."""
    along_x, read_x = axis_plan(k, k * k, {(k ** 3 - 1) // 2}, True)
    along_y, read_y = axis_plan(k, k, read_x, False)
    along_z, _ = axis_plan(k, 1, read_y, False)
    return along_z, along_y, along_x
