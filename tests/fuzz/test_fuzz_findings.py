"""Regression tests for what the fuzz harnesses found (tests/fuzz/README.md), each on both
backends."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gradfuse as gf

pytestmark = pytest.mark.kernels


def test_grad_norm_tiny_order_overflows_to_inf(backend):
    # sum |g|^p ** (1/p) past the float range: the NumPy twin raised OverflowError (math.pow),
    # the C++ kernel (std::pow) returns inf.
    grads = [np.array(4.3e-307), np.array(4.27e96)]
    p = 1.84e-17
    assert gf.ops.grad_norm(grads, norm_type=p) == math.inf
    assert gf.ops.clip_grad_norm([g.copy() for g in grads], max_norm=1.0, norm_type=p) == math.inf


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_of_a_0d_array(backend, dtype):
    # The NumPy twin's erf returned a Python float for a 0-d input (AttributeError on .astype).
    x = np.array(-0.7, dtype)
    y = np.empty((), dtype)
    gf.ops.activation_forward(x, y, activation="gelu")
    expected = 0.5 * -0.7 * (1 + math.erf(-0.7 / math.sqrt(2)))
    assert y.dtype == dtype and y == pytest.approx(expected, rel=1e-6)
    dx = np.empty((), dtype)
    gf.ops.activation_backward(np.array(1.0, dtype), dx, activation="gelu", x=x)
    assert np.isfinite(dx)
