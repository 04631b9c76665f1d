"""bf16 in the loss, softmax, penalty, norm, clipping and all_finite kernels: what the generated
tests (test_bf16.py: a bf16 call is the float32 kernel's call on the widened inputs, rounded once,
bitwise, every ISA path) cannot say.

- torch parity in bf16, against the behaviour a torch user gets:
  * softmax / softmax backward / log_softmax backward / clip_grad_value_: torch's own bf16 ops
    (float32 math inside, rounded once): bitwise equal;
  * log_softmax forward: torch's bf16 op rounds in between (up to 3 bf16 ulps off here); ours is
    the float32 result rounded once: within 1 ulp of torch's float32 op on the widened input, and
    never further from the exact value than torch's bf16 op;
  * cross_entropy, mse_loss, binary_cross_entropy_with_logits, multi_margin_loss: torch.autocast
    ("cpu", bfloat16), whose policy runs these losses in float32 on the widened bf16 input; the loss
    is a float32/double value, the gradient reaches the bf16 input rounded once: bitwise equal
    gradients, the loss to float32 precision;
  * clip_grad_norm_: torch keeps a bf16 norm (rounded) and a bf16 coefficient; ours are double /
    float32: the norm is torch's float32 norm of the widened gradients, the clipped gradients within
    1 bf16 ulp of torch's;
- edge cases: NaN / Inf in bf16, tiny batches, zero-size calls, rows longer than a work block.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

import gradfuse as gf
from conftest import HAS_CORE

pytestmark = pytest.mark.kernels

B = np.dtype(ml_dtypes.bfloat16)


def bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint16)


def ulps(a: np.ndarray, b: np.ndarray) -> int:
    """The largest distance in bf16 steps between same-signed finite values (0 for none)."""
    ai, bi = bits(a).astype(np.int32), bits(b).astype(np.int32)
    sign_a, sign_b = ai >> 15, bi >> 15
    assert np.array_equal(sign_a, sign_b) or np.array_equal(a.astype(np.float32), b.astype(np.float32))
    return int(np.abs(ai - bi).max()) if a.size else 0


def rounded(a) -> np.ndarray:
    return np.asarray(a, np.float32).astype(B)


# ---- torch parity -----------------------------------------------------------------------------------------
torch = None


@pytest.fixture(scope="module")
def th():
    global torch
    torch = pytest.importorskip("torch")
    return torch


def to_torch(a: np.ndarray):
    """A bf16 array as a torch bfloat16 tensor (a copy; torch has no NumPy bf16 interop)."""
    return torch.from_numpy(bits(a).astype(np.int16)).view(torch.bfloat16).clone()


def from_torch(t) -> np.ndarray:
    return t.detach().contiguous().view(torch.int16).numpy().view(np.uint16).view(B).copy()


def logits(shape, scale=3.0, seed=0) -> np.ndarray:
    return rounded(np.random.default_rng(seed).standard_normal(shape) * scale)


SHAPES = [(64, 37), (5, 1), (1, 1000), (3, 2100)]


@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_is_torch_bf16_softmax_bitwise(th, backend, shape):
    x = logits(shape)
    y = np.empty_like(x)
    gf.ops.softmax_forward(x, y)
    want = from_torch(torch.softmax(to_torch(x), dim=-1))
    np.testing.assert_array_equal(bits(y), bits(want))


@pytest.mark.parametrize("shape", SHAPES)
def test_log_softmax_is_torch_float32_rounded_once(th, backend, shape):
    x = logits(shape)
    y = np.empty_like(x)
    gf.ops.log_softmax_forward(x, y)
    x32 = torch.from_numpy(x.astype(np.float32))
    assert ulps(y, rounded(torch.log_softmax(x32, dim=-1).numpy())) <= 1
    # torch's own bf16 log_softmax rounds in between; ours is never further from the exact value
    exact = torch.log_softmax(x32.double(), dim=-1).numpy()
    ours = np.abs(y.astype(np.float64) - exact).max()
    theirs = np.abs(from_torch(torch.log_softmax(to_torch(x), dim=-1)).astype(np.float64) - exact).max()
    assert ours <= theirs


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_backward_is_torch_bf16_autograd_bitwise(th, backend, log, shape):
    x = to_torch(logits(shape)).requires_grad_()
    y = (torch.log_softmax if log else torch.softmax)(x, dim=-1)
    dy = logits(shape, 1.0, seed=1)
    y.backward(to_torch(dy))
    dx = np.empty_like(dy)
    (gf.ops.log_softmax_backward if log else gf.ops.softmax_backward)(from_torch(y), dy, dx)
    np.testing.assert_array_equal(bits(dx), bits(from_torch(x.grad)))


def autocast_loss(fn, x: np.ndarray, *rest):
    """torch.autocast's bf16 behaviour: the loss and d loss / d x of a bf16 input x."""
    xt = to_torch(x).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = fn(xt, *rest)
    assert loss.dtype == torch.float32  # autocast runs these losses in float32
    loss.backward()
    assert xt.grad.dtype == torch.bfloat16
    return loss.item(), from_torch(xt.grad)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("shape", [(64, 37), (1, 1), (3, 2100)])
def test_cross_entropy_is_torch_autocast(th, backend, shape, smoothing):
    x = logits(shape)
    labels = np.random.default_rng(2).integers(0, shape[1], shape[0])
    want_loss, want_grad = autocast_loss(
        lambda t: torch.nn.functional.cross_entropy(t, torch.from_numpy(labels), label_smoothing=smoothing), x
    )
    grad = np.empty_like(x)
    loss = gf.ops.softmax_cross_entropy(x, labels, grad, label_smoothing=smoothing)
    assert loss == pytest.approx(want_loss, rel=1e-6, abs=1e-7)
    assert ulps(grad, want_grad) <= (0 if smoothing == 0 else 1)


def test_multi_margin_loss_is_torch_autocast(th, backend):
    x = logits((40, 7), 0.5)
    labels = np.random.default_rng(3).integers(0, 7, 40)
    for p in (1, 2):
        want_loss, want_grad = autocast_loss(
            lambda t: torch.nn.functional.multi_margin_loss(t, torch.from_numpy(labels), p=p), x
        )
        grad = np.empty_like(x)
        loss = gf.ops.multi_margin_loss(x, labels, grad, p=p)
        assert loss == pytest.approx(want_loss, rel=1e-6)
        assert ulps(grad, want_grad) <= 1


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_is_torch_autocast_with_float32_targets(th, backend, reduction):
    pred = logits((33, 5), 1.0)
    target = np.random.default_rng(4).standard_normal((33, 5)).astype(np.float32)  # "wide": float32
    want_loss, want_grad = autocast_loss(
        lambda t: torch.nn.functional.mse_loss(t, torch.from_numpy(target), reduction=reduction), pred
    )
    grad = np.empty_like(pred)
    loss = gf.ops.mse_loss(pred, target, grad, reduction=reduction)
    assert loss == pytest.approx(want_loss, rel=1e-6)
    np.testing.assert_array_equal(bits(grad), bits(want_grad))


@pytest.mark.parametrize("pos_weight", [False, True])
def test_bce_with_logits_is_torch_autocast(th, backend, pos_weight):
    x = logits((21, 6))
    t = np.random.default_rng(5).uniform(0, 1, (21, 6)).astype(np.float32)
    pw = np.linspace(0.5, 3.0, 6, dtype=np.float32) if pos_weight else None
    want_loss, want_grad = autocast_loss(
        lambda z: torch.nn.functional.binary_cross_entropy_with_logits(
            z, torch.from_numpy(t), pos_weight=None if pw is None else torch.from_numpy(pw)
        ),
        x,
    )
    grad = np.empty_like(x)
    loss = gf.ops.bce_with_logits(x, t, grad, pos_weight=pw)
    assert loss == pytest.approx(want_loss, rel=1e-6)
    assert ulps(grad, want_grad) <= 1


def test_clip_grad_value_is_torch_bf16_bitwise(th, backend):
    g = logits(1000, 2.0)
    p = torch.nn.Parameter(torch.zeros(1000, dtype=torch.bfloat16))
    p.grad = to_torch(g)
    torch.nn.utils.clip_grad_value_([p], 0.3)
    gf.ops.clip_grad_value([g], clip_value=0.3)
    np.testing.assert_array_equal(bits(g), bits(from_torch(p.grad)))


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
def test_clip_grad_norm_against_torch(th, backend, norm_type):
    """torch on float32 copies of the bf16 gradients, rounded back: ours within 1 bf16 ulp (the same
    math, float32 coefficient). torch on the bf16 gradients themselves rounds each tensor's norm, the
    total and the coefficient to bf16: a few bf16 ulps of the norm away, the gradients within 2."""
    grads = [logits(1000, 2.0, seed=6), logits((30, 7), 0.5, seed=7)]

    def torch_clip(dtype):
        params = [torch.nn.Parameter(torch.zeros(g.shape, dtype=dtype)) for g in grads]
        for p, g in zip(params, grads):
            p.grad = to_torch(g).to(dtype)
        norm = torch.nn.utils.clip_grad_norm_(params, 1.0, norm_type=norm_type)
        return norm.float().item(), [from_torch(p.grad.bfloat16()) for p in params]

    norm32, clipped32 = torch_clip(torch.float32)
    norm16, clipped16 = torch_clip(torch.bfloat16)
    norm = gf.ops.clip_grad_norm(grads, max_norm=1.0, norm_type=norm_type)
    assert norm == pytest.approx(norm32, rel=1e-6)
    assert norm16 == pytest.approx(norm, rel=2**-6)
    for g, w32, w16 in zip(grads, clipped32, clipped16):
        assert ulps(g, w32) <= 1
        assert ulps(g, w16) <= 2


# ---- edge cases -------------------------------------------------------------------------------------------
def special(values) -> np.ndarray:
    return np.array(values, np.float32).astype(B)


def test_nan_and_inf_logits(backend):
    x = special([[1.0, np.nan, 0.0], [np.inf, 0.0, 1.0], [-np.inf, 0.0, 1.0], [-np.inf, -np.inf, 2.0]])
    y = np.empty_like(x)
    gf.ops.softmax_forward(x, y)
    y32 = y.astype(np.float32)
    assert np.isnan(y32[0]).all() and np.isnan(y32[1]).all()  # NaN propagates; inf - inf is NaN
    assert y32[2, 0] == 0 and y32[3, 2] == 1 and (y32[3, :2] == 0).all()  # exp(-inf) is exactly 0
    grad = np.empty_like(x)
    assert math.isnan(gf.ops.softmax_cross_entropy(x, np.array([0, 1, 2, 2]), grad))
    loss = gf.ops.softmax_cross_entropy(x[2:], np.array([2, 2]), grad[2:])
    assert math.isfinite(loss) and np.isfinite(grad[2:].astype(np.float32)).all()


def test_tiny_and_empty_batches(backend):
    one = special([[0.5]])
    g = np.empty_like(one)
    assert gf.ops.softmax_cross_entropy(one, np.array([0]), g) == 0.0
    assert g.astype(np.float32)[0, 0] == 0.0
    empty = np.zeros((0, 5), B)
    g0 = np.empty_like(empty)
    assert math.isnan(gf.ops.softmax_cross_entropy(empty, np.zeros(0, np.int64), g0))  # mean of nothing
    assert gf.ops.softmax_cross_entropy(empty, np.zeros(0, np.int64), g0, reduction="sum") == 0.0
    assert math.isnan(gf.ops.mse_loss(np.zeros(0, B), np.zeros(0, np.float32), np.zeros(0, B)))
    y = np.empty_like(empty)
    gf.ops.softmax_forward(empty, y)
    assert gf.ops.grad_norm([np.zeros(0, B), np.zeros((3, 0), B)]) == 0.0
    assert gf.ops.clip_grad_norm([np.zeros(0, B)], max_norm=1.0) == 0.0
    assert gf.ops.clip_grad_norm_per_tensor([np.zeros(0, B), special([3.0, 4.0])], max_norm=1.0) == [0.0, 5.0]
    assert gf.ops.penalty([np.zeros(0, B)], l1=1.0) == 0.0
    assert gf.ops.all_finite([np.zeros(0, B)]) is True


def test_norms_and_finiteness_with_nan_and_inf(backend):
    for bad in (np.nan, np.inf, -np.inf):
        g = [special([1.0, 2.0]), special([3.0, bad, 0.5])]
        norm = gf.ops.grad_norm(g)
        assert math.isnan(norm) if bad != bad else norm == math.inf
        assert gf.ops.all_finite(g) is False
        before = [bits(a).copy() for a in g]
        with pytest.raises(RuntimeError, match="non-finite"):
            gf.ops.clip_grad_norm(g, max_norm=1.0, error_if_nonfinite=True)
        for a, b in zip(g, before):  # nothing written
            np.testing.assert_array_equal(bits(a), b)
    biggest = np.array([ml_dtypes.finfo(B).max], B)  # finite, but / 0.25 overflows float32 math
    assert gf.ops.all_finite([biggest]) is True
    assert gf.ops.all_finite([biggest], grad_scale=0.25) is False
    assert gf.ops.all_finite([biggest], grad_scale=4.0) is True
    g = [special([np.nan, 5.0, -5.0, 0.25])]
    gf.ops.clip_grad_value(g, clip_value=1.0)
    out = g[0].astype(np.float32)
    assert np.isnan(out[0]) and list(out[1:]) == [1.0, -1.0, 0.25]


@pytest.mark.skipif(not HAS_CORE, reason="needs the C++ extension")
@pytest.mark.parametrize(
    "kernel", ["softmax_cross_entropy", "multi_margin_loss", "softmax_forward", "softmax_backward"]
)
def test_rows_longer_than_a_work_block_are_the_float32_rows_rounded_once(kernel, isa):
    """Rows of 40000 classes (over the 16384-element work block and the 1024-element exp chunk):
    one row per block, each widened into its block's scratch."""
    x = logits((3, 40000), seed=8)
    labels = np.array([0, 39999, 17])
    wide = x.astype(np.float32)
    fn = getattr(gf.ops, kernel).cpp
    if kernel == "softmax_backward":
        y = np.empty_like(x)
        gf.ops.softmax_forward.cpp(x, y)
        dy = logits((3, 40000), 1.0, seed=9)
        got, want = np.empty_like(x), np.empty_like(wide)
        fn(y, dy, got)
        fn(y.astype(np.float32), dy.astype(np.float32), want)
    elif kernel == "softmax_forward":
        got, want = np.empty_like(x), np.empty_like(wide)
        fn(x, got)
        fn(wide, want)
    else:
        got, want = np.empty_like(x), np.empty_like(wide)
        assert fn(x, labels, got) == fn(wide, labels, want)
    np.testing.assert_array_equal(bits(got), bits(want.astype(B)))


def test_mixed_dtypes_are_refused_by_name(backend):
    x = logits((4, 3))
    with pytest.raises(TypeError, match="grad has dtype float32"):
        gf.ops.softmax_cross_entropy(x, np.zeros(4, np.int64), np.empty((4, 3), np.float32))
    with pytest.raises(TypeError, match="target has dtype bfloat16; expected float32"):
        gf.ops.mse_loss(x, x.copy())
    with pytest.raises(TypeError, match=r"grads\[1\] has dtype float32"):
        gf.ops.clip_grad_norm([x, np.ones(3, np.float32)], max_norm=1.0)
    with pytest.raises(TypeError, match=r"grads\[0\] has dtype float32"):
        gf.ops.penalty([x], [np.ones((4, 3), np.float32)], l2=1.0)


def test_losses_api_takes_bf16_predictions(backend):
    """gf.losses converts targets to float32 beside bf16 predictions; the gradient is bf16."""
    pred = logits((6, 4), 1.0)
    loss, grad = gf.losses.mse(pred, np.ones((6, 4)))
    assert grad.dtype == B and isinstance(loss, float)
    loss, grad = gf.losses.bce_with_logits(pred, np.ones((6, 4), np.int64))
    assert grad.dtype == B and isinstance(loss, float)
    loss, grad = gf.losses.cross_entropy(pred, [0, 1, 2, 3, 0, 1])
    assert grad.dtype == B and isinstance(loss, float)
