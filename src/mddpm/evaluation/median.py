"""Exact 3-D median filter by separable merging networks (hand-written: no library has a fast exact
k³ median; ``scipy.ndimage.median_filter`` is the reference it equals, borders and ties included).

A k×k×k window's median is its rank-``(k³ − 1) / 2`` value. Along z every window's k values are
sorted by a merging network; along y, k of those sorted columns are merged into sorted k² lists;
along x, k of those are merged down to the one rank needed. Each merge is Batcher's odd-even
merge (the last one a direct selection), and windows share work twice over: the sorted list of a
window of width 2w along an axis is the merge of two width-w lists that neighbouring windows also
use, and windows p and p + 1 (p even) share the k − 1 lists they have in common, merged once. Every
comparison whose output no later step reads is dropped: for k = 5 about 440 elementwise minima
and maxima per voxel remain, against 125 gathers and a selection per voxel for a gathered-window
median. Every step is a minimum/maximum of shifted views of whole arrays: NumPy on the CPU (less
per-call overhead), the same steps in torch on any other device.

NaN policy (that of a sort that puts NaN last, as ``np.partition`` does): NaN counts as larger
than every number; a window whose median rank falls on a NaN gives NaN.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class _Step:
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


class _Network:
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


def _merge_step(inputs: list[tuple[int, int]], base: int, needed: set[int],
                last: bool) -> tuple[_Step, dict[int, set[int]]]:
    """Merge the sorted lists ``inputs`` (width in base lists, offset) keeping the ranks ``needed``;
    a single needed rank of two lists (``last``) is selected directly. Returns the step and the
    ranks read of each input width."""
    net = _Network(sum(w * base for w, _ in inputs))
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
    return _Step(inputs, wires, net.ops, outputs), reads


def _pieces(width: int) -> list[tuple[int, int]]:
    """``width`` as powers of two, largest first, with their offsets."""
    out, offset = [], 0
    for e in range(width.bit_length() - 1, -1, -1):
        if width & (1 << e):
            out.append((1 << e, offset))
            offset += 1 << e
    return out


@dataclass
class _AxisPlan:
    """Windows of k sorted base lists along one axis, computed in pairs: windows p = 2j and 2j + 1
    share the core of lists 2j + 1 … 2j + k − 1 (built by doubling, at odd positions only), then
    each merges it with its own extra list (2j or 2j + k)."""

    doubling: list[tuple[int, _Step]]  # (width, step), narrowest first
    core: _Step
    final: _Step


def _axis_plan(k: int, base: int, needed: set[int], last: bool) -> tuple[_AxisPlan, set[int]]:
    """The plan of one axis keeping the ranks ``needed``; also the base ranks read."""
    final, reads = _merge_step([(k - 1, 0), (1, 0)], base, needed, last)
    core, core_reads = _merge_step(_pieces(k - 1), base, reads[k - 1], False)
    for w, r in core_reads.items():
        reads.setdefault(w, set()).update(r)
    doubling = []
    for e in range(max(w for w, _ in core.inputs).bit_length() - 1, 0, -1):
        width = 1 << e
        halves = [(width // 2, 0), (width // 2, width // 2)]
        step, step_reads = _merge_step(halves, base, reads.get(width, set()), False)
        doubling.append((width, step))
        reads.setdefault(width // 2, set()).update(step_reads[width // 2])
    return _AxisPlan(doubling[::-1], core, final), reads.get(1, set())


@functools.lru_cache(maxsize=None)
def _plan(k: int) -> tuple[_AxisPlan, _AxisPlan, _AxisPlan]:
    """Plans along z (base: single voxels), y (base: sorted z-columns) and x (base: sorted k² lists)."""
    along_x, read_x = _axis_plan(k, k * k, {(k ** 3 - 1) // 2}, True)
    along_y, read_y = _axis_plan(k, k, read_x, False)
    along_z, _ = _axis_plan(k, 1, read_y, False)
    return along_z, along_y, along_x


def _narrow(t, dim: int, start: int, length: int):
    """``t.narrow`` for tensors and NumPy arrays."""
    return t[(slice(None),) * (t.ndim + dim) + (slice(start, start + length),)]


def _run_step(step: _Step, lists: list[dict], minimum, maximum) -> dict:
    """Execute ``step`` on its inputs' rank -> array maps (already aligned) with the array
    library's ``minimum`` and ``maximum``."""
    env = {}
    for ranks, wires in zip(lists, step.input_wires):
        for rank, wire in enumerate(wires):
            if rank in ranks:
                env[wire] = ranks[rank]
    for out, kind, a, b, drop in step.ops:
        env[out] = maximum(env[a], env[b]) if kind else minimum(env[a], env[b])
        for wire in drop:  # free what no later op reads: the working set stays small
            del env[wire]
    return {r: env[w] for r, w in step.outputs.items()}


def _shift(ranks: dict[int, torch.Tensor], dim: int, start: int, count: int) -> dict[int, torch.Tensor]:
    return {r: _narrow(t, dim, start, count) for r, t in ranks.items()}


def _run_axis(plan: _AxisPlan, base: dict, dim: int, k: int, xp) -> dict:
    """Execute one axis: ``base`` maps rank -> tensor of the sorted base lists (positions along ``dim``);
    returns rank -> tensor of the width-k lists (the length shrinks by k − 1 along ``dim``)."""
    n_out = next(iter(base.values())).shape[dim] - k + 1
    pairs, odd = (n_out + 1) // 2, n_out // 2
    index = (slice(None),) * (next(iter(base.values())).ndim + dim)
    parity = [{r: xp.ascontiguousarray(t[index + (slice(p, None, 2),)]) for r, t in base.items()} for p in (0, 1)]

    def every_other(start: int, count: int) -> dict[int, torch.Tensor]:
        """The base lists at positions start, start + 2, … (``count`` of them), contiguous."""
        return _shift(parity[start % 2], dim, start // 2, count)

    levels = {1: None}  # width -> ranks at the odd positions 1, 3, … (``pairs`` of them, or more for narrow levels)
    for width, step in plan.doubling:
        half = width // 2
        if half == 1:
            count = pairs + (k - 1 - width) // 2
            inputs = [every_other(1, count), every_other(2, count)]
        else:
            count = levels[half][0] - half // 2
            inputs = [_shift(levels[half][1], dim, 0, count), _shift(levels[half][1], dim, half // 2, count)]
        levels[width] = (count, _run_step(step, inputs, xp.minimum, xp.maximum))
    core_inputs = [_shift(levels[w][1], dim, offset // 2, pairs) for w, offset in plan.core.inputs]
    core = _run_step(plan.core, core_inputs, xp.minimum, xp.maximum)
    even = _run_step(plan.final, [core, every_other(0, pairs)], xp.minimum, xp.maximum)
    odd_out = _run_step(plan.final, [_shift(core, dim, 0, odd), every_other(k, odd)], xp.minimum, xp.maximum)
    out = {}
    for r in even:
        shape = list(even[r].shape)
        shape[dim] = n_out
        merged = xp.empty_like(even[r], shape=shape)
        merged[index + (slice(0, None, 2),)] = even[r]
        merged[index + (slice(1, None, 2),)] = odd_out[r]
        out[r] = merged
    return out


class _Torch:
    """The few array functions :func:`_run_axis` needs, for torch tensors on any device."""

    minimum, maximum = staticmethod(torch.minimum), staticmethod(torch.maximum)

    @staticmethod
    def ascontiguousarray(t: torch.Tensor) -> torch.Tensor:
        return t.contiguous()

    @staticmethod
    def empty_like(t: torch.Tensor, shape: list[int]) -> torch.Tensor:
        return t.new_empty(shape)


def _median_valid(x, k: int, xp):
    """Median of every k×k×k window lying fully inside ``x`` [..., Z, H, W] (no NaN), with the
    array library ``xp`` (NumPy or :class:`_Torch`)."""
    along_z, along_y, along_x = _plan(k)
    lists = _run_axis(along_z, {0: x}, -3, k, xp)
    lists = _run_axis(along_y, lists, -2, k, xp)
    (median,) = _run_axis(along_x, lists, -1, k, xp).values()
    return median


def _symmetric_index(n: int, pad: int, device: torch.device) -> torch.Tensor:
    """Indices of a length-``n`` axis extended by ``pad`` each side with scipy's "reflect" rule
    (half-sample symmetric: ``d c b a | a b c d | d c b a``), repeated for any ``pad``."""
    i = torch.arange(-pad, n + pad, device=device) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def pad_symmetric(x: torch.Tensor, pad: int, dims: tuple[int, ...]) -> torch.Tensor:
    """Pad ``x`` by ``pad`` on both sides of each of ``dims`` like scipy's ``mode="reflect"``."""
    for d in dims:
        x = x.index_select(d, _symmetric_index(x.shape[d], pad, x.device))
    return x


def _span(nonzero: torch.Tensor, k: int, n_out: int) -> tuple[int, int]:
    """Output positions [start, stop) whose k-wide window touches a True of 1-D ``nonzero``."""
    where = nonzero.nonzero()
    if where.numel() == 0:
        return 0, 0
    return max(0, int(where[0]) - k + 1), min(n_out, int(where[-1]) + 1)


def _median_volume(padded: torch.Tensor, k: int, slab_elements: int, use_torch: bool) -> torch.Tensor:
    """Median of every k×k×k window of one padded volume [Z, H, W] lying fully inside it. Computed
    in slabs of output z-planes of about ``slab_elements`` voxels (the network's arrays then stay
    in cache), each cropped to the box of windows that hold a non-zero (the rest is exactly 0)."""
    z_out, h_out, w_out = (n - k + 1 for n in padded.shape)
    out = padded.new_zeros((z_out, h_out, w_out))
    planes = max(1, slab_elements // max(1, padded.shape[-1] * padded.shape[-2]))
    xp = _Torch if use_torch or padded.device.type != "cpu" else np
    for z in range(0, z_out, planes):
        slab = padded[z:min(z_out, z + planes) + k - 1]
        nonzero = slab != 0
        (h0, h1), (w0, w1) = _span(nonzero.any(2).any(0), k, h_out), _span(nonzero.any(1).any(0), k, w_out)
        if h1 <= h0 or w1 <= w0:
            continue
        box = slab[:, h0:h1 + k - 1, w0:w1 + k - 1]
        median = _median_valid(box if xp is _Torch else box.numpy(), k, xp)
        out[z:z + slab.shape[0] - k + 1, h0:h1, w0:w1] = median if xp is _Torch else torch.from_numpy(median)
    return out


# Windows of a non-negative map holding more zeros than non-zeros have median 0. When fewer than this
# fraction of the windows hold a non-zero majority (sparse maps), only those are computed, each by
# gathering its k³ values and selecting the middle one (~1 µs a window on the CPU, against ~0.3 µs a
# voxel for the network over the whole box: docs/speed.md).
GATHER_BELOW = 0.25


def _gathered_medians(padded: torch.Tensor, k: int, todo: torch.Tensor, use_torch: bool,
                      chunk: int = 1 << 14) -> torch.Tensor:
    """Medians of the k×k×k windows of ``padded`` [Z, H, W] starting at the flat indices ``todo`` of the
    valid output grid: each window gathered and its middle value selected (``np.partition`` on the
    CPU unless ``use_torch``, ``torch.median`` otherwise; both exact)."""
    z, h, w = (n - k + 1 for n in padded.shape)
    ph, pw = padded.shape[1:]
    dz, dh, dw = torch.meshgrid(*(torch.arange(k, device=padded.device),) * 3, indexing="ij")
    offsets = (dz * ph * pw + dh * pw + dw).flatten()
    flat, out = padded.reshape(-1), []
    for start in range(0, todo.numel(), chunk):
        idx = todo[start:start + chunk]
        corners = (idx // (h * w) * ph + idx % (h * w) // w) * pw + idx % w
        if padded.device.type == "cpu" and not use_torch:
            rows = np.take(flat.numpy(), (corners[:, None] + offsets[None, :]).numpy())
            out.append(torch.from_numpy(np.partition(rows, k ** 3 // 2, axis=1)[:, k ** 3 // 2]))
        else:
            out.append(flat[corners[:, None] + offsets[None, :]].median(dim=1).values)
    return torch.cat(out) if out else padded.new_zeros(0)


def _sparse_windows(padded: torch.Tensor, k: int) -> torch.Tensor | None:
    """Flat indices of the windows of a non-negative ``padded`` volume with a non-zero majority, or
    None when the map has negative values or more than ``GATHER_BELOW`` of the windows need computing."""
    if bool((padded < 0).any()):
        return None
    count = (padded != 0).to(torch.int16)
    for dim in range(3):
        count = count.unfold(dim, k, 1).sum(-1, dtype=torch.int16)
    todo = count.reshape(-1) > k ** 3 // 2
    n = int(todo.sum())
    return todo.nonzero().squeeze(1) if n <= GATHER_BELOW * todo.numel() else None


def median_filter_3d(x: torch.Tensor, kernel_size: int = 5, slab_elements: int = 1 << 15,
                     use_torch: bool = False) -> torch.Tensor:
    """3-D median filter of ``x`` [Z, H, W] or [N, Z, H, W] with a cubic window of odd size: exactly
    ``scipy.ndimage.median_filter(x, size=kernel_size, mode="reflect")`` per volume, on the tensor's
    device. NaN counts as larger than every number. On the CPU the network runs on NumPy arrays
    (less per-call overhead than torch), or on torch ops with ``use_torch``; sparse non-negative maps
    take the gathered-window path (``GATHER_BELOW``)."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"median kernel size must be odd and positive, got {kernel_size}")
    if x.dim() not in (3, 4):
        raise ValueError(f"expected [Z, H, W] or [N, Z, H, W], got shape {tuple(x.shape)}")
    vols = x.unsqueeze(0) if x.dim() == 3 else x
    if kernel_size == 1 or vols.numel() == 0:
        return x.clone()
    r = kernel_size // 2
    out = torch.empty_like(vols)
    for i, vol in enumerate(vols):
        nan = torch.isnan(vol)
        has_nan = bool(nan.any())
        padded = pad_symmetric(vol.masked_fill(nan, float("inf")) if has_nan else vol, r, (0, 1, 2)).contiguous()
        todo = None if has_nan else _sparse_windows(padded, kernel_size)
        if todo is None:
            out[i] = _median_volume(padded, kernel_size, slab_elements, use_torch)
        else:
            out[i] = 0
            out[i].view(-1)[todo] = _gathered_medians(padded, kernel_size, todo, use_torch)
        if has_nan:  # NaN where the window holds more NaNs than voxels above the median rank
            count = pad_symmetric(nan, r, (0, 1, 2)).to(torch.int16)
            for dim in range(3):
                count = count.unfold(dim, kernel_size, 1).sum(-1, dtype=torch.int16)
            out[i] = out[i].masked_fill(count > kernel_size ** 3 // 2, float("nan"))
    return out[0] if x.dim() == 3 else out
