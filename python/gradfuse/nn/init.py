"""Weight initializers: torch.nn.init's names, in place, seeded and reproducible.

    gf.nn.init.kaiming_normal_(w, nonlinearity="relu", seed=0)   # He, for a (in, out) Dense weight
    gf.nn.init.xavier_uniform_(w, gain="tanh", rng=rng)          # Glorot with the seeds' tanh gain
    gf.nn.init.zeros_(b)                                         # biases: 0 (or 0.1 before a ReLU)
    init = gf.nn.init.get_initializer("he_normal"); init(w, seed=1)

Every initializer writes its array in place (an ndarray, or a gf.nn.Parameter's .data, so an arena
view stays an arena view) and returns what it was given, like torch. Randomness comes from `rng` (a
numpy.random.Generator, advanced by the call) or `seed` (anything np.random.default_rng takes): the
same seed gives the same values. With neither, the module's generator is used (reseed it with
manual_seed). Values are drawn in float64 and rounded to the array's dtype, so a float32 and a
float64 array drawn with the same seed hold the same numbers, rounded.

Fans, for gradfuse's layout (layout="in_out", the default): a Dense weight is (in_features,
out_features) -- y = x @ W -- the transpose of torch's (out, in), so fan_in = shape[0] and fan_out =
shape[1]; with more axes, (*kernel, in, out) (TensorFlow's HWIO), each fan multiplied by the kernel
size. layout="out_in" reads torch's layouts ((out, in) and (out, in, *kernel)).

Gains (calculate_gain) come from the seeds' initialization table (lecture 002): Glorot's bounds
r = sqrt(6 / (n_in + n_out)) and sigma = sqrt(2 / (n_in + n_out)) for the logistic function, 4 times
those for tanh, sqrt(2) times for ReLU and its variants: gain("logistic") = 1, gain("tanh") = 4,
gain("relu") = sqrt(2); xavier_uniform_(w, gain=...) reproduces each row. torch uses 5/3 for tanh
(convention="torch" gives it). The 4 comes from the table as the seeds print it (it is also in
Geron's Hands-On ML table); Glorot & Bengio (2010) derived the factor 4 for the logistic sigmoid
relative to tanh, so for tanh networks torch's 5/3 is the safer choice.

Initializers: uniform_(a) on [-a, a] (and torch's uniform_(a, b) on [a, b]), normal_(std, mean=0),
constant_, zeros_, ones_, xavier_uniform_ / xavier_normal_ (Glorot; aliases glorot_*), kaiming_uniform_
/ kaiming_normal_ (He; aliases he_*, mode fan_in / fan_out), lecun_uniform_ (U[-1/sqrt(fan_in),
1/sqrt(fan_in)], the seeds' "U(-1/sqrt(m), 1/sqrt(m))" heuristic; Keras' lecun_uniform uses
sqrt(3/fan_in)) and lecun_normal_ (N(0, 1/fan_in), the seeds' W = randn(fan_in, fan_out) / sqrt(fan_in);
a plain normal, where Keras truncates). get_initializer(name) maps the string names layers take
("he_normal", "glorot_uniform", "lecun_normal", "zeros", ...) to these.

Constant weights never break symmetry: every unit of the layer computes the same output and gets the
same gradient, so they stay equal forever (the seeds: "Pitfall: all zero initialization"). constant_ /
zeros_ / ones_ on a WEIGHT therefore warn (SymmetryWarning, a UserWarning, naming the parameter); on a
bias they are the seeds' advice (0, or 0.1 before a ReLU). Which one it is: role="weight" | "bias",
or, by default, a Parameter whose name says "bias" is a bias, any other array with 2 or more axes a
weight, and a vector (a bias, or a per-feature scale like batch norm's weight) does not warn.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np

from .parameter import Parameter

__all__ = [
    "SymmetryWarning",
    "calculate_gain",
    "calculate_fans",
    "manual_seed",
    "get_initializer",
    "INITIALIZERS",
    "uniform_",
    "normal_",
    "constant_",
    "zeros_",
    "ones_",
    "xavier_uniform_",
    "xavier_normal_",
    "glorot_uniform_",
    "glorot_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "he_uniform_",
    "he_normal_",
    "lecun_uniform_",
    "lecun_normal_",
]


class SymmetryWarning(UserWarning):
    """A weight matrix initialized to a constant: its units can never become different."""


# ---- randomness ------------------------------------------------------------------------------------

_default_rng = np.random.default_rng()


def manual_seed(seed) -> np.random.Generator:
    """Reseed the generator used when neither rng nor seed is given; returns it."""
    global _default_rng
    _default_rng = np.random.default_rng(seed)
    return _default_rng


def _generator(fn: str, rng, seed) -> np.random.Generator:
    if rng is not None and seed is not None:
        raise TypeError(f"{fn}: pass rng or seed, not both")
    if seed is not None:
        return np.random.default_rng(seed)
    if rng is None:
        return _default_rng
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{fn}: rng must be a numpy.random.Generator (or pass seed=...), got {type(rng).__name__}")
    return rng


# ---- the array written ----------------------------------------------------------------------------------


def _target(fn: str, tensor) -> np.ndarray:
    arr = tensor.data if isinstance(tensor, Parameter) else tensor
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{fn}: expected a numpy.ndarray or a gradfuse Parameter, got {type(tensor).__name__}")
    if arr.dtype.kind != "f":
        raise TypeError(f"{fn}: the array has dtype {arr.dtype}; expected a floating-point dtype")
    if not arr.flags.writeable:
        raise ValueError(f"{fn}: the array is read-only (it is initialized in place)")
    return arr


def _describe(tensor, arr: np.ndarray) -> str:
    name = tensor.name if isinstance(tensor, Parameter) else None
    shape = "(" + ", ".join(map(str, arr.shape)) + (",)" if arr.ndim == 1 else ")")
    return f"{name!r} (shape {shape})" if name else f"of shape {shape}"


def _empty(arr: np.ndarray) -> bool:
    if arr.size == 0:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=3)
        return True
    return False


def _check_role(fn: str, role) -> None:
    if role not in (None, "weight", "bias"):
        raise ValueError(f"{fn}: role must be 'weight', 'bias' or None (inferred), got {role!r}")


# ---- gains and fans -------------------------------------------------------------------------------------

_LINEAR = (
    "linear",
    "identity",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "sigmoid",
    "logistic",
)
_RELU_VARIANTS = ("elu", "gelu", "silu", "swish")  # the seeds' "ReLU (and its variants)"


def calculate_gain(nonlinearity, param=None, *, convention="seeds") -> float:
    """The gain that scales Glorot's / He's bounds for a nonlinearity.

    convention="seeds" (the seeds' table): linear / logistic (sigmoid) 1, tanh 4, relu sqrt(2) (and
    "ReLU variants" elu, gelu, silu / swish sqrt(2)), leaky_relu sqrt(2 / (1 + slope^2)) (param: the
    negative slope, default 0.01), selu 3/4. convention="torch": torch.nn.init.calculate_gain's
    values: the same except tanh = 5/3 (and no ReLU variants).
    """
    if convention not in ("seeds", "torch"):
        raise ValueError(f"calculate_gain: convention must be 'seeds' or 'torch', got {convention!r}")
    name = nonlinearity.lower() if isinstance(nonlinearity, str) else nonlinearity
    if name in _LINEAR:
        return 1.0
    if name == "tanh":
        return 4.0 if convention == "seeds" else 5.0 / 3
    if name == "relu" or (convention == "seeds" and name in _RELU_VARIANTS):
        return math.sqrt(2.0)
    if name == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = float(param)
        else:
            raise ValueError(f"negative_slope {param} not a valid number")
        return math.sqrt(2.0 / (1 + slope**2))
    if name == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def calculate_fans(tensor, layout="in_out") -> tuple[int, int]:
    """(fan_in, fan_out) of a weight (an array, a Parameter or a shape).

    layout="in_out" (gradfuse): (in, out), or (*kernel, in, out); layout="out_in" (torch): (out, in),
    or (out, in, *kernel). With a kernel, both fans are multiplied by its size.
    """
    if isinstance(tensor, (tuple, list)):
        shape = tuple(tensor)
    else:
        shape = tuple((tensor.data if isinstance(tensor, Parameter) else tensor).shape)
    if len(shape) < 2:
        raise ValueError(
            f"Fan in and fan out can not be computed for tensor with fewer than 2 dimensions (shape {shape})"
        )
    if layout == "in_out":
        receptive = math.prod(shape[:-2])
        return shape[-2] * receptive, shape[-1] * receptive
    if layout == "out_in":
        receptive = math.prod(shape[2:])
        return shape[1] * receptive, shape[0] * receptive
    raise ValueError(f"calculate_fans: layout must be 'in_out' (gradfuse) or 'out_in' (torch), got {layout!r}")


def _fans(fn: str, arr: np.ndarray, layout: str) -> tuple[int, int]:
    try:
        return calculate_fans(arr.shape, layout)
    except ValueError as exc:
        raise ValueError(f"{fn}: {exc}") from None


def _fan(fn: str, arr: np.ndarray, mode: str, layout: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
    fan_in, fan_out = _fans(fn, arr, layout)
    return fan_in if mode == "fan_in" else fan_out


def _gain(fn: str, gain) -> float:
    if isinstance(gain, str):
        return calculate_gain(gain)
    if isinstance(gain, bool) or not isinstance(gain, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: gain must be a number or a nonlinearity's name, got {type(gain).__name__}")
    return float(gain)


# ---- distributions ----------------------------------------------------------------------------------------


def _fill_uniform(fn, tensor, low, high, rng, seed):
    arr = _target(fn, tensor)
    gen = _generator(fn, rng, seed)
    if not _empty(arr):
        arr[...] = gen.uniform(low, high, size=arr.shape)
    return tensor


def _fill_normal(fn, tensor, mean, std, rng, seed):
    arr = _target(fn, tensor)
    gen = _generator(fn, rng, seed)
    if not _empty(arr):
        arr[...] = gen.normal(mean, std, size=arr.shape)
    return tensor


def uniform_(tensor, a, b=None, *, role=None, rng=None, seed=None):
    """uniform_(w, a): U[-a, a]; uniform_(w, a, b): U[a, b] (torch's form). Note torch's one-argument
    uniform_(w, a) means U[a, 1]: here it is the symmetric range."""
    fn = "uniform_"
    _check_role(fn, role)
    low, high = (-float(a), float(a)) if b is None else (float(a), float(b))
    if b is None and not a >= 0:
        raise ValueError(f"{fn}: a must be >= 0 for the range [-a, a], got {a!r}")
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise ValueError(f"{fn}: expected a finite range with a <= b, got [{low!r}, {high!r}]")
    return _fill_uniform(fn, tensor, low, high, rng, seed)


def normal_(tensor, std=1.0, *, mean=0.0, role=None, rng=None, seed=None):
    """N(mean, std^2). std may be given by position (normal_(w, 0.01)); mean only by keyword, so that
    torch's positional normal_(w, mean, std) cannot silently swap them (it raises TypeError)."""
    fn = "normal_"
    _check_role(fn, role)
    if not (math.isfinite(std) and std >= 0):
        raise ValueError(f"{fn}: std must be a finite number >= 0, got {std!r}")
    if not math.isfinite(mean):
        raise ValueError(f"{fn}: mean must be a finite number, got {mean!r}")
    return _fill_normal(fn, tensor, float(mean), float(std), rng, seed)


def _fill_constant(fn, tensor, val, role):
    _check_role(fn, role)
    arr = _target(fn, tensor)
    if role is None:
        name = tensor.name if isinstance(tensor, Parameter) else None
        says_bias = bool(name) and "bias" in name.rsplit(".", 1)[-1].lower()
        role = "bias" if says_bias else "weight" if arr.ndim >= 2 else None
    if role == "weight":
        warnings.warn(
            f"{fn}: initializing the weight {_describe(tensor, arr)} to the constant {val!r} never breaks the "
            "symmetry between its units (they compute the same output and get the same gradient, so they stay "
            "equal). Use a random initializer for weights (e.g. 'he_normal', 'glorot_uniform'); constants are "
            "for biases (pass role='bias').",
            SymmetryWarning,
            stacklevel=3,
        )
    arr[...] = val
    return tensor


def constant_(tensor, val, *, role=None, rng=None, seed=None):
    """Fill with val (warns for a weight: see the module doc). rng and seed are accepted and unused,
    so that every initializer takes the same arguments."""
    _generator("constant_", rng, seed)
    return _fill_constant("constant_", tensor, float(val), role)


def zeros_(tensor, *, role=None, rng=None, seed=None):
    """Fill with 0 (warns for a weight: see the module doc)."""
    _generator("zeros_", rng, seed)
    return _fill_constant("zeros_", tensor, 0.0, role)


def ones_(tensor, *, role=None, rng=None, seed=None):
    """Fill with 1 (warns for a weight matrix: see the module doc; batch norm's weight vector is fine)."""
    _generator("ones_", rng, seed)
    return _fill_constant("ones_", tensor, 1.0, role)


def xavier_uniform_(tensor, gain=1.0, *, layout="in_out", role=None, rng=None, seed=None):
    """Glorot uniform: U[-r, r], r = gain sqrt(6 / (fan_in + fan_out)). gain: a number or a
    nonlinearity's name (the seeds' table: "logistic" 1, "tanh" 4, "relu" sqrt(2))."""
    fn = "xavier_uniform_"
    _check_role(fn, role)
    arr = _target(fn, tensor)
    fan_in, fan_out = _fans(fn, arr, layout)
    r = _gain(fn, gain) * math.sqrt(6.0 / (fan_in + fan_out)) if fan_in + fan_out else 0.0
    return _fill_uniform(fn, tensor, -r, r, rng, seed)


def xavier_normal_(tensor, gain=1.0, *, layout="in_out", role=None, rng=None, seed=None):
    """Glorot normal: N(0, sigma^2), sigma = gain sqrt(2 / (fan_in + fan_out)). gain: as xavier_uniform_."""
    fn = "xavier_normal_"
    _check_role(fn, role)
    arr = _target(fn, tensor)
    fan_in, fan_out = _fans(fn, arr, layout)
    sigma = _gain(fn, gain) * math.sqrt(2.0 / (fan_in + fan_out)) if fan_in + fan_out else 0.0
    return _fill_normal(fn, tensor, 0.0, sigma, rng, seed)


def _kaiming_std(fn, arr, a, mode, nonlinearity, convention, layout) -> float:
    fan = _fan(fn, arr, mode, layout)
    gain = calculate_gain(nonlinearity, a, convention=convention)
    return gain / math.sqrt(fan) if fan else 0.0


def kaiming_uniform_(
    tensor,
    a=0.0,
    mode="fan_in",
    nonlinearity="leaky_relu",
    *,
    convention="seeds",
    layout="in_out",
    role=None,
    rng=None,
    seed=None,
):
    """He uniform: U[-b, b], b = gain sqrt(3 / fan) (fan = fan_in or fan_out by mode; gain =
    calculate_gain(nonlinearity, a, convention=convention); torch's defaults: leaky_relu with a = 0,
    i.e. sqrt(2))."""
    fn = "kaiming_uniform_"
    _check_role(fn, role)
    arr = _target(fn, tensor)
    bound = math.sqrt(3.0) * _kaiming_std(fn, arr, a, mode, nonlinearity, convention, layout)
    return _fill_uniform(fn, tensor, -bound, bound, rng, seed)


def kaiming_normal_(
    tensor,
    a=0.0,
    mode="fan_in",
    nonlinearity="leaky_relu",
    *,
    convention="seeds",
    layout="in_out",
    role=None,
    rng=None,
    seed=None,
):
    """He normal: N(0, std^2), std = gain / sqrt(fan) (arguments as kaiming_uniform_)."""
    fn = "kaiming_normal_"
    _check_role(fn, role)
    arr = _target(fn, tensor)
    std = _kaiming_std(fn, arr, a, mode, nonlinearity, convention, layout)
    return _fill_normal(fn, tensor, 0.0, std, rng, seed)


def lecun_uniform_(tensor, *, layout="in_out", role=None, rng=None, seed=None):
    """U[-1/sqrt(fan_in), 1/sqrt(fan_in)] (the seeds' heuristic for a layer with fan_in inputs)."""
    fn = "lecun_uniform_"
    _check_role(fn, role)
    arr = _target(fn, tensor)
    fan_in = _fan(fn, arr, "fan_in", layout)
    r = 1.0 / math.sqrt(fan_in) if fan_in else 0.0
    return _fill_uniform(fn, tensor, -r, r, rng, seed)


def lecun_normal_(tensor, *, layout="in_out", role=None, rng=None, seed=None):
    """N(0, 1/fan_in): the seeds' W = randn(fan_in, fan_out) / sqrt(fan_in)."""
    fn = "lecun_normal_"
    _check_role(fn, role)
    arr = _target(fn, tensor)
    fan_in = _fan(fn, arr, "fan_in", layout)
    std = 1.0 / math.sqrt(fan_in) if fan_in else 0.0
    return _fill_normal(fn, tensor, 0.0, std, rng, seed)


glorot_uniform_ = xavier_uniform_
glorot_normal_ = xavier_normal_


def he_uniform_(
    tensor, mode="fan_in", nonlinearity="relu", *, convention="seeds", layout="in_out", role=None, rng=None, seed=None
):
    """kaiming_uniform_ for ReLU (Keras' he_uniform, with gradfuse's fans)."""
    return kaiming_uniform_(
        tensor, 0.0, mode, nonlinearity, convention=convention, layout=layout, role=role, rng=rng, seed=seed
    )


def he_normal_(
    tensor, mode="fan_in", nonlinearity="relu", *, convention="seeds", layout="in_out", role=None, rng=None, seed=None
):
    """kaiming_normal_ for ReLU (Keras' he_normal, with gradfuse's fans; a plain normal, where Keras truncates)."""
    return kaiming_normal_(
        tensor, 0.0, mode, nonlinearity, convention=convention, layout=layout, role=role, rng=rng, seed=seed
    )


# ---- names -----------------------------------------------------------------------------------------------------

INITIALIZERS: dict = {
    "zeros": zeros_,
    "ones": ones_,
    "constant": constant_,
    "uniform": uniform_,
    "normal": normal_,
    "xavier_uniform": xavier_uniform_,
    "glorot_uniform": glorot_uniform_,
    "xavier_normal": xavier_normal_,
    "glorot_normal": glorot_normal_,
    "kaiming_uniform": kaiming_uniform_,
    "he_uniform": he_uniform_,
    "kaiming_normal": kaiming_normal_,
    "he_normal": he_normal_,
    "lecun_uniform": lecun_uniform_,
    "lecun_normal": lecun_normal_,
}


def get_initializer(name, **kwargs):
    """The initializer called `name` ("he_normal", "glorot_uniform", "lecun_normal", "zeros", ...;
    case and a trailing "_" do not matter; see INITIALIZERS), with kwargs bound:
    get_initializer("normal", std=0.01). A callable is returned as it is (kwargs bound, if any).
    Every initializer is called as init(array_or_parameter, rng=..., seed=..., role=...).
    """
    if callable(name):
        return functools.partial(name, **kwargs) if kwargs else name
    if not isinstance(name, str):
        raise TypeError(f"get_initializer: expected a name or a callable, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_").rstrip("_")
    fn = INITIALIZERS.get(key)
    if fn is None:
        raise ValueError(f"get_initializer: unknown initializer {name!r}; known: {', '.join(sorted(INITIALIZERS))}")
    return functools.partial(fn, **kwargs) if kwargs else fn
