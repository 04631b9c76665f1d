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


def upcast_call(twin, row, values: dict):
    """A bfloat16 call of a twin: each bfloat16 array upcast to float32 (exact), the float32 math,
    then each written one rounded back once (to nearest even: ml_dtypes' astype), as the C++
    kernels compute. An array passed twice (an in-place pair) stays one array."""
    copies: dict = {}  # id(array) -> [array, float32 copy, written]

    def up(a, spec):
        if not isinstance(a, np.ndarray) or a.dtype.kind != "V":
            return a
        entry = copies.setdefault(id(a), [a, None, False])
        if entry[1] is None:
            entry[1] = a.astype(np.float32)
        entry[2] = entry[2] or spec.written
        return entry[1]

    args = dict(values)
    for spec in row.arrays:
        v = values[spec.name]
        args[spec.name] = type(v)(up(a, spec) for a in v) if isinstance(v, (list, tuple)) else up(v, spec)
    result = twin(**args)
    for a, wide, written in copies.values():
        if written:
            a[...] = wide.astype(a.dtype)
    return result
