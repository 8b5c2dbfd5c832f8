"""The training-curve picture of runs (losses from :meth:`mddpm.run_folder.RunFolder.read_losses`)."""

from __future__ import annotations

import math

from matplotlib import rcParams
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mddpm.viz.png import png_bytes


def training_curve_figure(runs: list[tuple[str, dict[str, list[tuple[int, float]]]]], title: str) -> bytes:
    """PNG of the training (thin) and validation (dots) loss against the step, one colour per run;
    the loss axis is logarithmic when the values span more than a factor of 20."""
    fig = Figure(figsize=(6.0, 3.4))
    ax = fig.subplots()
    colours = rcParams["axes.prop_cycle"].by_key()["color"]
    values = []
    for i, (run, losses) in enumerate(runs):
        colour = colours[i % len(colours)]
        for name, shown, style in (("train/loss", "training", {"lw": 0.9, "alpha": 0.55}),
                                   ("val/loss", "validation", {"marker": "o", "ms": 3.5})):
            points = losses.get(name) or []
            if points:
                steps, logged = zip(*points)
                ax.plot(steps, logged, color=colour, label=shown if len(runs) == 1 else f"{run}: {shown}", **style)
                values += [v for v in logged if math.isfinite(v)]
    if values and min(values) > 0 and max(values) / min(values) > 20:
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # no curve, no legend (matplotlib warns about an empty one)
        ax.legend(fontsize=7, ncol=2 if len(runs) > 2 else 1)
    fig.tight_layout()
    return png_bytes(fig)
