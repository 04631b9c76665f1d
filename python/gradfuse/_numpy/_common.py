"""Small helpers shared by the NumPy twins."""

from __future__ import annotations

import functools

import numpy as np


def quiet(kernel):
    """A twin that never warns, like its C++ kernel: NaN / Inf arithmetic (inf - inf, 0 / 0,
    overflow) gives NaN / Inf silently."""

    @functools.wraps(kernel)
    def silent(*args, **kwargs):
        with np.errstate(all="ignore"):
            return kernel(*args, **kwargs)

    return silent


def torch_sign(x: np.ndarray) -> np.ndarray:
    """torch.sign: +1, -1, 0, and 0 for NaN (np.sign would give NaN)."""
    return (x > 0).astype(x.dtype) - (x < 0).astype(x.dtype)
