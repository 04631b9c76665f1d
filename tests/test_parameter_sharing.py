"""Sharing memory, never silently copying it: gf.nn.Parameter over torch tensors and NumPy arrays
(what cannot be shared without a copy is refused, naming the parameter; copy=True copies on
purpose), and Parameters shared by layers (tied weights: one parameter, summed gradients)."""

from __future__ import annotations

import numpy as np
import pytest

import gradfuse as gf
from gradfuse.nn import Dense, Parameter, Sequential

# ---- torch tensors -------------------------------------------------------------------------------------


def test_a_float32_torch_tensor_is_shared_and_sees_every_step():
    torch = pytest.importorskip("torch")
    t = torch.ones(3, 2)
    p = Parameter(t, name="w")
    assert np.shares_memory(p.data, t.numpy())
    p.grad = np.full((3, 2), 0.5, np.float32)
    gf.optim.SGD([p], lr=1.0).step()
    assert torch.equal(t, torch.full((3, 2), 0.5))  # torch sees the update


def test_a_torch_parameter_that_requires_grad_is_shared():
    torch = pytest.importorskip("torch")
    lin = torch.nn.Linear(3, 2)
    p = Parameter(lin.weight, name="weight")
    p.data[...] = 7
    assert torch.all(lin.weight == 7)


@pytest.mark.parametrize("case", ["transposed", "float16", "bfloat16", "strided", "float64-transposed"])
def test_a_torch_tensor_that_cannot_be_shared_is_refused_naming_the_parameter(case):
    torch = pytest.importorskip("torch")
    t = {
        "transposed": lambda: torch.ones(3, 2).T,
        "float16": lambda: torch.ones(3, dtype=torch.float16),
        "bfloat16": lambda: torch.ones(3, dtype=torch.bfloat16),
        "strided": lambda: torch.ones(8)[::2],
        "float64-transposed": lambda: torch.ones(3, 2, dtype=torch.float64).T,
    }[case]()
    before = t.clone()
    exc = TypeError if "float16" in case else ValueError
    with pytest.raises(exc) as info:
        Parameter(t, name="fc.weight")
    message = str(info.value)
    assert "'fc.weight'" in message and "copy=True" in message and "torch" in message
    assert torch.equal(t, before)


def test_copy_true_trains_a_copy_on_purpose():
    torch = pytest.importorskip("torch")
    t = torch.arange(6, dtype=torch.float16).reshape(2, 3).T
    p = Parameter(t, name="w", copy=True)
    assert p.data.dtype == np.float32 and p.data.flags.c_contiguous and p.shape == (3, 2)
    np.testing.assert_array_equal(p.data, t.float().numpy())
    p.data[...] = 0
    assert t.abs().sum() > 0  # a copy: the tensor is not touched
    b = Parameter(torch.ones(2, dtype=torch.bfloat16), copy=True)
    assert b.data.dtype == np.float32 and np.all(b.data == 1)


# ---- NumPy arrays ---------------------------------------------------------------------------------------


def _read_only():
    a = np.ones(3, np.float32)
    a.flags.writeable = False
    return a


@pytest.mark.parametrize(
    "make, exc",
    [
        (lambda: np.ones((3, 2), np.float32).T, ValueError),
        (lambda: np.ones(8, np.float32)[::2], ValueError),
        (lambda: np.asfortranarray(np.ones((3, 2), np.float64)), ValueError),
        (lambda: np.ones(3, np.float16), TypeError),
        (lambda: np.arange(3), TypeError),
        (lambda: np.ones(3, ">f4"), TypeError),
        (_read_only, ValueError),
    ],
    ids=["transposed", "strided", "fortran", "float16", "int64", "big-endian", "read-only"],
)
def test_an_array_that_cannot_be_shared_is_refused_naming_the_parameter(make, exc):
    a = make()
    with pytest.raises(exc, match="Parameter 'w'.*copy=True"):
        Parameter(a, name="w")
    p = Parameter(a, copy=True)  # on purpose: a fresh native, contiguous float array
    assert p.data.flags.c_contiguous and p.data.dtype.isnative and not np.shares_memory(p.data, a)
    np.testing.assert_array_equal(p.data, a)


def test_arrays_that_fit_are_shared_and_lists_and_scalars_are_converted():
    for dtype in (np.float32, np.float64):
        a = np.zeros((2, 3), dtype)
        assert Parameter(a).data is a
    assert Parameter([0, 1, 2]).data.dtype == np.float32  # nothing to share: converted as before
    assert Parameter([0.5, 1.5]).data.dtype == np.float64
    assert Parameter(3).data.shape == () and Parameter(np.float32(2)).data.dtype == np.float32
    unnamed = pytest.raises(ValueError, match=r"^Parameter: the array is not C-contiguous")
    with unnamed:
        Parameter(np.ones((3, 2), np.float32).T)


# ---- Parameters shared by layers ---------------------------------------------------------------------


def tied_model():
    first, second = Dense(6, 6, activation="tanh", seed=1, dtype=np.float64), Dense(6, 6, seed=2, dtype=np.float64)
    second.weight = first.weight  # tied weights (registered as second's parameter)
    return Sequential([first, second, Dense(6, 2, seed=3, dtype=np.float64)])


def test_tied_weights_are_one_parameter_with_the_sum_of_both_gradients():
    torch = pytest.importorskip("torch")
    model = tied_model()
    params = model.parameters()
    assert len(params) == 5 and model.arena.size == 36 + 6 + 6 + 12 + 2
    assert list(model.state_dict())[:4] == ["0.weight", "0.bias", "1.weight", "1.bias"]  # both names, as torch
    x = np.random.default_rng(0).standard_normal((4, 6))
    dy = np.random.default_rng(1).standard_normal((4, 2))
    for accumulate in (False, True):
        model.zero_grad(set_to_none=False)
        for p in params:
            p.grad[...] = 1.0  # stale values: a plain backward overwrites them, an accumulating one adds
        model.forward(x, training=True)
        model.backward(dy, accumulate=accumulate)

        w = torch.tensor(model[0].weight.data, requires_grad=True)
        b0, b1 = (torch.tensor(model[i].bias.data, requires_grad=True) for i in (0, 1))
        w2, b2 = (
            torch.tensor(model[2].weight.data, requires_grad=True),
            torch.tensor(model[2].bias.data, requires_grad=True),
        )
        out = (torch.tanh(torch.tensor(x) @ w + b0) @ w + b1) @ w2 + b2
        out.backward(torch.tensor(dy))
        offset = 1.0 if accumulate else 0.0
        for p, t in zip(params, [w, b0, b1, w2, b2]):
            np.testing.assert_allclose(p.grad, t.grad.numpy() + offset, rtol=1e-12, atol=1e-12)


def test_the_same_layer_twice_in_a_sequential_is_refused():
    d = Dense(4, 4)
    with pytest.raises(ValueError, match=r"layers\[2\] is the same Dense object as layers\[0\]"):
        Sequential([d, gf.nn.ReLU(), d])
