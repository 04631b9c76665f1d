"""NumPy twins of the matmul and dense kernels (cpp/include/gradfuse/dense.hpp).

Same names, signatures and checks; results agree with the C++ kernels to rounding (the products
sum in another order).
"""
from __future__ import annotations

import numpy as np

from ._checks import ArgSet, flags, quiet, shape_str
from .activation import backward_math, check_saved, forward_math, parse_activation

KERNELS = ("matmul", "dense_forward", "dense_backward")

_INT_MAX = 2**31 - 1


def _require_matrix(args: ArgSet, name: str, a) -> None:
    if a is None:
        return
    if a.ndim != 2:
        args.fail(f"{name} must be 2-D, got shape {shape_str(a.shape)}")
    if any(d > _INT_MAX for d in a.shape):
        args.fail(f"{name} has a dimension over 2^31 - 1 (the BLAS interface's limit)")


@quiet
def matmul(a, b, c, *, trans_a=False, trans_b=False, accumulate=False):
    """c = op(a) @ op(b), or c += ... with accumulate; op transposes when trans_a / trans_b.
    Deterministic for every thread count."""
    args = ArgSet("matmul")
    flags(args.fn, trans_a=trans_a, trans_b=trans_b, accumulate=accumulate)
    args.floating("a", a, False)
    args.floating("b", b, False)
    args.floating("c", c, True)
    for name, arr in (("a", a), ("b", b), ("c", c)):
        _require_matrix(args, name, arr)
    opa = a.T if trans_a else a
    opb = b.T if trans_b else b
    if opa.shape[1] != opb.shape[0]:
        args.fail(f"op(a) has shape {shape_str(opa.shape)} and op(b) {shape_str(opb.shape)}: the inner "
                  "dimensions differ")
    args.require_shape("c", c, (opa.shape[0], opb.shape[1]), "op(a) @ op(b) has shape")
    args.check_aliasing()
    if accumulate:
        c += opa @ opb
    else:
        np.matmul(opa, opb, out=c)



@quiet
def dense_forward(x, weight, bias, y, *, activation="none", negative_slope=0.01, z=None):
    """y = activation(x @ weight + bias); weight (in_features, out_features), bias (out_features,) or
    None; z, if given, receives the pre-activation x @ weight + bias (gelu's backward needs it)."""
    args = ArgSet("dense_forward")
    act = parse_activation(args.fn, activation, negative_slope)
    args.floating("x", x, False)
    args.floating("weight", weight, False)
    args.floating("bias", bias, False, optional=True)
    args.floating("y", y, True)
    args.floating("z", z, True, optional=True)
    _require_matrix(args, "x", x)
    _require_matrix(args, "weight", weight)
    n, n_in = x.shape
    n_out = weight.shape[1]
    args.require_shape("weight", weight, (n_in, n_out),
                       f"x has shape {shape_str(x.shape)}, so it must be (in_features, out_features) =")
    args.require_shape("bias", bias, (n_out,), f"weight has shape {shape_str(weight.shape)}, so it must be")
    args.require_shape("y", y, (n, n_out), "x @ weight has shape")
    args.require_shape("z", z, (n, n_out), "x @ weight has shape")
    args.check_aliasing()
    pre = x @ weight
    if bias is not None:
        pre += bias
    if z is not None:
        z[...] = pre
    y[...] = forward_math(act, negative_slope, pre)


@quiet
def dense_backward(dy, x, weight, dx, dweight, dbias, *, activation="none", y=None, z=None, negative_slope=0.01,
                   accumulate=False, dz=None):
    """Backward of dense_forward: dz = dy * activation'(.) (from y, the forward output, or z, the
    pre-activation: tanh/sigmoid need y, gelu needs z, relu either), dbias = column sums of dz, dx = dz @
    weight.T, dweight = x.T @ dz; dx, dweight, dbias may each be None (not computed); accumulate adds into
    dweight and dbias; dz is an optional scratch array (else one is allocated)."""
    args = ArgSet("dense_backward")
    flags(args.fn, accumulate=accumulate)
    act = parse_activation(args.fn, activation, negative_slope)
    for name, arr, written, optional in (("dy", dy, False, False), ("x", x, False, False),
                                         ("weight", weight, False, False), ("dx", dx, True, True),
                                         ("dweight", dweight, True, True), ("dbias", dbias, True, True),
                                         ("y", y, False, True), ("z", z, False, True), ("dz", dz, True, True)):
        args.floating(name, arr, written, optional=optional)
    _require_matrix(args, "x", x)
    _require_matrix(args, "weight", weight)
    n, n_in = x.shape
    n_out = weight.shape[1]
    args.require_shape("weight", weight, (n_in, n_out),
                       f"x has shape {shape_str(x.shape)}, so it must be (in_features, out_features) =")
    for name, arr in (("dy", dy), ("y", y), ("z", z), ("dz", dz)):
        args.require_shape(name, arr, (n, n_out), "x @ weight has shape")
    args.require_shape("dx", dx, (n, n_in), "x has shape")
    args.require_shape("dweight", dweight, (n_in, n_out), "weight has shape")
    args.require_shape("dbias", dbias, (n_out,), "the bias has shape")
    check_saved(args, act, negative_slope, z, y)  # z plays the activation's input
    args.check_aliasing()
    grad = dy if act == "none" else backward_math(act, negative_slope, dy, z, y)
    if dz is not None and act != "none":
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
