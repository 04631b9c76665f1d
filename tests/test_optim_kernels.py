"""The fused optimizer kernels themselves: gradfuse._core.<name> against its NumPy twin
gradfuse._numpy.optim.<name>, bitwise, on every ISA path; thread-count and run-to-run determinism;
arena coalescing; signatures; skip_nonfinite, grad_scale and all_finite.

The contract (cpp/include/gradfuse/optim.hpp): element-wise math with the same operation order on
every ISA path and in the twin, no fma, so a step is bitwise identical for every thread count,
every ISA path and the NumPy twin.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest

import gradfuse as gf
from gradfuse._ext import _core
from gradfuse._numpy import optim as twin

from conftest import assert_unchanged, snapshot

pytestmark = pytest.mark.kernels

needs_core = pytest.mark.skipif(_core is None, reason="the C++ extension is not available")

DTYPES = [np.float32, np.float64]
LARGE = 1_000_003  # the large parity case
THREADED = 100_003  # > 2 * the kernels' 16384-element grain: two threads really split it

# What each state slot of a kernel holds, in its positional order: "signed" (a running mean of
# gradients, a momentum buffer, Rprop's prev), "nonneg" (squares, sums, maxima), "positive"
# (Rprop's step sizes).
STATE_KINDS = {
    "sgd": ("signed",),
    "adam": ("signed", "nonneg", "nonneg"),
    "adagrad": ("nonneg",),
    "rmsprop": ("nonneg", "signed", "signed"),
    "adadelta": ("nonneg", "nonneg"),
    "adamax": ("signed", "nonneg"),
    "nadam": ("signed", "nonneg"),
    "radam": ("signed", "nonneg"),
    "rprop": ("signed", "positive"),
    "lion": ("signed",),
}


def nadam_mu_product(step, beta1=0.9, momentum_decay=4e-3):
    """mu_1 * ... * mu_step, mu_t = beta1 (1 - 0.5 * 0.96^(t * momentum_decay)) (torch.optim.NAdam)."""
    return math.prod(beta1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay)) for t in range(1, step + 1))


def radam_rho_t(beta2, step):
    """RAdam's length of the approximated SMA (torch.optim.RAdam); > 5 means rectified."""
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    return rho_inf - 2.0 * step * beta2 ** step / (1.0 - beta2 ** step)


# (case id, kernel, which state slots are passed, keyword arguments)
CASES = [
    ("sgd", "sgd", (), dict(lr=0.1, weight_decay=0.01)),
    ("sgd_momentum_first_step", "sgd", (1,), dict(step=1, lr=0.1, momentum=0.9)),
    ("sgd_momentum_dampening", "sgd", (1,), dict(step=3, lr=0.1, momentum=0.9, dampening=0.2, weight_decay=0.01)),
    ("sgd_nesterov", "sgd", (1,), dict(step=2, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)),
    ("adam", "adam", (1, 1), dict(step=3, lr=0.01, weight_decay=0.1)),
    ("adam_amsgrad", "adam", (1, 1, 1), dict(step=5, lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6, amsgrad=True)),
    ("adamw", "adam", (1, 1), dict(step=7, lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("adamw_amsgrad", "adam", (1, 1, 1),
     dict(step=2, lr=0.01, weight_decay=0.3, amsgrad=True, decoupled_weight_decay=True)),
    ("adagrad", "adagrad", (1,), dict(step=4, lr=0.1, lr_decay=0.01, weight_decay=0.1)),
    ("rmsprop", "rmsprop", (1,), dict(lr=0.01, weight_decay=0.1)),
    ("rmsprop_centered", "rmsprop", (1, 1), dict(lr=0.01, alpha=0.9, centered=True)),
    ("rmsprop_momentum", "rmsprop", (1, 0, 1), dict(lr=0.01, momentum=0.9)),
    ("rmsprop_centered_momentum", "rmsprop", (1, 1, 1),
     dict(lr=0.01, alpha=0.95, eps=1e-6, momentum=0.5, centered=True, weight_decay=0.05)),
    ("adadelta", "adadelta", (1, 1), dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.1)),
    ("adamax", "adamax", (1, 1), dict(step=3, lr=0.002, beta1=0.8, eps=1e-6, weight_decay=0.1)),
    ("nadam", "nadam", (1, 1), dict(step=3, mu_product=nadam_mu_product(3), weight_decay=0.1)),
    ("nadam_decoupled", "nadam", (1, 1),
     dict(step=9, mu_product=nadam_mu_product(9), lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    # rho_t = 2.0 at step 2 (beta2 = 0.999): no rectification; rho_t = 49.6 at step 50: rectified.
    ("radam_unrectified", "radam", (1, 1), dict(step=2, lr=0.01, weight_decay=0.1)),
    ("radam_rectified", "radam", (1, 1), dict(step=50, lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("rprop", "rprop", (1, 1), dict()),
    ("rprop_etas", "rprop", (1, 1), dict(etaminus=0.3, etaplus=1.5, step_size_min=1e-3, step_size_max=0.05)),
    ("lion", "lion", (1,), dict(lr=1e-3, weight_decay=0.1)),
    ("lion_betas", "lion", (1,), dict(lr=1e-4, beta1=0.5, beta2=0.9)),
]
CASE_BY_ID = {c[0]: c for c in CASES}
# One case per kernel (both RAdam regimes) for the large arrays, determinism and skip_nonfinite.
KERNEL_CASES = ["sgd_nesterov", "adamw_amsgrad", "adagrad", "rmsprop_centered_momentum", "adadelta", "adamax",
                "nadam_decoupled", "radam_unrectified", "radam_rectified", "rprop", "lion"]

SIZES = [0, 1, 15, 16, 17, 33]
MIXED = [(17,), (1,), (0,), (3, 5), (16,), (33,), (2, 8), (0, 4)]  # a zero-size array last
# Prologue variants: gradient scaling (3 is no power of two: the division rounds), maximize, both.
PROLOGUES = {"grad_scale": dict(grad_scale=3.0), "maximize": dict(maximize=True),
             "grad_scale_maximize": dict(grad_scale=0.3, maximize=True)}


# ---- problems --------------------------------------------------------------------------------------


POOL = LARGE + 4096


@functools.lru_cache(maxsize=None)
def _pool(dtype, kind):
    """Random material of one kind, generated once per dtype; a problem's arrays are copies of
    slices of it at varied offsets, so the large cases cost a copy, not a generation.

    param     standard normal
    grad      magnitudes 2^-20 .. 2^10, both signs, exact zeros of both signs and a few subnormals
    grad_normal  the same without subnormals (scaling those by a power of two would round)
    signed    running means / momentum buffers / Rprop's prev: small, both signs, some +0.0 and -0.0
    nonneg    squares, sums, maxima
    positive  Rprop's step sizes
    """
    rng = np.random.default_rng(1234)
    x = rng.standard_normal(POOL)
    e = rng.integers(-20, 11, POOL)
    if kind == "param":
        out = x
    elif kind in ("grad", "grad_normal"):
        out = np.ldexp(x, e)
        out[e == -20] = 0.0
        out[e == -19] = -0.0
        if kind == "grad":
            out[e == 10] = x[e == 10] * np.finfo(dtype).smallest_normal / 8  # subnormal in dtype
    elif kind == "signed":
        out = x * 0.1
        out[e == 0] = 0.0
        out[e == 1] = -0.0
    elif kind == "nonneg":
        out = np.ldexp(np.abs(x), np.minimum(e, 0) // 2)
    else:
        out = np.abs(x) * 0.01 + 1e-4
    out = out.astype(dtype)
    out.flags.writeable = False
    return out


def _take(dtype, kind, n, salt):
    start = (salt * 769) % 4096
    return _pool(dtype, kind)[start:start + n]


def random_grad(dtype, n, salt, subnormals=True):
    return _take(dtype, "grad" if subnormals else "grad_normal", n, salt).copy()


def make_problem(case_id, dtype, shapes, subnormals=True):
    """params, grads and the state lists (None where a slot is not passed) of CASE_BY_ID[case_id]."""
    _, kernel, slots, _ = CASE_BY_ID[case_id]
    kinds = STATE_KINDS[kernel]
    params, grads, states = [], [], [[] if on else None for on in slots]
    for i, shape in enumerate(shapes):
        n = math.prod(shape)
        params.append(_take(dtype, "param", n, 10 * i).reshape(shape).copy())
        grads.append(random_grad(dtype, n, 10 * i + 1, subnormals).reshape(shape))
        for k, on in enumerate(slots):
            if on:
                states[k].append(_take(dtype, kinds[k], n, 10 * i + 2 + k).reshape(shape).copy())
        if kernel == "rmsprop" and len(slots) > 1 and slots[1]:  # centered: square_avg >= grad_avg^2
            states[0][-1] += states[1][-1] * states[1][-1]
    return params, grads, states


def copy_problem(problem):
    params, grads, states = problem
    return ([p.copy() for p in params], [g.copy() for g in grads],
            [None if s is None else [a.copy() for a in s] for s in states])


def call(fn, problem, kwargs, bare=False):
    """fn(params, grads, *states, **kwargs); bare=True passes single arrays instead of 1-lists."""
    params, grads, states = problem
    one = (lambda xs: xs[0]) if bare else (lambda xs: xs)
    return fn(one(params), one(grads), *[None if s is None else one(s) for s in states], **kwargs)


def shapes_of(size):
    return [(size,)]


def assert_bitwise_equal(a, b, err_msg):
    """np.testing.assert_array_equal, and beyond it the same bits (it lets -0.0 == 0.0 pass)."""
    assert a.dtype == b.dtype and a.shape == b.shape, err_msg
    bits = np.uint32 if a.dtype == np.float32 else np.uint64
    if np.array_equal(a.view(bits), b.view(bits)):
        return
    np.testing.assert_array_equal(a, b, err_msg=err_msg)
    differ = np.flatnonzero(a.view(bits) != b.view(bits))
    raise AssertionError(f"{err_msg}: equal values but different bits (signed zero or NaN payload) at "
                         f"{differ[:5].tolist()}: {a.ravel()[differ[:5]]!r} vs {b.ravel()[differ[:5]]!r}")


def assert_problems_equal(got, want, what):
    (gp, gg, gs), (wp, wg, ws) = got, want
    for i, (a, b) in enumerate(zip(gp, wp)):
        assert_bitwise_equal(a, b, err_msg=f"{what}: params[{i}]")
    for i, (a, b) in enumerate(zip(gg, wg)):
        assert_bitwise_equal(a, b, err_msg=f"{what}: grads[{i}]")
    for k, (sa, sb) in enumerate(zip(gs, ws)):
        assert (sa is None) == (sb is None)
        for i, (a, b) in enumerate(zip(sa or (), sb or ())):
            assert_bitwise_equal(a, b, err_msg=f"{what}: state {k}[{i}]")


def assert_cpp_equals_twin(case_id, dtype, shapes, extra=None, bare=False, subnormals=True):
    _, kernel, _, kwargs = CASE_BY_ID[case_id]
    kwargs = dict(kwargs, **(extra or {}))
    start = make_problem(case_id, dtype, shapes, subnormals)
    ours, ref = copy_problem(start), copy_problem(start)
    assert call(getattr(_core, kernel), ours, kwargs, bare) is True
    assert call(getattr(twin, kernel), ref, kwargs, bare) is True
    assert_problems_equal(ours, ref, f"{case_id} cpp vs numpy")
    for i, (g, g0) in enumerate(zip(ref[1], start[1])):  # gradients are only read (ours == ref checked above)
        assert_bitwise_equal(g, g0, err_msg=f"{case_id}: grads[{i}] was written")
    if any(p.size for p in start[0]):  # the step did something
        assert any(not np.array_equal(a, b) for a, b in zip(ours[0], start[0]))


# ---- C++ == NumPy twin, bitwise, on every ISA path -------------------------------------------------


@needs_core
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", [c[0] for c in CASES])
def test_cpp_matches_twin_bitwise_single_array(case_id, dtype, size, isa):
    assert_cpp_equals_twin(case_id, dtype, shapes_of(size), bare=True)


@needs_core
@pytest.mark.parametrize("prologue", [None, *PROLOGUES])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", [c[0] for c in CASES])
def test_cpp_matches_twin_bitwise_mixed_list(case_id, dtype, prologue, isa):
    assert_cpp_equals_twin(case_id, dtype, MIXED, extra=PROLOGUES.get(prologue))


# One large case per kernel, the dtypes taking turns (the small sizes above cover both everywhere).
LARGE_CASES = [(case_id, DTYPES[i % 2]) for i, case_id in enumerate(KERNEL_CASES)]


@needs_core
@pytest.mark.parametrize("case_id, dtype", LARGE_CASES, ids=[f"{c}-{np.dtype(d).name}" for c, d in LARGE_CASES])
def test_cpp_matches_twin_bitwise_large(case_id, dtype, isa):
    assert_cpp_equals_twin(case_id, dtype, [(LARGE,)], extra=dict(grad_scale=0.75))


def test_cases_cover_every_kernel():
    kernels = set(twin.KERNELS) - {"all_finite"}
    assert {c[1] for c in CASES} == kernels
    assert {CASE_BY_ID[c][1] for c in KERNEL_CASES} == kernels


def test_radam_cases_cover_both_regimes():
    rho = {c: radam_rho_t(CASE_BY_ID[c][3].get("beta2", 0.999), CASE_BY_ID[c][3]["step"])
           for c in ("radam_unrectified", "radam_rectified")}
    assert rho["radam_unrectified"] <= 5.0 < rho["radam_rectified"]


# ---- return value ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case_id", KERNEL_CASES)
def test_normal_step_returns_true(case_id, backend):
    _, kernel, _, kwargs = CASE_BY_ID[case_id]
    problem = make_problem(case_id, np.float32, MIXED)
    for skip in (False, True):
        result = call(getattr(gf.ops, kernel), problem, dict(kwargs, skip_nonfinite=skip))
        assert result is True


@pytest.mark.parametrize("case_id", KERNEL_CASES)
def test_empty_list_and_zero_size_arrays_return_true(case_id, backend):
    _, kernel, slots, kwargs = CASE_BY_ID[case_id]
    empty = ([], [], [[] if on else None for on in slots])
    assert call(getattr(gf.ops, kernel), empty, kwargs) is True
    zero = make_problem(case_id, np.float64, [(0,), (3, 0)])
    assert call(getattr(gf.ops, kernel), zero, dict(kwargs, skip_nonfinite=True)) is True


# ---- determinism -------------------------------------------------------------------------------------


@needs_core
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", KERNEL_CASES)
def test_one_and_two_threads_and_two_runs_are_bitwise_equal(case_id, dtype, isa, threads):
    """A large array in a list with odd-sized neighbours, so the 2-thread split falls mid-segment
    and off the vector grid (17 + 50031 elements in); 1 thread, then two 2-thread runs."""
    _, kernel, _, kwargs = CASE_BY_ID[case_id]
    fn = getattr(_core, kernel)
    start = make_problem(case_id, dtype, [(17,), (THREADED,), (33,), (0,)])
    results = []
    for n in (1, 2, 2):
        threads(n)
        if gf.get_num_threads() != n:
            pytest.skip(f"OpenMP gives {gf.get_num_threads()} threads here, not {n}")
        problem = copy_problem(start)
        assert call(fn, problem, kwargs) is True
        results.append(problem)
    assert_problems_equal(results[1], results[2], f"{case_id}: two 2-thread runs")
    assert_problems_equal(results[0], results[1], f"{case_id}: 1 vs 2 threads")


# ---- arena coalescing ----------------------------------------------------------------------------------


# A zero-size array in the middle and one last; 40k elements: two threads split the arena.
ARENA_SHAPES = [(1,), (15,), (0,), (16,), (17,), (33,), (3, 5), (40_000,), (0,)]


def arena_views(arrays, layout, dtype):
    """Copies of `arrays` as views into one buffer. layout: "contiguous" (adjacent, coalesced into
    one segment), "gapped" (one element between neighbours: separate segments; and the buffer's first
    element unused, so the vectors start off their alignment), "reversed" (adjacent but in reverse
    order: must not be merged with the other lists' segments)."""
    gap = lead = 1 if layout == "gapped" else 0
    total = sum(a.size for a in arrays) + gap * len(arrays) + lead
    buf = np.full(total, np.nan, dtype)
    order = range(len(arrays))[::-1] if layout == "reversed" else range(len(arrays))
    views = [None] * len(arrays)
    offset = lead
    for i in order:
        a = arrays[i]
        views[i] = buf[offset:offset + a.size].reshape(a.shape)
        views[i][...] = a
        offset += a.size + gap
    return views


@needs_core
@pytest.mark.parametrize("layout", ["contiguous", "gapped", "reversed"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", KERNEL_CASES)
def test_arena_views_match_separate_arrays(case_id, dtype, layout, isa):
    _, kernel, _, kwargs = CASE_BY_ID[case_id]
    start = make_problem(case_id, dtype, ARENA_SHAPES)
    separate = copy_problem(start)
    params, grads, states = start

    # "reversed" reverses only the last state list; params, grads and the other states stay in order.
    def lay(is_last_state):
        return layout if layout != "reversed" or is_last_state else "contiguous"

    arena = (arena_views(params, lay(False), dtype), arena_views(grads, lay(False), dtype),
             [None if s is None else arena_views(s, lay(k == len(states) - 1), dtype) for k, s in enumerate(states)])
    assert call(getattr(_core, kernel), separate, kwargs) is True
    assert call(getattr(_core, kernel), arena, kwargs) is True
    assert_problems_equal(arena, separate, f"{case_id} {layout} arena vs separate arrays")
    ref = copy_problem(start)
    assert call(getattr(twin, kernel), ref, kwargs) is True
    assert_problems_equal(arena, ref, f"{case_id} {layout} arena vs numpy twin")


# ---- signatures: the pybind11 docstrings against the twins ------------------------------------------------

# ---- skip_nonfinite --------------------------------------------------------------------------------------


BAD_VALUES = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}
# (array index in MIXED, flat element index): the first element of the first array, the masked
# vector tail of a 33-element array (element 32), the last element of the last non-empty array.
BAD_PLACES = {"first": (0, 0), "tail": (5, 32), "last": (6, 15)}


@pytest.mark.parametrize("place", BAD_PLACES)
@pytest.mark.parametrize("bad", BAD_VALUES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", KERNEL_CASES)
def test_skip_nonfinite_leaves_everything_unchanged(case_id, dtype, bad, place, backend):
    _, kernel, _, kwargs = CASE_BY_ID[case_id]
    problem = make_problem(case_id, dtype, MIXED)
    array, element = BAD_PLACES[place]
    problem[1][array].reshape(-1)[element] = BAD_VALUES[bad]
    before = snapshot(*problem)
    assert call(getattr(gf.ops, kernel), problem, dict(kwargs, skip_nonfinite=True)) is False
    assert_unchanged(before, *problem)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", KERNEL_CASES)
def test_skip_nonfinite_sees_overflow_from_grad_scale(case_id, dtype, backend):
    """A finite gradient that becomes Inf once divided by grad_scale < 1 is not finite."""
    _, kernel, _, kwargs = CASE_BY_ID[case_id]
    problem = make_problem(case_id, dtype, MIXED)
    problem[1][3].reshape(-1)[4] = np.finfo(dtype).max / 2
    before = snapshot(*problem)
    with np.errstate(over="ignore"):  # the overflow is the point (the twin computes g / grad_scale)
        assert call(getattr(gf.ops, kernel), problem, dict(kwargs, skip_nonfinite=True, grad_scale=0.25)) is False
    assert_unchanged(before, *problem)
    with np.errstate(over="ignore", invalid="ignore"):  # finite, but g*g overflows in the second moments
        assert call(getattr(gf.ops, kernel), problem, dict(kwargs, skip_nonfinite=True, grad_scale=4.0)) is True


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", KERNEL_CASES)
def test_skip_nonfinite_on_finite_grads_is_a_normal_step(case_id, dtype, backend):
    _, kernel, _, kwargs = CASE_BY_ID[case_id]
    start = make_problem(case_id, dtype, MIXED)
    checked, plain = copy_problem(start), copy_problem(start)
    assert call(getattr(gf.ops, kernel), checked, dict(kwargs, skip_nonfinite=True)) is True
    assert call(getattr(gf.ops, kernel), plain, kwargs) is True
    assert_problems_equal(checked, plain, f"{case_id}: skip_nonfinite=True vs False on finite gradients")


@needs_core
@pytest.mark.parametrize("case_id", KERNEL_CASES)
def test_skip_nonfinite_large_nan_at_the_end(case_id, isa, threads):
    """NaN in the last element of an array two threads split (so in the second one's block) is found."""
    threads(2)
    _, kernel, _, kwargs = CASE_BY_ID[case_id]
    problem = make_problem(case_id, np.float32, [(THREADED,)])
    problem[1][0][-1] = np.nan
    before = snapshot(*problem)
    assert call(getattr(_core, kernel), problem, dict(kwargs, skip_nonfinite=True)) is False
    assert_unchanged(before, *problem)


# ---- grad_scale -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2.0 ** -3, 2.0 ** 10, 2.0 ** 16])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", KERNEL_CASES)
def test_grad_scale_power_of_two_is_exact(case_id, dtype, scale, backend):
    """Step(grads * s, grad_scale=s) == step(grads), bitwise, for s a power of two (no subnormal
    gradients: scaling those down would round)."""
    _, kernel, _, kwargs = CASE_BY_ID[case_id]
    start = make_problem(case_id, dtype, MIXED, subnormals=False)
    scaled, plain = copy_problem(start), copy_problem(start)
    scaled[1][:] = [g * dtype(scale) for g in scaled[1]]
    assert call(getattr(gf.ops, kernel), scaled, dict(kwargs, grad_scale=scale)) is True
    assert call(getattr(gf.ops, kernel), plain, kwargs) is True
    plain = (plain[0], scaled[1], plain[2])  # the gradients themselves differ by design
    assert_problems_equal(scaled, plain, f"{case_id}: grads*{scale} with grad_scale={scale} vs grads")


# ---- all_finite ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_all_finite_basics(dtype, backend):
    all_finite = gf.ops.all_finite
    arrays = [random_grad(dtype, n, i).reshape(-1) for i, n in enumerate([17, 1, 0, 33, 16, 0])]
    before = snapshot(arrays)
    assert all_finite(arrays) is True
    assert all_finite(arrays, grad_scale=2.0) is True
    assert all_finite(arrays[0]) is True  # a single array
    assert all_finite([]) is True
    assert all_finite([np.zeros(0, dtype), np.zeros((3, 0), dtype)]) is True
    assert_unchanged(before, arrays)
    for bad in BAD_VALUES.values():
        for i, j in [(0, 0), (0, 16), (3, 32), (4, 15)]:
            broken = [a.copy() for a in arrays]
            broken[i][j] = bad
            assert all_finite(broken) is False, (bad, i, j)
            assert all_finite(broken, grad_scale=1e3) is False
    big = [a.copy() for a in arrays]
    big[3][5] = np.finfo(dtype).max / 2
    assert all_finite(big) is True
    with np.errstate(over="ignore"):
        assert all_finite(big, grad_scale=0.25) is False  # max/2 / 0.25 overflows
    assert all_finite(big, grad_scale=4.0) is True


@needs_core
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_all_finite_cpp_matches_twin_on_large_arrays(dtype, isa, threads):
    threads(2)
    arrays = [random_grad(dtype, LARGE, 1), random_grad(dtype, 33, 2)]
    for where in [None, (0, 0), (0, LARGE // 2 + 3), (0, LARGE - 1), (1, 32)]:
        case = [a.copy() for a in arrays]
        if where is not None:
            case[where[0]][where[1]] = np.inf
        want = where is None
        assert _core.all_finite(case) is want
        assert twin.all_finite(case) is want
