"""gf.nn.init: the initializers' distributions (bounds and standard deviations of large matrices against
the formulas, within sampling error), the seeds' initialization table and gains, fans for gradfuse's
(in, out) layout (and torch's), reproducibility by seed, the symmetry warning for constant weights
(and none for biases), get_initializer's names, and bad arguments.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import gradfuse as gf
from gradfuse.nn import init

SHAPE = (1200, 800)  # (in_features, out_features): 960,000 samples
FAN_IN, FAN_OUT = SHAPE
N = SHAPE[0] * SHAPE[1]
DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["float32", "float64"]
SQRT2 = math.sqrt(2.0)


def assert_uniform(w, low, high):
    """Every value in [low, high], the extremes reached, mean and std those of U[low, high] within six
    standard errors."""
    x = w.astype(np.float64).ravel()
    slack = 1e-6 * max(abs(low), abs(high))  # float32 rounding of the bounds
    assert x.min() >= low - slack and x.max() <= high + slack
    width = high - low
    assert x.min() < low + 1e-4 * width and x.max() > high - 1e-4 * width
    std = width / math.sqrt(12)
    assert abs(x.mean() - (low + high) / 2) < 6 * std / math.sqrt(x.size)
    se = std * math.sqrt(0.8 / (4 * x.size))  # kurtosis of a uniform: 1.8
    assert abs(x.std() - std) < 6 * se, (x.std(), std)


def assert_normal(w, mean, std):
    """Mean and std within six standard errors, and the share within one std that of a normal."""
    x = w.astype(np.float64).ravel()
    assert abs(x.mean() - mean) < 6 * std / math.sqrt(x.size)
    assert abs(x.std() - std) < 6 * std / math.sqrt(2 * x.size), (x.std(), std)
    inside = np.mean(np.abs(x - mean) < std)
    assert abs(inside - 0.682689) < 6 * math.sqrt(0.6827 * 0.3173 / x.size)


# ---- the seeds' table: Glorot's bounds times the gain of the activation --------------------------------

# activation -> (uniform r, normal sigma), as the table prints them (n_inputs = fan_in, n_outputs = fan_out)
TABLE = {
    "logistic": (math.sqrt(6 / (FAN_IN + FAN_OUT)), math.sqrt(2 / (FAN_IN + FAN_OUT))),
    "tanh": (4 * math.sqrt(6 / (FAN_IN + FAN_OUT)), 4 * math.sqrt(2 / (FAN_IN + FAN_OUT))),
    "relu": (SQRT2 * math.sqrt(6 / (FAN_IN + FAN_OUT)), SQRT2 * math.sqrt(2 / (FAN_IN + FAN_OUT))),
}


def test_seed_gains():
    assert init.calculate_gain("logistic") == 1.0
    assert init.calculate_gain("sigmoid") == 1.0
    assert init.calculate_gain("tanh") == 4.0
    assert init.calculate_gain("relu") == SQRT2
    assert init.calculate_gain("tanh", convention="torch") == 5 / 3
    assert init.calculate_gain("gelu") == SQRT2  # "ReLU (and its variants)"


@pytest.mark.parametrize("activation", list(TABLE))
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_xavier_with_the_seeds_gains_reproduces_the_table(activation, dtype):
    r, sigma = TABLE[activation]
    w = np.empty(SHAPE, dtype)
    init.xavier_uniform_(w, gain=init.calculate_gain(activation), seed=1)
    assert_uniform(w, -r, r)
    init.xavier_uniform_(w, gain=activation, seed=1)  # the name stands for its gain
    assert_uniform(w, -r, r)
    init.xavier_normal_(w, gain=activation, seed=2)
    assert_normal(w, 0.0, sigma)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize(
    "nonlinearity, a, gain",
    [
        ("relu", 0.0, SQRT2),
        ("leaky_relu", 0.0, SQRT2),
        ("leaky_relu", 0.2, math.sqrt(2 / 1.04)),
        ("tanh", 0.0, 4.0),
        ("linear", 0.0, 1.0),
    ],
)
def test_kaiming(dtype, mode, nonlinearity, a, gain):
    fan = FAN_IN if mode == "fan_in" else FAN_OUT  # (in, out): fan_in = shape[0]
    w = np.empty(SHAPE, dtype)
    init.kaiming_normal_(w, a, mode, nonlinearity, seed=3)
    assert_normal(w, 0.0, gain / math.sqrt(fan))
    init.kaiming_uniform_(w, a=a, mode=mode, nonlinearity=nonlinearity, seed=4)
    b = gain * math.sqrt(3 / fan)
    assert_uniform(w, -b, b)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_he_lecun_uniform_normal(dtype):
    w = np.empty(SHAPE, dtype)
    init.he_normal_(w, seed=5)
    assert_normal(w, 0.0, SQRT2 / math.sqrt(FAN_IN))
    init.he_uniform_(w, seed=6)
    assert_uniform(w, -math.sqrt(6 / FAN_IN), math.sqrt(6 / FAN_IN))
    init.lecun_uniform_(w, seed=7)  # the seeds' U(-1/sqrt(m), 1/sqrt(m)) for m inputs
    assert_uniform(w, -1 / math.sqrt(FAN_IN), 1 / math.sqrt(FAN_IN))
    init.lecun_normal_(w, seed=8)  # the seeds' randn(fan_in, fan_out) / sqrt(fan_in)
    assert_normal(w, 0.0, 1 / math.sqrt(FAN_IN))
    init.uniform_(w, 0.3, seed=9)
    assert_uniform(w, -0.3, 0.3)
    init.uniform_(w, -0.1, 0.5, seed=10)  # torch's (a, b) form
    assert_uniform(w, -0.1, 0.5)
    init.normal_(w, 0.02, seed=11)
    assert_normal(w, 0.0, 0.02)
    init.normal_(w, std=2.0, mean=-1.0, seed=12)
    assert_normal(w, -1.0, 2.0)


def test_statistics_match_torch_for_the_transposed_layout(torch):
    """Our (in, out) weight gets the distribution torch gives its (out, in) weight."""
    ours = np.empty(SHAPE, np.float32)
    theirs = torch.empty(SHAPE[::-1])
    assert torch.nn.init._calculate_fan_in_and_fan_out(theirs) == init.calculate_fans(ours)
    for mode in ("fan_in", "fan_out"):
        torch.manual_seed(0)
        torch.nn.init.kaiming_normal_(theirs, mode=mode, nonlinearity="relu")
        init.kaiming_normal_(ours, mode=mode, nonlinearity="relu", seed=0)
        np.testing.assert_allclose(ours.std(), float(theirs.std()), rtol=6 / math.sqrt(N))
    torch.nn.init.xavier_uniform_(theirs, gain=torch.nn.init.calculate_gain("tanh"))
    init.xavier_uniform_(ours, gain=init.calculate_gain("tanh", convention="torch"), seed=0)
    np.testing.assert_allclose(np.abs(ours).max(), float(theirs.abs().max()), rtol=1e-4)


def test_torch_convention_gains_equal_torch(torch):
    for name in ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose2d", "sigmoid", "tanh", "relu", "selu"):
        assert init.calculate_gain(name, convention="torch") == pytest.approx(torch.nn.init.calculate_gain(name))
    for slope in (None, 0.2, 1):
        assert init.calculate_gain("leaky_relu", slope, convention="torch") == pytest.approx(
            torch.nn.init.calculate_gain("leaky_relu", slope)
        )
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        init.calculate_gain("gelu", convention="torch")
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        init.calculate_gain("softmax")
    with pytest.raises(ValueError, match="not a valid number"):
        init.calculate_gain("leaky_relu", "x")
    with pytest.raises(ValueError, match="convention"):
        init.calculate_gain("tanh", convention="keras")


# ---- fans --------------------------------------------------------------------------------------------------


def test_fans_for_the_in_out_layout():
    assert init.calculate_fans((784, 256)) == (784, 256)  # Dense: (in_features, out_features)
    assert init.calculate_fans(np.empty((784, 256))) == (784, 256)
    assert init.calculate_fans(gf.nn.Parameter(np.empty((10, 3)))) == (10, 3)
    assert init.calculate_fans((256, 784), layout="out_in") == (784, 256)  # torch's (out, in)
    assert init.calculate_fans((3, 3, 16, 32)) == (144, 288)  # (*kernel, in, out)
    assert init.calculate_fans((32, 16, 3, 3), layout="out_in") == (144, 288)  # torch's conv weight
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.calculate_fans((10,))
    with pytest.raises(ValueError, match="layout"):
        init.calculate_fans((3, 4), layout="io")
    w = np.empty((300, 30))
    init.lecun_normal_(w, layout="out_in", seed=0)  # fan_in is then shape[1]
    assert w.std() == pytest.approx(1 / math.sqrt(30), rel=0.05)


# ---- reproducibility ---------------------------------------------------------------------------------------------

RANDOM = [
    "uniform",
    "normal",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "he_normal",
    "he_uniform",
    "glorot_uniform",
    "glorot_normal",
    "lecun_uniform",
    "lecun_normal",
]


def _init(name):
    return init.get_initializer(name, **({"a": 0.5} if name == "uniform" else {}))


@pytest.mark.parametrize("name", RANDOM)
def test_same_seed_same_values(name):
    f = _init(name)
    a, b, c = (np.empty((40, 30), np.float32) for _ in range(3))
    f(a, seed=123)
    f(b, seed=123)
    f(c, seed=124)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    d = np.empty((40, 30), np.float64)  # drawn in float64: the float32 values are these, rounded
    f(d, seed=123)
    np.testing.assert_array_equal(a, d.astype(np.float32))
    rng = np.random.default_rng(123)
    e, g = np.empty((40, 30), np.float32), np.empty((40, 30), np.float32)
    f(e, rng=rng)  # a Generator is used and advanced
    f(g, rng=rng)
    np.testing.assert_array_equal(e, a)
    assert not np.array_equal(g, a)


def test_manual_seed_makes_unseeded_calls_reproducible():
    a, b = np.empty((20, 10)), np.empty((20, 10))
    init.manual_seed(7)
    init.xavier_normal_(a)
    init.manual_seed(7)
    init.xavier_normal_(b)
    np.testing.assert_array_equal(a, b)


def test_rng_arguments_are_checked():
    w = np.zeros((4, 3))
    with pytest.raises(TypeError, match="rng or seed, not both"):
        init.he_normal_(w, rng=np.random.default_rng(0), seed=0)
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        init.he_normal_(w, rng=np.random.RandomState(0))
    assert not w.any()


# ---- in place, Parameters, arenas ----------------------------------------------------------------------------


def test_in_place_on_arrays_parameters_and_arena_views():
    w = np.zeros((5, 4), np.float32)
    assert init.kaiming_uniform_(w, seed=0) is w and w.any()
    p = gf.nn.Parameter(np.zeros((6, 3)), name="w")
    data = p.data
    assert init.xavier_uniform_(p, seed=0) is p and p.data is data and p.data.any()
    arena = gf.nn.ParameterArena([(8, 4), (4,)])
    weight, bias = arena.parameters
    init.he_normal_(weight, seed=1)
    init.constant_(bias, 0.1)  # the seeds: 0.1 before a ReLU
    assert np.shares_memory(weight.data, arena.data)
    np.testing.assert_array_equal(arena.data[:32], weight.data.ravel())
    np.testing.assert_array_equal(arena.data[32:], np.float32(0.1))
    v = np.zeros((10, 10))[:, ::2]  # any layout: written element by element
    init.normal_(v, 1.0, seed=0)
    assert v.all()


def test_zero_element_arrays_are_a_no_op():
    with pytest.warns(UserWarning, match="zero-element"):
        init.xavier_uniform_(np.empty((0, 5)), seed=0)


# ---- constant weights warn; biases do not ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda t, **k: init.zeros_(t, **k),
        lambda t, **k: init.ones_(t, **k),
        lambda t, **k: init.constant_(t, 0.5, **k),
        lambda t, **k: init.get_initializer("zeros")(t, **k),
    ],
    ids=["zeros", "ones", "constant", "get_initializer"],
)
def test_constant_weight_warns_bias_does_not(call):
    w = gf.nn.Parameter(np.ones((30, 20)), name="fc1.weight")
    with pytest.warns(
        init.SymmetryWarning, match=r"'fc1.weight' \(shape \(30, 20\)\).*never breaks the symmetry"
    ) as rec:
        call(w)
    assert issubclass(init.SymmetryWarning, UserWarning)
    assert rec[0].filename == __file__  # points at the caller
    with pytest.warns(init.SymmetryWarning, match=r"weight of shape \(3, 2\)"):
        call(np.ones((3, 2)))  # an unnamed matrix is a weight
    with pytest.warns(init.SymmetryWarning):
        call(np.ones(3), role="weight")  # the caller says so
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        call(gf.nn.Parameter(np.ones(20), name="fc1.bias"))
        call(gf.nn.Parameter(np.ones((1, 20)), name="conv.bias"))  # the name says bias
        call(np.ones((3, 2)), role="bias")
        call(np.ones(20))  # a vector: a bias, or a per-feature scale
        call(gf.nn.Parameter(np.ones(20), name="bn.weight"))  # batch norm's weight = 1 is the standard
    assert np.all(w.data == w.data.flat[0])  # written all the same


def test_constant_values():
    a = np.ones(5)
    init.zeros_(a)
    assert not a.any()
    init.ones_(a)
    assert (a == 1).all()
    init.constant_(a, 0.1, role="bias")
    assert (a == 0.1).all()


# ---- get_initializer --------------------------------------------------------------------------------


def test_get_initializer_names():
    assert init.get_initializer("he_normal") is init.he_normal_
    assert init.get_initializer("kaiming_normal") is init.kaiming_normal_
    assert init.get_initializer("Glorot_Uniform") is init.xavier_uniform_
    assert init.get_initializer("xavier_normal_") is init.xavier_normal_
    assert init.get_initializer("lecun-normal") is init.lecun_normal_
    assert init.get_initializer("zeros") is init.zeros_
    for name, fn in init.INITIALIZERS.items():
        assert callable(fn) and init.get_initializer(name) is fn
    f = init.get_initializer("normal", std=0.01)
    w = np.empty((500, 400))
    f(w, seed=0)
    assert w.std() == pytest.approx(0.01, rel=0.01)
    custom = lambda t, **k: t  # noqa: E731
    assert init.get_initializer(custom) is custom
    with pytest.raises(ValueError, match="unknown initializer 'he'.*he_normal"):
        init.get_initializer("he")
    with pytest.raises(TypeError):
        init.get_initializer(3)


def test_he_normal_name_is_kaiming_for_relu():
    a, b = np.empty((50, 40)), np.empty((50, 40))
    init.get_initializer("he_normal")(a, seed=3)
    init.kaiming_normal_(b, nonlinearity="relu", seed=3)
    np.testing.assert_array_equal(a, b)


# ---- bad arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda w: init.xavier_uniform_(np.zeros(5), seed=0), ValueError, "xavier_uniform_: Fan in and fan out"),
        (lambda w: init.kaiming_normal_(w, mode="fan_avg", seed=0), ValueError, "Mode fan_avg not supported"),
        (lambda w: init.uniform_(w, -1.0, seed=0), ValueError, "a must be >= 0"),
        (lambda w: init.uniform_(w, 1.0, 0.0, seed=0), ValueError, "a <= b"),
        (lambda w: init.normal_(w, -1.0, seed=0), ValueError, "std must be a finite number >= 0"),
        (lambda w: init.normal_(w, 0.0, 0.02, seed=0), TypeError, "positional"),  # torch's (mean, std) order
        (lambda w: init.he_normal_(np.zeros((4, 3), np.int64), seed=0), TypeError, "expected a floating-point dtype"),
        (lambda w: init.he_normal_(_ro(w), seed=0), ValueError, "read-only"),
        (lambda w: init.zeros_(w, role="kernel"), ValueError, "role must be"),
        (
            lambda w: init.he_normal_([[1.0, 2.0]], seed=0),
            TypeError,
            "expected a numpy.ndarray or a gradfuse Parameter",
        ),
        (lambda w: init.xavier_uniform_(w, gain=None, seed=0), TypeError, "gain must be a number"),
    ],
    ids=[
        "1-D-fans",
        "mode",
        "uniform-a",
        "uniform-range",
        "normal-std",
        "normal-torch-order",
        "int-dtype",
        "read-only",
        "role",
        "not-an-array",
        "gain",
    ],
)
def test_bad_arguments_raise_and_write_nothing(call, exc, match):
    w = np.zeros((4, 3))
    with pytest.raises(exc, match=match):
        call(w)
    assert not w.any()


def _ro(w):
    v = w.view()
    v.flags.writeable = False
    return v
