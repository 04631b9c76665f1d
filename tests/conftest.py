"""Shared fixtures.

backend   parametrizes a test over the "cpp" and "numpy" backends (gf.use_backend)
isa       parametrizes a test over the ISA paths this CPU supports (all of them, or only the one
          GRADFUSE_CPU names, so CI's per-ISA runs exercise exactly that path)
torch     the torch module, or the test is skipped (CI installs torch==2.13.0)
Tests that exercise kernels carry the `kernels` marker: CI runs them again under each GRADFUSE_CPU.
snapshot / assert_unchanged check that a refused call wrote nothing; assert_kernel_error /
assert_same_error check a refusal's structured fields (gradfuse.errors) on one and both backends;
assert_refused_alike runs a bad call on every backend and checks all of that; on_backend("numpy").<kernel>
is gf.ops.<kernel>.numpy.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import gradfuse as gf
from gradfuse._ext import _core
from gradfuse.errors import KernelError, label

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


# The bf16 GEMM paths this machine can run (blas.hpp): the fp32 fallback always, oneDNN when it loaded
# (on a CPU without AMX or AVX512-BF16 oneDNN emulates bf16 on avx512_core: slower, the same contract).
BF16_GEMM_PATHS = ["fallback"] + (["onednn"] if HAS_CORE and _core._build_info()["onednn"] else [])


@pytest.fixture
def bf16_gemm():
    """set(path) runs the bf16 GEMMs on that path until the test ends."""
    saved = _core._get_gemm_bf16()
    yield _core._set_gemm_bf16
    _core._set_gemm_bf16(saved)


@pytest.fixture
def threads():
    """Restores the thread setting a test changes."""
    yield gf.set_num_threads
    gf.set_num_threads(0)


@pytest.fixture(scope="session")
def torch():
    return pytest.importorskip("torch")


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


def error_fields(err):
    """A refused kernel call by its structured fields: (class, kernel, argument, index, other, other_index)."""
    return (type(err), err.kernel, err.argument, err.index, err.other, err.other_index)


def assert_kernel_error(err, kernel):
    """err is a structured kernel error of `kernel` whose message names the kernel and the argument."""
    assert isinstance(err, KernelError), repr(err)
    assert err.kernel == kernel and str(err).startswith(f"{kernel}: "), str(err)
    assert label(err.argument, err.index) in str(err), (err.argument, err.index, str(err))


def assert_same_error(cpp, numpy):
    """The two backends refused a call alike: the same class and fields, and the same message."""
    assert error_fields(cpp) == error_fields(numpy), (str(cpp), str(numpy))
    assert str(cpp) == str(numpy)
    assert_kernel_error(cpp, cpp.kernel)


class on_backend:
    """gf.ops's kernels on one backend, whatever the active one: on_backend("numpy").grad_norm is
    gf.ops.grad_norm.numpy (the twin behind the table's checks, with the table's signature)."""

    def __init__(self, backend: str):
        self.backend = backend

    def __getattr__(self, name):
        return getattr(getattr(gf.ops, name), self.backend)


def arrays_in(*values):
    """The ndarrays among values (and in the lists, tuples and dicts among them)."""
    out = []
    for v in values:
        if isinstance(v, np.ndarray):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out += arrays_in(*v)
        elif isinstance(v, dict):
            out += arrays_in(*v.values())
    return out


def assert_refused_alike(kernel, make, exc, match=None):
    """make() -> (args, kwargs), fresh each call. gf.ops.<kernel>(*args, **kwargs) on every backend
    raises exc (its message matching the regex `match`), a structured error naming the kernel and the
    argument, and writes nothing; with both backends, the two errors are alike (assert_same_error)."""
    errors = []
    for backend in BACKENDS:
        args, kwargs = make()
        arrays = arrays_in(args, kwargs)
        before = snapshot(*arrays)
        with gf.use_backend(backend), pytest.raises(exc, match=match) as info:
            getattr(gf.ops, kernel)(*args, **kwargs)
        assert_kernel_error(info.value, kernel)
        assert_unchanged(before, *arrays)
        errors.append(info.value)
    if len(errors) == 2:
        assert_same_error(*errors)
