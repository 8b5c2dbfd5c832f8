"""Exact 3-D median filter, ``scipy.ndimage.median_filter(x, size=k, mode="reflect")`` per volume
(tests), by the separable merging networks of :mod:`mddpm.kernels.median_networks`.

On the CPU the networks run compiled and fused (:mod:`mddpm.kernels.median_fused`); on any other
device (or with ``use_torch``) every step is a torch minimum/maximum of shifted views of whole
tensors. Sparse non-negative maps take a gathered-window path (``GATHER_BELOW``).

NaN policy (that of a sort that puts NaN last, as ``np.partition`` does): NaN counts as larger
than every number; a window whose median rank falls on a NaN gives NaN.
"""

from __future__ import annotations

import numpy as np
import torch

from mddpm.kernels.median_fused import FUSED_DTYPES, median_valid_fused
from mddpm.kernels.median_networks import AxisPlan, MergeStep, axis_plans
from mddpm.parallel import usable_threads


def _narrow(t: torch.Tensor, dim: int, start: int, length: int) -> torch.Tensor:
    return t[(slice(None),) * (t.ndim + dim) + (slice(start, start + length),)]


def _run_step(step: MergeStep, lists: list[dict]) -> dict:
    """Execute ``step`` on its inputs' rank -> tensor maps (already aligned)."""
    env = {}
    for ranks, wires in zip(lists, step.input_wires):
        for rank, wire in enumerate(wires):
            if rank in ranks:
                env[wire] = ranks[rank]
    for out, kind, a, b, drop in step.ops:
        env[out] = torch.maximum(env[a], env[b]) if kind else torch.minimum(env[a], env[b])
        for wire in drop:  # free what no later op reads: the working set stays small
            del env[wire]
    return {r: env[w] for r, w in step.outputs.items()}


def _shift(ranks: dict[int, torch.Tensor], dim: int, start: int, count: int) -> dict[int, torch.Tensor]:
    return {r: _narrow(t, dim, start, count) for r, t in ranks.items()}


def _run_axis(plan: AxisPlan, base: dict, dim: int, k: int) -> dict:
    """Execute one axis: ``base`` maps rank -> tensor of the sorted base lists (positions along ``dim``);
    returns rank -> tensor of the width-k lists (the length shrinks by k − 1 along ``dim``)."""
    n_out = next(iter(base.values())).shape[dim] - k + 1
    pairs, odd = (n_out + 1) // 2, n_out // 2
    index = (slice(None),) * (next(iter(base.values())).ndim + dim)
    parity = [{r: t[index + (slice(p, None, 2),)].contiguous() for r, t in base.items()} for p in (0, 1)]

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
        levels[width] = (count, _run_step(step, inputs))
    core_inputs = [_shift(levels[w][1], dim, offset // 2, pairs) for w, offset in plan.core.inputs]
    core = _run_step(plan.core, core_inputs)
    even = _run_step(plan.final, [core, every_other(0, pairs)])
    odd_out = _run_step(plan.final, [_shift(core, dim, 0, odd), every_other(k, odd)])
    out = {}
    for r in even:
        shape = list(even[r].shape)
        shape[dim] = n_out
        merged = even[r].new_empty(shape)
        merged[index + (slice(0, None, 2),)] = even[r]
        merged[index + (slice(1, None, 2),)] = odd_out[r]
        out[r] = merged
    return out


def _median_valid(x: torch.Tensor, k: int) -> torch.Tensor:
    """Median of every k×k×k window lying fully inside ``x`` [..., Z, H, W] (no NaN), torch ops."""
    along_z, along_y, along_x = axis_plans(k)
    lists = _run_axis(along_z, {0: x}, -3, k)
    lists = _run_axis(along_y, lists, -2, k)
    (median,) = _run_axis(along_x, lists, -1, k).values()
    return median


def _symmetric_index(n: int, pad: int) -> np.ndarray:
    """Indices of a length-``n`` axis extended by ``pad`` each side with scipy's "reflect" rule
    (half-sample symmetric: ``d c b a | a b c d | d c b a``), repeated for any ``pad``."""
    i = np.arange(-pad, n + pad) % (2 * n)
    return np.where(i >= n, 2 * n - 1 - i, i)


def pad_symmetric(x: torch.Tensor, pad: int, dims: tuple[int, ...]) -> torch.Tensor:
    """Pad ``x`` by ``pad`` on both sides of each of ``dims`` like scipy's ``mode="reflect"``."""
    for d in dims:
        x = x.index_select(d, torch.from_numpy(_symmetric_index(x.shape[d], pad)).to(x.device))
    return x


def _median_dense_cpu(v: np.ndarray, k: int, threads: int) -> np.ndarray | None:
    """The fused median of a CPU volume [Z, H, W] with NumPy and the compiled kernel only, or None
    for a map with NaN or a sparse candidate (``COUNT_BELOW``). No torch op: with more than one
    thread each starts OpenMP workers that wait busily afterwards and slow the kernel
    (benchmarks/results/median_speed.md)."""
    if v.dtype.kind == "f" and np.isnan(v).any():
        return None
    padded = v
    for axis in range(3):
        padded = padded.take(_symmetric_index(v.shape[axis], k // 2), axis=axis)
    if padded.min() >= 0 and np.count_nonzero(padded) <= COUNT_BELOW * padded.size:
        return None
    return median_valid_fused(padded, k, threads)


def _span(nonzero: torch.Tensor, k: int, n_out: int) -> tuple[int, int]:
    """Output positions [start, stop) whose k-wide window touches a True of 1-D ``nonzero``."""
    where = nonzero.nonzero()
    if where.numel() == 0:
        return 0, 0
    return max(0, int(where[0]) - k + 1), min(n_out, int(where[-1]) + 1)


def _median_volume(padded: torch.Tensor, k: int, slab_elements: int, use_torch: bool) -> torch.Tensor:
    """Median of every k×k×k window of one padded volume [Z, H, W] lying fully inside it: on the
    CPU the fused compiled networks (:mod:`mddpm.kernels.median_fused`) unless ``use_torch``;
    with torch ops in slabs of output z-planes of about ``slab_elements`` voxels (the network's
    arrays then stay in cache), each cropped to the box of windows that hold a non-zero (the rest
    is exactly 0)."""
    if not use_torch and padded.device.type == "cpu" and padded.dtype in FUSED_DTYPES:
        return torch.from_numpy(median_valid_fused(padded.numpy(), k))
    z_out, h_out, w_out = (n - k + 1 for n in padded.shape)
    out = padded.new_zeros((z_out, h_out, w_out))
    planes = max(1, slab_elements // max(1, padded.shape[-1] * padded.shape[-2]))
    for z in range(0, z_out, planes):
        slab = padded[z:min(z_out, z + planes) + k - 1]
        nonzero = slab != 0
        (h0, h1), (w0, w1) = _span(nonzero.any(2).any(0), k, h_out), _span(nonzero.any(1).any(0), k, w_out)
        if h1 <= h0 or w1 <= w0:
            continue
        box = slab[:, h0:h1 + k - 1, w0:w1 + k - 1]
        out[z:z + slab.shape[0] - k + 1, h0:h1, w0:w1] = _median_valid(box, k)
    return out


# Windows of a non-negative map holding more zeros than non-zeros have median 0. When fewer than this
# fraction of the windows hold a non-zero majority (sparse maps), only those are computed, each by
# gathering its k³ values and selecting the middle one (about ten times the cost per window of the fused
# network per voxel, so cheaper below this fraction: docs/speed.md).
GATHER_BELOW = 0.05
# The windows are counted (a pass of its own) only when at most this fraction of the voxels is non-zero.
COUNT_BELOW = 0.2


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
    None when the map has negative values or more than ``GATHER_BELOW`` of the windows need computing.
    The windows are not counted when more than ``COUNT_BELOW`` of the voxels are non-zero."""
    nonzero = padded != 0
    if bool((padded < 0).any()) or int(nonzero.sum()) > COUNT_BELOW * padded.numel():
        return None
    count = nonzero.to(torch.int16)
    for dim in range(3):
        count = count.unfold(dim, k, 1).sum(-1, dtype=torch.int16)
    todo = count.reshape(-1) > k ** 3 // 2
    n = int(todo.sum())
    return todo.nonzero().squeeze(1) if n <= GATHER_BELOW * todo.numel() else None


def median_filter_3d(x: torch.Tensor, kernel_size: int = 5, slab_elements: int = 1 << 15,
                     use_torch: bool = False, threads: int | None = None) -> torch.Tensor:
    """3-D median filter of ``x`` [Z, H, W] or [N, Z, H, W] with a cubic window of odd size: exactly
    ``scipy.ndimage.median_filter(x, size=kernel_size, mode="reflect")`` per volume, on the tensor's
    device. NaN counts as larger than every number. On the CPU the networks run compiled and fused,
    or as torch ops with ``use_torch`` (the path of other devices); sparse non-negative maps take the
    gathered-window path (``GATHER_BELOW``). ``threads``: CPU threads of the fused kernel on a dense
    map (None: :func:`mddpm.parallel.usable_threads`)."""
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
        if not use_torch and vol.device.type == "cpu" and vol.dtype in FUSED_DTYPES:
            dense = _median_dense_cpu(vol.numpy(), kernel_size, threads or usable_threads())
            if dense is not None:
                out.numpy()[i] = dense
                continue
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
