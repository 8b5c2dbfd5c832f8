"""The one way seeds are derived from (seed, stream, index, ...) tuples, in training and in inference."""

from __future__ import annotations

import numpy as np


def derive_seed(*entropy: int) -> int:
    """A well-mixed 63-bit seed from non-negative integers (numpy's SeedSequence)."""
    return int(np.random.SeedSequence([int(e) for e in entropy]).generate_state(1, np.uint64)[0] >> np.uint64(1))
