"""The loss kernel family: softmax / log_softmax forward and backward, softmax cross-entropy,
multi-margin (SVM) loss, mse and the seeds' sum of squares, BCE with logits, and the L1/L2/elastic-net
penalty (contract: cpp/include/gradfuse/loss.hpp).

- values AND autograd gradients against torch.nn.functional, both dtypes, on both backends and on every
  ISA path of the C++ kernels; odd shapes (K = 1, N = 1, K not a multiple of the vector width, rows
  longer than the kernels' 1024-element blocks, arrays longer than one 16384-element work block);
- C++ against the NumPy twin (close everywhere; bitwise for the element-wise gradients the contract
  says are bitwise);
- large logits (1e4) stay finite; empty batches ("mean" is NaN, as torch; "sum" is 0);
- determinism: bitwise equal for 1 and 2 threads, two runs, and the same data elsewhere in memory;
- the bad-input matrix: the documented exception, the same error (fields and message) on both backends,
  nothing mutated;
- the seeds' conventions: sum of squares, the multiclass SVM loss, L2 / elastic net.
"""

from __future__ import annotations

import numpy as np
import pytest

import gradfuse as gf
from conftest import (
    assert_kernel_error,
    assert_refused_alike,
    assert_same_error,
    assert_unchanged,
    on_backend,
    snapshot,
)
from gradfuse._ext import _core
from gradfuse.table import KERNELS
from test_optim_kernels import assert_bitwise_equal

pytestmark = pytest.mark.kernels

needs_core = pytest.mark.skipif(_core is None, reason="the C++ extension is not available")
twin = on_backend("numpy")

DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["float32", "float64"]
# (N, K): a single element, one row, one class, odd sizes, rows of several 1024-element blocks
# (7 * 2500 = 17500 elements: also more than one 16384-element work block).
SHAPES = [(1, 1), (1, 17), (5, 1), (33, 23), (7, 2500)]
SHAPE_IDS = ["1x1", "1x17", "5x1", "33x23", "7x2500"]


def tol(dtype, scale=1.0):
    """assert_allclose tolerances against torch or the twin: a few ulp of exp/log, sums in a different
    order. scale: the magnitude of the terms that cancel in a result (the absolute error is a few ulp of it)."""
    if dtype == np.float32:
        return dict(rtol=2e-5, atol=1e-7 * scale)
    return dict(rtol=1e-11, atol=1e-14 * scale)


# bce with pos_weight: grad = ((pw t + 1) - t) sigmoid(x) - pw t cancels terms of size pw (up to 4).
CANCELLING = {"bce_pos_weight_sum": 10.0}


# ---- the cases: our call and torch's, on the same inputs -----------------------------------------------

# name -> (kind, keyword arguments of our kernel)
CASES = {
    "softmax": ("softmax", {}),
    "log_softmax": ("log_softmax", {}),
    "softmax_backward": ("softmax_backward", {}),
    "log_softmax_backward": ("log_softmax_backward", {}),
    "cross_entropy": ("ce", {}),
    "cross_entropy_sum": ("ce", dict(reduction="sum")),
    "cross_entropy_ignore_smoothing": ("ce", dict(ignore_index=-100, label_smoothing=0.1)),
    "cross_entropy_sum_ignore_in_range_smoothing": ("ce", dict(reduction="sum", ignore_index=0, label_smoothing=0.3)),
    "multi_margin": ("mm", {}),
    "multi_margin_p2_sum": ("mm", dict(p=2, margin=0.5, reduction="sum")),
    "multi_margin_negative_margin": ("mm", dict(margin=-0.25)),
    "mse": ("mse", {}),
    "mse_sum": ("mse", dict(reduction="sum")),
    "sum_of_squares": ("sos", {}),
    "bce": ("bce", {}),
    "bce_pos_weight_sum": ("bce", dict(reduction="sum", pos_weight=True)),
}


def make_inputs(kind, kwargs, shape, dtype, seed=0, scale=3.0):
    """The arrays a case needs, as float `dtype` (labels int64)."""
    rng = np.random.default_rng(seed)
    n, k = shape
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    inputs = {"x": x}
    if kind in ("ce", "mm"):
        labels = rng.integers(0, k, n).astype(np.int64)
        if kwargs.get("ignore_index") == -100:
            labels[::3] = -100
        inputs["labels"] = labels
    elif kind in ("mse", "sos"):
        inputs["t"] = rng.standard_normal(shape).astype(dtype)
    elif kind == "bce":
        t = rng.random(shape)
        t[rng.random(shape) < 0.3] = 1.0
        t[rng.random(shape) < 0.3] = 0.0
        inputs["t"] = t.astype(dtype)
        if kwargs.get("pos_weight"):
            inputs["pw"] = rng.uniform(0.25, 4.0, k).astype(dtype)
    elif kind in ("softmax_backward", "log_softmax_backward"):
        m = x.max(axis=-1, keepdims=True)
        ls = (x - m) - np.log(np.exp(x.astype(np.float64) - m).sum(-1, keepdims=True)).astype(dtype)
        inputs["y"] = ls if kind == "log_softmax_backward" else np.exp(ls)
        inputs["dy"] = rng.standard_normal(shape).astype(dtype)
    return inputs


def run_ours(ns, kind, kwargs, inputs):
    """(loss value or None, output array) of our kernel from namespace ns (_core, twin or gf.ops)."""
    x = inputs["x"]
    out = np.full_like(x, np.nan)
    if kind == "softmax":
        return None, (ns.softmax_forward(x, out), out)[1]
    if kind == "log_softmax":
        return None, (ns.log_softmax_forward(x, out), out)[1]
    if kind == "softmax_backward":
        return None, (ns.softmax_backward(inputs["y"], inputs["dy"], out), out)[1]
    if kind == "log_softmax_backward":
        return None, (ns.log_softmax_backward(inputs["y"], inputs["dy"], out), out)[1]
    if kind == "ce":
        return ns.softmax_cross_entropy(x, inputs["labels"], out, **kwargs), out
    if kind == "mm":
        return ns.multi_margin_loss(x, inputs["labels"], out, **kwargs), out
    if kind == "mse":
        return ns.mse_loss(x, inputs["t"], out, **kwargs), out
    if kind == "sos":
        return ns.sum_of_squares_loss(x, inputs["t"], out), out
    if kind == "bce":
        kw = dict(kwargs, pos_weight=inputs.get("pw"))
        return ns.bce_with_logits(x, inputs["t"], out, **kw), out
    raise AssertionError(kind)


def run_torch(torch, kind, kwargs, inputs):
    """torch's (loss value or None, output or autograd gradient) on the same inputs."""
    F = torch.nn.functional
    x = torch.from_numpy(inputs["x"].copy()).requires_grad_()
    if kind == "softmax":
        return None, F.softmax(x, dim=-1).detach().numpy()
    if kind == "log_softmax":
        return None, F.log_softmax(x, dim=-1).detach().numpy()
    if kind in ("softmax_backward", "log_softmax_backward"):
        y = (F.softmax if kind == "softmax_backward" else F.log_softmax)(x, dim=-1)
        y.backward(torch.from_numpy(inputs["dy"]))
        return None, x.grad.numpy()
    if kind == "ce":
        loss = F.cross_entropy(x, torch.from_numpy(inputs["labels"]), **kwargs)
    elif kind == "mm":
        loss = F.multi_margin_loss(x, torch.from_numpy(inputs["labels"]), **kwargs)
    elif kind == "mse":
        loss = F.mse_loss(x, torch.from_numpy(inputs["t"]), **kwargs)
    elif kind == "sos":
        loss = ((x - torch.from_numpy(inputs["t"])) ** 2).sum()
    elif kind == "bce":
        pw = inputs.get("pw")
        kw = dict(kwargs, pos_weight=None if pw is None else torch.from_numpy(pw))
        loss = F.binary_cross_entropy_with_logits(x, torch.from_numpy(inputs["t"]), **kw)
    loss.backward()
    return loss.item(), x.grad.numpy()


def assert_matches(got, want, dtype, what, scale=1.0):
    (gv, ga), (wv, wa) = got, want
    assert (gv is None) == (wv is None), what
    if gv is not None:
        assert isinstance(gv, float), f"{what}: the loss is a {type(gv).__name__}, not a Python float"
        np.testing.assert_allclose(gv, wv, **tol(dtype), err_msg=f"{what}: value")
    assert ga.dtype == dtype and ga.shape == wa.shape, what
    np.testing.assert_allclose(ga, wa, **tol(dtype, scale), err_msg=f"{what}: array")


# ---- against torch -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CASES)
def test_twin_matches_torch(case, dtype, shape, torch):
    kind, kwargs = CASES[case]
    inputs = make_inputs(kind, kwargs, shape, dtype)
    assert_matches(
        run_ours(twin, kind, kwargs, inputs),
        run_torch(torch, kind, kwargs, inputs),
        dtype,
        f"{case} numpy vs torch",
        CANCELLING.get(case, 1.0),
    )


@needs_core
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CASES)
def test_cpp_matches_torch_and_twin(case, dtype, shape, isa, torch):
    kind, kwargs = CASES[case]
    inputs = make_inputs(kind, kwargs, shape, dtype)
    before = snapshot(*inputs.values())
    ours = run_ours(_core, kind, kwargs, inputs)
    assert_unchanged(before, *inputs.values())  # inputs are only read
    scale = CANCELLING.get(case, 1.0)
    assert_matches(ours, run_torch(torch, kind, kwargs, inputs), dtype, f"{case} cpp ({isa}) vs torch", scale)
    assert_matches(ours, run_ours(twin, kind, kwargs, inputs), dtype, f"{case} cpp ({isa}) vs numpy", scale)


@needs_core
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", ["mse", "mse_sum", "sum_of_squares"])
def test_squared_error_gradient_is_bitwise_torch_and_twin(case, dtype, isa, torch):
    """grad = T(2 / n) * (pred - target): torch's own operation order, no transcendental."""
    kind, kwargs = CASES[case]
    inputs = make_inputs(kind, kwargs, (7, 2500), dtype)
    _, ours = run_ours(_core, kind, kwargs, inputs)
    assert_bitwise_equal(ours, run_torch(torch, kind, kwargs, inputs)[1], f"{case}: cpp vs torch")
    assert_bitwise_equal(ours, run_ours(twin, kind, kwargs, inputs)[1], f"{case}: cpp vs numpy")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(
    "case",
    [
        "softmax",
        "log_softmax",
        "cross_entropy",
        "cross_entropy_ignore_smoothing",
        "multi_margin_p2_sum",
        "bce",
        "bce_pos_weight_sum",
    ],
)
def test_large_logits_are_stable(case, dtype, backend, torch):
    """Logits of magnitude 1e4: exp(x) overflows in both dtypes, the max-subtracted forms do not."""
    kind, kwargs = CASES[case]
    inputs = make_inputs(kind, kwargs, (9, 37), dtype, seed=3, scale=1e4)
    value, out = run_ours(gf.ops, kind, kwargs, inputs)
    assert np.isfinite(out).all() and (value is None or np.isfinite(value))
    ref_value, ref = run_torch(torch, kind, kwargs, inputs)
    if value is not None:
        np.testing.assert_allclose(value, ref_value, rtol=1e-6 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(
        out, ref, rtol=1e-6 if dtype == np.float32 else 1e-12, atol=1e-6 if dtype == np.float32 else 1e-12
    )


def test_cross_entropy_of_a_one_hot_row(backend):
    x = np.array([[1e4, -1e4, 0.0, -np.inf]], np.float32)
    grad = np.empty_like(x)
    assert gf.ops.softmax_cross_entropy(x, np.array([1]), grad) == 2e4
    np.testing.assert_array_equal(grad, [[1.0, -1.0, 0.0, 0.0]])
    y = np.empty_like(x)
    gf.ops.softmax_forward(x, y)
    np.testing.assert_array_equal(y, [[1.0, 0.0, 0.0, 0.0]])


@needs_core
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_exp_underflow_is_exactly_zero_on_every_path(dtype, isa):
    """exp of -inf, -1e4 and of arguments whose exp is subnormal is 0 on every ISA path (Eigen's exp
    clamps its argument there; the kernels flush what it returns)."""
    tiny = -200.0 if dtype == np.float32 else -800.0
    x = np.array([[0.0, -1e4, -np.inf, tiny], [tiny, 0.0, -np.inf, -1e4]], dtype)
    want = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]], dtype)
    y = np.empty_like(x)
    _core.softmax_forward(x, y)
    assert_bitwise_equal(y, want, "softmax")
    grad = np.empty_like(x)
    assert _core.softmax_cross_entropy(x, np.array([0, 1]), grad) == 0.0
    assert_bitwise_equal(grad, np.zeros_like(x), "cross-entropy gradient")
    _core.log_softmax_forward(x, y)
    dy = np.ones_like(x)
    _core.log_softmax_backward(y, dy, grad)
    assert_bitwise_equal(grad, want * -4.0 + 1.0, "log_softmax backward: dx = dy - exp(y) sum(dy)")
    logits = np.array([-1e4, 1e4, tiny, -tiny], dtype)  # (+-inf give NaN losses, as in torch)
    targets = np.array([0.0, 1.0, 0.0, 1.0], dtype)
    grad = np.empty_like(logits)
    assert _core.bce_with_logits(logits, targets, grad, reduction="sum") == 0.0
    assert_bitwise_equal(grad, np.zeros_like(logits), "bce gradient")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_nan_propagates_to_its_row(dtype, backend, torch):
    x = np.random.default_rng(3).standard_normal((3, 20)).astype(dtype)
    x[1, 17] = np.nan
    for fn, ref in (("softmax_forward", torch.softmax), ("log_softmax_forward", torch.log_softmax)):
        y = np.empty_like(x)
        getattr(gf.ops, fn)(x, y)
        assert np.isnan(y[1]).all() and np.isfinite(y[[0, 2]]).all()
        np.testing.assert_allclose(y, ref(torch.from_numpy(x), dim=-1).numpy(), **tol(dtype))
    grad = np.empty_like(x)
    assert np.isnan(gf.ops.softmax_cross_entropy(x, np.array([0, 1, 2]), grad))
    assert np.isnan(grad[1]).all() and np.isfinite(grad[[0, 2]]).all()
    assert np.isnan(gf.ops.bce_with_logits(x, np.zeros_like(x), grad))
    assert np.isnan(grad[1, 17]) and np.isfinite(np.delete(grad.ravel(), 37)).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_softmax_over_the_last_axis_of_any_ndim(dtype, backend, torch):
    x = np.random.default_rng(5).standard_normal((2, 3, 19)).astype(dtype)
    for fn, ref in (("softmax_forward", torch.softmax), ("log_softmax_forward", torch.log_softmax)):
        y = np.empty_like(x)
        getattr(gf.ops, fn)(x, y)
        np.testing.assert_allclose(y, ref(torch.from_numpy(x), dim=-1).numpy(), **tol(dtype))
    y1 = np.empty((19,), dtype)
    gf.ops.softmax_forward(x[0, 0].copy(), y1)  # one axis: one row
    np.testing.assert_allclose(y1, torch.softmax(torch.from_numpy(x[0, 0]), dim=0).numpy(), **tol(dtype))


def test_cross_entropy_with_every_label_ignored(backend, torch):
    """No counted row: the mean is NaN and the gradient zero, as torch."""
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    labels = np.full(3, -100, np.int64)
    grad = np.full_like(x, 7.0)
    value = gf.ops.softmax_cross_entropy(x, labels, grad)
    ref_value, ref_grad = run_torch(torch, "ce", {}, {"x": x, "labels": labels})
    assert np.isnan(value) and np.isnan(ref_value)
    np.testing.assert_array_equal(grad, ref_grad)
    assert gf.ops.softmax_cross_entropy(x, labels, grad, reduction="sum") == 0.0


# ---- in place, value only, read-only inputs ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("fn", ["softmax_forward", "log_softmax_forward"])
def test_forward_in_place_equals_out_of_place(fn, dtype, backend):
    x = make_inputs("softmax", {}, (33, 23), dtype)["x"]
    out = np.empty_like(x)
    getattr(gf.ops, fn)(x, out)
    inplace = x.copy()
    getattr(gf.ops, fn)(inplace, inplace)
    assert_bitwise_equal(inplace, out, f"{fn} in place")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("fn", ["softmax_backward", "log_softmax_backward"])
def test_backward_in_place_equals_out_of_place(fn, dtype, backend):
    inputs = make_inputs(fn, {}, (33, 2100), dtype)
    out = np.empty_like(inputs["x"])
    getattr(gf.ops, fn)(inputs["y"], inputs["dy"], out)
    dy = inputs["dy"].copy()
    getattr(gf.ops, fn)(inputs["y"], dy, dy)
    assert_bitwise_equal(dy, out, f"{fn} with dx = dy")


@pytest.mark.parametrize("case", [c for c, (kind, _) in CASES.items() if kind in ("ce", "mm", "mse", "sos", "bce")])
def test_value_without_grad_is_the_same(case, backend):
    kind, kwargs = CASES[case]
    inputs = make_inputs(kind, kwargs, (33, 23), np.float32)
    value, _ = run_ours(gf.ops, kind, kwargs, inputs)
    x = inputs["x"]
    if kind == "ce":
        alone = gf.ops.softmax_cross_entropy(x, inputs["labels"], **kwargs)
    elif kind == "mm":
        alone = gf.ops.multi_margin_loss(x, inputs["labels"], None, **kwargs)
    elif kind == "mse":
        alone = gf.ops.mse_loss(x, inputs["t"], **kwargs)
    elif kind == "sos":
        alone = gf.ops.sum_of_squares_loss(x, inputs["t"])
    else:
        alone = gf.ops.bce_with_logits(x, inputs["t"], **dict(kwargs, pos_weight=inputs.get("pw")))
    assert alone == value


def test_read_only_inputs_are_accepted(backend):
    inputs = make_inputs("ce", {}, (5, 7), np.float64)
    for a in inputs.values():
        a.flags.writeable = False
    grad = np.empty((5, 7))
    gf.ops.softmax_cross_entropy(inputs["x"], inputs["labels"], grad)
    y = np.empty((5, 7))
    gf.ops.softmax_forward(inputs["x"], y)


# ---- empty batches ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_empty_batches(dtype, backend):
    """'mean' over nothing is NaN (torch gives NaN), 'sum' is 0; nothing is written."""
    x, labels, grad = np.zeros((0, 5), dtype), np.zeros(0, np.int64), np.zeros((0, 5), dtype)
    flat, flat_grad = np.zeros(0, dtype), np.zeros(0, dtype)
    for fn, args in (
        ("softmax_cross_entropy", (x, labels, grad)),
        ("multi_margin_loss", (x, labels, grad)),
        ("mse_loss", (flat, flat, flat_grad)),
        ("bce_with_logits", (flat, flat, flat_grad)),
    ):
        op = getattr(gf.ops, fn)
        assert np.isnan(op(*args)), fn
        assert op(*args, reduction="sum") == 0.0, fn
    assert gf.ops.sum_of_squares_loss(flat, flat, flat_grad) == 0.0
    assert np.isnan(gf.ops.bce_with_logits(x, x.copy(), grad, pos_weight=np.ones(5, dtype)))
    for shape in ((0, 5), (3, 0), (0,)):
        a, out = np.zeros(shape, dtype), np.full(shape, 7.0, dtype)
        gf.ops.softmax_forward(a, out)
        gf.ops.log_softmax_backward(a, a.copy(), out)
        np.testing.assert_array_equal(out, np.full(shape, 7.0, dtype))
    assert gf.ops.penalty([], l1=1.0, l2=1.0) == 0.0
    assert gf.ops.penalty([np.zeros(0, dtype)], [np.zeros(0, dtype)], l1=1.0) == 0.0


# ---- the seeds' conventions ----------------------------------------------------------------------------------


def test_sum_of_squares_is_the_seeds_l2_loss(backend):
    """Lecture 001: L_i = (y_i - t_i)^2, L = sum_i L_i ("L2 loss -> simply sum up squares")."""
    rng = np.random.default_rng(1)
    y, t = rng.standard_normal(50), rng.standard_normal(50)
    grad = np.empty(50)
    value = gf.ops.sum_of_squares_loss(y, t, grad)
    np.testing.assert_allclose(value, sum((yi - ti) ** 2 for yi, ti in zip(y, t)), rtol=1e-14)
    assert value == gf.ops.mse_loss(y, t, reduction="sum")
    np.testing.assert_array_equal(grad, 2.0 * (y - t))


def test_seeds_svm_loss_is_k_times_multi_margin(backend):
    """Lecture 003: L = 1/N sum_i sum_{j != y_i} max(0, s_j - s_{y_i} + 1); torch (and gradfuse) divide by K too."""
    rng = np.random.default_rng(2)
    s = rng.standard_normal((6, 4))
    y = rng.integers(0, 4, 6)
    seeds = np.mean([sum(max(0.0, s[i, j] - s[i, y[i]] + 1.0) for j in range(4) if j != y[i]) for i in range(6)])
    np.testing.assert_allclose(4 * gf.ops.multi_margin_loss(s, y), seeds, rtol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_penalty_formula_and_seeds_parametrisations(dtype, backend):
    rng = np.random.default_rng(4)
    params = [rng.standard_normal(s).astype(dtype) for s in ((3, 5), (17,), (1,), (0,), (2, 40))]
    params[1][3] = 0.0
    params[1][4] = -0.0
    w = np.concatenate([p.ravel().astype(np.float64) for p in params])
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    # value = l1 sum|w| + (l2 / 2) sum w^2
    np.testing.assert_allclose(
        gf.ops.penalty(params, l1=0.3, l2=0.7), 0.3 * np.abs(w).sum() + 0.35 * (w * w).sum(), rtol=rtol
    )
    # lecture 000: lambda sum w^2 -> l2 = 2 lambda; lecture 003 elastic net: lambda (beta ||W||^2 + ||W||_1)
    # -> l1 = lambda, l2 = 2 lambda beta; lecture 004 weight decay: (wd / 2) ||theta||^2 -> l2 = wd.
    lam, beta = 0.01, 0.5
    np.testing.assert_allclose(gf.ops.penalty(params, l2=2 * lam), lam * (w * w).sum(), rtol=rtol)
    np.testing.assert_allclose(
        gf.ops.penalty(params, l1=lam, l2=2 * lam * beta), lam * (beta * (w * w).sum() + np.abs(w).sum()), rtol=rtol
    )
    # gradients: grads += l1 sign(w) + l2 w, sign(0) = 0
    grads = [rng.standard_normal(p.shape).astype(dtype) for p in params]
    expected = [g + (dtype(0.3) * np.sign(p) + dtype(0.7) * p) for g, p in zip(grads, params)]
    gf.ops.penalty(params, grads, l1=0.3, l2=0.7)
    for g, e in zip(grads, expected):
        assert_bitwise_equal(g, e.astype(dtype), "penalty gradient")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("l1, l2", [(0.3, 0.0), (0.0, 0.7), (0.3, 0.7)])
def test_penalty_matches_torch(l1, l2, dtype, backend, torch):
    rng = np.random.default_rng(6)
    params = [rng.standard_normal(s).astype(dtype) for s in ((31, 33), (17,), (1,), (5, 5, 3))]
    params[1][2] = 0.0
    grads = [np.zeros_like(p) for p in params]
    value = gf.ops.penalty(params, grads, l1=l1, l2=l2)
    ts = [torch.from_numpy(p.copy()).requires_grad_() for p in params]
    ref = sum(l1 * t.abs().sum() + l2 / 2 * (t**2).sum() for t in ts)
    ref.backward()
    np.testing.assert_allclose(value, ref.item(), rtol=1e-5 if dtype == np.float32 else 1e-13)
    for g, t in zip(grads, ts):
        np.testing.assert_allclose(g, t.grad.numpy(), **tol(dtype))


def test_penalty_value_only_and_zero_coefficients(backend):
    params = [np.linspace(-1, 1, 9).astype(np.float32), np.ones((2, 3), np.float32)]
    grads = [np.full_like(p, 5.0) for p in params]
    before = snapshot(params, grads)
    assert gf.ops.penalty(params, l1=1.0) == pytest.approx(np.abs(params[0]).sum() + 6.0)
    assert gf.ops.penalty(params, grads) == 0.0  # l1 = l2 = 0: nothing added
    assert_unchanged(before, params, grads)
    assert isinstance(gf.ops.penalty(params[0], grads[0], l2=0.5), float)  # a single array


@needs_core
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_penalty_arena_equals_separate_arrays_and_twin(dtype, isa):
    """Views into one buffer (one coalesced segment) against separate arrays and the twin: the
    gradients bitwise, the value to rounding (lanes and blocks fall differently)."""
    rng = np.random.default_rng(7)
    shapes = [(1,), (15,), (0,), (16,), (17,), (3, 5), (40_000,), (0,)]
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
    total = sum(p.size for p in params)
    pbuf, gbuf = np.empty(total, dtype), np.empty(total, dtype)
    arena_p, arena_g, o = [], [], 0
    for p, g in zip(params, grads):
        arena_p.append(pbuf[o : o + p.size].reshape(p.shape))
        arena_g.append(gbuf[o : o + p.size].reshape(p.shape))
        arena_p[-1][...], arena_g[-1][...] = p, g
        o += p.size
    ref_g = [g.copy() for g in grads]
    v_sep = _core.penalty(params, grads, l1=0.2, l2=0.1)
    v_arena = _core.penalty(arena_p, arena_g, l1=0.2, l2=0.1)
    v_twin = twin.penalty(params, ref_g, l1=0.2, l2=0.1)
    for a, b, c in zip(grads, arena_g, ref_g):
        assert_bitwise_equal(a, b, "arena vs separate")
        assert_bitwise_equal(a, c, "cpp vs numpy")
    rtol = 1e-12
    np.testing.assert_allclose([v_arena, v_twin], [v_sep, v_sep], rtol=rtol)


# ---- determinism ---------------------------------------------------------------------------------------------

# Shapes that several threads split: many rows of a short row; few rows longer than a work block.
DETERMINISM_SHAPES = [(1000, 37), (3, 20_000)]


def _offset_copy(a, offset):
    """a's data at another place in memory: `offset` elements into a fresh buffer."""
    buf = np.empty(a.size + offset, a.dtype)
    out = buf[offset : offset + a.size].reshape(a.shape)
    out[...] = a
    return out


@needs_core
@pytest.mark.parametrize("shape", DETERMINISM_SHAPES, ids=["1000x37", "3x20000"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(
    "case",
    [
        "softmax",
        "log_softmax",
        "softmax_backward",
        "log_softmax_backward",
        "cross_entropy_ignore_smoothing",
        "multi_margin_p2_sum",
        "mse",
        "bce",
        "bce_pos_weight_sum",
    ],
)
def test_bitwise_equal_for_threads_runs_and_memory_position(case, dtype, shape, isa, threads):
    kind, kwargs = CASES[case]
    inputs = make_inputs(kind, kwargs, shape, dtype)
    results = []
    for n in (1, 2, 2):
        threads(n)
        if gf.get_num_threads() != n:
            pytest.skip(f"OpenMP gives {gf.get_num_threads()} threads here, not {n}")
        results.append(run_ours(_core, kind, kwargs, inputs))
    moved = {k: _offset_copy(v, 1 + i) for i, (k, v) in enumerate(inputs.items())}  # other alignments
    results.append(run_ours(_core, kind, kwargs, moved))
    first_value, first = results[0]
    for i, (value, out) in enumerate(results[1:]):
        what = f"{case}: {['2 threads', '2 threads again', 'moved in memory'][i]} vs 1 thread"
        assert value == first_value or (value is None and first_value is None), what
        assert_bitwise_equal(out, first, what)


@needs_core
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_penalty_bitwise_equal_for_threads(dtype, isa, threads):
    rng = np.random.default_rng(8)
    params = [rng.standard_normal(s).astype(dtype) for s in ((17,), (70_001,), (33, 3))]
    start = [rng.standard_normal(p.shape).astype(dtype) for p in params]
    results = []
    for n in (1, 2, 2):
        threads(n)
        if gf.get_num_threads() != n:
            pytest.skip(f"OpenMP gives {gf.get_num_threads()} threads here, not {n}")
        grads = [g.copy() for g in start]
        results.append((_core.penalty(params, grads, l1=0.1, l2=0.2), grads))
    for value, grads in results[1:]:
        assert value == results[0][0]
        for a, b in zip(grads, results[0][1]):
            assert_bitwise_equal(a, b, "penalty grads")


# ---- bad inputs: the documented exception, the same error on both backends, nothing mutated ----------------

N, K = 4, 5


def _base(dtype=np.float32):
    rng = np.random.default_rng(9)
    return dict(
        x=rng.standard_normal((N, K)).astype(dtype),
        labels=np.array([0, 4, 2, 1], np.int64),
        t=rng.random((N, K)).astype(dtype),
        g=np.full((N, K), 7.0, dtype),
    )


def _readonly(a):
    a.flags.writeable = False
    return a


def _overlapping():
    """Two (N, K) float32 views of one buffer that share 10 elements."""
    buf = np.zeros(2 * N * K - 10, np.float32)
    return buf[: N * K].reshape(N, K), buf[N * K - 10 :].reshape(N, K)


def _bad_cases():
    """(id, kernel, make() -> (args, kwargs), exception, message fragment)."""
    b = _base
    cases = []

    def add(id_, fn, make, exc, match):
        cases.append((id_, fn, make, exc, match))

    ce, mm = "softmax_cross_entropy", "multi_margin_loss"
    for fn, name in ((ce, "logits"), (mm, "scores")):
        add(
            f"{fn}-labels-float",
            fn,
            lambda d=b(): ((d["x"], d["labels"].astype(np.float64), d["g"]), {}),
            TypeError,
            "labels has dtype float64; expected int64",
        )
        add(
            f"{fn}-labels-int32",
            fn,
            lambda d=b(): ((d["x"], d["labels"].astype(np.int32), d["g"]), {}),
            TypeError,
            "labels has dtype int32; expected int64",
        )
        add(
            f"{fn}-label-too-large",
            fn,
            lambda d=b(): ((d["x"], np.array([0, 4, 2, 5]), d["g"]), {}),
            ValueError,
            "labels[3] = 5 is out of range [0, 5)",
        )
        add(
            f"{fn}-label-negative",
            fn,
            lambda d=b(): ((d["x"], np.array([0, -1, 2, 1]), d["g"]), {}),
            ValueError,
            "labels[1] = -1 is out of range [0, 5)",
        )
        add(
            f"{fn}-labels-length",
            fn,
            lambda d=b(): ((d["x"], d["labels"][:3].copy(), d["g"]), {}),
            ValueError,
            "labels has shape (3,) but must be (N,) = (4,)",
        )
        add(
            f"{fn}-labels-2d",
            fn,
            lambda d=b(): ((d["x"], d["labels"].reshape(N, 1), d["g"]), {}),
            ValueError,
            "labels must be 1-D (N,), got shape (4, 1)",
        )
        add(
            f"{fn}-labels-list",
            fn,
            lambda d=b(): ((d["x"], [0, 4, 2, 1], d["g"]), {}),
            TypeError,
            "labels must be a numpy.ndarray, got list",
        )
        add(
            f"{fn}-scores-1d",
            fn,
            lambda d=b(): ((d["x"][0].copy(), d["labels"][:1].copy(), None), {}),
            ValueError,
            f"{name} must be 2-D (N, K), got shape (5,)",
        )
        add(
            f"{fn}-scores-int",
            fn,
            lambda d=b(): ((d["x"].astype(np.int64), d["labels"], d["g"]), {}),
            TypeError,
            f"{name} has dtype int64; expected float32, float64 or bfloat16",
        )
        add(
            f"{fn}-scores-fortran",
            fn,
            lambda d=b(): ((np.asfortranarray(d["x"]), d["labels"], d["g"]), {}),
            ValueError,
            f"{name} is not C-contiguous",
        )
        add(
            f"{fn}-grad-shape",
            fn,
            lambda d=b(): ((d["x"], d["labels"], d["g"][:, :4].copy()), {}),
            ValueError,
            f"grad has shape (4, 4) but {name} has shape (4, 5)",
        )
        add(
            f"{fn}-grad-read-only",
            fn,
            lambda d=b(): ((d["x"], d["labels"], _readonly(d["g"])), {}),
            ValueError,
            "grad is read-only",
        )
        add(
            f"{fn}-grad-is-scores",
            fn,
            lambda d=b(): ((d["x"], d["labels"], d["x"]), {}),
            ValueError,
            f"grad shares memory with {name}",
        )
        add(f"{fn}-grad-overlaps-scores", fn, lambda: _overlap_case(), ValueError, f"grad shares memory with {name}")
        add(
            f"{fn}-grad-dtype",
            fn,
            lambda d=b(): ((d["x"], d["labels"], d["g"].astype(np.float64)), {}),
            TypeError,
            f"grad has dtype float64 but {name} is float32",
        )
        add(
            f"{fn}-grad-strided",
            fn,
            lambda d=b(): ((d["x"], d["labels"], np.zeros((N, 2 * K), np.float32)[:, ::2]), {}),
            ValueError,
            "grad is not C-contiguous",
        )
        add(
            f"{fn}-reduction",
            fn,
            lambda d=b(): ((d["x"], d["labels"], d["g"]), dict(reduction="none")),
            ValueError,
            "reduction must be 'mean' or 'sum', got 'none'",
        )
    add(
        "ce-ignore-index-not-matching",
        ce,
        lambda d=b(): ((d["x"], np.array([0, -100, 2, 1]), d["g"]), dict(ignore_index=7)),
        ValueError,
        "labels[1] = -100 is out of range [0, 5)",
    )
    add(
        "ce-label-smoothing",
        ce,
        lambda d=b(): ((d["x"], d["labels"], d["g"]), dict(label_smoothing=1.5)),
        ValueError,
        "label_smoothing must be in [0, 1], got 1.5",
    )
    add("ce-logits-none", ce, lambda d=b(): ((None, d["labels"], d["g"]), {}), TypeError, "logits is required")
    add("mm-p", mm, lambda d=b(): ((d["x"], d["labels"], d["g"]), dict(p=3)), ValueError, "p must be 1 or 2, got 3")
    add(
        "mm-margin",
        mm,
        lambda d=b(): ((d["x"], d["labels"], d["g"]), dict(margin=float("nan"))),
        ValueError,
        "margin must be a finite number, got nan",
    )

    for fn in ("mse_loss", "sum_of_squares_loss"):
        add(
            f"{fn}-target-shape",
            fn,
            lambda d=b(): ((d["x"], d["t"][:3].copy(), d["g"]), {}),
            ValueError,
            "target has shape (3, 5) but pred has shape (4, 5)",
        )
        add(
            f"{fn}-target-dtype",
            fn,
            lambda d=b(): ((d["x"], d["t"].astype(np.float64), d["g"]), {}),
            TypeError,
            "target has dtype float64 but pred is float32",
        )
        add(
            f"{fn}-grad-is-target",
            fn,
            lambda d=b(): ((d["x"], d["t"], d["t"]), {}),
            ValueError,
            "grad shares memory with target",
        )
        add(
            f"{fn}-grad-read-only",
            fn,
            lambda d=b(): ((d["x"], d["t"], _readonly(d["g"])), {}),
            ValueError,
            "grad is read-only",
        )
        add(
            f"{fn}-grad-shape",
            fn,
            lambda d=b(): ((d["x"], d["t"], d["g"].reshape(K, N)), {}),
            ValueError,
            "grad has shape (5, 4) but pred has shape (4, 5)",
        )
        add(f"{fn}-pred-none", fn, lambda d=b(): ((None, d["t"], d["g"]), {}), TypeError, "pred is required")
    add(
        "mse-reduction",
        "mse_loss",
        lambda d=b(): ((d["x"], d["t"], d["g"]), dict(reduction="batchmean")),
        ValueError,
        "reduction must be 'mean' or 'sum', got 'batchmean'",
    )

    bce = "bce_with_logits"
    add(
        "bce-targets-shape",
        bce,
        lambda d=b(): ((d["x"], d["t"].ravel().copy(), d["g"]), {}),
        ValueError,
        "targets has shape (20,) but logits has shape (4, 5)",
    )
    add(
        "bce-pos-weight-shape",
        bce,
        lambda d=b(): ((d["x"], d["t"], d["g"]), dict(pos_weight=np.ones(N, np.float32))),
        ValueError,
        "pos_weight has shape (4,) but must be (C,) = (5,)",
    )
    add(
        "bce-pos-weight-dtype",
        bce,
        lambda d=b(): ((d["x"], d["t"], d["g"]), dict(pos_weight=np.ones(K))),
        TypeError,
        "pos_weight has dtype float64 but logits is float32",
    )
    add(
        "bce-pos-weight-scalar-logits",
        bce,
        lambda: (
            (np.ones((), np.float32), np.ones((), np.float32), np.zeros((), np.float32)),
            dict(pos_weight=np.ones(1, np.float32)),
        ),
        ValueError,
        "pos_weight needs logits with a class axis",
    )
    add(
        "bce-grad-is-pos-weight",
        bce,
        lambda d=b(): ((d["x"], d["t"], d["g"]), dict(pos_weight=d["g"][0])),
        ValueError,
        "grad shares memory with pos_weight",
    )
    add(
        "bce-grad-is-logits",
        bce,
        lambda d=b(): ((d["x"], d["t"], d["x"]), {}),
        ValueError,
        "grad shares memory with logits",
    )
    add(
        "bce-reduction",
        bce,
        lambda d=b(): ((d["x"], d["t"], d["g"]), dict(reduction="mean ")),
        ValueError,
        "reduction must be 'mean' or 'sum', got 'mean '",
    )

    for fn in ("softmax_forward", "log_softmax_forward"):
        add(
            f"{fn}-y-shape",
            fn,
            lambda d=b(): ((d["x"], d["g"].reshape(K, N)), {}),
            ValueError,
            "y has shape (5, 4) but x has shape (4, 5)",
        )
        add(f"{fn}-y-read-only", fn, lambda d=b(): ((d["x"], _readonly(d["g"])), {}), ValueError, "y is read-only")
        add(f"{fn}-y-overlaps-x", fn, lambda: (_overlapping(), {}), ValueError, "y shares memory with x")
        add(
            f"{fn}-x-scalar",
            fn,
            lambda: ((np.ones((), np.float32), np.ones((), np.float32)), {}),
            ValueError,
            "x must have at least 1 dimension (..., K), got shape ()",
        )
        add(
            f"{fn}-x-int",
            fn,
            lambda d=b(): ((d["labels"], d["g"][0]), {}),
            TypeError,
            "x has dtype int64; expected float32, float64 or bfloat16",
        )
        add(f"{fn}-y-none", fn, lambda d=b(): ((d["x"], None), {}), TypeError, "y is required (got None)")
    for fn in ("softmax_backward", "log_softmax_backward"):
        add(f"{fn}-dx-is-y", fn, lambda d=b(): ((d["x"], d["t"], d["x"]), {}), ValueError, "dx shares memory with y")
        add(
            f"{fn}-dx-is-dy-and-y",
            fn,
            lambda d=b(): ((d["x"], d["x"], d["x"]), {}),
            ValueError,
            "dx shares memory with y",
        )
        add(
            f"{fn}-dy-shape",
            fn,
            lambda d=b(): ((d["x"], d["t"][:, :4].copy(), d["g"]), {}),
            ValueError,
            "dy has shape (4, 4) but y has shape (4, 5)",
        )
        add(
            f"{fn}-dx-read-only",
            fn,
            lambda d=b(): ((d["x"], d["t"], _readonly(d["g"])), {}),
            ValueError,
            "dx is read-only",
        )
        add(
            f"{fn}-dy-dtype",
            fn,
            lambda d=b(): ((d["x"], d["t"].astype(np.float64), d["g"]), {}),
            TypeError,
            "dy has dtype float64 but y is float32",
        )

    pen = "penalty"
    add(
        "penalty-list-lengths",
        pen,
        lambda d=b(): (([d["x"], d["t"]], [d["g"]]), dict(l1=0.1)),
        ValueError,
        "grads has 1 arrays but params has 2",
    )
    add(
        "penalty-grad-shape",
        pen,
        lambda d=b(): (([d["x"], d["t"]], [d["g"], d["g"][0].copy()]), dict(l1=0.1)),
        ValueError,
        "grads[1] has shape (5,) but params[1] has shape (4, 5)",
    )
    add(
        "penalty-grad-read-only",
        pen,
        lambda d=b(): (([d["x"]], [_readonly(d["g"])]), dict(l2=0.1)),
        ValueError,
        "grads[0] is read-only",
    )
    add(
        "penalty-grad-is-param",
        pen,
        lambda d=b(): (([d["x"], d["t"]], [d["g"], d["t"]]), dict(l2=0.1)),
        ValueError,
        "grads[1] shares memory with params[1]",
    )
    add(
        "penalty-mixed-dtypes",
        pen,
        lambda d=b(): (([d["x"], d["t"].astype(np.float64)], None), dict(l2=0.1)),
        TypeError,
        "params[1] has dtype float64 but params[0] is float32",
    )
    add(
        "penalty-l1-negative",
        pen,
        lambda d=b(): (([d["x"]], [d["g"]]), dict(l1=-0.1)),
        ValueError,
        "l1 must be a finite number >= 0, got -0.1",
    )
    add(
        "penalty-l2-nan",
        pen,
        lambda d=b(): (([d["x"]], [d["g"]]), dict(l2=float("nan"))),
        ValueError,
        "l2 must be a finite number >= 0, got nan",
    )
    add(
        "penalty-params-int",
        pen,
        lambda d=b(): (([d["labels"]], None), {}),
        TypeError,
        "params[0] has dtype int64; expected float32, float64 or bfloat16",
    )
    add(
        "penalty-params-dict",
        pen,
        lambda: (({"w": np.ones(3)}, None), {}),
        TypeError,
        "params must be a numpy.ndarray or a list of them, got dict",
    )
    return cases


def _overlap_case():
    scores, grad = _overlapping()
    scores[...] = 1.0
    return (scores, np.array([0, 4, 2, 1]), grad), {}


BAD_CASES = _bad_cases()


def _arrays_of(args, kwargs):
    return [a for a in (*args, *kwargs.values()) if isinstance(a, (np.ndarray, list))]


@pytest.mark.parametrize("case_id, fn, make, exc, match", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_inputs_raise_and_mutate_nothing(case_id, fn, make, exc, match, backend):
    args, kwargs = make()
    arrays = _arrays_of(args, kwargs)
    before = snapshot(*arrays)
    with pytest.raises(exc) as info:
        getattr(gf.ops, fn)(*args, **kwargs)
    assert match in str(info.value)
    assert_kernel_error(info.value, fn)
    assert_unchanged(before, *arrays)


@needs_core
@pytest.mark.parametrize("case_id, fn, make, exc, match", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_inputs_same_error_on_both_backends(case_id, fn, make, exc, match):
    errors = []
    for ns in (_core, twin):
        args, kwargs = make()
        with pytest.raises(exc) as info:
            getattr(ns, fn)(*args, **kwargs)
        errors.append(info.value)
    assert_same_error(*errors)


@pytest.mark.parametrize("fn", ["softmax_cross_entropy", "mse_loss", "multi_margin_loss", "bce_with_logits"])
def test_reduction_of_the_wrong_type_is_a_type_error(fn):
    def call():
        d = _base()
        second = d["labels"] if fn in ("softmax_cross_entropy", "multi_margin_loss") else d["t"]
        return (d["x"], second, d["g"]), dict(reduction=None)

    assert_refused_alike(fn, call, TypeError, "reduction must be a str, got NoneType")


def test_out_of_range_label_in_the_last_row_writes_nothing(backend):
    """The labels are checked before the kernel writes any row of grad."""
    x = np.random.default_rng(0).standard_normal((300, 10)).astype(np.float32)
    labels = np.zeros(300, np.int64)
    labels[-1] = 10
    grad = np.full_like(x, 7.0)
    with pytest.raises(ValueError, match=r"labels\[299\] = 10 is out of range \[0, 10\)"):
        gf.ops.softmax_cross_entropy(x, labels, grad)
    assert (grad == 7.0).all()


# ---- signatures and dispatch ---------------------------------------------------------------------------------


def test_kernels_list_is_complete():
    """The family's rows in the kernel table (gf.ops is built from them)."""
    assert {name for name, row in KERNELS.items() if row.family == "loss"} == {
        "softmax_forward",
        "softmax_backward",
        "log_softmax_forward",
        "log_softmax_backward",
        "softmax_cross_entropy",
        "multi_margin_loss",
        "mse_loss",
        "sum_of_squares_loss",
        "bce_with_logits",
        "penalty",
    }
