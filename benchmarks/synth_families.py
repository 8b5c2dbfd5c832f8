"""A montage of the synthetic generator families side by side: ``benchmarks/results/synth_families.png``.

One row per family (template: warps of the MNI152 average; varied: individual cortex, atrophy, fine
warps, head size, acquisition), one column per kind: two healthy subjects, the tumour and MS-like
lesions models are tuned on, and the four test-only kinds. Each panel is the axial slice with the most
lesion (the middle slice for healthy), lesion outlined in red. Cases are those of a dataset of seed 0.

    python benchmarks/synth_families.py [--out PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from mddpm.data.synth.build import KINDS, case_seed, generate_case, load_anatomy
from mddpm.data.synth.individual import FAMILIES

COLUMNS = [("healthy", "train", 0), ("healthy", "train", 1)] + [(k, f"{k}_test", 0) for k in KINDS[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "synth_families.png")
    args = parser.parse_args()
    anat = load_anatomy(2.0)
    fig = Figure(figsize=(1.9 * len(COLUMNS), 2.3 * len(FAMILIES)), facecolor="black")
    axes = fig.subplots(len(FAMILIES), len(COLUMNS), squeeze=False)
    for row, (family, settings) in zip(axes, FAMILIES.items()):
        for ax, (kind, set_name, index) in zip(row, COLUMNS):
            case = generate_case(anat, kind, case_seed(0, set_name, index, family), settings)
            z = int(np.argmax(case.label.sum((0, 1)))) if case.label is not None else case.image.shape[2] // 2
            top = float(np.percentile(case.image[case.mask > 0], 99.5))
            ax.imshow(case.image[:, :, z].T, origin="lower", cmap="gray", vmin=0, vmax=top, interpolation="nearest")
            if case.label is not None:
                ax.contour(case.label[:, :, z].T.astype(float), levels=[0.5], colors="red", linewidths=0.6)
            ax.set_title(f"{family}: {kind}", color="white", fontsize=8, pad=2)
            ax.set_axis_off()
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93, wspace=0.03, hspace=0.12)
    fig.savefig(args.out, dpi=100, facecolor=fig.get_facecolor())
    print(args.out)


if __name__ == "__main__":
    main()
