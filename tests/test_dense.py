"""matmul and the dense layer: torch parity (forward values and autograd gradients) for every
activation, both GEMM backends (OpenBLAS, Eigen), C++ vs the NumPy twin, every ISA path, odd and
empty shapes, accumulation, determinism across thread counts, bad inputs."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import gradfuse as gf
from conftest import HAS_CORE, assert_refused_alike
from gradfuse._ext import _core

pytestmark = pytest.mark.kernels

ACTIVATIONS = ["none", "relu", "leaky_relu", "tanh", "sigmoid", "gelu", "gelu_tanh"]
SLOPE = 0.05
# float32 results are compared with torch in float64 (the truth); products of 65..129 terms.
TOL = {np.float64: dict(rtol=1e-11, atol=1e-12), np.float32: dict(rtol=1e-4, atol=2e-5)}
GEMMS = (["openblas"] if HAS_CORE and _core._get_gemm() == "openblas" else []) + (["eigen"] if HAS_CORE else [])


@pytest.fixture(params=GEMMS or [None])
def gemm(request):
    if request.param is None:
        pytest.skip("the C++ extension is not available")
    before = _core._get_gemm()
    _core._set_gemm(request.param)
    try:
        yield request.param
    finally:
        _core._set_gemm(before)


def torch_act(torch, name):
    f = torch.nn.functional
    return {
        "none": lambda t: t,
        "relu": torch.relu,
        "leaky_relu": lambda t: f.leaky_relu(t, SLOPE),
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        "gelu": f.gelu,
        "gelu_tanh": lambda t: f.gelu(t, approximate="tanh"),
    }[name]


def make(n, n_in, n_out, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, n_in)).astype(dtype)
    w = (rng.standard_normal((n_in, n_out)) / np.sqrt(max(n_in, 1))).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    dy = rng.standard_normal((n, n_out)).astype(dtype)
    return x, w, b, dy


def run_dense(x, w, b, dy, act, **kw):
    n, n_out = x.shape[0], w.shape[1]
    y, z = np.empty((n, n_out), x.dtype), np.empty((n, n_out), x.dtype)
    gf.ops.dense_forward(x, w, b, y, activation=act, negative_slope=SLOPE, z=z)
    dx, dw = np.empty_like(x), np.empty_like(w)
    db = np.empty(n_out, x.dtype)
    gf.ops.dense_backward(dy, x, w, dx, dw, db, activation=act, negative_slope=SLOPE, y=y, z=z, **kw)
    return y, z, dx, dw, db


def torch_dense(torch, x, w, b, dy, act):
    tx, tw, tb = (torch.tensor(a.astype(np.float64), requires_grad=True) for a in (x, w, b))
    tz = tx @ tw + tb
    ty = torch_act(torch, act)(tz)
    ty.backward(torch.tensor(dy.astype(np.float64)))
    return [t.detach().numpy() for t in (ty, tz, tx.grad, tw.grad, tb.grad)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_matches_torch(torch, backend, gemm, act, dtype):
    x, w, b, dy = make(37, 65, 129, dtype)
    ours = run_dense(x, w, b, dy, act)
    for got, want, name in zip(ours, torch_dense(torch, x, w, b, dy, act), ("y", "z", "dx", "dweight", "dbias")):
        np.testing.assert_allclose(got, want, err_msg=name, **TOL[dtype])


@pytest.mark.parametrize("act", ["relu", "gelu", "tanh"])
def test_every_isa_path(torch, isa, gemm, act):
    x, w, b, dy = make(20, 33, 70, np.float32, seed=3)
    ours = run_dense(x, w, b, dy, act)
    for got, want in zip(ours, torch_dense(torch, x, w, b, dy, act)):
        np.testing.assert_allclose(got, want, **TOL[np.float32])


@pytest.mark.parametrize(
    "shape", [(1, 5, 3), (4, 1, 7), (6, 9, 1), (0, 5, 3), (3, 0, 4), (1, 1, 1)], ids=lambda s: "x".join(map(str, s))
)
def test_odd_and_empty_shapes(torch, backend, shape):
    """N = 1, in = 1, out = 1, an empty batch (no rows) and in_features = 0 (y = act(bias))."""
    x, w, b, dy = make(*shape, np.float64, seed=4)
    ours = run_dense(x, w, b, dy, "gelu")
    want = torch_dense(torch, x, w, b, dy, "gelu")
    for got, ref in zip(ours, want):
        np.testing.assert_allclose(got, ref, **TOL[np.float64])


def test_no_bias_and_partial_outputs(backend):
    x, w, _, dy = make(9, 12, 5, np.float64, seed=5)
    y = np.empty((9, 5))
    gf.ops.dense_forward(x, w, None, y, activation="relu")
    np.testing.assert_allclose(y, np.maximum(x @ w, 0), rtol=1e-13)
    dw = np.empty_like(w)
    gf.ops.dense_backward(dy, x, w, None, dw, None, activation="relu", y=y)  # only dweight
    np.testing.assert_allclose(dw, x.T @ (dy * (y > 0)), rtol=1e-12, atol=1e-13)


def test_accumulate_adds_into_dweight_and_dbias(backend):
    x, w, b, dy = make(8, 6, 4, np.float64, seed=6)
    dw, db = np.full_like(w, 1.5), np.full(4, -2.0)
    gf.ops.dense_backward(dy, x, w, None, dw, db, accumulate=True)
    np.testing.assert_allclose(dw, 1.5 + x.T @ dy, rtol=1e-12)
    np.testing.assert_allclose(db, -2.0 + dy.sum(0), rtol=1e-12)


def test_dz_scratch_is_the_activation_gradient(backend):
    x, w, b, dy = make(5, 7, 6, np.float64, seed=7)
    y = np.empty((5, 6))
    gf.ops.dense_forward(x, w, b, y, activation="tanh")
    dz = np.empty_like(y)
    dx = np.empty_like(x)
    gf.ops.dense_backward(dy, x, w, dx, None, None, activation="tanh", y=y, dz=dz)
    np.testing.assert_allclose(dz, dy * (1 - y * y), rtol=1e-13)
    np.testing.assert_allclose(dx, dz @ w.T, rtol=1e-12)


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("accumulate", [False, True])
def test_matmul(backend, gemm, trans_a, trans_b, accumulate):
    rng = np.random.default_rng(8)
    m, k, n = 19, 33, 47
    a = rng.standard_normal((k, m) if trans_a else (m, k))
    b = rng.standard_normal((n, k) if trans_b else (k, n))
    c = rng.standard_normal((m, n))
    expected = (c if accumulate else 0) + (a.T if trans_a else a) @ (b.T if trans_b else b)
    gf.ops.matmul(a, b, c, trans_a=trans_a, trans_b=trans_b, accumulate=accumulate)
    np.testing.assert_allclose(c, expected, rtol=1e-12, atol=1e-12)


# Shapes big enough that OpenBLAS tiles split across threads (every tile >= 4e6 multiply-adds).
SPLIT_SHAPES = [(256, 512, 160), (64, 1024, 300)]


@pytest.mark.parametrize("shape", SPLIT_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_deterministic_across_thread_counts(gemm, threads, shape):
    x, w, b, dy = make(*shape, np.float32, seed=9)
    results = []
    for n_threads in (1, 2):
        threads(n_threads)
        results.append(run_dense(x, w, b, dy, "gelu"))
    for a, c in zip(*results):
        np.testing.assert_array_equal(a, c)


@pytest.mark.skipif(not HAS_CORE, reason="the C++ extension is not available")
@pytest.mark.parametrize("gemm_name", GEMMS)
def test_deterministic_for_1_to_4_threads_in_fresh_processes(gemm_name):
    """More threads than cores is allowed here: the tiles (and so the sums) differ, the bits must not."""
    code = f"""
import hashlib, numpy as np, gradfuse as gf
from gradfuse._ext import _core
_core._set_gemm({gemm_name!r})
rng = np.random.default_rng(0)
h = hashlib.sha256()
for (n, i, o) in {SPLIT_SHAPES + [(300, 700, 90)]!r}:
    x = rng.standard_normal((n, i)).astype(np.float32); w = rng.standard_normal((i, o)).astype(np.float32)
    y = np.empty((n, o), np.float32); gf.ops.dense_forward(x, w, None, y, activation="relu")
    dx = np.empty_like(x); dw = np.empty_like(w); db = np.empty(o, np.float32)
    gf.ops.dense_backward(y, x, w, dx, dw, db, activation="relu", y=y)
    for a in (y, dx, dw, db): h.update(a.tobytes())
print(gf.get_num_threads(), h.hexdigest())
"""
    digests = set()
    for n_threads in (1, 2, 3, 4):
        env = dict(os.environ, OMP_NUM_THREADS=str(n_threads), PYTHONPATH=os.pathsep.join(sys.path))
        out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
        got_threads, digest = out.stdout.split()
        assert int(got_threads) == n_threads
        digests.add(digest)
    assert len(digests) == 1


def test_cpp_matches_twin(gemm):
    x, w, b, dy = make(31, 47, 53, np.float64, seed=10)
    cpp = run_dense(x, w, b, dy, "leaky_relu")
    with gf.use_backend("numpy"):
        ref = run_dense(x, w, b, dy, "leaky_relu")
    for a, c in zip(cpp, ref):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-13)


# ---- bad inputs ----------------------------------------------------------------------------------


def _forward_args():
    x, w, b, _ = make(4, 3, 5, np.float32, seed=11)
    return dict(x=x, weight=w, bias=b, y=np.zeros((4, 5), np.float32))


BAD_FORWARD = [
    ("x is 1-D", lambda a: a.update(x=a["x"][0]), ValueError, r"x must be 2-D \(N, IN\)"),
    (
        "weight rows != in_features",
        lambda a: a.update(weight=np.zeros((2, 5), np.float32)),
        ValueError,
        r"weight has shape \(2, 5\) but must be \(IN, OUT\) = \(3, 5\) \(IN from x\)",
    ),
    ("bias length", lambda a: a.update(bias=np.zeros(4, np.float32)), ValueError, "bias has shape"),
    ("y shape", lambda a: a.update(y=np.zeros((4, 4), np.float32)), ValueError, "y has shape"),
    ("y dtype", lambda a: a.update(y=np.zeros((4, 5))), TypeError, "y has dtype float64"),
    ("x int", lambda a: a.update(x=a["x"].astype(np.int64)), TypeError, "x has dtype int64"),
    ("weight Fortran", lambda a: a.update(weight=np.asfortranarray(a["weight"])), ValueError, "not C-contiguous"),
    ("y read-only", lambda a: a["y"].setflags(write=False), ValueError, "y is read-only"),
    (
        "y aliases x",
        lambda a: (
            a.update(x=np.zeros((4, 5), np.float32), weight=np.zeros((5, 5), np.float32), y=None) or a.update(y=a["x"])
        ),
        ValueError,
        "shares memory",
    ),
    ("unknown activation", lambda a: a.update(activation="softplus"), ValueError, "unknown activation"),
]


@pytest.mark.parametrize("case", BAD_FORWARD, ids=[c[0] for c in BAD_FORWARD])
def test_forward_bad_inputs_change_nothing(case):
    _, mutate, exc, match = case

    def call():
        args = _forward_args()
        mutate(args)
        activation = args.pop("activation", "relu")
        return (args["x"], args["weight"], args["bias"], args["y"]), dict(activation=activation)

    assert_refused_alike("dense_forward", call, exc, match)


BAD_BACKWARD = [
    ("gelu without z", dict(activation="gelu"), ValueError, "needs z"),
    ("tanh without y", dict(activation="tanh"), ValueError, "needs y"),
    ("dx shape", dict(dx=np.zeros((4, 4), np.float32)), ValueError, "dx has shape"),
    ("dweight dtype", dict(dweight=np.zeros((3, 5))), TypeError, "dweight has dtype float64"),
    ("dbias read-only", dict(dbias=np.broadcast_to(np.zeros(1, np.float32), (5,))), ValueError, "dbias is"),
    ("dx aliases dy", "alias", ValueError, "shares memory"),
]


@pytest.mark.parametrize("case", BAD_BACKWARD, ids=[c[0] for c in BAD_BACKWARD])
def test_backward_bad_inputs_change_nothing(case):
    _, change, exc, match = case

    def call():
        x, w, b, dy = make(4, 3, 5, np.float32, seed=12)
        kwargs = dict(
            dx=np.full_like(x, 9),
            dweight=np.full_like(w, 9),
            dbias=np.full_like(b, 9),
            activation="relu",
            y=np.ones_like(dy),
        )
        if change == "alias":
            big = np.zeros((4, 5), np.float32)
            x = np.zeros((4, 5), np.float32)
            w = np.zeros((5, 5), np.float32)
            kwargs.update(dx=big, dweight=np.zeros_like(w), dbias=np.zeros(5, np.float32))
            dy = big
        else:
            kwargs.update(change)
            if change.get("activation") in ("gelu", "tanh"):
                kwargs.pop("y")
        return (dy, x, w, kwargs.pop("dx"), kwargs.pop("dweight"), kwargs.pop("dbias")), kwargs

    assert_refused_alike("dense_backward", call, exc, match)


@pytest.mark.parametrize("trans_b", [False, True])
def test_matmul_inner_dimension_mismatch(trans_b):
    """op(b)'s rows must be op(a)'s columns: b is named, with K bound by a."""
    b = np.zeros((5, 4)) if trans_b else np.zeros((4, 5))
    want = r"\(5, 4\) but must be \(N, K\) = \(5, 3\)" if trans_b else r"\(4, 5\) but must be \(K, N\) = \(3, 5\)"
    assert_refused_alike(
        "matmul",
        lambda: ((np.zeros((2, 3)), b, np.zeros((2, 5))), dict(trans_b=trans_b)),
        ValueError,
        rf"b has shape {want} \(K from a\)",
    )


def test_dense_dimensions_over_int_max():
    """The BLAS interface takes int dimensions: refused after every other check (zero-size arrays)."""
    big = 2**31

    def call():
        return (np.zeros((0, big), np.float32), np.zeros((big, 0), np.float32), None, np.zeros((0, 0), np.float32)), {}

    assert_refused_alike("dense_forward", call, ValueError, r"x has a dimension over 2\^31 - 1")
    assert_refused_alike(
        "matmul",
        lambda: ((np.zeros((0, big)), np.zeros((big, 0)), np.zeros((0, 0))), {}),
        ValueError,
        r"a has a dimension over 2\^31 - 1",
    )


@pytest.mark.skipif(not HAS_CORE, reason="the C++ extension is not available")
def test_config_reports_the_gemm_backend(gemm):
    cfg = gf.config()
    assert cfg["gemm_backend"] == gemm
    assert cfg["gemm"].startswith({"openblas": "OpenBLAS (", "eigen": "Eigen 3."}[gemm])
