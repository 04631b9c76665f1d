"""NumPy twins of the batch-normalization kernels (cpp/src/batchnorm.cpp).

The math only: gf.ops checks every argument against the kernel table first (gradfuse.table); a
twin checks only what the table cannot say (running statistics both or neither, eps > 0 and more
than one value per channel when the batch statistics are used). The contract (formulas, precision,
layouts) is in cpp/include/gradfuse/batchnorm.hpp.

Written for clarity: each channel's values are gathered into one row of a float64 matrix and
reduced with NumPy. The statistics use the same pivot shift as the C++ kernels (x - the channel's
first element; here in float64, there in the dtype, exact near the pivot) and the per-element work
is the same dtype arithmetic on the same coefficients, so outputs agree with the C++ kernels to
about one unit in the last place (the float64 sums are taken in another order).
"""

from __future__ import annotations

import math

import numpy as np

from .._checks import fail, shape_str


def _dims(x: np.ndarray, channels_last: bool) -> tuple[int, int, int]:
    """(N, C, L): x is (N, C, *S) or, channels last, (N, *S, C); L = prod(S)."""
    spatial = x.shape[1:-1] if channels_last else x.shape[2:]
    return x.shape[0], x.shape[-1] if channels_last else x.shape[1], math.prod(spatial)


def _by_channel(a: np.ndarray, channels_last: bool) -> np.ndarray:
    """a as a float64 matrix with one row per channel (its values in memory order)."""
    c = a.shape[-1] if channels_last else a.shape[1]
    if channels_last:
        rows = a.reshape(-1, c).T
    else:
        rows = a.reshape(a.shape[0], c, -1).transpose(1, 0, 2).reshape(c, -1)
    return rows.astype(np.float64)


def _broadcastable(v: np.ndarray, ndim: int, channels_last: bool) -> np.ndarray:
    """A per-channel vector shaped to broadcast against x."""
    return v if channels_last else v.reshape((1, -1) + (1,) * (ndim - 2))


def batchnorm_forward(
    *, x, weight, bias, running_mean, running_var, y, save_mean, save_invstd, training, momentum, eps, channels_last
):
    fn = "batchnorm_forward"
    if (running_mean is None) != (running_var is None):
        fail(fn, "running_mean", "running_mean and running_var must both be arrays or both be None")
    batch = training or running_mean is None
    if batch and not eps > 0:
        fail(fn, "eps", f"{{arg}} must be > 0 when the batch statistics are used (training), got {eps!r}")
    n, c, spatial = _dims(x, channels_last)
    count = n * spatial  # values per channel
    if batch and count == 1:
        fail(fn, "x", f"Expected more than 1 value per channel when training, got input size {shape_str(x.shape)}")
    if c == 0:
        return
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # NaN / Inf propagate, like torch
        _forward(
            x,
            weight,
            bias,
            running_mean,
            running_var,
            y,
            save_mean,
            save_invstd,
            batch,
            count,
            momentum,
            eps,
            channels_last,
        )


def _forward(
    x, weight, bias, running_mean, running_var, y, save_mean, save_invstd, batch, count, momentum, eps, channels_last
):
    c = save_mean.shape[0]
    dtype = x.dtype
    w = np.ones(c) if weight is None else weight.astype(np.float64)
    b = np.zeros(c) if bias is None else bias.astype(np.float64)

    if batch:
        if count == 0:  # no statistics: nothing to normalise, running statistics untouched
            save_mean[...] = 0
            save_invstd[...] = 0
            return
        values = _by_channel(x, channels_last)  # (C, count), float64
        pivot = values[:, 0]  # each channel's first element
        d = values - pivot[:, None]
        mean_minus_pivot = d.sum(axis=1) / count
        var = np.maximum((d * d).sum(axis=1) / count - mean_minus_pivot**2, 0.0)  # biased; NaN stays NaN
        mean = pivot + mean_minus_pivot
        invstd = 1.0 / np.sqrt(var + eps)
        scale = w * invstd
        shift = b - mean_minus_pivot * scale
        save_mean[...] = mean
        save_invstd[...] = invstd
        if running_mean is not None:
            running_mean[...] = (1.0 - momentum) * running_mean.astype(np.float64) + momentum * mean
            running_var[...] = (1.0 - momentum) * running_var.astype(np.float64) + momentum * (
                var * count / (count - 1.0)
            )
    else:
        invstd = 1.0 / np.sqrt(running_var.astype(np.float64) + eps)
        pivot = running_mean.copy()
        scale = w * invstd
        shift = b
        save_mean[...] = running_mean
        save_invstd[...] = invstd

    # y = (x - pivot) scale + shift, in the dtype of x, with the coefficients rounded to it once
    def per_channel(v):
        return _broadcastable(np.asarray(v).astype(dtype), x.ndim, channels_last)

    y[...] = (x - per_channel(pivot)) * per_channel(scale) + per_channel(shift)


def batchnorm_backward(*, dy, x, weight, save_mean, save_invstd, dx, dweight, dbias, training, channels_last):
    n, c, spatial = _dims(x, channels_last)
    if c == 0:
        return
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # NaN / Inf propagate, like torch
        _backward(dy, x, weight, save_mean, save_invstd, dx, dweight, dbias, training, n * spatial, channels_last)


def _backward(dy, x, weight, save_mean, save_invstd, dx, dweight, dbias, training, count, channels_last):
    c = save_mean.shape[0]
    dtype = x.dtype
    w = np.ones(c) if weight is None else weight.astype(np.float64)
    invstd = save_invstd.astype(np.float64)

    # sum(dy), sum(dy (x - save_mean)) and sum(x - save_mean) per channel, in float64
    if count > 0 and (training or dweight is not None or dbias is not None):
        g = _by_channel(dy, channels_last)
        d = _by_channel(x, channels_last) - save_mean.astype(np.float64)[:, None]
        sum_dy, sum_dy_d, sum_d = g.sum(axis=1), (g * d).sum(axis=1), d.sum(axis=1)
    else:
        sum_dy, sum_dy_d, sum_d = np.zeros(c), np.zeros(c), np.zeros(c)
    # With batch statistics save_mean is the batch mean rounded to the dtype: e = mean(x - save_mean)
    # re-centres it (x - mean = (x - save_mean) - e), so its rounding does not reach the gradients.
    e = sum_d / count if training and count > 0 else np.zeros(c)
    sum_dy_xc = sum_dy_d - e * sum_dy  # sum(dy (x - mean))
    if dbias is not None:
        dbias[...] = sum_dy
    if dweight is not None:
        dweight[...] = sum_dy_xc * invstd
    if count == 0:
        return

    def per_channel(v):
        return _broadcastable(np.asarray(v).astype(dtype), x.ndim, channels_last)

    k1 = w * invstd
    if training:
        # dx = k1 (dy - mean(dy) - xhat mean(dy xhat)) = (dy k1 + (x - save_mean) k2) + k3
        k2 = -k1 * invstd * (sum_dy_xc * invstd / count)
        k3 = -k1 * (sum_dy / count) - k2 * e
        dx[...] = (dy * per_channel(k1) + (x - per_channel(save_mean)) * per_channel(k2)) + per_channel(k3)
    else:
        dx[...] = dy * per_channel(k1)
