"""NumPy twins of the gradient-norm and clipping kernels (cpp/src/clip.cpp).

The math only: gf.ops checks every argument against the kernel table first (gradfuse.table). The
contract (formulas, precision, determinism) is at the top of cpp/include/gradfuse/clip.hpp.

The norms follow the kernels' reduction layout, so that they are bitwise equal to the C++ results
for p = 1, 2 and inf: arrays adjacent in memory form one segment (as the bindings merge them), each
segment is cut into blocks of CLIP_BLOCK elements, element j of a block goes to lane j mod 16 of 16
float64 accumulators (each lane summed in order), the 16 lanes are added as a fixed tree
(8, 4, 2, 1) and the blocks in order. Scaling and clamping are element-wise and bitwise equal.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import label

CLIP_BLOCK = 32768  # kClipBlock in clip.hpp
LANES = 16


def _raise_nonfinite(fn: str, what: str, p: float):
    """torch's error_if_nonfinite refusal, naming the kernel and the argument (as the C++ bindings)."""
    raise RuntimeError(
        f"{fn}: the {what} of order {p!r} is non-finite, so it cannot be clipped (nothing was "
        "written). To disable this error and scale the gradients by the non-finite norm anyway, set "
        "`error_if_nonfinite=False`"
    )


# ---- the reduction -----------------------------------------------------------------------------------


def _segments(arrays) -> list[np.ndarray]:
    """The arrays as the kernels see them: flat, empty ones dropped, neighbours in memory merged."""
    segments, runs, end = [], [], None
    for a in arrays:
        if a.size == 0:
            continue
        start = a.__array_interface__["data"][0]
        if runs and start == end:
            runs[-1].append(a)
        else:
            runs.append([a])
        end = start + a.nbytes
    for run in runs:
        segments.append(run[0].reshape(-1) if len(run) == 1 else np.concatenate([a.reshape(-1) for a in run]))
    return segments


def _lane_tree(lanes: np.ndarray) -> float:
    """16 lane sums added as the kernels add them: a[k] += a[k + w] for w = 8, 4, 2, 1."""
    while lanes.size > 1:
        half = lanes.size // 2
        with np.errstate(over="ignore", invalid="ignore"):
            lanes = lanes[:half] + lanes[half:]
    return float(lanes[0])


def _block_value(x: np.ndarray, p: float) -> float:
    """One block's partial value: sum over its elements of |x|^p in 16 lanes, or max |x|."""
    if math.isinf(p):
        return float(np.max(np.abs(x))) if x.size else 0.0  # exact; NaN if any element is NaN
    x = np.abs(x.astype(np.float64))  # float32 -> float64 is exact, and so is its square
    with np.errstate(over="ignore"):  # float64 terms may overflow to inf, as in the kernels (no warning)
        terms = x * x if p == 2 else x if p == 1 else np.power(x, p)
    padded = np.zeros(-(-x.size // LANES) * LANES)
    padded[: x.size] = terms
    with np.errstate(over="ignore", invalid="ignore"):
        lanes = np.cumsum(padded.reshape(-1, LANES), axis=0)[-1]  # each lane summed in order
    return _lane_tree(lanes)


def _combine(values, p: float) -> float:
    """Partial values, in order -> the norm."""
    acc = 0.0
    for v in values:
        if math.isinf(p):
            acc = acc if (acc != acc or acc >= v) else v  # NaN wins
        else:
            acc += v
    if p == 2:
        return math.sqrt(acc)
    if p == 1 or math.isinf(p):
        return acc
    try:
        return math.pow(acc, 1.0 / p)
    except OverflowError:  # p < 1: the root can overflow; the kernels' std::pow gives inf
        return math.inf


def _blocks(segment: np.ndarray):
    return (segment[b : b + CLIP_BLOCK] for b in range(0, segment.size, CLIP_BLOCK))


def _norm_of_segments(segments, p: float) -> float:
    return _combine((_block_value(block, p) for seg in segments for block in _blocks(seg)), p)


def _coef(max_norm: float, norm: float) -> float:
    """torch's clip coefficient; scaling is needed unless it is >= 1 (a NaN coefficient scales)."""
    return max_norm / (norm + 1e-6)


def _scale(arrays, coef: float) -> None:
    with np.errstate(all="ignore"):
        for g in arrays:
            np.multiply(g, g.dtype.type(coef), out=g)


# ---- kernels -------------------------------------------------------------------------------------------


def grad_norm(*, grads, norm_type):
    return _norm_of_segments(_segments(grads), norm_type)


def clip_grad_norm(*, grads, max_norm, norm_type, error_if_nonfinite):
    norm = _norm_of_segments(_segments(grads), norm_type)
    if error_if_nonfinite and not math.isfinite(norm):
        _raise_nonfinite("clip_grad_norm", "total norm of grads", norm_type)
    coef = _coef(max_norm, norm)
    if not coef >= 1.0:
        _scale(grads, coef)
    return norm


def clip_grad_norm_per_tensor(*, grads, max_norm, norm_type, error_if_nonfinite):
    norms = [_norm_of_segments([g.reshape(-1)], norm_type) if g.size else 0.0 for g in grads]
    if error_if_nonfinite:
        for i, n in enumerate(norms):
            if not math.isfinite(n):
                # grads given as a list (a list comes back from the checks; one ndarray, a 1-tuple)
                what = label("grads", i if isinstance(grads, list) else None)
                _raise_nonfinite("clip_grad_norm_per_tensor", f"norm of {what}", norm_type)
    for g, n in zip(grads, norms):
        coef = _coef(max_norm, n)
        if not coef >= 1.0:
            _scale([g], coef)
    return norms


def clip_grad_value(*, grads, clip_value):
    for g in grads:
        lo, hi = g.dtype.type(-clip_value), g.dtype.type(clip_value)
        # only out-of-range elements are replaced: NaN (no comparison holds) and signed zeros stay
        np.copyto(g, lo, where=g < lo)
        np.copyto(g, hi, where=g > hi)
