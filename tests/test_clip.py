"""Gradient norms and clipping: the kernels gf.ops.grad_norm / clip_grad_norm /
clip_grad_norm_per_tensor / clip_grad_value (contract: cpp/include/gradfuse/clip.hpp) and the
torch-style API gf.optim.clip_grad_norm_ / clip_grad_value_ / clip_grad_norm_per_param_ / grad_norm.

- against torch.nn.utils.clip_grad_norm_ / clip_grad_value_ / get_total_norm: the norm and the
  clipped gradients, float32 and float64, norm types 1, 2, inf and 3, both backends;
- C++ against the NumPy twin, bitwise (p = 1, 2, inf), on every ISA path; the same norm on every path;
- determinism: bitwise equal for 1 and 2 threads on a large list, and for two runs;
- arenas: one coalesced segment (the same norm as the arena's flat buffer), through the API too;
- error_if_nonfinite, NaN / Inf without it (torch's behaviour), empty lists, the bad-input matrix
  (documented exception, the same error fields and message on both backends, nothing mutated).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import gradfuse as gf
from conftest import CPU_ISAS, assert_kernel_error, assert_same_error, assert_unchanged, on_backend, snapshot
from gradfuse import ops
from gradfuse._ext import _core
from test_optim_kernels import assert_bitwise_equal

pytestmark = pytest.mark.kernels

needs_core = pytest.mark.skipif(_core is None, reason="the C++ extension is not available")
twin = on_backend("numpy")

DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["float32", "float64"]
NORMS = [2.0, 1.0, math.inf, 3.0]
NORM_IDS = ["l2", "l1", "inf", "p3"]
# odd sizes, a scalar array, an empty one, and one longer than a 32768-element reduction block
SHAPES = [(33, 17), (1,), (), (0,), (16,), (40001,), (5, 7, 3)]


def grads_of(dtype, seed=0, scale=3.0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return [np.array(rng.standard_normal(s) * scale, dtype=dtype) for s in shapes]


def tol(dtype):
    """torch accumulates float32 norms in float32 (ours: double) and rounds its coefficient twice."""
    return dict(rtol=2e-5, atol=0) if dtype == np.float32 else dict(rtol=1e-12, atol=0)


def torch_clip(torch, arrays, max_norm, p):
    ts = [torch.from_numpy(a.copy()).requires_grad_() for a in arrays]
    for t, a in zip(ts, arrays):
        t.grad = torch.from_numpy(a.copy())
    n = torch.nn.utils.clip_grad_norm_([t for t in ts if t.numel()] if math.isinf(p) else ts, max_norm, norm_type=p)
    return float(n), [t.grad.numpy() for t in ts]


def assert_same_norm(a, b):
    assert a == b or (math.isnan(a) and math.isnan(b)), (a, b)


# ---- against torch ------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", NORMS, ids=NORM_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("max_norm", [0.5, 1e9], ids=["clips", "no-clip"])
def test_clip_grad_norm_matches_torch(p, dtype, max_norm, backend, torch):
    grads = grads_of(dtype)
    want_norm, want = torch_clip(torch, grads, max_norm, p)
    norm = gf.ops.clip_grad_norm(grads, max_norm=max_norm, norm_type=p)
    assert isinstance(norm, float)
    np.testing.assert_allclose(norm, want_norm, **tol(dtype))
    for g, w in zip(grads, want):
        np.testing.assert_allclose(g, w, **dict(tol(dtype), atol=1e-30))
    if max_norm > 1e6:  # no clipping: not a bit changed
        for g, g0 in zip(grads, grads_of(dtype)):
            assert_bitwise_equal(g, g0, "unclipped")
    else:
        np.testing.assert_allclose(gf.ops.grad_norm(grads, norm_type=p), max_norm, rtol=1e-5)


@pytest.mark.parametrize("p", NORMS, ids=NORM_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_grad_norm_matches_torch_and_float64_reference(p, dtype, backend, torch):
    grads = grads_of(dtype, seed=1)
    ts = [torch.from_numpy(g) for g in grads if g.size]
    np.testing.assert_allclose(
        gf.ops.grad_norm(grads, norm_type=p), float(torch.nn.utils.get_total_norm(ts, norm_type=p)), **tol(dtype)
    )
    flat = np.concatenate([g.ravel().astype(np.float64) for g in grads])
    exact = np.max(np.abs(flat)) if math.isinf(p) else math.fsum(np.abs(flat) ** p) ** (1 / p)
    np.testing.assert_allclose(gf.ops.grad_norm(grads, norm_type=p), exact, rtol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_float32_norm_does_not_overflow(dtype, backend):
    """Squares are summed in double: a float32 norm of 1e30-sized gradients is finite (torch: inf)."""
    g = np.full(1000, 1e30, dtype)
    assert gf.ops.grad_norm([g]) == pytest.approx(1e30 * math.sqrt(1000), rel=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_clip_grad_value_matches_torch_bitwise(dtype, backend, torch):
    grads = grads_of(dtype, seed=2)
    grads[0].flat[:4] = [np.nan, -0.0, 0.0, -np.inf]
    want = []
    for g in grads:
        t = torch.from_numpy(g.copy())
        torch._foreach_clamp_min_([t], -0.7)
        torch._foreach_clamp_max_([t], 0.7)
        want.append(t.numpy())
    assert gf.ops.clip_grad_value(grads, clip_value=0.7) is None
    for g, w in zip(grads, want):
        assert_bitwise_equal(g, w, "clip_grad_value")
    assert np.isnan(grads[0].flat[0]) and grads[0].flat[3] == dtype(-0.7)


@pytest.mark.parametrize("p", NORMS, ids=NORM_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_per_tensor_matches_torch_on_each_array(p, dtype, backend, torch):
    grads = grads_of(dtype, seed=3)
    want = [torch_clip(torch, [g], 0.9, p) if g.size else (0.0, [g.copy()]) for g in grads]
    norms = gf.ops.clip_grad_norm_per_tensor(grads, max_norm=0.9, norm_type=p)
    assert isinstance(norms, list) and len(norms) == len(grads)
    for g, n, (wn, (wg,)) in zip(grads, norms, want):
        np.testing.assert_allclose(n, wn, **tol(dtype))
        np.testing.assert_allclose(g, wg, **dict(tol(dtype), atol=1e-30))
        if g.size:
            assert gf.ops.grad_norm(g, norm_type=p) <= 0.9 * (1 + 1e-5)


# ---- C++ against the twin; ISA paths; threads -------------------------------------------------------------


def _run_all(ns, grads, p):
    out = {}
    out["grad_norm"] = ns.grad_norm(grads, norm_type=p)
    for name, kw in [
        ("clip_grad_norm", dict(max_norm=1.0)),
        ("clip_grad_norm_per_tensor", dict(max_norm=1.0)),
        ("clip_grad_value", dict(clip_value=0.25)),
    ]:
        gs = [g.copy() for g in grads]
        res = getattr(ns, name)(gs, norm_type=p, **kw) if "max_norm" in kw else getattr(ns, name)(gs, **kw)
        out[name] = (res, gs)
    return out


def _assert_runs_equal(a, b, what):
    assert_same_norm(a["grad_norm"], b["grad_norm"])
    for name in ("clip_grad_norm", "clip_grad_norm_per_tensor", "clip_grad_value"):
        (ra, ga), (rb, gb) = a[name], b[name]
        if isinstance(ra, list):
            assert len(ra) == len(rb) and all(x == y or (x != x and y != y) for x, y in zip(ra, rb)), (what, name)
        else:
            assert ra == rb or (ra is None and rb is None) or (ra != ra and rb != rb), (what, name, ra, rb)
        for x, y in zip(ga, gb):
            assert_bitwise_equal(x, y, f"{what}: {name}")


@needs_core
@pytest.mark.parametrize("p", [2.0, 1.0, math.inf], ids=["l2", "l1", "inf"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_cpp_equals_twin_bitwise(p, dtype, isa):
    grads = grads_of(dtype, seed=4)
    grads[5][7] = np.nan if p == 1.0 else grads[5][7]  # NaN through every kernel once
    _assert_runs_equal(_run_all(_core, grads, p), _run_all(twin, grads, p), f"{isa}")


@needs_core
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_cpp_equals_twin_for_other_p(dtype, isa):
    """|x|^p goes through libm's pow in C++ and NumPy's power in the twin: equal to an ulp or so."""
    grads = grads_of(dtype, seed=5)
    for p in (3.0, 0.5, 7.25):
        np.testing.assert_allclose(_core.grad_norm(grads, norm_type=p), twin.grad_norm(grads, norm_type=p), rtol=1e-14)


@needs_core
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_same_results_on_every_isa_path(dtype):
    grads = grads_of(dtype, seed=6, shapes=[(1000, 70), (33,), (300001,), (5, 5), (17,)])
    before = _core._get_isa()
    try:
        for p in (2.0, 1.0, math.inf, 3.0):
            runs = []
            for isa in CPU_ISAS:
                _core._set_isa(isa)
                runs.append(_run_all(_core, grads, p))
            for isa, run in zip(CPU_ISAS[1:], runs[1:]):
                _assert_runs_equal(runs[0], run, f"{CPU_ISAS[0]} vs {isa}, p={p}")
    finally:
        _core._set_isa(before)


@needs_core
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_bitwise_equal_for_threads_and_runs(dtype, isa, threads):
    """A large list (many tensors, several reduction blocks each): 1 and 2 threads, two runs."""
    rng = np.random.default_rng(7)
    grads = [rng.standard_normal(int(n)).astype(dtype) for n in rng.integers(1, 30000, size=150)]
    grads.append(rng.standard_normal(500000).astype(dtype))
    results = []
    for t in (1, 2, 2, 1):
        threads(t)
        for p in (2.0, 1.0, math.inf, 3.0):
            results.append((t, p, _run_all(_core, grads, p)))
    for t, p, run in results:
        ref = next(r for tt, pp, r in results if pp == p)
        _assert_runs_equal(ref, run, f"threads={t}, p={p}")


# ---- arenas and coalescing ---------------------------------------------------------------------------------


def _arena(dtype, seed=8):
    rng = np.random.default_rng(seed)
    arena = gf.nn.ParameterArena([(300, 200), (200,), (200, 77), (77,), (77, 10), (10,)], dtype=dtype)
    for p in arena:
        p.grad[...] = rng.standard_normal(p.shape) * 0.5
    return arena


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_arena_views_are_one_segment(dtype, backend):
    """The views of an arena's gradients give bitwise the norm of its flat buffer (one segment); the
    same values in separate arrays agree to rounding (their blocks start elsewhere)."""
    arena = _arena(dtype)
    views = [p.grad for p in arena]
    flat = gf.ops.grad_norm(arena.grad)
    assert gf.ops.grad_norm(views) == flat
    copies = [v.copy() for v in views]
    np.testing.assert_allclose(gf.ops.grad_norm(copies), flat, rtol=1e-14)
    a, b = [v.copy() for v in views], arena.grad.copy()
    assert gf.ops.clip_grad_norm(views, max_norm=1.0) == flat
    assert gf.ops.clip_grad_norm(b, max_norm=1.0) == flat
    assert_bitwise_equal(arena.grad, b, "arena views vs flat buffer")
    gf.ops.clip_grad_norm(a, max_norm=1.0)  # element-wise scaling: separate arrays, same coefficient
    np.testing.assert_allclose(np.concatenate([x.ravel() for x in a]), arena.grad, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_api_passes_an_arena_as_one_array(dtype, backend, monkeypatch):
    arena = _arena(dtype)
    seen = []
    real = ops.clip_grad_norm
    monkeypatch.setattr(ops, "clip_grad_norm", lambda grads, **kw: seen.append(grads) or real(grads, **kw))
    flat = gf.ops.grad_norm(arena.grad)
    assert gf.optim.clip_grad_norm_(arena.parameters, max_norm=1e9) == flat
    assert len(seen[-1]) == 1 and seen[-1][0].size == arena.size
    assert np.shares_memory(seen[-1][0], arena.grad)
    # a parameter whose grad was replaced breaks the run there: still the right norm
    arena.parameters[2].grad = arena.parameters[2].grad.copy()
    assert gf.optim.clip_grad_norm_(arena.parameters, max_norm=1e9) == pytest.approx(flat, rel=1e-14)
    assert len(seen[-1]) == 3


# ---- NaN / Inf, error_if_nonfinite ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("p", NORMS, ids=NORM_IDS)
def test_nonfinite_norm_without_error_scales_like_torch(bad, p, backend, torch):
    grads = grads_of(np.float32, seed=9, shapes=[(50,), (20, 3)])
    grads[1][2, 1] = bad
    want_norm, want = torch_clip(torch, grads, 1.0, p)
    norm = gf.ops.clip_grad_norm(grads, max_norm=1.0, norm_type=p)
    assert_same_norm(norm, want_norm)
    for g, w in zip(grads, want):
        np.testing.assert_array_equal(g, w)  # NaN coefficient: all NaN; infinite norm: zeros (and inf*0 = NaN)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("p", NORMS, ids=NORM_IDS)
def test_error_if_nonfinite_writes_nothing(bad, p, backend, torch):
    grads = grads_of(np.float64, seed=10, shapes=[(50,), (20, 3), (4,)])
    grads[1][0, 0] = bad
    before = snapshot(grads)
    with pytest.raises(RuntimeError, match="is non-finite, so it cannot be clipped") as info:
        gf.ops.clip_grad_norm(grads, max_norm=1.0, norm_type=p, error_if_nonfinite=True)
    assert str(info.value).startswith("clip_grad_norm: ")
    with pytest.raises(RuntimeError, match=r"norm of grads\[1\] of order"):
        gf.ops.clip_grad_norm_per_tensor(grads, max_norm=1.0, norm_type=p, error_if_nonfinite=True)
    assert_unchanged(before, grads)
    # torch raises too, with the message the API repeats
    ts = [torch.from_numpy(g.copy()).requires_grad_() for g in grads]
    for t, g in zip(ts, grads):
        t.grad = torch.from_numpy(g.copy())
    with pytest.raises(RuntimeError) as want:
        torch.nn.utils.clip_grad_norm_(ts, 1.0, norm_type=p, error_if_nonfinite=True)
    params = [gf.nn.Parameter(np.zeros_like(g)) for g in grads]
    for prm, g in zip(params, grads):
        prm.grad = g
    with pytest.raises(RuntimeError) as got:
        gf.optim.clip_grad_norm_(params, 1.0, norm_type=p, error_if_nonfinite=True)
    assert str(got.value) == str(want.value)
    with pytest.raises(RuntimeError, match=r"of parameters\[1\].grad is non-finite"):
        gf.optim.clip_grad_norm_per_param_(params, 1.0, norm_type=p, error_if_nonfinite=True)
    with pytest.raises(RuntimeError):
        gf.optim.grad_norm(params, norm_type=p, error_if_nonfinite=True)
    assert_unchanged(before, grads)


def test_error_if_nonfinite_accepts_finite(backend):
    g = [np.full(10, 2.0)]
    assert gf.ops.clip_grad_norm(g, max_norm=1.0, error_if_nonfinite=True) == pytest.approx(math.sqrt(40))
    np.testing.assert_allclose(g[0], 1.0 / math.sqrt(10), rtol=1e-6)


# ---- special values of the arguments, empty lists ---------------------------------------------------------------


def test_empty_lists_have_norm_zero(backend):
    for p in NORMS:
        assert gf.ops.grad_norm([], norm_type=p) == 0.0
        assert gf.ops.clip_grad_norm([], max_norm=1.0, norm_type=p) == 0.0
        assert gf.ops.clip_grad_norm([np.zeros(0, np.float32), np.zeros((3, 0), np.float32)], max_norm=1.0) == 0.0
        assert gf.ops.clip_grad_norm_per_tensor([], max_norm=1.0, norm_type=p) == []
        assert gf.ops.clip_grad_norm_per_tensor([np.zeros(0), np.ones(4)], max_norm=10.0, norm_type=p)[0] == 0.0
    assert gf.ops.clip_grad_value([], clip_value=1.0) is None
    assert gf.optim.clip_grad_norm_([], 1.0) == 0.0
    assert gf.optim.grad_norm([]) == 0.0
    assert gf.optim.clip_grad_norm_per_param_([], 1.0) == []
    with pytest.warns(UserWarning, match="empty generator"):
        assert gf.optim.clip_grad_norm_((p for p in []), 1.0) == 0.0


def test_max_norm_inf_and_zero(backend):
    g = grads_of(np.float32, seed=11, shapes=[(100,)])
    g0 = [a.copy() for a in g]
    n = gf.ops.clip_grad_norm(g, max_norm=math.inf)
    assert n == gf.ops.grad_norm(g0)
    assert_unchanged(g0, *g)
    gf.ops.clip_grad_norm(g, max_norm=0.0)
    assert not np.any(g[0])
    z = [np.zeros(5)]  # norm 0: coefficient max_norm / 1e-6 >= 1, nothing scaled
    assert gf.ops.clip_grad_norm(z, max_norm=1e-7) == 0.0


def test_single_array_and_tuple(backend):
    g = np.arange(12, dtype=np.float64).reshape(3, 4)
    n = float(np.sqrt((g * g).sum()))
    assert gf.ops.grad_norm(g) == pytest.approx(n, rel=1e-15)
    assert gf.ops.grad_norm((g, g)) == pytest.approx(n * math.sqrt(2), rel=1e-15)
    assert gf.ops.clip_grad_norm_per_tensor(g, max_norm=1e9) == [pytest.approx(n, rel=1e-15)]
    with pytest.raises(RuntimeError, match=r"norm of grads of order"):
        gf.ops.clip_grad_norm_per_tensor(np.array([np.nan]), max_norm=1.0, error_if_nonfinite=True)


@needs_core
@pytest.mark.parametrize("as_list", [True, False], ids=["list", "array"])
@pytest.mark.parametrize("kernel", ["clip_grad_norm", "clip_grad_norm_per_tensor"])
def test_nonfinite_message_is_the_same_on_both_backends(kernel, as_list):
    """grads[1] in a list, grads alone: the twin is told which (a 1-tuple for one array)."""
    messages = []
    for ns in (_core, twin):
        bad = np.array([1.0, np.nan])
        with pytest.raises(RuntimeError) as info:
            getattr(ns, kernel)([np.ones(3), bad] if as_list else bad, max_norm=1.0, error_if_nonfinite=True)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert ("grads[1] of order" in messages[0]) == (as_list and kernel == "clip_grad_norm_per_tensor")


# ---- bad inputs --------------------------------------------------------------------------------------------------


def _readonly(a):
    a.flags.writeable = False
    return a


def _bad_cases():
    f = lambda *s: np.ones(s, np.float32)  # noqa: E731
    cases = []
    for fn in ("grad_norm", "clip_grad_norm", "clip_grad_norm_per_tensor", "clip_grad_value"):
        kw = {"grad_norm": {}, "clip_grad_value": dict(clip_value=1.0)}.get(fn, dict(max_norm=1.0))
        written = fn != "grad_norm"
        cases += [
            (
                f"{fn}-int-dtype",
                fn,
                lambda kw=kw: (([f(3), np.ones(3, np.int64)],), kw),
                TypeError,
                "grads[1] has dtype int64",
            ),
            (
                f"{fn}-mixed-dtypes",
                fn,
                lambda kw=kw: (([f(3), np.ones(3)],), kw),
                TypeError,
                "one call takes one dtype",
            ),
            (f"{fn}-not-contiguous", fn, lambda kw=kw: (([f(3), f(4, 4)[:, 1]],), kw), ValueError, "not C-contiguous"),
            (f"{fn}-not-an-array", fn, lambda kw=kw: (([f(3), [1.0, 2.0]],), kw), TypeError, "must be a numpy.ndarray"),
            (f"{fn}-not-a-list", fn, lambda kw=kw: ((7,), kw), TypeError, "must be a numpy.ndarray or a list"),
        ]
        if written:
            cases += [
                (
                    f"{fn}-read-only",
                    fn,
                    lambda kw=kw: (([f(3), _readonly(f(3))],), kw),
                    ValueError,
                    "grads[1] is read-only",
                ),
                (
                    f"{fn}-aliased",
                    fn,
                    lambda kw=kw, a=f(5): (([a, a[1:3]],), kw),
                    ValueError,
                    "grads[1] shares memory with grads[0]",
                ),
            ]
        if fn != "clip_grad_value":
            for p in (0.0, -1.0, math.nan, -math.inf):
                cases.append(
                    (
                        f"{fn}-norm-type-{p}",
                        fn,
                        lambda kw=kw, p=p: (([f(3)],), dict(kw, norm_type=p)),
                        ValueError,
                        "norm_type must be a number > 0 or inf",
                    )
                )
        if "max_norm" in kw:
            for m in (-1.0, math.nan):
                cases.append(
                    (
                        f"{fn}-max-norm-{m}",
                        fn,
                        lambda m=m: (([f(3)],), dict(max_norm=m)),
                        ValueError,
                        "max_norm must be a number >= 0",
                    )
                )
    for v in (-0.5, math.nan):
        cases.append(
            (
                f"clip_value-{v}",
                "clip_grad_value",
                lambda v=v: (([f(3)],), dict(clip_value=v)),
                ValueError,
                "clip_value must be a number >= 0",
            )
        )
    return cases


BAD_CASES = _bad_cases()


def _arrays(args):
    out = []
    for a in args:
        if isinstance(a, np.ndarray):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out += [x for x in a if isinstance(x, np.ndarray)]
    return out


@pytest.mark.parametrize("case_id, fn, make, exc, match", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_inputs_raise_and_mutate_nothing(case_id, fn, make, exc, match, backend):
    args, kwargs = make()
    arrays = _arrays(args)
    before = snapshot(*arrays)
    with pytest.raises(exc) as info:
        getattr(gf.ops, fn)(*args, **kwargs)
    assert match in str(info.value)
    assert_kernel_error(info.value, fn)
    assert_unchanged(before, *arrays)


@needs_core
@pytest.mark.parametrize("case_id, fn, make, exc, match", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_inputs_same_error_on_both_backends(case_id, fn, make, exc, match):
    errors = []
    for ns in (_core, twin):
        args, kwargs = make()
        with pytest.raises(exc) as info:
            getattr(ns, fn)(*args, **kwargs)
        errors.append(info.value)
    assert_same_error(*errors)


def test_grad_norm_reads_read_only_arrays(backend):
    g = _readonly(np.full(4, 3.0))
    assert gf.ops.grad_norm([g, g]) == pytest.approx(math.sqrt(72))  # reading the same array twice is fine


# ---- the torch.nn.utils-style API ----------------------------------------------------------------------------------


def _params(dtype, seed=12, shapes=((20, 10), (10,), (10, 3), (3,))):
    rng = np.random.default_rng(seed)
    params = []
    for i, s in enumerate(shapes):
        p = gf.nn.Parameter(np.zeros(s, dtype), name=f"p{i}")
        p.grad = (rng.standard_normal(s) * 2).astype(dtype)
        params.append(p)
    return params


def _torch_params(torch, params):
    ts = []
    for p in params:
        t = torch.zeros(p.shape, dtype=torch.float32 if p.dtype == np.float32 else torch.float64, requires_grad=True)
        t.grad = None if p.grad is None else torch.from_numpy(p.grad.copy())
        ts.append(t)
    return ts


@pytest.mark.parametrize("p", NORMS, ids=NORM_IDS)
def test_api_clip_grad_norm_matches_torch_with_none_grads_and_mixed_dtypes(p, backend, torch):
    params = _params(np.float32) + _params(np.float64, seed=13)
    params[1].grad = None  # skipped, as torch skips tensors without .grad
    ts = _torch_params(torch, params)
    want = float(torch.nn.utils.clip_grad_norm_(ts, 0.8, norm_type=p))
    got = gf.optim.clip_grad_norm_(params, 0.8, norm_type=p)
    assert isinstance(got, float)
    np.testing.assert_allclose(got, want, rtol=2e-5)
    for prm, t in zip(params, ts):
        if prm.grad is not None:
            np.testing.assert_allclose(prm.grad, t.grad.numpy(), rtol=2e-5)
    assert gf.optim.grad_norm(params, norm_type=p) == pytest.approx(0.8, rel=1e-5)


def test_api_accepts_arrays_a_single_one_an_optimizer_and_skips_frozen(backend):
    params = _params(np.float32)
    grads = [p.grad.copy() for p in params]
    expect = gf.ops.grad_norm(grads)
    assert gf.optim.grad_norm(grads) == expect  # plain arrays are the gradients
    assert gf.optim.grad_norm(params) == expect
    assert gf.optim.grad_norm(iter(params)) == expect
    assert gf.optim.grad_norm(params[0]) == gf.ops.grad_norm(params[0].grad)
    assert gf.optim.grad_norm(grads[0], norm_type="inf") == float(np.abs(grads[0]).max())
    opt = gf.optim.SGD([{"params": params[:2]}, {"params": params[2:], "lr": 0.1}], lr=0.01)
    assert gf.optim.clip_grad_norm_(opt, 1e9) == expect
    params[0].trainable = False  # frozen: not stepped, so not part of the norm
    assert gf.optim.grad_norm(params) == pytest.approx(gf.ops.grad_norm(grads[1:]), rel=1e-14)
    with pytest.raises(TypeError, match="plain ndarray, which has no .grad"):
        gf.optim.grad_norm(gf.optim.SGD([np.zeros(3)], lr=0.1))
    with pytest.raises(TypeError, match=r"grad_norm: parameters\[1\] must be a gradfuse Parameter"):
        gf.optim.grad_norm([grads[0], "x"])


def test_api_errors_name_the_parameter_and_change_nothing(backend):
    params = _params(np.float32)
    params[2].grad = np.ones((3, 10), np.float32).T  # not C-contiguous
    before = snapshot(*[p.grad for p in params[:2]])
    with pytest.raises(ValueError, match=r"^clip_grad_norm_: parameters\[2\].grad is not C-contiguous"):
        gf.optim.clip_grad_norm_(params, 0.1)
    params[2].grad = np.ones((10, 3), np.int32)
    with pytest.raises(TypeError, match=r"^clip_grad_value_: parameters\[2\].grad has dtype int32"):
        gf.optim.clip_grad_value_(params, 0.1)
    params[2].grad = np.ones((10, 3), np.float64)  # mixed dtypes, then a read-only one: checked first
    params[3].grad = _readonly(np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"^clip_grad_norm_: parameters\[3\].grad is read-only"):
        gf.optim.clip_grad_norm_(params, 0.1)
    with pytest.raises(ValueError, match=r"^clip_grad_norm_per_param_: max_norm must be"):
        gf.optim.clip_grad_norm_per_param_(params, -1.0)
    with pytest.raises(ValueError, match="^clip_grad_norm_: norm_type must be a number > 0"):
        gf.optim.clip_grad_norm_(params, 1.0, norm_type=0)
    with pytest.raises(ValueError, match="^clip_grad_value_: clip_value must be a number >= 0"):
        gf.optim.clip_grad_value_(params, -1)
    assert_unchanged(before, *[p.grad for p in params[:2]])


def test_api_clip_grad_value_matches_torch(backend, torch):
    params = _params(np.float32) + _params(np.float64, seed=14)
    ts = _torch_params(torch, params)
    torch.nn.utils.clip_grad_value_(ts, 0.3)
    assert gf.optim.clip_grad_value_(params, 0.3) is None
    for prm, t in zip(params, ts):
        assert_bitwise_equal(prm.grad, t.grad.numpy(), "clip_grad_value_")


def test_api_clip_grad_norm_per_param(backend, torch):
    params = _params(np.float64) + _params(np.float32, seed=15)
    params[1].grad = None
    want = []
    for prm in params:
        if prm.grad is None:
            want.append((None, None))
            continue
        n, (g,) = torch_clip(torch, [prm.grad], 1.5, 2.0)
        want.append((n, g))
    norms = gf.optim.clip_grad_norm_per_param_(params, 1.5)
    assert len(norms) == len(params) and norms[1] is None
    for prm, n, (wn, wg) in zip(params, norms, want):
        if wn is None:
            continue
        np.testing.assert_allclose(n, wn, rtol=2e-5)
        np.testing.assert_allclose(prm.grad, wg, rtol=2e-5)
        assert gf.ops.grad_norm(prm.grad) <= 1.5 * (1 + 1e-6)
