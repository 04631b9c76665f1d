"""NumPy twins of the matmul and dense kernels (cpp/include/gradfuse/dense.hpp).

The math only: gf.ops checks every argument against the kernel table first (gradfuse.table); a
twin checks only what the table cannot say (the saved tensors an activation's backward needs, the
BLAS interface's int dimensions). Results agree with the C++ kernels to rounding (the products sum
in another order). bfloat16 calls (ops._twin): matmul and dense_forward through the generic
upcast_call (widen, the float32 math, round each bf16 output once); dense_backward through its own
dense_backward_bf16, which also rounds dz before using it, as the C++ kernel does.
"""

from __future__ import annotations

import numpy as np

from .._checks import fail
from ._common import quiet, upcast_call
from .activation import backward_math, check_saved, forward_math

_INT_MAX = 2**31 - 1


def _require_int_dims(fn: str, **arrays) -> None:
    """The BLAS interface takes int dimensions (the shapes are checked: these arrays hold them all)."""
    for name, a in arrays.items():
        if any(d > _INT_MAX for d in a.shape):
            fail(fn, name, "{arg} has a dimension over 2^31 - 1 (the BLAS interface's limit)")


@quiet
def matmul(*, a, b, c, trans_a, trans_b, accumulate):
    _require_int_dims("matmul", a=a, b=b)
    opa = a.T if trans_a else a
    opb = b.T if trans_b else b
    if accumulate:
        c += opa @ opb
    else:
        np.matmul(opa, opb, out=c)


@quiet
def dense_forward(*, x, weight, bias, y, activation, negative_slope, z):
    _require_int_dims("dense_forward", x=x, weight=weight)
    pre = x @ weight
    if bias is not None:
        pre += bias
    if z is not None:
        z[...] = pre
    y[...] = forward_math(activation, negative_slope, pre)


@quiet
def dense_backward(*, dy, x, weight, dx, dweight, dbias, activation, y, z, negative_slope, accumulate, dz):
    _backward(dy, x, weight, dx, dweight, dbias, activation, y, z, negative_slope, accumulate, dz)


def dense_backward_bf16(row, values: dict):
    """A bfloat16 call: the float32 twin on the widened arrays (upcast_call), except that dz is
    rounded to bfloat16 right after the activation's backward, before the bias sum and the GEMMs
    read it, as the C++ kernel does (and torch's autocast, whose dz is a bf16 tensor)."""
    return upcast_call(_backward_rounding_dz, row, values)


@quiet
def _backward_rounding_dz(**kw):
    import ml_dtypes

    _backward(**kw, round_grad=lambda g: g.astype(ml_dtypes.bfloat16).astype(np.float32))


def _backward(dy, x, weight, dx, dweight, dbias, activation, y, z, negative_slope, accumulate, dz, round_grad=None):
    fn = "dense_backward"
    check_saved(fn, activation, negative_slope, z, y, x_name="z")  # z plays the activation's input
    _require_int_dims(fn, x=x, weight=weight)
    grad = dy if activation == "none" else backward_math(activation, negative_slope, dy, z, y)
    if round_grad is not None and activation != "none":
        grad = round_grad(grad)
    if dz is not None and activation != "none":
        dz[...] = grad
    if dbias is not None:
        total = grad.sum(axis=0, dtype=np.float64).astype(grad.dtype)
        if accumulate:
            dbias += total
        else:
            dbias[...] = total
    if dx is not None:
        np.matmul(grad, weight.T, out=dx)
    if dweight is not None:
        if accumulate:
            dweight += x.T @ grad
        else:
            np.matmul(x.T, grad, out=dweight)
