"""The dropout kernels: gradfuse._core.<name> against its NumPy twin gradfuse._numpy.dropout.<name>,
bitwise, on every ISA path; Random123's known answers; the mask's definition and layout; thread
counts; statistics of the mask; values, in-place calls, backward; DropConnect against torch
autograd; bad inputs; signatures.

The contract (cpp/include/gradfuse/dropout.hpp): keep_i = u_i >= min(2^32 - 1, round(p 2^32))
(ties to even; nothing kept when p == 1), u_i = word i % 4 of Philox4x32-10 of block i // 4 under
counter (block, call counter) and key seed; y = x * (keep ? scale : 0), scale = dtype(1 / (1 - p));
the mask is one bit per element, 8 * ceil(n / 64) bytes, padding bits 0.
"""

from __future__ import annotations

import functools
import math

import ml_dtypes
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
from gradfuse._numpy import dropout as twin_math
from gradfuse.table import KERNELS
from test_optim_kernels import assert_bitwise_equal

pytestmark = pytest.mark.kernels

needs_core = pytest.mark.skipif(_core is None, reason="the C++ extension is not available")
twin = on_backend("numpy")  # the kernels; twin_math: the twin module's own pieces (Philox, thresholds)

DTYPES = [np.float32, np.float64]
SIZES = [0, 1, 63, 64, 65, 1000]
PS = [0.0, 0.1, 0.5, 0.9, 1.0]
LARGE = 1_000_003
THREADED = 200_003  # > 2 * the kernels' 16384-element grain, and not a multiple of 64
SEED = 0x0123456789ABCDEF  # both 32-bit halves of the key matter
COUNTER = (5 << 32) + 7  # both halves of the call counter matter
U32 = 2**32

# Random123, tests/kat_vectors: the three "philox4x32 10" lines (counter, key -> output).
KAT = [
    (
        (0x00000000, 0x00000000, 0x00000000, 0x00000000),
        (0x00000000, 0x00000000),
        (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8),
    ),
    (
        (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF),
        (0xFFFFFFFF, 0xFFFFFFFF),
        (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD),
    ),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


# ---- helpers -----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _pool(dtype):
    """Inputs with the awkward values in them: zeros of both signs, subnormals, Inf, NaN."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal(LARGE + 4096)
    x[::97] = 0.0
    x[5::97] = -0.0
    x[11::389] = np.inf
    x[13::389] = -np.inf
    x[17::389] = np.nan
    x = x.astype(dtype)
    x[19::193] = np.finfo(dtype).smallest_normal / 4  # subnormal
    x.flags.writeable = False
    return x


def data(dtype, shape, salt=0):
    n = math.prod(shape)
    start = (salt * 769) % 4096
    return _pool(dtype)[start : start + n].reshape(shape).copy()


def forward(fn, x, p, seed=SEED, counter=COUNTER):
    y = np.full_like(x, 42.0)
    mask = np.full(twin.dropout_mask_bytes(x.size), 0xA5, np.uint8)  # garbage: every byte is written
    assert fn(x, y, mask, p=p, seed=seed, counter=counter) is None
    return y, mask


def backward(fn, dy, mask, p):
    dx = np.full_like(dy, 42.0)
    assert fn(dy, mask, dx, p=p) is None
    return dx


def keep_bits(mask, n):
    return np.unpackbits(mask, bitorder="little")[:n].astype(bool)


def expected_keep(n, p, seed=SEED, counter=COUNTER):
    """The keep indicators by the contract, from philox4x32_10 on explicitly built counters."""
    if p == 1:
        return np.zeros(n, bool)
    blocks = np.arange((n + 3) // 4, dtype=np.uint64)
    counters = np.stack(
        [
            blocks % U32,
            blocks >> np.uint64(32),
            np.full_like(blocks, counter % U32),
            np.full_like(blocks, counter >> 32),
        ],
        axis=1,
    ).astype(np.uint32)
    out = np.empty_like(counters)
    gf.ops.philox4x32_10(counters, np.array([seed % U32, seed >> 32], np.uint32), out)
    u = out.reshape(-1)[:n]
    return u >= min(U32 - 1, round(p * U32))


def scale_of(p, dtype):
    return np.dtype(dtype).type(1.0 / (1.0 - p) if p < 1 else 0.0)


# ---- Philox4x32-10 -------------------------------------------------------------------------------------


def _kat_batch():
    """The known-answer counters (each with its key) in a batch of 37 rows, at row 0 (the first
    lane), 17 (mid-vector) and 36 (the last, padded vector)."""
    return [(0, KAT[0]), (17, KAT[1]), (36, KAT[2])]


@pytest.mark.parametrize("k", range(len(KAT)))
def test_philox_known_answers_twin(k):
    counter, key, want = KAT[k]
    out = np.empty((1, 4), np.uint32)
    twin.philox4x32_10(np.array([counter], np.uint32), np.array(key, np.uint32), out)
    assert [int(v) for v in out[0]] == list(want)


@needs_core
@pytest.mark.parametrize("k", range(len(KAT)))
def test_philox_known_answers_cpp(k, isa):
    """The vector Philox of this ISA path (U32 lanes), each known answer in a lane of a batch."""
    counter, key, want = KAT[k]
    rng = np.random.default_rng(k)
    for row in (0, 17, 36):
        counters = rng.integers(0, U32, (37, 4), dtype=np.uint64).astype(np.uint32)
        counters[row] = counter
        out = np.zeros_like(counters)
        _core.philox4x32_10(counters, np.array(key, np.uint32), out)
        assert [int(v) for v in out[row]] == list(want), (isa, row)


@needs_core
@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 1000])
def test_philox_cpp_matches_twin(n, isa):
    rng = np.random.default_rng(n)
    counters = rng.integers(0, U32, (n, 4), dtype=np.uint64).astype(np.uint32)
    key = np.array([0x9E3779B9, 0xFFFFFFFF], np.uint32)
    ours, ref = np.zeros_like(counters), np.zeros_like(counters)
    _core.philox4x32_10(counters, key, ours)
    twin.philox4x32_10(counters, key, ref)
    np.testing.assert_array_equal(ours, ref)


def test_twin_philox_is_not_numpys_philox4x64():
    """numpy.random.Philox is Philox4x64-10: its words are not these (the reason for the twin's own)."""
    bits = np.random.Philox(counter=0, key=0).random_raw(2)  # 4x64's first 64-bit outputs
    assert int(bits[0]) & 0xFFFFFFFF != KAT[0][2][0]


# ---- the mask: definition and layout --------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("n", [1, 63, 64, 65, 1000])
def test_mask_is_philox_of_element_index(n, p, backend):
    x = data(np.float32, (n,))
    _, mask = forward(gf.ops.dropout_forward, x, p)
    assert mask.dtype == np.uint8 and mask.shape == (8 * -(-n // 64),)
    np.testing.assert_array_equal(keep_bits(mask, n), expected_keep(n, p))
    assert not np.unpackbits(mask, bitorder="little")[n:].any(), "padding bits must be 0"


@pytest.mark.parametrize(
    "n, want", [(0, 0), (1, 8), (63, 8), (64, 8), (65, 16), (128, 16), (1000, 128), (2**40 + 1, 2**37 + 8)]
)
def test_dropout_mask_bytes(n, want, backend):
    assert gf.ops.dropout_mask_bytes(n) == want


def _tie_elements():
    """Elements 0..63 of the SEED/COUNTER call with their u, some with even u, some with odd."""
    u = twin_math.random_words(64, SEED, COUNTER)
    return [(k, int(u[k])) for k in range(64)]


def test_threshold_rounding_twin_rule():
    assert twin_math.threshold(0.0) == 0
    assert twin_math.threshold(0.5) == 2**31
    assert twin_math.threshold(2.0**-33) == 0  # 0.5 -> 0 (ties to even)
    assert twin_math.threshold(3 * 2.0**-33) == 2  # 1.5 -> 2
    assert twin_math.threshold(1 - 2.0**-40) == U32 - 1  # round(2^32 - 2^-8) = 2^32, clamped
    assert twin_math.threshold(1.0) == U32 - 1  # (p == 1 keeps nothing: handled apart)


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_threshold_is_round_half_even_of_p_times_2_32(k, backend):
    """For an element with random word u: p = u / 2^32 keeps it, p = (u + 1) / 2^32 drops it, and
    p = (u + 0.5) / 2^32 (a tie) keeps it exactly when u is even (threshold rounds to u, else u + 1)."""
    elements = _tie_elements()
    parity = k % 2
    idx, u = [e for e in elements if e[1] % 2 == parity][k // 2]
    x = data(np.float64, (64,))
    for p, kept in ((u / U32, True), ((u + 1) / U32, False), ((u + 0.5) / U32, u % 2 == 0)):
        _, mask = forward(gf.ops.dropout_forward, x, p)
        assert keep_bits(mask, 64)[idx] == kept, (p, u)


# ---- C++ == NumPy twin, bitwise, on every ISA path -------------------------------------------------------


def assert_same_call(x, p, dy, seed=SEED, counter=COUNTER, what=""):
    y1, m1 = forward(_core.dropout_forward, x, p, seed, counter)
    y2, m2 = forward(twin.dropout_forward, x, p, seed, counter)
    np.testing.assert_array_equal(m1, m2, err_msg=f"{what} mask")
    assert_bitwise_equal(y1, y2, err_msg=f"{what} y")
    dx1 = backward(_core.dropout_backward, dy, m1, p)
    dx2 = backward(twin.dropout_backward, dy, m1, p)
    assert_bitwise_equal(dx1, dx2, err_msg=f"{what} dx")
    return y1, m1, dx1


@needs_core
@pytest.mark.parametrize("p", PS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("size", SIZES)
def test_cpp_matches_twin_bitwise(size, dtype, p, isa):
    x, dy = data(dtype, (size,), 1), data(dtype, (size,), 2)
    assert_same_call(x, p, dy, what=f"{isa} n={size} p={p}")


@functools.lru_cache(maxsize=None)
def _large_twin(dtype):
    x, dy = data(dtype, (LARGE,), 3), data(dtype, (LARGE,), 4)
    y, mask = forward(twin.dropout_forward, x, 0.3)
    return x, dy, y, mask, backward(twin.dropout_backward, dy, mask, 0.3)


@needs_core
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_cpp_matches_twin_bitwise_large(dtype, isa):
    x, dy, y_ref, mask_ref, dx_ref = _large_twin(dtype)
    y, mask = forward(_core.dropout_forward, x, 0.3)
    np.testing.assert_array_equal(mask, mask_ref)
    assert_bitwise_equal(y, y_ref, err_msg=f"{isa} y")
    assert_bitwise_equal(backward(_core.dropout_backward, dy, mask, 0.3), dx_ref, err_msg=f"{isa} dx")


@needs_core
@pytest.mark.parametrize("seed, counter", [(0, 0), (U32 - 1, U32 - 1), (2**64 - 1, 2**64 - 1), (U32, 1)])
def test_cpp_matches_twin_extreme_keys(seed, counter, isa):
    x = data(np.float32, (1000,))
    assert_same_call(x, 0.5, x, seed, counter, what=f"seed={seed} counter={counter}")


# Outputs of 16 MiB and more are written with non-temporal stores, the vectors shifted onto the
# output's vector-size boundary (so they straddle mask words): every alignment of the output.
STREAM_SIZES = {np.float32: (16 << 20) // 4 + 77, np.float64: (16 << 20) // 8 + 77}


@functools.lru_cache(maxsize=None)
def _stream_twin(dtype):
    n = STREAM_SIZES[dtype]
    rng = np.random.default_rng(15)
    x, dy = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    y, mask = forward(twin.dropout_forward, x, 0.3)
    return x, dy, y, mask, backward(twin.dropout_backward, dy, mask, 0.3)


def _at_offset(a, offset):
    """A copy of a whose data starts `offset` elements past a 64-byte boundary."""
    buf = np.empty(a.size + 64, a.dtype)
    start = (-buf.ctypes.data % 64) // a.itemsize + offset
    out = buf[start : start + a.size]
    out[...] = a
    assert out.ctypes.data % 64 == offset * a.itemsize
    return out


@needs_core
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_streaming_outputs_match_twin_at_every_alignment(dtype, isa, threads):
    x, dy, y_ref, mask_ref, dx_ref = _stream_twin(dtype)
    # (the scalar path has one-element vectors: every offset is the same case there)
    for offset in range(64 // np.dtype(dtype).itemsize) if isa != "scalar" else (0, 1):
        threads(1 + offset % 2)
        y = _at_offset(np.zeros_like(x), offset)
        mask = np.zeros_like(mask_ref)
        _core.dropout_forward(x, y, mask, p=0.3, seed=SEED, counter=COUNTER)
        np.testing.assert_array_equal(mask, mask_ref, err_msg=f"offset {offset}")
        assert_bitwise_equal(y, y_ref, err_msg=f"y at offset {offset}")
        dx = _at_offset(np.zeros_like(dy), offset)
        _core.dropout_backward(dy, mask, dx, p=0.3)
        assert_bitwise_equal(dx, dx_ref, err_msg=f"dx at offset {offset}")
    threads(2)
    inplace = _at_offset(x, 3)
    _core.dropout_forward(inplace, inplace, mask, p=0.3, seed=SEED, counter=COUNTER)
    assert_bitwise_equal(inplace, y_ref, err_msg="in place")


SHAPES = [(), (7,), (3, 5), (2, 3, 4, 5), (2, 0, 3), (1, 1, 65)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_any_shape_is_the_flattened_array(shape, backend):
    """The mask and y of an array of any rank are those of its flattened copy."""
    x = data(np.float32, shape)
    y, mask = forward(gf.ops.dropout_forward, x, 0.5)
    y_flat, mask_flat = forward(gf.ops.dropout_forward, x.reshape(-1), 0.5)
    assert y.shape == shape
    np.testing.assert_array_equal(mask, mask_flat)
    assert_bitwise_equal(y.reshape(-1), y_flat, err_msg=str(shape))
    dx = backward(gf.ops.dropout_backward, x, mask, 0.5)
    assert dx.shape == shape
    assert_bitwise_equal(dx, y, err_msg="backward of x with forward's mask")


# ---- determinism --------------------------------------------------------------------------------------------


@needs_core
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_one_and_two_threads_and_two_runs_are_bitwise_equal(dtype, isa, threads):
    x, dy = data(dtype, (THREADED,), 5), data(dtype, (THREADED,), 6)
    results = []
    for n in (1, 2, 2):
        threads(n)
        if gf.get_num_threads() != n:
            pytest.skip(f"OpenMP gives {gf.get_num_threads()} threads here, not {n}")
        y, mask = forward(_core.dropout_forward, x, 0.4)
        results.append((y, mask, backward(_core.dropout_backward, dy, mask, 0.4)))
    for (y, mask, dx), what in zip(results[1:], ("1 vs 2 threads", "two 2-thread runs")):
        np.testing.assert_array_equal(mask, results[0][1], err_msg=what)
        assert_bitwise_equal(y, results[0][0], err_msg=what)
        assert_bitwise_equal(dx, results[0][2], err_msg=what)
    np.testing.assert_array_equal(results[0][1], forward(twin.dropout_forward, x, 0.4)[1])


# ---- statistics of the mask ------------------------------------------------------------------------------------

STAT_N = 1 << 18


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_kept_fraction_is_binomial(p, backend):
    """The number kept out of n is Binomial(n, 1 - p): within 5 standard deviations."""
    x = np.ones(STAT_N, np.float32)
    y, mask = forward(gf.ops.dropout_forward, x, p)
    kept = int(keep_bits(mask, STAT_N).sum())
    assert abs(kept - STAT_N * (1 - p)) <= 5 * math.sqrt(STAT_N * p * (1 - p)), kept
    assert kept == int(np.count_nonzero(y))


def _agreement_bound(p, n):
    """Two independent masks agree on an element with probability q = p^2 + (1-p)^2."""
    q = p * p + (1 - p) * (1 - p)
    return q, 5 * math.sqrt(q * (1 - q) / n)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_seeds_and_calls_give_independent_masks(p, backend):
    """Masks of other seeds (either 32-bit half) and other calls (either half of the counter)
    agree with the reference mask only as independent draws would."""
    n = 1 << 16
    x = np.ones(n, np.float32)
    ref = keep_bits(forward(gf.ops.dropout_forward, x, p)[1], n)
    q, tol = _agreement_bound(p, n)
    variants = {
        "seed + 1": (SEED + 1, COUNTER),
        "seed + 2^32": (SEED + U32, COUNTER),
        "next call": (SEED, COUNTER + 1),
        "counter + 2^32": (SEED, COUNTER + U32),
        "seed 0 counter 0": (0, 0),
    }
    for what, (seed, counter) in variants.items():
        other = keep_bits(forward(gf.ops.dropout_forward, x, p, seed, counter)[1], n)
        agree = float(np.mean(other == ref))
        assert abs(agree - q) <= tol, (what, agree, q)
    # and within one mask, neighbours (same block, next block, next mask word) are independent
    for lag in (1, 4, 64):
        agree = float(np.mean(ref[lag:] == ref[:-lag]))
        assert abs(agree - q) <= _agreement_bound(p, n - lag)[1], (lag, agree)


def test_same_seed_and_counter_replay_the_mask(backend):
    x = data(np.float32, (5000,))
    (y1, m1), (y2, m2) = forward(gf.ops.dropout_forward, x, 0.5), forward(gf.ops.dropout_forward, x, 0.5)
    np.testing.assert_array_equal(m1, m2)
    assert_bitwise_equal(y1, y2, err_msg="replay")


# ---- values ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", PS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_forward_and_backward_values(dtype, p, backend):
    n = 1000
    x, dy = data(dtype, (n,), 8), data(dtype, (n,), 9)
    y, mask = forward(gf.ops.dropout_forward, x, p)
    keep = keep_bits(mask, n)
    s = scale_of(p, dtype)
    with np.errstate(invalid="ignore"):  # Inf * 0
        want = np.where(keep, x * s, x * dtype(0))
        want_dx = np.where(keep, dy * s, dy * dtype(0))
    assert_bitwise_equal(y, want, err_msg="y")
    assert_bitwise_equal(backward(gf.ops.dropout_backward, dy, mask, p), want_dx, err_msg="dx")
    if p == 0:
        assert keep.all()
        assert_bitwise_equal(y, x, err_msg="p = 0 is the identity")
    if p == 1:
        assert not mask.any()
        assert not np.any(y[np.isfinite(x)]), "p = 1 gives zeros"
    if p == 0.5:
        assert s == 2


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_dropped_nan_stays_nan_like_torch(dtype, backend):
    """x * 0 for a dropped element, as torch's x * mask / (1 - p): NaN and Inf give NaN, -x gives -0.0."""
    n = 256
    for value, check in ((np.nan, np.isnan), (np.inf, np.isnan), (-1.0, lambda v: (v == 0) & np.signbit(v))):
        x = np.full(n, value, dtype)
        y, mask = forward(gf.ops.dropout_forward, x, 0.5)
        dropped = ~keep_bits(mask, n)
        assert dropped.any() and check(y[dropped]).all(), value


def test_backward_is_forward_with_the_same_mask(backend):
    """dropout_backward(dy, mask) is dropout_forward(dy) of the same seed and counter."""
    dy = data(np.float64, (3, 333), 10)
    _, mask = forward(gf.ops.dropout_forward, data(np.float64, (3, 333), 11), 0.25)
    y_dy, mask_dy = forward(gf.ops.dropout_forward, dy, 0.25)
    np.testing.assert_array_equal(mask_dy, mask)
    assert_bitwise_equal(backward(gf.ops.dropout_backward, dy, mask, 0.25), y_dy, err_msg="dx")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_in_place(dtype, backend):
    """y may be x and dx may be dy (exactly the same array): the same results as out of place."""
    x, dy = data(dtype, (4, 1001), 12), data(dtype, (4, 1001), 13)
    y_ref, mask_ref = forward(gf.ops.dropout_forward, x, 0.3)
    dx_ref = backward(gf.ops.dropout_backward, dy, mask_ref, 0.3)
    mask = np.zeros_like(mask_ref)
    gf.ops.dropout_forward(x, x, mask, p=0.3, seed=SEED, counter=COUNTER)
    np.testing.assert_array_equal(mask, mask_ref)
    assert_bitwise_equal(x, y_ref, err_msg="in-place y")
    gf.ops.dropout_backward(dy, mask, dy, p=0.3)
    assert_bitwise_equal(dy, dx_ref, err_msg="in-place dx")


@needs_core
def test_in_place_large_cpp(isa, threads):
    threads(2)
    x = data(np.float32, (THREADED,), 14)
    y_ref, mask_ref = forward(twin.dropout_forward, x, 0.7)
    mask = np.zeros_like(mask_ref)
    _core.dropout_forward(x, x, mask, p=0.7, seed=SEED, counter=COUNTER)
    np.testing.assert_array_equal(mask, mask_ref)
    assert_bitwise_equal(x, y_ref, err_msg="in-place y")


# ---- bfloat16 (ml_dtypes) -------------------------------------------------------------------------------
# The contract (dropout.hpp, "dtypes"): a bf16 call is the float32 call on the widened input, each
# output rounded to bf16 once (tests/test_bf16.py checks that on the table's small examples; here:
# every size class, the streamed outputs at every alignment, threads, special values, torch).

BF16 = np.dtype(ml_dtypes.bfloat16)
# NaNs with payloads (quiet and signalling, both signs), +-Inf, the largest finite bf16 (times a
# scale > 1 it overflows to Inf), the smallest normal and a subnormal, +-0
BF16_SPECIAL = np.array(
    [0x7F81, 0xFFC1, 0x7FC0, 0x7F80, 0xFF80, 0x7F7F, 0xFF7F, 0x0080, 0x8001, 0x0000, 0x8000], np.uint16
)


def bf16_data(shape, salt=0):
    """float32 pool values rounded to bf16, with every special pattern spread through them."""
    n = math.prod(shape)
    x = data(np.float32, (n,), salt).astype(BF16)
    bits = x.view(np.uint16)
    bits[salt % 7 :: 61] = np.resize(BF16_SPECIAL, bits[salt % 7 :: 61].size)
    return x.reshape(shape)


def assert_same_bits(a, b, err_msg=""):
    assert a.dtype == b.dtype == BF16 and a.shape == b.shape, err_msg
    differ = np.flatnonzero(a.view(np.uint16) != b.view(np.uint16))
    assert not differ.size, f"{err_msg}: {differ.size} differ, first at {differ[:5].tolist()}: " + (
        f"{a.view(np.uint16).ravel()[differ[:5]]} vs {b.view(np.uint16).ravel()[differ[:5]]}"
    )


def float32_call_rounded(fn_fwd, fn_bwd, x, dy, p):
    """The float32 kernels on the widened inputs, outputs rounded to bf16 once."""
    with np.errstate(over="ignore"):
        y32, mask = forward(fn_fwd, x.astype(np.float32), p)
        dx32 = backward(fn_bwd, dy.astype(np.float32), mask, p)
        return y32.astype(BF16), mask, dx32.astype(BF16)


@needs_core
@pytest.mark.parametrize("p", PS)
@pytest.mark.parametrize("size", [*SIZES, THREADED])
def test_bf16_is_the_float32_call_rounded_once(size, p, isa, threads):
    x, dy = bf16_data((size,), 1), bf16_data((size,), 2)
    y_ref, mask_ref, dx_ref = float32_call_rounded(_core.dropout_forward, _core.dropout_backward, x, dy, p)
    for n in (1, 2):
        threads(n)
        y, mask = forward(_core.dropout_forward, x, p)
        np.testing.assert_array_equal(mask, mask_ref, err_msg="the mask does not depend on the dtype")
        assert_same_bits(y, y_ref, f"{isa} y")
        assert_same_bits(backward(_core.dropout_backward, dy, mask, p), dx_ref, f"{isa} dx")


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_bf16_twin_is_bitwise_the_kernel(p, backend):
    """The twin (upcast, the float32 twin, round once) gives the same bits as the float32 kernel
    rounded: one correctly rounded float32 product per element, then one rounding."""
    x, dy = bf16_data((3, 1001), 3), bf16_data((3, 1001), 4)
    y_ref, mask_ref, dx_ref = float32_call_rounded(twin.dropout_forward, twin.dropout_backward, x, dy, p)
    y, mask = forward(gf.ops.dropout_forward, x, p)
    np.testing.assert_array_equal(mask, mask_ref)
    assert_same_bits(y, y_ref, "y")
    assert_same_bits(backward(gf.ops.dropout_backward, dy, mask, p), dx_ref, "dx")


@needs_core
def test_bf16_streamed_outputs_at_every_alignment(isa, threads):
    """bf16 outputs of 16 MiB and more are streamed too (vectors of 16 / 8 bf16, 32 / 16 bytes)."""
    n = (16 << 20) // 2 + 77
    rng = np.random.default_rng(16)
    x, dy = rng.standard_normal(n, np.float32).astype(BF16), rng.standard_normal(n, np.float32).astype(BF16)
    y_ref, mask_ref, dx_ref = float32_call_rounded(_core.dropout_forward, _core.dropout_backward, x, dy, 0.3)
    for offset in range(32) if isa != "scalar" else (0, 1):
        threads(1 + offset % 2)
        y = _at_offset(np.zeros_like(x), offset)
        mask = np.zeros_like(mask_ref)
        _core.dropout_forward(x, y, mask, p=0.3, seed=SEED, counter=COUNTER)
        np.testing.assert_array_equal(mask, mask_ref, err_msg=f"offset {offset}")
        assert_same_bits(y, y_ref, f"y at offset {offset}")
        dx = _at_offset(np.zeros_like(dy), offset)
        _core.dropout_backward(dy, mask, dx, p=0.3)
        assert_same_bits(dx, dx_ref, f"dx at offset {offset}")
    inplace = _at_offset(x, 5)
    _core.dropout_forward(inplace, inplace, mask, p=0.3, seed=SEED, counter=COUNTER)
    assert_same_bits(inplace, y_ref, "in place")


def test_bf16_special_values(backend):
    """Kept: NaN becomes the quiet NaN with its sign (ml_dtypes' rounding), the largest bf16 times
    1 / 0.9 overflows to Inf, subnormals scale; dropped: NaN and Inf give NaN (x * 0), -x gives -0."""
    x = np.tile(BF16_SPECIAL, 64).view(BF16)
    y, mask = forward(gf.ops.dropout_forward, x, 0.1)
    keep = keep_bits(mask, x.size)
    bits, xb = y.view(np.uint16), x.view(np.uint16)
    nan_in = (xb & 0x7FFF) > 0x7F80
    assert keep.any() and (~keep).any()
    np.testing.assert_array_equal(bits[nan_in], (xb[nan_in] & 0x8000) | 0x7FC0)
    np.testing.assert_array_equal(bits[keep & (xb == 0x7F7F)], 0x7F80)  # overflow to +Inf
    np.testing.assert_array_equal(bits[keep & (xb == 0xFF80)], 0xFF80)
    inf_dropped = ~keep & ((xb & 0x7FFF) == 0x7F80)
    assert np.isnan(y[inf_dropped].astype(np.float32)).all()
    np.testing.assert_array_equal(bits[~keep & (xb == 0xFF7F)], 0x8000)  # -x * 0 = -0.0
    np.testing.assert_array_equal(bits[keep & (xb == 0x8001)], 0x8001)  # -2^-133 / 0.9 rounds back


@pytest.mark.parametrize("shape", [(0,), (2, 0, 3), (1,), (63,)], ids=str)
def test_bf16_tiny_and_empty(shape, backend):
    x = bf16_data(shape, 5)
    y, mask = forward(gf.ops.dropout_forward, x, 0.5)
    assert y.dtype == BF16 and y.shape == shape and mask.size == gf.ops.dropout_mask_bytes(x.size)
    keep = keep_bits(mask, x.size).reshape(shape)
    with np.errstate(invalid="ignore", over="ignore"):
        want = np.where(keep, x.astype(np.float32) * 2, x.astype(np.float32) * 0).astype(BF16)
    assert_same_bits(y, want, "y")


@pytest.mark.parametrize("p", [0.5, 0.2, 0.1, 0.3])
def test_bf16_matches_torch_dropout_on_torchs_mask(p, backend, torch):
    """torch's bf16 dropout (what an autocast model's dropout runs: autocast leaves dropout to its
    input's dtype, bf16 after an autocast Linear) on torch's own random mask; the mask recovered from
    its output and packed into ours, our backward applies it (the forward's arithmetic) to x and to
    dy. torch multiplies by a mask already scaled in bf16, i.e. by 1 / (1 - p) rounded to bf16; we
    by the float32 scale: bit for bit where the scale is exact in bf16 (p = 0.5, 0.2), within one
    bf16 ulp otherwise. torch's backward the same."""
    n = 4099
    rng = np.random.default_rng(21)
    x = (rng.standard_normal(n, np.float32) + 4 * np.sign(rng.standard_normal(n))).astype(BF16)  # no zeros
    dy = rng.standard_normal(n, np.float32).astype(BF16)
    tx = torch.from_numpy(x.view(np.int16).copy()).view(torch.bfloat16).requires_grad_(True)
    ty = torch.nn.functional.dropout(tx, p, training=True)
    ty.backward(torch.from_numpy(dy.view(np.int16).copy()).view(torch.bfloat16))
    y_torch = ty.detach().view(torch.int16).numpy().view(BF16)
    dx_torch = tx.grad.view(torch.int16).numpy().view(BF16)
    keep = y_torch.astype(np.float32) != 0
    assert 0 < keep.sum() < n
    mask = np.zeros(gf.ops.dropout_mask_bytes(n), np.uint8)
    packed = np.packbits(keep, bitorder="little")
    mask[: packed.size] = packed
    y = backward(gf.ops.dropout_backward, x, mask, p)
    dx = backward(gf.ops.dropout_backward, dy, mask, p)
    exact = float(ml_dtypes.bfloat16(1 / (1 - p))) == np.float32(1 / (1 - p))
    for got, want, what in ((y, y_torch, "y"), (dx, dx_torch, "dx")):
        if exact:
            assert_same_bits(got, want, what)
        else:
            ulps = np.abs(got.view(np.uint16).astype(np.int32) - want.view(np.uint16).astype(np.int32))
            assert ulps.max() <= 1, what
            assert (ulps == 1).any(), f"{what}: torch's bf16-rounded scale shows somewhere"


# ---- DropConnect: the same kernels on a dense layer's weights -------------------------------------------------


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_dropconnect_gradients_match_torch_autograd(dtype, p, backend, torch):
    """W_masked = dropout_forward(W); y = x @ W_masked + b; dW = dropout_backward(x^T @ dy): the
    gradients of y = x @ (W * keep / (1 - p)) + b under torch autograd, keep from the mask."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((32, 20)).astype(dtype)
    w = rng.standard_normal((20, 16)).astype(dtype)
    b = rng.standard_normal(16).astype(dtype)
    dy = rng.standard_normal((32, 16)).astype(dtype)
    w_masked = np.empty_like(w)
    mask_w = np.empty(gf.ops.dropout_mask_bytes(w.size), np.uint8)
    gf.ops.dropout_forward(w, w_masked, mask_w, p=p, seed=11, counter=3)
    y = x @ w_masked + b
    dx = dy @ w_masked.T
    db = dy.sum(axis=0)
    dw = np.empty_like(w)
    gf.ops.dropout_backward(x.T @ dy, mask_w, dw, p=p)

    keep = torch.from_numpy(keep_bits(mask_w, w.size).reshape(w.shape).astype(dtype))
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    yt = xt @ (wt * keep / (1 - p) if p < 1 else wt * keep * 0) + bt
    yt.backward(torch.from_numpy(dy))
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, yt.detach().numpy(), **tol)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol)
    np.testing.assert_allclose(dw, wt.grad.numpy(), **tol)
    np.testing.assert_allclose(db, bt.grad.numpy(), **tol)
    if 0 < p < 1:
        assert 0 < keep.sum() < w.size


# ---- bad inputs: the documented exception, the same error on both backends, nothing written ------------------------


def _forward_case(**change):
    """x, y, mask and the keyword arguments of a valid forward call, with `change` applied."""
    x = data(np.float32, (10, 13), 20)
    args = dict(
        x=x, y=np.zeros_like(x), mask=np.zeros(twin.dropout_mask_bytes(x.size), np.uint8), p=0.5, seed=1, counter=2
    )
    args.update(change)
    return args


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _bad_forward_cases():
    x = data(np.float32, (10, 13), 20)
    buf = np.zeros(x.size + 1, np.float32)
    buf[: x.size] = x.reshape(-1)
    mask_bytes = twin.dropout_mask_bytes(x.size)
    big = np.zeros(x.size + 64, np.float32)
    return {
        "x list": (TypeError, dict(x=x.tolist())),
        "x int32": (TypeError, dict(x=np.zeros(x.shape, np.int32))),
        "y float64": (TypeError, dict(y=np.zeros(x.shape, np.float64))),
        "mask int8": (TypeError, dict(mask=np.zeros(mask_bytes, np.int8))),
        "mask bool": (TypeError, dict(mask=np.zeros(mask_bytes, bool))),
        "mask uint64": (TypeError, dict(mask=np.zeros(mask_bytes // 8, np.uint64))),
        "mask None": (TypeError, dict(mask=None)),
        "mask too small": (ValueError, dict(mask=np.zeros(mask_bytes - 8, np.uint8))),
        "mask too large": (ValueError, dict(mask=np.zeros(mask_bytes + 1, np.uint8))),
        "mask 2-D": (ValueError, dict(mask=np.zeros((2, mask_bytes // 2), np.uint8))),
        "mask read-only": (ValueError, dict(mask=_readonly(np.zeros(mask_bytes, np.uint8)))),
        "y read-only": (ValueError, dict(y=_readonly(np.zeros_like(x)))),
        "y wrong shape": (ValueError, dict(y=np.zeros((13, 10), np.float32))),
        "y wrong size": (ValueError, dict(y=np.zeros((10, 14), np.float32))),
        "y not contiguous": (ValueError, dict(y=np.zeros((13, 10), np.float32).T)),
        "y overlaps x": (ValueError, dict(x=buf[: x.size].reshape(x.shape), y=buf[1:].reshape(x.shape))),
        "y is x reshaped": (ValueError, dict(x=big[: x.size], y=big[: x.size].reshape(x.shape))),
        "mask inside x": (
            ValueError,
            dict(x=big[: x.size], y=np.zeros(x.size, np.float32), mask=big.view(np.uint8)[:mask_bytes]),
        ),
        "mask inside y": (ValueError, dict(y=big[: x.size].reshape(x.shape), mask=big.view(np.uint8)[:mask_bytes])),
        "p negative": (ValueError, dict(p=-0.1)),
        "p above 1": (ValueError, dict(p=1.5)),
        "p nan": (ValueError, dict(p=float("nan"))),
        "p inf": (ValueError, dict(p=float("inf"))),
        "p str": (TypeError, dict(p="0.5")),
        "seed negative": (ValueError, dict(seed=-1)),
        "seed 2^64": (ValueError, dict(seed=2**64)),
        "seed float": (TypeError, dict(seed=1.0)),
        "seed bool": (TypeError, dict(seed=True)),
        "seed None": (TypeError, dict(seed=None)),
        "counter negative": (ValueError, dict(counter=-5)),
        "counter 2^64": (ValueError, dict(counter=2**64 + 3)),
        "counter str": (TypeError, dict(counter="1")),
    }


BAD_FORWARD = _bad_forward_cases()


def _call_forward(fn, args):
    return fn(args["x"], args["y"], args["mask"], p=args["p"], seed=args["seed"], counter=args["counter"])


def _raises_same_on_both_backends(kernel, call, exc, arrays):
    """call(ns) raises exc on every backend, a structured error naming the kernel and the argument,
    the same (fields and message) on both, and leaves arrays unchanged."""
    errors = {}
    for name, ns in (("cpp", _core), ("numpy", twin)):
        if ns is None:
            continue
        before = snapshot(*arrays)
        with pytest.raises(exc) as info:
            call(ns)
        assert_unchanged(before, *arrays)
        assert_kernel_error(info.value, kernel)
        errors[name] = info.value
    if len(errors) == 2:
        assert_same_error(errors["cpp"], errors["numpy"])
    return {name: str(e) for name, e in errors.items()}


@pytest.mark.parametrize("case", BAD_FORWARD)
def test_bad_forward_arguments(case):
    exc, change = BAD_FORWARD[case]
    args = _forward_case(**change)
    arrays = [a for a in (args["x"], args["y"], args["mask"]) if isinstance(a, np.ndarray)]
    messages = _raises_same_on_both_backends(
        "dropout_forward", lambda m: _call_forward(m.dropout_forward, args), exc, arrays
    )
    if case.startswith("p ") and exc is ValueError:
        assert "dropout probability has to be between 0 and 1, but got" in messages["numpy"]


def test_forward_accepts_extreme_and_numpy_keys(backend):
    x = data(np.float32, (100,))
    y1, m1 = forward(gf.ops.dropout_forward, x, 0.5, seed=2**64 - 1, counter=2**64 - 1)
    y2, m2 = forward(gf.ops.dropout_forward, x, 0.5, seed=np.uint64(2**64 - 1), counter=np.uint64(2**64 - 1))
    np.testing.assert_array_equal(m1, m2)
    _, m4 = forward(gf.ops.dropout_forward, x, 0.5, seed=np.int32(3), counter=np.uint8(4))
    np.testing.assert_array_equal(m4, forward(gf.ops.dropout_forward, x, 0.5, seed=3, counter=4)[1])
    y3, m3 = forward(gf.ops.dropout_forward, x, 1, seed=0, counter=0)  # int p
    assert not m3.any()


def _bad_backward_cases():
    dy = data(np.float64, (7, 9), 21)
    mask_bytes = twin.dropout_mask_bytes(dy.size)
    big = np.zeros(dy.size + 16, np.float64)
    return {
        "dy float16": (TypeError, dict(dy=dy.astype(np.float16))),
        "dx float32": (TypeError, dict(dx=np.zeros(dy.shape, np.float32))),
        "mask uint16": (TypeError, dict(mask=np.zeros(mask_bytes // 2, np.uint16))),
        "mask wrong size": (ValueError, dict(mask=np.zeros(mask_bytes + 8, np.uint8))),
        "dx read-only": (ValueError, dict(dx=_readonly(np.zeros_like(dy)))),
        "dx wrong shape": (ValueError, dict(dx=np.zeros((9, 7)))),
        "dx overlaps dy": (ValueError, dict(dy=big[: dy.size], dx=big[1 : dy.size + 1])),
        "dx overlaps mask": (
            ValueError,
            dict(dx=big[: dy.size].reshape(dy.shape), mask=big.view(np.uint8)[:mask_bytes]),
        ),
        "p negative": (ValueError, dict(p=-1.0)),
        "p above 1": (ValueError, dict(p=1.0000001)),
    }


BAD_BACKWARD = _bad_backward_cases()


@pytest.mark.parametrize("case", BAD_BACKWARD)
def test_bad_backward_arguments(case):
    exc, change = BAD_BACKWARD[case]
    dy = data(np.float64, (7, 9), 21)
    args = dict(dy=dy, mask=np.full(twin.dropout_mask_bytes(dy.size), 0xFF, np.uint8), dx=np.zeros_like(dy), p=0.5)
    args.update(change)
    arrays = [args["dy"], args["mask"], args["dx"]]
    _raises_same_on_both_backends(
        "dropout_backward", lambda m: m.dropout_backward(args["dy"], args["mask"], args["dx"], p=args["p"]), exc, arrays
    )


def _bad_philox_cases():
    c = np.arange(20, dtype=np.uint32).reshape(5, 4)
    return {
        "counters int32": (TypeError, dict(counters=c.astype(np.int32))),
        "counters uint64": (TypeError, dict(counters=c.astype(np.uint64))),
        "key uint8": (TypeError, dict(key=np.zeros(2, np.uint8))),
        "counters (5, 3)": (ValueError, dict(counters=c[:, :3].copy(), out=np.zeros((5, 3), np.uint32))),
        "counters 1-D": (ValueError, dict(counters=c.reshape(-1), out=np.zeros(20, np.uint32))),
        "key (3,)": (ValueError, dict(key=np.zeros(3, np.uint32))),
        "out wrong shape": (ValueError, dict(out=np.zeros((4, 4), np.uint32))),
        "out read-only": (ValueError, dict(out=_readonly(np.zeros((5, 4), np.uint32)))),
        "out is counters": (ValueError, dict(out="counters")),
    }


BAD_PHILOX = _bad_philox_cases()


@pytest.mark.parametrize("case", BAD_PHILOX)
def test_bad_philox_arguments(case):
    exc, change = BAD_PHILOX[case]
    args = dict(
        counters=np.arange(20, dtype=np.uint32).reshape(5, 4),
        key=np.array([1, 2], np.uint32),
        out=np.zeros((5, 4), np.uint32),
    )
    args.update(change)
    if isinstance(args["out"], str):
        args["out"] = args[args["out"]]
    arrays = [args["counters"], args["key"], args["out"]]
    _raises_same_on_both_backends(
        "philox4x32_10", lambda m: m.philox4x32_10(args["counters"], args["key"], args["out"]), exc, arrays
    )


@pytest.mark.parametrize("n, exc", [(-1, ValueError), (1.5, TypeError), ("8", TypeError), (2**64, TypeError)])
def test_bad_mask_bytes_argument(n, exc):
    assert_refused_alike("dropout_mask_bytes", lambda: ((n,), {}), exc)


# ---- signatures and dispatch ---------------------------------------------------------------------------------------


def test_kernels_list():
    """The family's rows in the kernel table, each with its twin in gradfuse._numpy.dropout."""
    names = ("dropout_forward", "dropout_backward", "dropout_mask_bytes", "philox4x32_10")
    assert tuple(name for name, row in KERNELS.items() if row.family == "dropout") == names
    assert all(callable(getattr(twin_math, name)) for name in names)
