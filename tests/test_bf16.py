"""bfloat16 calls of every kernel whose row takes it (Array.dtype "real"), generated from the table.

The contract (cpp/include/gradfuse/bf16.hpp and each family's header): a bf16 kernel widens its
bf16 inputs to float32 (exact), computes in float32 with float32/double accumulation, and rounds
each bf16 output once, to nearest even ("wide" arrays stay float32). So a bf16 call gives bitwise
the bf16 rounding of the same kernel's float32 call on the widened inputs, on every ISA path; and the
NumPy twin (upcast, the float32 twin, round once) agrees with it as closely as the float32 twin
agrees with the float32 kernel, plus the one rounding.

Two honest exceptions, both in the dense family (gradfuse/dense.hpp):
- dense_backward rounds dz to bf16 before the bias sum and the GEMMs read it (as torch's autocast
  does), so its reference is the float32 kernel twice: once for dz, rounded to bf16, then with
  activation="none" on that dz (reference()).
- The GEMMs run on one of two paths (blas.hpp). On the fp32 fallback a bf16 call IS the float32
  kernel on the widened inputs (the same library on the same tiles): bitwise, like every other row.
  On oneDNN the same products (exact in float32) sum in oneDNN's order: the outputs agree within
  GEMM_ULPS of the output's largest element (float32 ulps for float32 outputs; for bf16 outputs one
  bf16 ulp: float32 sums a few ulps apart can round to neighbouring bf16 values).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import gradfuse as gf
import kernel_cases as kc
from conftest import BF16_GEMM_PATHS, HAS_CORE

pytestmark = pytest.mark.kernels

BF16 = kc.BF16
ROWS = [row for row in kc.ROWS if row.bf16]
CASES = [(row, ex) for row in ROWS for ex in kc.examples(row)]
IDS = [f"{row.name}-{ex.id}" for row, ex in CASES]
GEMM_FAMILY = "dense"  # the rows whose bf16 calls run GEMMs (matmul, dense_forward, dense_backward)
# oneDNN against the float32 kernel (module doc): the GEMMs' 8 ulp of test_determinism; measured worst
# 2 (matmul's c, dense_backward's dweight; oneDNN 3.2 emulating bf16 on avx512_core, no AMX here)
GEMM_ULPS = {np.dtype(np.float32): 8, BF16: 1}
# each case on every bf16 GEMM path where it has GEMMs, else once (path None)
PATH_CASES = [
    (row, ex, path) for row, ex in CASES for path in (BF16_GEMM_PATHS if row.family == GEMM_FAMILY else [None])
]
PATH_IDS = [f"{row.name}-{ex.id}" + (f"-{path}" if path else "") for row, ex, path in PATH_CASES]


def widened(values: dict) -> dict:
    """The call with every bfloat16 array as float32 (exact)."""
    out = kc.copy_call(values)
    for k, v in out.items():
        if isinstance(v, np.ndarray) and v.dtype == BF16:
            out[k] = v.astype(np.float32)
        elif isinstance(v, list):
            out[k] = [a.astype(np.float32) if a.dtype == BF16 else a for a in v]
    return out


def outputs(row, values: dict, result) -> list:
    """The written arrays after a call, and what it returned."""
    got = [values[a.name] for a in row.arrays if a.written and values[a.name] is not None]
    return [*kc.arrays_in(got), *(r for r in (result if isinstance(result, tuple) else (result,)) if r is not None)]


def bits(a) -> np.ndarray:
    a = np.asarray(a)
    return a.view(np.uint16) if a.dtype == BF16 else a


def test_some_rows_take_bf16_and_none_mixes_float_with_real():
    assert ROWS
    for row in ROWS:
        assert not any(a.dtype == "float" for a in row.arrays), row.name  # "float" refuses bf16


def reference(row, values: dict) -> list:
    """The outputs the bf16 call must give, before rounding: the row's float32 kernel on the widened
    inputs; for dense_backward, with dz rounded to bf16 first (module doc)."""
    fn = getattr(gf.ops, row.name).cpp
    wide = widened(values)
    if row.name == "dense_backward" and wide["activation"] != "none":
        dz = np.empty_like(wide["dy"])
        fn(**{**wide, "dx": None, "dweight": None, "dbias": None, "dz": dz})
        dz = dz.astype(BF16).astype(np.float32)  # the bf16 dz both GEMMs and the bias sum read
        fn(**{**wide, "dy": dz, "activation": "none", "y": None, "z": None, "dz": None})
        if wide["dz"] is not None:
            wide["dz"][...] = dz
        return outputs(row, wide, None)
    return outputs(row, wide, fn(**wide))


def gemm_ulps_off(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| in ulps (of got's dtype: float32, or bf16) of want's largest element."""
    g, w = got.astype(np.float64), want.astype(np.float64)
    top = float(np.abs(w).max(initial=0.0))
    if top == 0 or not np.isfinite(top):
        return 0.0 if np.array_equal(g, w, equal_nan=True) else np.inf
    spacing = 2.0 ** (np.floor(np.log2(top)) - (7 if got.dtype == BF16 else 23))
    return float(np.abs(g - w).max() / spacing)


@pytest.mark.skipif(not HAS_CORE, reason="needs the C++ extension")
@pytest.mark.parametrize("row,ex,path", PATH_CASES, ids=PATH_IDS)
def test_bf16_call_is_the_float32_call_rounded_once(row, ex, path, isa, bf16_gemm):
    if path:
        bf16_gemm(path)
    values = kc.build(row, ex, BF16, **kc.scaled(row, ex, 3000))
    want = reference(row, values)
    got = outputs(row, values, getattr(gf.ops, row.name).cpp(**values))
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        g, w = np.asarray(g), np.asarray(w)
        if g.dtype == BF16:
            w = w.astype(BF16)  # round to nearest even once: ml_dtypes' rounding, the kernels' too
        if path == "onednn":
            off = gemm_ulps_off(g, w)
            assert off <= GEMM_ULPS[g.dtype], f"output {k}: {off} ulps of its largest element"
        else:
            np.testing.assert_array_equal(bits(g), bits(w), err_msg=f"output {k}")


@pytest.mark.skipif(not HAS_CORE, reason="needs the C++ extension")
@pytest.mark.parametrize("row,ex", CASES, ids=IDS)
def test_bf16_twin_agrees_with_the_kernel(row, ex):
    """Within one bf16 ulp of the value (a float32 difference of a few ulps can round either way),
    or an absolute 1e-6 where the value is near zero; NaN where the other has NaN."""
    values = kc.build(row, ex, BF16, **kc.scaled(row, ex, 3000))
    twin_values = kc.copy_call(values)
    got = outputs(row, values, getattr(gf.ops, row.name).cpp(**values))
    want = outputs(row, twin_values, getattr(gf.ops, row.name).numpy(**twin_values))
    for k, (g, w) in enumerate(zip(got, want)):
        g, w = np.asarray(g), np.asarray(w)
        assert g.dtype == w.dtype, f"output {k}"
        if g.dtype.kind not in "fV":
            np.testing.assert_array_equal(g, w, err_msg=f"output {k}")
            continue
        g32, w32 = g.astype(np.float32), w.astype(np.float32)
        np.testing.assert_allclose(g32, w32, rtol=2**-7, atol=1e-6, equal_nan=True, err_msg=f"output {k}")


def test_rounding_is_ml_dtypes_on_every_path(isa):
    """The narrowing is ml_dtypes' astype bit for bit: ties to even, NaN (payloads too) to the quiet
    NaN with its sign, past the largest bf16 to inf, subnormals. leaky_relu with a slope just above 1
    multiplies each negative bf16 input in float32, which makes every kind of float32 to round."""
    slope = 1 + 2**-8
    rng = np.random.default_rng(0)
    special = np.array([0x7F81, 0xFF81, 0x7FC0, 0xFFFF, 0xFF7F, 0x8001, 0x807F, 0xFF80, 0x8000], np.uint16)
    random = rng.integers(0, 2**16, 100_000, dtype=np.uint16) | 0x8000  # every negative bf16 pattern
    x = np.concatenate([special, random]).view(BF16)
    y = np.empty_like(x)
    gf.ops.activation_forward.cpp(x, y, activation="leaky_relu", negative_slope=slope)
    with np.errstate(all="ignore"):
        x32 = x.astype(np.float32)
        want = np.where(x32 > 0, x32, x32 * np.float32(slope)).astype(BF16)
    np.testing.assert_array_equal(y.view(np.uint16), want.view(np.uint16))


def test_bf16_is_refused_where_a_row_does_not_take_it(backend):
    """A kernel without bf16 in its row refuses a bfloat16 array with a TypeError naming it."""
    p = [np.zeros(4, ml_dtypes.bfloat16)]
    g = [np.zeros(4, ml_dtypes.bfloat16)]
    with pytest.raises(TypeError, match="params.* has dtype bfloat16; expected float32 or float64"):
        gf.ops.sgd(p, g, lr=0.1)
