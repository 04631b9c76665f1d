"""The fused optimizer kernels themselves: gf.ops.<name>.cpp (the C++ entry point optim_step) against
gf.ops.<name>.numpy (the NumPy twin), bitwise, on every ISA path; thread-count and run-to-run
determinism; arena coalescing; skip_nonfinite, grad_scale and all_finite. The cases are every
example of every optimizer row of the kernel table (tests/kernel_cases.py), with the states each
uses and valid data per the table's Array.values.

The contract (cpp/include/gradfuse/optim.hpp): element-wise math with the same operation order on
every ISA path and in the twin, no fma, so a step is bitwise identical for every thread count,
every ISA path and the NumPy twin.
"""

from __future__ import annotations

import numpy as np
import pytest

import gradfuse as gf
import kernel_cases as kc
from conftest import assert_unchanged, snapshot
from gradfuse._ext import _core
from gradfuse._numpy import optim as twin

pytestmark = pytest.mark.kernels

needs_core = pytest.mark.skipif(_core is None, reason="the C++ extension is not available")

DTYPES = [np.float32, np.float64]
LARGE = 1_000_003  # the large parity case
THREADED = 100_003  # > 2 * the kernels' 16384-element grain: two threads really split it

# Every example of every optimizer row of the kernel table: (case id, row, example). The examples of a
# row together take every path of its kernel (momentum or not, amsgrad, centered, rectified or not...).
CASES = [(kc.case_id((row, ex)), row, ex) for row, ex in kc.cases(kc.OPTIMIZER_ROWS)]
CASE_BY_ID = {c[0]: c for c in CASES}
CASE_IDS = list(CASE_BY_ID)

SIZES = [0, 1, 15, 16, 17, 33]
MIXED = [(17,), (1,), (0,), (3, 5), (16,), (33,), (2, 8), (0, 4)]  # a zero-size array last
# Prologue variants: gradient scaling (3 is no power of two: the division rounds), maximize, both.
PROLOGUES = {
    "grad_scale": dict(grad_scale=3.0),
    "maximize": dict(maximize=True),
    "grad_scale_maximize": dict(grad_scale=0.3, maximize=True),
}


# ---- problems --------------------------------------------------------------------------------------


def make_problem(case_id, dtype, shapes, subnormals=True, extra=None):
    """The call of case `case_id` over arrays of `shapes`: {argument: value}, states the example does
    not use None (values: the table's Array.values, tests/kernel_cases.py)."""
    _, row, ex = CASE_BY_ID[case_id]
    return kc.build(row, ex, dtype, shapes=shapes, subnormals=subnormals, scalars=extra)


def lists_of(problem):
    """(name, list of arrays) of each array argument of a call, None lists left out."""
    return [(k, v) for k, v in problem.items() if isinstance(v, list)]


def call(fn, problem, bare=False):
    """fn(**problem); bare=True passes single arrays instead of 1-lists."""
    if bare:
        problem = {k: (v[0] if isinstance(v, list) else v) for k, v in problem.items()}
    return fn(**problem)


def assert_bitwise_equal(a, b, err_msg):
    """np.testing.assert_array_equal, and beyond it the same bits (it lets -0.0 == 0.0 pass)."""
    assert a.dtype == b.dtype and a.shape == b.shape, err_msg
    bits = {2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]  # bf16 copies: 2
    if np.array_equal(a.view(bits), b.view(bits)):
        return
    np.testing.assert_array_equal(a, b, err_msg=err_msg)
    differ = np.flatnonzero(a.view(bits) != b.view(bits))
    raise AssertionError(
        f"{err_msg}: equal values but different bits (signed zero or NaN payload) at "
        f"{differ[:5].tolist()}: {a.ravel()[differ[:5]]!r} vs {b.ravel()[differ[:5]]!r}"
    )


def assert_problems_equal(got, want, what):
    """Every array of two calls (params, grads, every state list, the bf16 copies), bitwise."""
    assert [k for k, _ in lists_of(got)] == [k for k, _ in lists_of(want)], what
    for (name, a_list), (_, b_list) in zip(lists_of(got), lists_of(want)):
        assert len(a_list) == len(b_list), what
        for i, (a, b) in enumerate(zip(a_list, b_list)):
            assert_bitwise_equal(a, b, err_msg=f"{what}: {name}[{i}]")
    assert_copies_follow(got, what)


def assert_copies_follow(problem, what):
    """After a step, each bf16 copy is bitwise its parameter rounded by ml_dtypes (nearest even)."""
    for i, (p, c) in enumerate(zip(problem["params"], problem.get("copies") or ())):
        assert_bitwise_equal(c, p.astype(kc.BF16), err_msg=f"{what}: copies[{i}] vs params[{i}].astype(bfloat16)")


def assert_cpp_equals_twin(case_id, dtype, shapes, extra=None, bare=False, subnormals=True):
    _, row, _ = CASE_BY_ID[case_id]
    start = make_problem(case_id, dtype, shapes, subnormals, extra)
    ours, ref = kc.copy_call(start), kc.copy_call(start)
    op = getattr(gf.ops, row.name)
    assert call(op.cpp, ours, bare) is True
    assert call(op.numpy, ref, bare) is True
    assert_problems_equal(ours, ref, f"{case_id} cpp vs numpy")
    for i, (g, g0) in enumerate(zip(ref["grads"], start["grads"])):  # gradients are only read
        assert_bitwise_equal(g, g0, err_msg=f"{case_id}: grads[{i}] was written")
    if any(p.size for p in start["params"]):  # the step did something
        assert any(not np.array_equal(a, b) for a, b in zip(ours["params"], start["params"]))


# ---- C++ == NumPy twin, bitwise, on every ISA path -------------------------------------------------


@needs_core
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_cpp_matches_twin_bitwise_single_array(case_id, dtype, size, isa):
    assert_cpp_equals_twin(case_id, dtype, [(size,)], bare=True)


@needs_core
@pytest.mark.parametrize("prologue", [None, *PROLOGUES])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_cpp_matches_twin_bitwise_mixed_list(case_id, dtype, prologue, isa):
    assert_cpp_equals_twin(case_id, dtype, MIXED, extra=PROLOGUES.get(prologue))


# Every case on large arrays, the dtypes taking turns (the small sizes above cover both everywhere).
LARGE_CASES = [(case_id, DTYPES[i % 2]) for i, case_id in enumerate(CASE_IDS)]


@needs_core
@pytest.mark.parametrize("case_id, dtype", LARGE_CASES, ids=[f"{c}-{np.dtype(d).name}" for c, d in LARGE_CASES])
def test_cpp_matches_twin_bitwise_large(case_id, dtype, isa):
    assert_cpp_equals_twin(case_id, dtype, [(LARGE,)], extra=dict(grad_scale=0.75))


def test_cases_cover_every_optimizer_and_every_state():
    """Every optimizer row has cases, and its cases together use each of its states and set each of
    its flags both ways."""
    assert {row.name for _, row, _ in CASES} == {r.name for r in kc.OPTIMIZER_ROWS}
    for row in kc.OPTIMIZER_ROWS:
        mine = [ex for _, r, ex in CASES if r is row]
        used = {a.name for ex in mine for a in kc.used_arrays(row, kc.scalars_of(row, ex))}
        assert used == {a.name for a in row.arrays}, row.name
        for flag in (s for s in row.scalars if s.type == "bool" and s.hyper is not None and s.name != "maximize"):
            assert {bool(kc.scalars_of(row, ex)[flag.name]) for ex in mine} == {False, True}, (row.name, flag.name)


def test_radam_cases_cover_both_regimes():
    """RAdam rectifies from rho_t > 5 on: its examples take both paths (twin's rho_t)."""
    row = gf.table.KERNELS["radam"]
    rho = [
        twin.radam_rho(kc.scalars_of(row, ex)["beta2"], kc.scalars_of(row, ex)["step"])[1] for ex in kc.examples(row)
    ]
    assert min(rho) <= 5.0 < max(rho), rho


# ---- return value ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_normal_step_returns_true(case_id, backend):
    _, row, _ = CASE_BY_ID[case_id]
    for skip in (False, True):
        problem = make_problem(case_id, np.float32, MIXED, extra=dict(skip_nonfinite=skip))
        assert call(getattr(gf.ops, row.name), problem) is True


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_empty_list_and_zero_size_arrays_return_true(case_id, backend):
    _, row, _ = CASE_BY_ID[case_id]
    empty = make_problem(case_id, np.float32, [])
    assert call(getattr(gf.ops, row.name), empty) is True
    zero = make_problem(case_id, np.float64, [(0,), (3, 0)], extra=dict(skip_nonfinite=True))
    assert call(getattr(gf.ops, row.name), zero) is True


# ---- determinism -------------------------------------------------------------------------------------


@needs_core
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_one_and_two_threads_and_two_runs_are_bitwise_equal(case_id, dtype, isa, threads):
    """A large array in a list with odd-sized neighbours, so the 2-thread split falls mid-segment
    and off the vector grid (17 + 50031 elements in); 1 thread, then two 2-thread runs."""
    _, row, _ = CASE_BY_ID[case_id]
    fn = getattr(gf.ops, row.name).cpp
    start = make_problem(case_id, dtype, [(17,), (THREADED,), (33,), (0,)])
    results = []
    for n in (1, 2, 2):
        threads(n)
        if gf.get_num_threads() != n:
            pytest.skip(f"OpenMP gives {gf.get_num_threads()} threads here, not {n}")
        problem = kc.copy_call(start)
        assert call(fn, problem) is True
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
        views[i] = buf[offset : offset + a.size].reshape(a.shape)
        views[i][...] = a
        offset += a.size + gap
    return views


@needs_core
@pytest.mark.parametrize("layout", ["contiguous", "gapped", "reversed"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_arena_views_match_separate_arrays(case_id, dtype, layout, isa):
    _, row, _ = CASE_BY_ID[case_id]
    op = getattr(gf.ops, row.name)
    start = make_problem(case_id, dtype, ARENA_SHAPES)
    separate = kc.copy_call(start)
    names = [k for k, _ in lists_of(start)]

    # "reversed" reverses only the last state list; params, grads and the other states stay in order.
    def lay(name):
        return layout if layout != "reversed" or name == names[-1] else "contiguous"

    # each list in its own dtype: the bf16 copies form a bf16 arena beside the float32 ones
    arena = {k: (arena_views(v, lay(k), v[0].dtype) if isinstance(v, list) else v) for k, v in start.items()}
    assert call(op.cpp, separate) is True
    assert call(op.cpp, arena) is True
    assert_problems_equal(arena, separate, f"{case_id} {layout} arena vs separate arrays")
    ref = kc.copy_call(start)
    assert call(op.numpy, ref) is True
    assert_problems_equal(arena, ref, f"{case_id} {layout} arena vs numpy twin")


# ---- skip_nonfinite --------------------------------------------------------------------------------------


BAD_VALUES = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}
# (array index in MIXED, flat element index): the first element of the first array, the masked
# vector tail of a 33-element array (element 32), the last element of the last non-empty array.
BAD_PLACES = {"first": (0, 0), "tail": (5, 32), "last": (6, 15)}


@pytest.mark.parametrize("place", BAD_PLACES)
@pytest.mark.parametrize("bad", BAD_VALUES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_skip_nonfinite_leaves_everything_unchanged(case_id, dtype, bad, place, backend):
    _, row, _ = CASE_BY_ID[case_id]
    problem = make_problem(case_id, dtype, MIXED, extra=dict(skip_nonfinite=True))
    array, element = BAD_PLACES[place]
    problem["grads"][array].reshape(-1)[element] = BAD_VALUES[bad]
    before = snapshot(*kc.arrays_in(problem))
    assert call(getattr(gf.ops, row.name), problem) is False
    assert_unchanged(before, *kc.arrays_in(problem))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_skip_nonfinite_sees_overflow_from_grad_scale(case_id, dtype, backend):
    """A finite gradient that becomes Inf once divided by grad_scale < 1 is not finite."""
    _, row, _ = CASE_BY_ID[case_id]
    op = getattr(gf.ops, row.name)
    problem = make_problem(case_id, dtype, MIXED, extra=dict(skip_nonfinite=True))
    problem["grads"][3].reshape(-1)[4] = np.finfo(dtype).max / 2
    before = snapshot(*kc.arrays_in(problem))
    with np.errstate(over="ignore"):  # the overflow is the point (the twin computes g / grad_scale)
        assert call(op, dict(problem, grad_scale=0.25)) is False
    assert_unchanged(before, *kc.arrays_in(problem))
    with np.errstate(over="ignore", invalid="ignore"):  # finite, but g*g overflows in the second moments
        assert call(op, dict(problem, grad_scale=4.0)) is True


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_skip_nonfinite_on_finite_grads_is_a_normal_step(case_id, dtype, backend):
    _, row, _ = CASE_BY_ID[case_id]
    start = make_problem(case_id, dtype, MIXED)
    checked, plain = kc.copy_call(start), kc.copy_call(start)
    assert call(getattr(gf.ops, row.name), dict(checked, skip_nonfinite=True)) is True
    assert call(getattr(gf.ops, row.name), plain) is True
    assert_problems_equal(checked, plain, f"{case_id}: skip_nonfinite=True vs False on finite gradients")


@needs_core
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_skip_nonfinite_large_nan_at_the_end(case_id, isa, threads):
    """NaN in the last element of an array two threads split (so in the second one's block) is found."""
    threads(2)
    _, row, _ = CASE_BY_ID[case_id]
    problem = make_problem(case_id, np.float32, [(THREADED,)], extra=dict(skip_nonfinite=True))
    problem["grads"][0][-1] = np.nan
    before = snapshot(*kc.arrays_in(problem))
    assert call(getattr(gf.ops, row.name).cpp, problem) is False
    assert_unchanged(before, *kc.arrays_in(problem))


# ---- grad_scale -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2.0**-3, 2.0**10, 2.0**16])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_grad_scale_power_of_two_is_exact(case_id, dtype, scale, backend):
    """Step(grads * s, grad_scale=s) == step(grads), bitwise, for s a power of two (no subnormal
    gradients: scaling those down would round)."""
    _, row, _ = CASE_BY_ID[case_id]
    start = make_problem(case_id, dtype, MIXED, subnormals=False)
    scaled, plain = kc.copy_call(start), kc.copy_call(start)
    scaled["grads"] = [g * dtype(scale) for g in scaled["grads"]]
    assert call(getattr(gf.ops, row.name), dict(scaled, grad_scale=scale)) is True
    assert call(getattr(gf.ops, row.name), plain) is True
    plain["grads"] = scaled["grads"]  # the gradients themselves differ by design
    assert_problems_equal(scaled, plain, f"{case_id}: grads*{scale} with grad_scale={scale} vs grads")


# ---- all_finite ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_all_finite_basics(dtype, backend):
    all_finite = gf.ops.all_finite
    arrays = [kc.material(dtype, "grad", (n,), i) for i, n in enumerate([17, 1, 0, 33, 16, 0])]
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
    arrays = [kc.material(dtype, "grad", (LARGE,), 1), kc.material(dtype, "grad", (33,), 2)]
    for where in [None, (0, 0), (0, LARGE // 2 + 3), (0, LARGE - 1), (1, 32)]:
        case = [a.copy() for a in arrays]
        if where is not None:
            case[where[0]][where[1]] = np.inf
        want = where is None
        assert gf.ops.all_finite.cpp(case) is want
        assert gf.ops.all_finite.numpy(case) is want
