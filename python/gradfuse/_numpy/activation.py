"""NumPy twins of the activation kernels (cpp/include/gradfuse/activation.hpp).

The math only: gf.ops checks every argument against the kernel table first (gradfuse.table); a
twin checks only what the table cannot say (which saved tensors a backward needs). Results agree
with the C++ kernels to a few ulp (they use Eigen's vectorized tanh/exp/erf, these NumPy's and the
C library's).
"""

from __future__ import annotations

import math

import numpy as np

from .._checks import fail
from ..table import ACTIVATION_NEEDS

_GELU_TANH_BETA = math.sqrt(2.0) * (2.0 / math.sqrt(math.pi)) * 0.5  # sqrt(2 / pi)
_GELU_TANH_KAPPA = 0.044715
_erf = np.frompyfunc(math.erf, 1, 1)


def erf(x: np.ndarray) -> np.ndarray:
    """Element-wise erf in x's dtype (the C library's, one element at a time)."""
    # np.asarray: on a 0-d array (or a NumPy scalar) the ufunc returns a plain Python float
    return np.asarray(_erf(x)).astype(x.dtype) if x.size else x.copy()


def check_saved(fn: str, act: str, slope: float, x, y, x_name: str = "x") -> None:
    """Refuses a backward without the saved tensors its activation reads (x: the activation's input,
    named x_name in the call; y: its output), as the C++ bindings' check_saved."""
    needs = ACTIVATION_NEEDS[act]
    if needs == ("y",) and y is None:
        fail(fn, "y", f"{act}'s backward needs {{arg}} (the forward output)")
    if needs == ("x",) and x is None:
        fail(fn, x_name, f"{act}'s backward needs {{arg}} (the forward input)")
    if len(needs) == 2 and x is None and y is None:
        fail(fn, x_name, f"{act}'s backward needs {{arg}} (the forward input) or y (its output)")
    if act == "leaky_relu" and x is None and slope < 0:
        fail(fn, x_name, "leaky_relu's backward needs {arg} (the forward input) when negative_slope < 0")


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


def activation_forward(*, x, y, activation, negative_slope):
    y[...] = forward_math(activation, negative_slope, x)


def activation_backward(*, dy, dx, activation, x, y, negative_slope):
    check_saved("activation_backward", activation, negative_slope, x, y)
    dx[...] = backward_math(activation, negative_slope, dy, x, y)
