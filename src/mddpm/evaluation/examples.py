"""Example cases of an evaluation: the best, median and worst per-volume Dice at the default rule,
drawn by ``mddpm evaluate`` into ``examples/`` (``examples.json`` lists them) for the report to show."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from mddpm.evaluation.maps import MapsFolder
from mddpm.evaluation.postprocess import PostprocessSettings

EXAMPLES = 3  # the report's pictures per method and test set


def example_cases(rows: list[dict], rule: str, n: int = EXAMPLES) -> list[tuple[str, str]]:
    """(case id, caption) of at most ``n`` lesion cases of ``rows`` (``metrics.json``'s ``cases``): best,
    median and worst Dice at ``rule``, ties broken by case id."""
    scored = [(c["rules"][rule]["dice"], c["case_id"]) for c in rows
              if c.get("lesion_voxels") and c["rules"].get(rule, {}).get("dice") is not None]
    scored.sort(key=lambda t: (-t[0], t[1]))
    if not scored:
        return []
    picks = {"best Dice": 0, "median Dice": len(scored) // 2, "worst Dice": len(scored) - 1}
    chosen, seen = [], set()
    for caption, i in picks.items():
        if scored[i][1] not in seen and len(chosen) < n:
            seen.add(scored[i][1])
            chosen.append((scored[i][1], f"{caption}: {scored[i][0]:.3f}"))
    return chosen


def draw_examples(maps: MapsFolder, rows: list[dict], rule: str, threshold: float, scoring: PostprocessSettings,
                  draw_case: Callable[..., bytes], device: torch.device, n: int = EXAMPLES
                  ) -> list[tuple[str, str, bytes]]:
    """(case id, caption, PNG bytes) of :func:`example_cases`, post-processed and segmented as evaluated."""
    out = []
    for cid, caption in example_cases(rows, rule, n):
        score, mask, label = maps.load(cid, device)
        score = scoring.postprocess(score, mask)
        prediction = scoring.segment(score, threshold)
        image = np.asarray(maps.prepared.volume(cid)[0])
        out.append((cid, caption, draw_case(image, maps.reconstruction(cid), score.cpu().numpy(),
                                            prediction.cpu().numpy(), label.cpu().numpy(),
                                            title=f"{cid} ({caption}, {rule})")))
    return out
