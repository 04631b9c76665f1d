"""The GEMM backends: oneDNN (bf16, and float32 when selected) and the fp32 fallback.

Paths agree within a tolerance (they differ only in summation order: bf16 products are exact in
float32); within a path, results are bitwise the same for every thread count.
"""

import numpy as np
import pytest

import gradfuse as gf
from conftest import BF16_GEMM_PATHS

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = ml_dtypes.bfloat16
core = gf._ext._core
pytestmark = pytest.mark.skipif(core is None, reason="the C++ extension is not built")

ONEDNN = core is not None and bool(core._build_info()["onednn"])
BF16_PATHS = BF16_GEMM_PATHS
SHAPES = [(5, 7, 3), (300, 500, 700), (256, 1024, 512), (8, 16, 20000), (64, 64, 0)]


def _bf16_matmul(a, b, c, ta=False, tb=False, acc=False):
    """C (+)= op(A) op(B) with bf16 A, B: gf.ops.matmul for a float32 C; for a bf16 C (rounded once),
    dense_backward's dx = dz W^T, the one bf16-C GEMM the kernels run (no transposed A, no
    accumulate there)."""
    if c.dtype == np.float32:
        gf.ops.matmul.cpp(a, b, c, trans_a=ta, trans_b=tb, accumulate=acc)
        return
    assert not ta and tb and not acc
    # dy = a (N, OUT), weight = b (IN, OUT): dx = dy @ weight.T (N, IN); x only lends its shape
    gf.ops.dense_backward.cpp(a, np.zeros(c.shape, BF16), b, c, None, None)


def _cases():
    """(ta, tb, acc, out): every transposition and accumulate for a float32 C; the dx form for bf16."""
    for ta in (False, True):
        for tb in (False, True):
            for acc in (False, True):
                yield ta, tb, acc, "float32"
    yield False, True, False, "bfloat16"


@pytest.mark.parametrize("path", BF16_PATHS)
@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("ta,tb,acc,out", list(_cases()))
def test_bf16_matmul_matches_float64(bf16_gemm, path, m, n, k, ta, tb, acc, out):
    bf16_gemm(path)
    rng = np.random.default_rng(m * n + k)
    a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32).astype(BF16)
    b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32).astype(BF16)
    A, B = a.astype(np.float64), b.astype(np.float64)
    ref = (A.T if ta else A) @ (B.T if tb else B)
    c0 = rng.standard_normal((m, n), dtype=np.float32).astype(out)
    c = c0.copy()
    _bf16_matmul(a, b, c, ta, tb, acc)
    want = ref + (c0.astype(np.float64) if acc else 0)
    err = np.abs(c.astype(np.float64) - want) / (np.abs(want) + np.sqrt(k + 1))
    assert err.max(initial=0) < (1e-5 if out == "float32" else 2**-8), (path, acc)


@pytest.mark.parametrize("m,n,k", SHAPES[:4])
def test_bf16_gemms_agree(bf16_gemm, m, n, k):
    if len(BF16_PATHS) < 2:
        pytest.skip("oneDNN is not loaded")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32).astype(BF16)
    b = rng.standard_normal((k, n), dtype=np.float32).astype(BF16)
    outs = []
    for path in BF16_PATHS:
        bf16_gemm(path)
        c = np.zeros((m, n), np.float32)
        _bf16_matmul(a, b, c)
        outs.append(c)
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5 * np.sqrt(k))


@pytest.mark.parametrize("path", BF16_PATHS)
@pytest.mark.parametrize("m,n,k", [(300, 500, 700), (1024, 520, 256), (16, 16, 100000), (700, 1100, 300)])
@pytest.mark.parametrize("out", ["float32", "bfloat16"])
def test_bf16_matmul_bitwise_over_threads(bf16_gemm, path, m, n, k, out):
    bf16_gemm(path)
    rng = np.random.default_rng(1)
    a = rng.standard_normal((m, k), dtype=np.float32).astype(BF16)
    b = rng.standard_normal((n, k) if out == "bfloat16" else (k, n), dtype=np.float32).astype(BF16)
    outs = []
    try:
        for t in (1, 2, 3):
            gf.set_num_threads(t)
            c = np.zeros((m, n), out)
            _bf16_matmul(a, b, c, tb=out == "bfloat16")
            outs.append(c.view(np.uint16) if out == "bfloat16" else c)
    finally:
        gf.set_num_threads(0)
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


@pytest.mark.skipif(not ONEDNN, reason="oneDNN is not loaded")
@pytest.mark.parametrize("m,n,k", [(300, 500, 700), (16, 16, 100000), (1024, 520, 256)])
def test_onednn_float32_tiles_bitwise_over_threads_and_close_to_openblas(m, n, k):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    saved = core._get_gemm()
    outs = []
    try:
        core._set_gemm("onednn")
        for t in (1, 2, 3):
            gf.set_num_threads(t)
            c = np.zeros((m, n), np.float32)
            gf.ops.matmul(a, b, c)
            outs.append(c)
    finally:
        gf.set_num_threads(0)
        core._set_gemm(saved)
    assert all(np.array_equal(outs[0], o) for o in outs[1:])
    np.testing.assert_allclose(outs[0], a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4 * np.sqrt(k))


@pytest.mark.parametrize("path", BF16_PATHS)
def test_bf16_dense_forward_epilogue_rounds_once(bf16_gemm, path):
    bf16_gemm(path)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 200), dtype=np.float32).astype(BF16)
    w = rng.standard_normal((200, 500), dtype=np.float32).astype(BF16)
    bias = rng.standard_normal(500, dtype=np.float32)
    y, z = np.zeros((300, 500), BF16), np.zeros((300, 500), BF16)
    gf.ops.dense_forward.cpp(x, w, bias, y, activation="relu", z=z)
    z32 = x.astype(np.float32) @ w.astype(np.float32) + bias
    np.testing.assert_allclose(z.astype(np.float32), z32, rtol=2**-7, atol=1e-3)
    # y = round(relu(z32)) and z = round(z32), from the same float32 value
    np.testing.assert_array_equal(y.astype(np.float32), np.maximum(z.astype(np.float32), 0))


@pytest.mark.parametrize("path", BF16_PATHS)
def test_bf16_dense_backward_matches_float64_with_dz_rounded(bf16_gemm, path):
    """dz = round_bf16(dy * relu'(z)); db = its column sums; dx = round(dz W^T); dW = x^T dz (float32)."""
    bf16_gemm(path)
    rng = np.random.default_rng(4)
    n, i, o = 300, 200, 500
    x = rng.standard_normal((n, i), dtype=np.float32).astype(BF16)
    w = rng.standard_normal((i, o), dtype=np.float32).astype(BF16)
    z = rng.standard_normal((n, o), dtype=np.float32).astype(BF16)
    dy = rng.standard_normal((n, o), dtype=np.float32).astype(BF16)
    dx, dz = np.zeros((n, i), BF16), np.zeros((n, o), BF16)
    dw, db = np.zeros((i, o), np.float32), np.zeros(o, np.float32)
    gf.ops.dense_backward.cpp(dy, x, w, dx, dw, db, activation="relu", z=z, dz=dz)
    g = np.where(z.astype(np.float64) > 0, dy.astype(np.float64), 0.0)  # exact: dz needs no rounding
    np.testing.assert_array_equal(dz.astype(np.float64), g)
    np.testing.assert_allclose(db, g.sum(0), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(dw, x.astype(np.float64).T @ g, rtol=1e-5, atol=1e-5 * np.sqrt(n))
    np.testing.assert_allclose(dx.astype(np.float32), g @ w.astype(np.float64).T, rtol=2**-7, atol=1e-2)


def test_config_names_the_gemm_paths():
    cfg = gf.config()
    assert cfg["gemm_bf16"].startswith(("onednn (", "fp32 fallback ("))
    assert set(cfg["cpu_features"]) >= {"amx_bf16", "avx512_bf16"}
    assert (cfg["onednn"] is None) == (cfg["onednn_error"] is not None)
    if cfg["cpu_features"]["amx_bf16"] and ONEDNN and not gf._ext.amx_off(cfg["gradfuse_amx"]):
        assert "amx" in cfg["gemm_bf16"]


def test_amx_override_parsing():
    assert gf._ext.amx_off("0") and gf._ext.amx_off(" off ")
    assert not gf._ext.amx_off(None) and not gf._ext.amx_off("1")
