"""NumPy twins of the batch-normalization kernels (cpp/src/batchnorm.cpp).

Same names, signatures, checks and messages as gradfuse._core; the contract (formulas, precision,
layouts) is in cpp/include/gradfuse/batchnorm.hpp. Written for clarity: each channel's values are
gathered into one row of a float64 matrix and reduced with NumPy. The statistics use the same
pivot shift as the C++ kernels (x - the channel's first element; here in float64, there in the
dtype, exact near the pivot) and the per-element work is the same dtype arithmetic on the same
coefficients, so outputs agree with the C++ kernels to about one unit in the last place (the
float64 sums are taken in another order).
"""
from __future__ import annotations

import math

import numpy as np

from . import _checks as check

KERNELS: tuple[str, ...] = ("batchnorm_forward", "batchnorm_backward")


def _dims(args: check.ArgSet, x: np.ndarray, channels_last: bool) -> tuple[int, int, int]:
    """(N, C, L): x is (N, C, *S) or, channels last, (N, *S, C); L = prod(S)."""
    if x.ndim < 2:
        args.fail("x must have at least 2 dimensions, (N, C, ...) or channels last (N, ..., C); got shape "
                  + check.shape_str(x.shape))
    spatial = x.shape[1:-1] if channels_last else x.shape[2:]
    return x.shape[0], x.shape[-1] if channels_last else x.shape[1], math.prod(spatial)


def _require_channels(args: check.ArgSet, c: int, **arrays) -> None:
    for name, a in arrays.items():
        args.require_shape(name, a, (c,), f"x has {c} channels: expected")


def _check_aliasing(fn: str, arrays, out: str, inp: str) -> None:
    """ArgSet.check_aliasing, except that `out` may be exactly `inp` (in place: the same memory and
    shape). arrays: (name, array or None, written) in argument order."""
    spans = [(name, a, a.__array_interface__["data"][0], a.nbytes, w) for name, a, w in arrays
             if a is not None and a.nbytes]
    for wname, wa, wstart, wbytes, written in spans:
        if not written:
            continue
        for oname, oa, ostart, obytes, _ in spans:
            if oname == wname:
                continue
            if {wname, oname} == {out, inp} and wstart == ostart and wbytes == obytes and wa.shape == oa.shape:
                continue
            if wstart < ostart + obytes and ostart < wstart + wbytes:
                raise ValueError(f"{fn}: {wname} shares memory with {oname} (an array that is written must not "
                                 "overlap any other argument)")


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


def batchnorm_forward(x, weight, bias, running_mean, running_var, y, save_mean, save_invstd, *, training=True,
                      momentum=0.1, eps=1e-5, channels_last=False):
    """Batch normalization forward (torch.nn.functional.batch_norm), written into y, save_mean and
    save_invstd (and running_mean / running_var when training). See the C++ docstring."""
    fn = "batchnorm_forward"
    check.flags(fn, training=training, channels_last=channels_last)
    check.closed_unit(fn, "momentum", momentum)
    check.nonneg(fn, "eps", eps)
    args = check.ArgSet(fn)
    x = args.floating("x", x, False)
    weight = args.floating("weight", weight, False, optional=True)
    bias = args.floating("bias", bias, False, optional=True)
    running_mean = args.floating("running_mean", running_mean, True, optional=True)
    running_var = args.floating("running_var", running_var, True, optional=True)
    y = args.floating("y", y, True)
    save_mean = args.floating("save_mean", save_mean, True)
    save_invstd = args.floating("save_invstd", save_invstd, True)
    n, c, l = _dims(args, x, channels_last)
    _require_channels(args, c, weight=weight, bias=bias, running_mean=running_mean, running_var=running_var,
                      save_mean=save_mean, save_invstd=save_invstd)
    args.require_shape("y", y, x.shape, "x has shape")
    if (running_mean is None) != (running_var is None):
        args.fail("running_mean and running_var must both be arrays or both be None")
    batch = training or running_mean is None
    if batch and not float(eps) > 0:
        args.fail(f"eps must be > 0 when the batch statistics are used (training), got {float(eps)!r}")
    _check_aliasing(fn, [("x", x, False), ("weight", weight, False), ("bias", bias, False),
                         ("running_mean", running_mean, True), ("running_var", running_var, True), ("y", y, True),
                         ("save_mean", save_mean, True), ("save_invstd", save_invstd, True)], "y", "x")
    count = n * l  # values per channel
    if batch and count == 1:
        args.fail(f"Expected more than 1 value per channel when training, got input size {check.shape_str(x.shape)}")
    if c == 0:
        return
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # NaN / Inf propagate, like torch
        _forward(x, weight, bias, running_mean, running_var, y, save_mean, save_invstd, batch, count, momentum, eps,
                 channels_last)


def _forward(x, weight, bias, running_mean, running_var, y, save_mean, save_invstd, batch, count, momentum, eps,
             channels_last):
    c = save_mean.shape[0]
    dtype = x.dtype
    w = np.ones(c) if weight is None else weight.astype(np.float64)
    b = np.zeros(c) if bias is None else bias.astype(np.float64)

    if batch:
        if count == 0:  # no statistics: nothing to normalise, running statistics untouched
            save_mean[...] = 0
            save_invstd[...] = 0
            return
        values = _by_channel(x, channels_last)           # (C, count), float64
        pivot = values[:, 0]                               # each channel's first element
        d = values - pivot[:, None]
        mean_minus_pivot = d.sum(axis=1) / count
        var = np.maximum((d * d).sum(axis=1) / count - mean_minus_pivot ** 2, 0.0)  # biased; NaN stays NaN
        mean = pivot + mean_minus_pivot
        invstd = 1.0 / np.sqrt(var + eps)
        scale = w * invstd
        shift = b - mean_minus_pivot * scale
        save_mean[...] = mean
        save_invstd[...] = invstd
        if running_mean is not None:
            running_mean[...] = (1.0 - momentum) * running_mean.astype(np.float64) + momentum * mean
            running_var[...] = ((1.0 - momentum) * running_var.astype(np.float64)
                                + momentum * (var * count / (count - 1.0)))
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


def batchnorm_backward(dy, x, weight, save_mean, save_invstd, dx, dweight, dbias, *, training=True,
                       channels_last=False):
    """Batch normalization backward: dx (and dweight = sum(dy xhat), dbias = sum(dy) when given) from
    save_mean and save_invstd of the forward. See the C++ docstring."""
    fn = "batchnorm_backward"
    check.flags(fn, training=training, channels_last=channels_last)
    args = check.ArgSet(fn)
    dy = args.floating("dy", dy, False)
    x = args.floating("x", x, False)
    weight = args.floating("weight", weight, False, optional=True)
    save_mean = args.floating("save_mean", save_mean, False)
    save_invstd = args.floating("save_invstd", save_invstd, False)
    dx = args.floating("dx", dx, True)
    dweight = args.floating("dweight", dweight, True, optional=True)
    dbias = args.floating("dbias", dbias, True, optional=True)
    n, c, l = _dims(args, x, channels_last)
    args.require_shape("dy", dy, x.shape, "x has shape")
    args.require_shape("dx", dx, x.shape, "x has shape")
    _require_channels(args, c, weight=weight, save_mean=save_mean, save_invstd=save_invstd, dweight=dweight,
                      dbias=dbias)
    _check_aliasing(fn, [("dy", dy, False), ("x", x, False), ("weight", weight, False), ("save_mean", save_mean, False),
                         ("save_invstd", save_invstd, False), ("dx", dx, True), ("dweight", dweight, True),
                         ("dbias", dbias, True)], "dx", "dy")
    if c == 0:
        return
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # NaN / Inf propagate, like torch
        _backward(dy, x, weight, save_mean, save_invstd, dx, dweight, dbias, training, n * l, channels_last)


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
