"""Element-wise activation kernels: torch parity (values and autograd gradients), C++ vs the NumPy
twin, every ISA path, in-place use, odd sizes, special values, determinism, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

import gradfuse as gf
from conftest import assert_refused_alike

pytestmark = pytest.mark.kernels

ACTIVATIONS = ["none", "relu", "leaky_relu", "tanh", "sigmoid", "gelu", "gelu_tanh"]
SLOPE = 0.05
# float32 is compared with torch in float64 (the truth): Eigen's float32 tanh/erf are a few ulp, and
# gelu_tanh's gradient loses ~1e-6 to cancellation in 1 + tanh(.) near x = -3 (torch's does too).
TOL = {np.float64: dict(rtol=1e-12, atol=1e-14), np.float32: dict(rtol=1e-5, atol=5e-6)}


def torch_act(torch, name):
    f = torch.nn.functional
    return {
        "none": lambda t: t * 1,
        "relu": torch.relu,
        "leaky_relu": lambda t: f.leaky_relu(t, SLOPE),
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        "gelu": f.gelu,
        "gelu_tanh": lambda t: f.gelu(t, approximate="tanh"),
    }[name]


def saved(name, x, y):
    """What the backward reads: activation.hpp's contract."""
    return {"tanh": dict(y=y), "sigmoid": dict(y=y), "gelu": dict(x=x), "gelu_tanh": dict(x=x), "none": {}}.get(
        name, dict(x=x)
    )


def data(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 3).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_matches_torch_forward_and_gradient(torch, backend, isa, name, dtype):
    x = data((7, 65), dtype)
    dy = data(x.shape, dtype, seed=1)
    y = np.empty_like(x)
    dx = np.empty_like(x)
    gf.ops.activation_forward(x, y, activation=name, negative_slope=SLOPE)
    gf.ops.activation_backward(dy, dx, activation=name, negative_slope=SLOPE, **saved(name, x, y))
    tx = torch.tensor(x.astype(np.float64), requires_grad=True)
    ty = torch_act(torch, name)(tx)
    ty.backward(torch.tensor(dy.astype(np.float64)))
    np.testing.assert_allclose(y, ty.detach().numpy(), **TOL[dtype])
    np.testing.assert_allclose(dx, tx.grad.numpy(), **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("n", [0, 1, 15, 63, 64, 65, 1000])
def test_cpp_matches_twin_at_odd_sizes(isa, name, dtype, n):
    """Sizes around the 64-element chunks and the vector width: tails go through the same code."""
    x = data(n, dtype)
    dy = data(n, dtype, seed=2)
    out = {}
    for be in ("cpp", "numpy"):
        y, dx = np.empty_like(x), np.empty_like(x)
        with gf.use_backend(be):
            gf.ops.activation_forward(x, y, activation=name, negative_slope=SLOPE)
            gf.ops.activation_backward(dy, dx, activation=name, negative_slope=SLOPE, **saved(name, x, y))
        out[be] = (y, dx)
    for a, b in zip(out["cpp"], out["numpy"]):
        np.testing.assert_allclose(a, b, rtol=TOL[dtype]["rtol"], atol=2 * TOL[dtype]["atol"])


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_in_place(backend, name):
    x = data((5, 33), np.float64)
    dy = data(x.shape, np.float64, seed=3)
    y_ref, dx_ref = np.empty_like(x), np.empty_like(x)
    gf.ops.activation_forward(x, y_ref, activation=name)
    gf.ops.activation_backward(dy, dx_ref, activation=name, **saved(name, x, y_ref))
    y = x.copy()
    gf.ops.activation_forward(y, y, activation=name)
    np.testing.assert_array_equal(y, y_ref)
    g = dy.copy()
    gf.ops.activation_backward(g, g, activation=name, **saved(name, x, y_ref))
    np.testing.assert_array_equal(g, dx_ref)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_thread_count_and_position_do_not_change_results(isa, threads, name):
    """Bitwise: 1 vs 2 threads, and an element computed at another offset (another chunk position)."""
    x = data(100_003, np.float32)
    results = []
    for n_threads in (1, 2):
        threads(n_threads)
        y = np.empty_like(x)
        gf.ops.activation_forward(x, y, activation=name)
        results.append(y)
    np.testing.assert_array_equal(results[0], results[1])
    shifted = np.empty(x.size - 37, np.float32)
    gf.ops.activation_forward(np.ascontiguousarray(x[37:]), shifted, activation=name)
    np.testing.assert_array_equal(shifted, results[0][37:])


SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e-30, 20.0, -20.0, 100.0, -100.0, 1e30, -1e30])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_special_values_like_torch(torch, backend, isa, name, dtype):
    x = SPECIAL.astype(dtype)
    y = np.empty_like(x)
    gf.ops.activation_forward(x, y, activation=name, negative_slope=SLOPE)
    expected = torch_act(torch, name)(torch.tensor(x)).numpy()
    if name == "gelu" and dtype == np.float32:
        expected[1] = np.inf  # torch's float32 gelu(inf) is NaN; the limit (and torch's float64) is inf
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-30, equal_nan=True)


def test_relu_keeps_nan():
    x = np.array([np.nan, -1.0, 2.0], np.float32)
    y = np.empty_like(x)
    gf.ops.activation_forward(x, y, activation="relu")
    assert np.isnan(y[0]) and y[1] == 0 and y[2] == 2


# ---- bad inputs ----------------------------------------------------------------------------------


def _ok():
    x = data((4, 5), np.float32)
    return x, np.empty_like(x)


BAD_FORWARD = [
    ("unknown activation", lambda x, y: dict(x=x, y=y, activation="swish"), ValueError, "unknown activation"),
    (
        "non-finite slope",
        lambda x, y: dict(x=x, y=y, activation="leaky_relu", negative_slope=np.nan),
        ValueError,
        "negative_slope",
    ),
    ("int input", lambda x, y: dict(x=x.astype(np.int32), y=y, activation="relu"), TypeError, "x has dtype int32"),
    (
        "dtype mismatch",
        lambda x, y: dict(x=x, y=y.astype(np.float64), activation="relu"),
        TypeError,
        "y has dtype float64",
    ),
    ("big-endian", lambda x, y: dict(x=x.astype(">f4"), y=y, activation="relu"), TypeError, "big-endian"),
    (
        "non-contiguous",
        lambda x, y: dict(x=np.asfortranarray(x), y=y, activation="relu"),
        ValueError,
        "not C-contiguous",
    ),
    (
        "read-only output",
        lambda x, y: dict(x=x, y=np.broadcast_to(y[:1], y.shape), activation="relu"),
        ValueError,
        "y is",
    ),
    ("shape mismatch", lambda x, y: dict(x=x, y=y[:3], activation="relu"), ValueError, "y has shape"),
    (
        "partial overlap",
        lambda x, y: dict(x=x.reshape(-1)[:16], y=x.reshape(-1)[4:20], activation="relu"),
        ValueError,
        "shares memory",
    ),
    ("not an array", lambda x, y: dict(x=x.tolist(), y=y, activation="relu"), TypeError, "numpy.ndarray"),
]


@pytest.mark.parametrize("case", BAD_FORWARD, ids=[c[0] for c in BAD_FORWARD])
def test_forward_bad_inputs_change_nothing(case):
    _, make, exc, match = case

    def call():
        x, y = _ok()
        y[...] = 7
        return (), make(x, y)

    assert_refused_alike("activation_forward", call, exc, match)


BAD_BACKWARD = [
    ("tanh without y", dict(activation="tanh"), "needs y"),
    ("gelu without x", dict(activation="gelu"), "needs x"),
    ("relu without x or y", dict(activation="relu"), "x \\(the forward input\\) or y"),
    (
        "leaky with y and a negative slope",
        dict(activation="leaky_relu", negative_slope=-0.1, y=True),
        "negative_slope < 0",
    ),
]


@pytest.mark.parametrize("case", BAD_BACKWARD, ids=[c[0] for c in BAD_BACKWARD])
def test_backward_refuses_missing_saved_tensors(case):
    _, kwargs, match = case

    def call():
        dy, dx = _ok()
        kw = dict(kwargs)
        if kw.pop("y", False):
            kw["y"] = np.ones_like(dy)
        dx[...] = 3
        return (dy, dx), kw

    assert_refused_alike("activation_backward", call, ValueError, match)


def test_backward_shape_mismatch():
    def call():
        dy, dx = _ok()
        return (dy, dx), dict(activation="tanh", y=np.ones((2, 2), np.float32))

    assert_refused_alike("activation_backward", call, ValueError, "y has shape")
