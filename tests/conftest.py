"""Shared fixtures.

backend   parametrizes a test over the "cpp" and "numpy" backends (gf.use_backend)
isa       parametrizes a test over the ISA paths this CPU supports (all of them, or only the one
          GRADFUSE_CPU names, so CI's per-ISA runs exercise exactly that path)
torch     the torch module, or the test is skipped (CI installs torch==2.13.0)
Tests that exercise kernels carry the `kernels` marker: CI runs them again under each GRADFUSE_CPU.
Known C++/Python disagreements of the layer kernels (tests/known_mismatches.py) are marked
xfail(strict=True) case by case, here.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import gradfuse as gf
from gradfuse._ext import _core

HAS_CORE = _core is not None
CPU_ISAS = list(_core._build_info()["cpu_isas"]) if HAS_CORE else []
FORCED_ISA = (os.environ.get("GRADFUSE_CPU") or "").strip().lower() or None
TEST_ISAS = [FORCED_ISA] if FORCED_ISA in CPU_ISAS else CPU_ISAS
BACKENDS = ["cpp", "numpy"] if HAS_CORE else ["numpy"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    with gf.use_backend(request.param):
        yield request.param


@pytest.fixture(params=TEST_ISAS or [None])
def isa(request):
    if request.param is None:
        pytest.skip("the C++ extension is not available")
    before = _core._get_isa()
    _core._set_isa(request.param)
    try:
        yield request.param
    finally:
        _core._set_isa(before)


@pytest.fixture
def threads():
    """Restores the thread setting a test changes."""
    yield gf.set_num_threads
    gf.set_num_threads(0)


@pytest.fixture(scope="session")
def torch():
    return pytest.importorskip("torch")


def pytest_collection_modifyitems(config, items):
    """xfail(strict=True) exactly the cases tests/known_mismatches.py lists, with its reason."""
    from known_mismatches import KNOWN
    for item in items:
        cases = KNOWN.get(f"{item.path.name}::{getattr(item, 'originalname', item.name)}")
        callspec = getattr(item, "callspec", None)
        if cases and callspec is not None and callspec.id in cases:
            item.add_marker(pytest.mark.xfail(strict=True, reason=cases[callspec.id]))


def snapshot(*arrays):
    """Copies of arrays (nested lists allowed), to check later that nothing changed."""
    out = []
    for a in arrays:
        if isinstance(a, (list, tuple)):
            out.append(snapshot(*a))
        elif isinstance(a, np.ndarray):
            out.append(a.copy())
        else:
            out.append(a)
    return out


def assert_unchanged(before, *arrays):
    for b, a in zip(before, arrays):
        if isinstance(a, (list, tuple)):
            assert_unchanged(b, *a)
        elif isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
