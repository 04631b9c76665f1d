"""NumPy twins of the activation kernels (cpp/include/gradfuse/activation.hpp).

Same names, signatures, checks and results (to a few ulp: the C++ kernels use Eigen's vectorized
tanh/exp/erf, these use NumPy's and the C library's).
"""
from __future__ import annotations

import math

import numpy as np

from ._checks import ArgSet, real

KERNELS = ("activation_forward", "activation_backward")

ACTIVATIONS = ("none", "relu", "leaky_relu", "tanh", "sigmoid", "gelu", "gelu_tanh")
_NEEDS = {"none": None, "relu": "x_or_y", "leaky_relu": "x_or_y", "tanh": "y", "sigmoid": "y", "gelu": "x",
          "gelu_tanh": "x"}
_GELU_TANH_BETA = math.sqrt(2.0) * (2.0 / math.sqrt(math.pi)) * 0.5  # sqrt(2 / pi)
_GELU_TANH_KAPPA = 0.044715
_erf = np.frompyfunc(math.erf, 1, 1)


def erf(x: np.ndarray) -> np.ndarray:
    """Element-wise erf in x's dtype (the C library's, one element at a time)."""
    # np.asarray: on a 0-d array (or a NumPy scalar) the ufunc returns a plain Python float
    return np.asarray(_erf(x)).astype(x.dtype) if x.size else x.copy()


def parse_activation(fn: str, name: str, slope: float) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{fn}: activation must be a str, got {type(name).__name__}")
    if not math.isfinite(real(fn, "negative_slope", slope)):
        raise ValueError(f"{fn}: negative_slope must be a finite number")
    if name not in ACTIVATIONS:
        raise ValueError(f"{fn}: unknown activation '{name}' (expected none, relu, leaky_relu, tanh, sigmoid, "
                         "gelu or gelu_tanh)")
    return name


def check_saved(args: ArgSet, act: str, slope: float, x, y) -> None:
    needs = _NEEDS[act]
    if needs == "y" and y is None:
        args.fail(f"{act}'s backward needs y (the forward output)")
    if needs == "x" and x is None:
        args.fail(f"{act}'s backward needs x (the forward input)")
    if needs == "x_or_y" and x is None and y is None:
        args.fail(f"{act}'s backward needs x (the forward input) or y (its output)")
    if act == "leaky_relu" and x is None and slope < 0:
        args.fail("leaky_relu's backward needs x (the forward input) when negative_slope < 0")


def forward_math(act: str, slope: float, v: np.ndarray) -> np.ndarray:
    """act(v), in v's dtype."""
    with np.errstate(over="ignore", invalid="ignore"):
        if act == "none":
            return v
        if act == "relu":
            return np.maximum(v, v.dtype.type(0))
        if act == "leaky_relu":
            return np.where(v > 0, v, v * v.dtype.type(slope))
        if act == "tanh":
            return np.tanh(v)
        if act == "sigmoid":
            return 1 / (1 + np.exp(-v))
        if act == "gelu":
            return 0.5 * v * (1 + erf(v * math.sqrt(0.5)))
        return v / (1 + np.exp(-2 * _GELU_TANH_BETA * (v + _GELU_TANH_KAPPA * v * v * v)))  # x sigmoid(2u)


def backward_math(act: str, slope: float, g: np.ndarray, x, y) -> np.ndarray:
    """dy * act'(.) from the saved tensors (x preferred for relu and leaky_relu)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if act == "none":
            return g
        if act in ("relu", "leaky_relu"):
            s = x if x is not None else y
            # relu: 0 where the input is <= 0, even for a NaN / Inf dy (torch's threshold_backward)
            return np.where(s > 0, g, g.dtype.type(0) if act == "relu" else g * g.dtype.type(slope))
        if act == "tanh":
            return g * (1 - y * y)
        if act == "sigmoid":
            return g * y * (1 - y)
        if act == "gelu":
            pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
            return g * (0.5 * (1 + erf(x * math.sqrt(0.5))) + x * pdf)
        u2 = 2 * _GELU_TANH_BETA * (x + _GELU_TANH_KAPPA * x * x * x)
        s, s_neg = 1 / (1 + np.exp(-u2)), 1 / (1 + np.exp(u2))  # (1 + tanh u)/2, (1 - tanh u)/2
        return g * (s + 2 * x * s * s_neg * _GELU_TANH_BETA * (1 + 3 * _GELU_TANH_KAPPA * x * x))


def activation_forward(x, y, *, activation, negative_slope=0.01):
    """y = activation(x), element-wise, any shape; y may be x (in place)."""
    args = ArgSet("activation_forward")
    act = parse_activation(args.fn, activation, negative_slope)
    args.floating("x", x, False)
    args.floating("y", y, True)
    args.require_shape("y", y, x.shape, "x has shape")
    if y is not x:
        args.check_aliasing()
    y[...] = forward_math(act, negative_slope, x)


def activation_backward(dy, dx, *, activation, x=None, y=None, negative_slope=0.01):
    """dx = dy * activation'(.), element-wise. Needs y (the forward output) for tanh and sigmoid, x (the
    input) for gelu and gelu_tanh, either for relu and leaky_relu; dx may be dy (in place)."""
    args = ArgSet("activation_backward")
    act = parse_activation(args.fn, activation, negative_slope)
    args.floating("dy", dy, False)
    args.floating("x", x, False, optional=True)
    args.floating("y", y, False, optional=True)
    args.floating("dx", dx, True)
    check_saved(args, act, negative_slope, x, y)
    for name, arr in (("x", x), ("y", y), ("dx", dx)):
        args.require_shape(name, arr, dy.shape, "dy has shape")
    if dx is not dy:
        args.check_aliasing()
    dx[...] = backward_math(act, negative_slope, dy, x, y)
