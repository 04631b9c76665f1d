"""The loss classes as Keras and torch users meet them (issue 11, item 1): Keras's names with Keras's
meaning (probabilities in, one-hot or integer targets), torch's names with torch's; values against
Keras's and torch's formulas, gradients by finite differences, the chain through a final Sigmoid /
Softmax; the refusals; 1-D targets for a (N, 1) output; the nn.Softmax layer."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import gradfuse as gf
from gradfuse import losses

BACKENDS = ["cpp", "numpy"] if gf.config().get("backend_available", True) else ["numpy"]
EPS = 1e-7  # Keras's backend.epsilon()


def rng(seed=0):
    return np.random.default_rng(seed)


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


# ---- Keras's formulas, written as keras/src/backend/numpy/nn.py writes them --------------------------
def keras_binary_crossentropy(target, output):
    output = np.clip(output, EPS, 1.0 - EPS)
    bce = target * np.log(output)
    bce += (1.0 - target) * np.log(1.0 - output)
    return np.mean(-bce)  # mean over the last axis, then over the batch


def keras_categorical_crossentropy(target, output):
    output = output / np.sum(output, -1, keepdims=True)
    output = np.clip(output, EPS, 1.0 - EPS)
    return np.mean(-np.sum(target * np.log(output), axis=-1))


def keras_sparse_categorical_crossentropy(labels, output):
    return keras_categorical_crossentropy(np.eye(output.shape[-1])[labels], output)


# ---- names -------------------------------------------------------------------------------------------
NAMES = {  # name -> (class, what pred is)
    "binary_crossentropy": (losses.BinaryCrossentropy, "probabilities"),
    "categorical_crossentropy": (losses.CategoricalCrossentropy, "probabilities"),
    "sparse_categorical_crossentropy": (losses.SparseCategoricalCrossentropy, "probabilities"),
    "bce": (losses.BCELoss, "probabilities"),
    "binary_cross_entropy": (losses.BCELoss, "probabilities"),
    "cross_entropy": (losses.CrossEntropyLoss, "logits"),
    "softmax_cross_entropy": (losses.CrossEntropyLoss, "logits"),
    "bce_with_logits": (losses.BCEWithLogitsLoss, "logits"),
    "binary_cross_entropy_with_logits": (losses.BCEWithLogitsLoss, "logits"),
    "mse": (losses.MSELoss, None),
    "mean_squared_error": (losses.MSELoss, None),
}


@pytest.mark.parametrize("name", NAMES)
def test_names_have_their_frameworks_meaning(name):
    cls, takes = NAMES[name]
    loss = losses.get_loss(name)
    assert type(loss) is cls and loss.takes == takes


def test_keras_classes_take_from_logits_as_keras():
    for cls in (losses.BinaryCrossentropy, losses.CategoricalCrossentropy, losses.SparseCategoricalCrossentropy):
        assert cls().takes == "probabilities" and cls(from_logits=True).takes == "logits"


# ---- values ------------------------------------------------------------------------------------------
def test_binary_crossentropy_is_keras_on_probabilities_and_clips_as_keras():
    p = rng().uniform(0, 1, (16, 3))
    p[0, 0], p[1, 1], p[2, 2] = 0.0, 1.0, 1e-9  # clipped to [1e-7, 1 - 1e-7]
    t = (rng(1).uniform(0, 1, (16, 3)) > 0.5).astype(np.float64)
    value, _ = losses.BinaryCrossentropy()(p, t)
    assert value == pytest.approx(keras_binary_crossentropy(t, p), rel=1e-12)
    assert losses.get_loss("binary_crossentropy")(p, t)[0] == value


def test_categorical_crossentropy_takes_one_hot_targets_and_normalises_as_keras():
    p = softmax(rng().standard_normal((12, 5)))
    p[0] = [0.0, 0.5, 0.5, 0.0, 0.0]  # a zero probability: clipped
    p[1] *= 0.5  # rows are normalised to sum 1 first, as Keras does
    onehot = np.eye(5)[rng(1).integers(0, 5, 12)]
    value, _ = losses.CategoricalCrossentropy()(p, onehot)
    assert value == pytest.approx(keras_categorical_crossentropy(onehot, p), rel=1e-12)


def test_sparse_categorical_crossentropy_takes_integer_labels_and_probabilities():
    p = softmax(rng().standard_normal((12, 5))).astype(np.float32)
    labels = rng(1).integers(0, 5, 12)
    value, grad = losses.SparseCategoricalCrossentropy()(p, labels)
    assert value == pytest.approx(keras_sparse_categorical_crossentropy(labels, p.astype(np.float64)), rel=1e-6)
    assert grad.dtype == np.float32 and grad.shape == p.shape
    onehot = losses.CategoricalCrossentropy()(p, np.eye(5)[labels])
    assert value == onehot[0]
    np.testing.assert_array_equal(grad, onehot[1])


def test_from_logits_true_is_the_logits_losses():
    z = rng().standard_normal((10, 4)) * 3
    labels = rng(1).integers(0, 4, 10)
    binary = (rng(2).uniform(size=(10, 4)) > 0.5).astype(np.float64)
    for a, b in [
        (losses.SparseCategoricalCrossentropy(from_logits=True)(z, labels), losses.cross_entropy(z, labels)),
        (losses.CategoricalCrossentropy(from_logits=True)(z, np.eye(4)[labels]), losses.cross_entropy(z, labels)),
        (losses.BinaryCrossentropy(from_logits=True)(z, binary), losses.bce_with_logits(z, binary)),
    ]:
        assert a[0] == pytest.approx(b[0], rel=1e-12)
        np.testing.assert_allclose(a[1], b[1], rtol=1e-10, atol=1e-14)


def test_probability_losses_equal_the_logits_losses_on_sigmoid_and_softmax_outputs():
    z = rng().standard_normal((10, 4))
    labels = rng(1).integers(0, 4, 10)
    binary = (rng(2).uniform(size=(10, 4)) > 0.5).astype(np.float64)
    assert losses.BinaryCrossentropy()(sigmoid(z), binary)[0] == pytest.approx(
        losses.bce_with_logits(z, binary)[0], rel=1e-9
    )
    assert losses.BCELoss()(sigmoid(z), binary)[0] == pytest.approx(losses.bce_with_logits(z, binary)[0], rel=1e-9)
    assert losses.SparseCategoricalCrossentropy()(softmax(z), labels)[0] == pytest.approx(
        losses.cross_entropy(z, labels)[0], rel=1e-9
    )


def test_bce_loss_is_torchs_value_and_gradient():
    torch = pytest.importorskip("torch")
    p = rng().uniform(0, 1, (9, 3))
    p[0, 0], p[1, 1], p[2, 2] = 0.0, 1.0, 1e-30  # torch clamps each log at -100
    t = (rng(1).uniform(size=(9, 3)) > 0.5).astype(np.float64)
    t[0, 0], t[1, 1] = 0.0, 1.0  # finite gradients at the edges
    for reduction in ("mean", "sum"):
        tp = torch.tensor(p, requires_grad=True)
        want = torch.nn.functional.binary_cross_entropy(tp, torch.tensor(t), reduction=reduction)
        want.backward()
        value, grad = losses.BCELoss(reduction=reduction)(p, t)
        assert value == pytest.approx(want.item(), rel=1e-12)
        np.testing.assert_allclose(grad, tp.grad.numpy(), rtol=1e-8)  # torch's 1e-12 floor is a float32


def test_categorical_from_logits_takes_soft_targets_as_torch():
    torch = pytest.importorskip("torch")
    z = rng().standard_normal((6, 4))
    soft = softmax(rng(1).standard_normal((6, 4)))
    tz = torch.tensor(z, requires_grad=True)
    want = torch.nn.functional.cross_entropy(tz, torch.tensor(soft))
    want.backward()
    value, grad = losses.CategoricalCrossentropy(from_logits=True)(z, soft)
    assert value == pytest.approx(want.item(), rel=1e-12)
    np.testing.assert_allclose(grad, tz.grad.numpy(), rtol=1e-10, atol=1e-15)


# ---- gradients -----------------------------------------------------------------------------------------
def finite_difference(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        g[i] = (f(up) - f(down)) / (2 * h)
    return g


CASES = {  # name -> (loss, pred, target): float64, probabilities away from the clip
    "binary": (
        losses.BinaryCrossentropy(),
        rng().uniform(0.05, 0.95, (6, 2)),
        (rng(1).uniform(size=(6, 2)) > 0.5).astype(np.float64),
    ),
    "binary-soft-targets": (
        losses.BinaryCrossentropy(),
        rng().uniform(0.05, 0.95, (6, 2)),
        rng(1).uniform(size=(6, 2)),
    ),
    "bce": (losses.BCELoss(), rng().uniform(0.05, 0.95, (6, 2)), (rng(1).uniform(size=(6, 2)) > 0.5) * 1.0),
    "categorical": (
        losses.CategoricalCrossentropy(),
        rng().uniform(0.05, 0.95, (6, 4)),
        np.eye(4)[rng(1).integers(0, 4, 6)],
    ),  # rows not normalised: the sum is in the gradient
    "sparse": (losses.SparseCategoricalCrossentropy(), rng().uniform(0.05, 0.95, (6, 4)), rng(1).integers(0, 4, 6)),
    "categorical-logits": (
        losses.CategoricalCrossentropy(from_logits=True),
        rng().standard_normal((6, 4)),
        softmax(rng(1).standard_normal((6, 4))),
    ),
    "binary-logits": (
        losses.BinaryCrossentropy(from_logits=True),
        rng().standard_normal((6, 2)),
        (rng(1).uniform(size=(6, 2)) > 0.5) * 1.0,
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_gradients_match_finite_differences(case):
    loss, pred, target = CASES[case]
    _, grad = loss(pred, target)
    np.testing.assert_allclose(grad, finite_difference(lambda p: loss(p, target)[0], pred), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_through_a_final_sigmoid_the_chain_gives_p_minus_t_over_n(backend, dtype):
    z = (rng().standard_normal((32, 3)) * 4).astype(dtype)
    t = (rng(1).uniform(size=(32, 3)) > 0.5).astype(dtype)
    tol = dict(rtol=2e-5, atol=1e-9) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-16)
    with gf.use_backend(backend):
        for loss in (losses.BinaryCrossentropy(), losses.BCELoss()):
            layer = gf.nn.Sigmoid()
            p = layer.forward(z)
            _, dp = loss(p, t)
            np.testing.assert_allclose(layer.backward(dp), (p - t) / p.size, **tol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_through_a_final_softmax_the_chain_gives_p_minus_t_over_n(backend, dtype):
    z = (rng().standard_normal((32, 5)) * 3).astype(dtype)
    labels = rng(1).integers(0, 5, 32)
    onehot = np.eye(5, dtype=dtype)[labels]
    tol = dict(rtol=1e-4, atol=1e-8) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-15)
    with gf.use_backend(backend):
        for loss, target in (
            (losses.CategoricalCrossentropy(), onehot),
            (losses.SparseCategoricalCrossentropy(), labels),
        ):
            layer = gf.nn.Softmax()
            p = layer.forward(z)
            _, dp = loss(p, target)
            np.testing.assert_allclose(layer.backward(dp), (p - onehot) / len(p), **tol)


def test_a_saturated_sigmoid_still_gets_a_gradient_toward_the_target():
    """Past the clip, the gradient is the slope at the clip's edge, not 0: a Sigmoid output of 1e-12
    for a positive sample is pushed up (Keras's clip alone would leave it stuck)."""
    layer = gf.nn.Sigmoid()
    p = layer.forward(np.array([[-27.6]]))  # sigmoid = 1e-12
    _, dp = losses.BinaryCrossentropy()(p, np.array([[1.0]]))
    assert layer.backward(dp)[0, 0] < 0  # gradient descent raises the logit


# ---- refusals ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "loss,target",
    [
        (losses.BinaryCrossentropy(), np.ones((4, 3))),
        (losses.BCELoss(), np.ones((4, 3))),
        (losses.CategoricalCrossentropy(), np.eye(3)[[0, 1, 2, 0]]),
        (losses.SparseCategoricalCrossentropy(), np.array([0, 1, 2, 0])),
    ],
)
def test_probability_losses_refuse_logits(loss, target):
    logits = rng().standard_normal((4, 3)) * 3
    with pytest.raises(ValueError, match="probabilities in \\[0, 1\\].*from_logits=True"):
        loss(logits, target)


@pytest.mark.parametrize("loss", [losses.BinaryCrossentropy(), losses.BCELoss(), losses.CategoricalCrossentropy()])
def test_targets_outside_0_1_are_refused(loss):
    p = softmax(rng().standard_normal((4, 3)))
    with pytest.raises(ValueError, match="target.* = 2"):
        loss(p, np.full((4, 3), 2.0))


def test_categorical_crossentropy_refuses_integer_labels_and_names_the_sparse_loss():
    p = softmax(rng().standard_normal((4, 3)))
    with pytest.raises(ValueError, match="sparse_categorical_crossentropy"):
        losses.CategoricalCrossentropy()(p, np.array([0, 1, 2, 0]))


def test_sparse_categorical_crossentropy_refuses_bad_labels():
    p = softmax(rng().standard_normal((4, 3)))
    with pytest.raises(ValueError, match="labels\\[3\\] = 3"):
        losses.SparseCategoricalCrossentropy()(p, np.array([0, 1, 2, 3]))
    with pytest.raises(TypeError, match="integers"):
        losses.SparseCategoricalCrossentropy()(p, np.array([0.0, 1.0, 2.0, 0.0]))


# ---- 1-D targets (item 7b) -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "loss",
    [
        losses.MSELoss(),
        losses.SumOfSquaresLoss(),
        losses.BCEWithLogitsLoss(),
        losses.BCELoss(),
        losses.BinaryCrossentropy(),
        losses.BinaryCrossentropy(from_logits=True),
    ],
)
def test_a_1d_target_is_accepted_for_an_n_by_1_output(loss):
    pred = rng().uniform(0.1, 0.9, (8, 1)).astype(np.float32)
    y = (rng(1).uniform(size=8) > 0.5).astype(np.int64)
    flat, column = loss(pred, y), loss(pred, y.reshape(-1, 1))
    assert flat[0] == column[0]
    np.testing.assert_array_equal(flat[1], column[1])
    with pytest.raises(ValueError):  # a (N,) target for two outputs is still a shape error
        loss(np.repeat(pred, 2, axis=1), y)


# ---- docs --------------------------------------------------------------------------------------------
def test_every_loss_class_documents_its_pred_and_target():
    classes = [
        getattr(losses, n)
        for n in losses.__all__
        if inspect.isclass(getattr(losses, n))
        and issubclass(getattr(losses, n), losses.Loss)
        and getattr(losses, n) is not losses.Loss
    ]
    assert len(classes) >= 9
    for cls in classes:
        doc = inspect.getdoc(cls) or ""
        assert "pred" in doc and "target" in doc and "dtype" in doc, cls.__name__


# ---- the Softmax layer -----------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_layer_forward_and_backward(backend, dtype):
    z = rng().standard_normal((7, 5)).astype(dtype) * 5
    dy = rng(1).standard_normal((7, 5)).astype(dtype)
    with gf.use_backend(backend):
        layer = gf.nn.Softmax()
        y = layer.forward(z)
        dx = layer.backward(dy)
    tol = dict(rtol=1e-5, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-15)
    want = softmax(z.astype(np.float64))
    np.testing.assert_allclose(y, want, **tol)
    np.testing.assert_allclose(dx, want * (dy - (dy * want).sum(-1, keepdims=True)), **tol)
    assert y.dtype == dtype and dx.dtype == dtype
    assert gf.nn.Sequential([gf.nn.Dense(5, 3), gf.nn.Softmax()]).summary().count("Softmax()") == 1
