"""Batch-normalization kernels: gf.ops.batchnorm_forward / batchnorm_backward against torch
(F.batch_norm values, running statistics, autograd gradients; nn.BatchNorm1d/2d over several
calls), against the NumPy twin on every ISA path, thread-count determinism, odd and empty shapes,
in-place calls, precision with |mean| >> std, and the bad-input matrix (nothing mutated on error).

The contract (cpp/include/gradfuse/batchnorm.hpp): statistics accumulate in double, shifted by each
channel's first element; fixed reduction blocks make results bitwise identical for every thread
count; across ISA paths and against the twin they agree to about an ulp of the dtype.
"""

from __future__ import annotations

import functools

import ml_dtypes
import numpy as np
import pytest

import gradfuse as gf
from conftest import assert_kernel_error, assert_same_error, assert_unchanged, snapshot
from gradfuse._ext import _core

pytestmark = pytest.mark.kernels

needs_core = pytest.mark.skipif(_core is None, reason="the C++ extension is not available")

DTYPES = [np.float32, np.float64]
DTYPE_IDS = lambda d: np.dtype(d).name  # noqa: E731
# against torch (its float32 sums are float32 sums) and between our two backends
TORCH_TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}
TWIN_TOL = {np.float32: dict(rtol=1e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}
OUTPUTS = ("y", "save_mean", "save_invstd", "running_mean", "running_var", "dx", "dweight", "dbias")


# ---- problems --------------------------------------------------------------------------------------


def channels_of(shape, channels_last):
    return shape[-1] if channels_last else shape[1]


def make_problem(shape, dtype, channels_last=False, seed=0, affine=True, running=True, loc=0.5, scale=2.0):
    """Forward and backward arguments, outputs filled with NaN (so a value left unwritten shows)."""
    rng = np.random.default_rng(seed)
    c = channels_of(shape, channels_last)

    def vec(lo, hi):
        return rng.uniform(lo, hi, c).astype(dtype)

    p = dict(
        x=(rng.standard_normal(shape) * scale + loc).astype(dtype),
        dy=rng.standard_normal(shape).astype(dtype),
        weight=vec(0.5, 1.5) if affine else None,
        bias=vec(-1, 1) if affine else None,
        running_mean=vec(-0.5, 0.5) if running else None,
        running_var=vec(0.5, 2.0) if running else None,
        y=np.full(shape, np.nan, dtype),
        save_mean=np.full(c, np.nan, dtype),
        save_invstd=np.full(c, np.nan, dtype),
        dx=np.full(shape, np.nan, dtype),
        dweight=np.full(c, np.nan, dtype),
        dbias=np.full(c, np.nan, dtype),
    )
    return p


def copy_problem(p):
    return {k: None if v is None else v.copy() for k, v in p.items()}


def run_forward(fn, p, **kw):
    fn(
        p["x"],
        p["weight"],
        p["bias"],
        p["running_mean"],
        p["running_var"],
        p["y"],
        p["save_mean"],
        p["save_invstd"],
        **kw,
    )


def run_backward(fn, p, **kw):
    fn(p["dy"], p["x"], p["weight"], p["save_mean"], p["save_invstd"], p["dx"], p["dweight"], p["dbias"], **kw)


def run_both(p, training=True, channels_last=False, momentum=0.1, eps=1e-5, forward=None, backward=None):
    """Forward, then backward from the forward's saved statistics. The backward's training flag says
    whether the statistics were the batch's (training, or no running statistics)."""
    forward = forward or gf.ops.batchnorm_forward
    backward = backward or gf.ops.batchnorm_backward
    run_forward(forward, p, training=training, momentum=momentum, eps=eps, channels_last=channels_last)
    batch = training or p["running_mean"] is None
    run_backward(backward, p, training=batch, channels_last=channels_last)
    return p


def to_channels_first(a, channels_last):
    return np.ascontiguousarray(np.moveaxis(a, -1, 1)) if channels_last else a


def torch_reference(torch, p, training=True, channels_last=False, momentum=0.1, eps=1e-5, dtype=None):
    """torch.nn.functional.batch_norm on a copy of the problem (in `dtype` if given): y, the running
    statistics after the call, the batch statistics, and autograd's dx, dweight, dbias for dy."""
    F = torch.nn.functional

    def t(a, grad=False):
        if a is None:
            return None
        out = torch.tensor(a if dtype is None else a.astype(dtype))
        return out.requires_grad_(True) if grad else out

    x = t(to_channels_first(p["x"], channels_last), grad=True)
    w, b = t(p["weight"], grad=True), t(p["bias"], grad=True)
    rm, rv = t(p["running_mean"]), t(p["running_var"])
    batch = training or rm is None
    y = F.batch_norm(x, rm, rv, w, b, training=batch, momentum=momentum, eps=eps)
    y.backward(t(to_channels_first(p["dy"], channels_last)))
    dims = [0] + list(range(2, x.ndim))
    xd = x.detach().double()
    if not batch:
        mean, var = rm.double(), rv.double()
    elif xd.numel():
        mean, var = xd.mean(dims), xd.var(dims, unbiased=False)
    else:  # no statistics
        mean = var = torch.full(p["save_mean"].shape, float("nan"), dtype=torch.float64)

    def back(a):
        a = a.detach().numpy()
        return np.moveaxis(a, 1, -1) if channels_last else a

    return dict(
        y=back(y),
        running_mean=None if rm is None else rm.numpy(),
        running_var=None if rv is None else rv.numpy(),
        save_mean=mean.numpy(),
        save_invstd=(1.0 / torch.sqrt(var + eps)).numpy(),
        dx=back(x.grad),
        dweight=None if w is None else w.grad.numpy(),
        dbias=None if b is None else b.grad.numpy(),
    )


def assert_outputs_close(got, want, tol, what, names=OUTPUTS):
    for k in names:
        if want.get(k) is None or got.get(k) is None:
            continue
        np.testing.assert_allclose(got[k], want[k], err_msg=f"{what}: {k}", **tol)


def assert_outputs_equal(got, want, what, names=OUTPUTS):
    for k in names:
        if want.get(k) is not None:
            np.testing.assert_array_equal(got[k], want[k], err_msg=f"{what}: {k}")


# ---- against torch ---------------------------------------------------------------------------------

# (N, C); (N, C, L) with L < 64 (rows of C*L columns); (N, C, L) with L >= 64 (planes, a vector tail);
# (N, C, H, W) with H*W < 64 and >= 64.
TORCH_SHAPES = [(8, 5), (4, 3, 7), (2, 3, 70), (3, 4, 5, 6), (2, 3, 9, 9)]
# train: batch statistics, running update; eval: running statistics; no_running_*: batch statistics
# whatever the flag (like torch with track_running_stats=False)
MODES = {
    "train": (True, True),
    "eval": (False, True),
    "no_running_train": (True, False),
    "no_running_eval": (False, False),
}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("shape", TORCH_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_matches_torch(dtype, shape, mode, backend, torch):
    training, running = MODES[mode]
    p = make_problem(shape, dtype, running=running, seed=len(shape))
    want = torch_reference(torch, p, training=training, momentum=0.3)
    run_both(p, training=training, momentum=0.3)
    assert_outputs_close(p, want, TORCH_TOL[dtype], f"{backend} {mode}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_matches_torch_without_affine(dtype, backend, torch):
    for shape in [(9, 4), (2, 3, 9, 9)]:
        p = make_problem(shape, dtype, affine=False)
        want = torch_reference(torch, p, eps=1e-3, momentum=0.0)
        run_both(p, eps=1e-3, momentum=0.0)
        assert_outputs_close(p, want, TORCH_TOL[dtype], f"{backend} affine=False {shape}")
        # dweight / dbias are still the sums when asked for; weight None means scale 1
        np.testing.assert_allclose(
            p["dbias"], p["dy"].sum(axis=(0, 2, 3) if len(shape) == 4 else 0), **TORCH_TOL[dtype]
        )


@needs_core
@pytest.mark.parametrize("shape", [(37, 19), (3, 5, 70)], ids=str)
def test_cpp_matches_torch_on_every_isa(shape, isa, torch):
    p = make_problem(shape, np.float32)
    want = torch_reference(torch, p)
    run_both(p, forward=_core.batchnorm_forward, backward=_core.batchnorm_backward)
    assert_outputs_close(p, want, TORCH_TOL[np.float32], f"{isa}")


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(4, 5, 6, 3), (7, 9, 70), (6, 3)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_channels_last_matches_torch_and_the_contiguous_layout(dtype, shape, training, backend, torch):
    p = make_problem(shape, dtype, channels_last=True)
    want = torch_reference(torch, p, training=training, channels_last=True)
    cf = copy_problem(p)
    for k in ("x", "dy", "y", "dx"):
        cf[k] = to_channels_first(p[k], True)
    run_both(p, training=training, channels_last=True)
    run_both(cf, training=training)
    assert_outputs_close(p, want, TORCH_TOL[dtype], f"{backend} channels_last vs torch")
    for k in ("y", "dx"):
        cf[k] = np.moveaxis(cf[k], 1, -1)
    assert_outputs_close(p, cf, TWIN_TOL[dtype], f"{backend} channels_last vs channels first")
    if len(shape) == 2:  # (N, C) is the same memory layout either way: the same computation
        assert_outputs_equal(p, cf, f"{backend} (N, C) channels_last")


@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum0.1", "cumulative"])
@pytest.mark.parametrize(
    "layer, shape",
    [("BatchNorm1d", (16, 6)), ("BatchNorm1d", (8, 6, 20)), ("BatchNorm2d", (4, 6, 9, 9))],
    ids=["1d", "1d_ncl", "2d"],
)
def test_several_calls_match_torch_layers(layer, shape, momentum, backend, torch):
    """Four training steps (forward, backward) then an eval forward, against nn.BatchNorm1d/2d with
    affine parameters and running statistics; momentum=None is torch's cumulative average, which the
    caller turns into momentum = 1 / num_batches_tracked."""
    c = shape[1]
    module = getattr(torch.nn, layer)(c, momentum=momentum).double()
    rng = np.random.default_rng(7)
    with torch.no_grad():
        module.weight.copy_(torch.tensor(rng.uniform(0.5, 1.5, c)))
        module.bias.copy_(torch.tensor(rng.uniform(-1, 1, c)))
    weight, bias = module.weight.detach().numpy().copy(), module.bias.detach().numpy().copy()
    running_mean, running_var = np.zeros(c), np.ones(c)
    for step in range(1, 5):
        x = rng.standard_normal(shape) * step + step
        dy = rng.standard_normal(shape)
        module.zero_grad()
        xt = torch.tensor(x, requires_grad=True)
        module.train()
        module(xt).backward(torch.tensor(dy))
        p = dict(
            x=x,
            dy=dy,
            weight=weight,
            bias=bias,
            running_mean=running_mean,
            running_var=running_var,
            y=np.empty(shape),
            save_mean=np.empty(c),
            save_invstd=np.empty(c),
            dx=np.empty(shape),
            dweight=np.empty(c),
            dbias=np.empty(c),
        )
        run_both(p, momentum=1.0 / step if momentum is None else momentum)
        tol = TORCH_TOL[np.float64]
        np.testing.assert_allclose(running_mean, module.running_mean.numpy(), **tol)
        np.testing.assert_allclose(running_var, module.running_var.numpy(), **tol)
        np.testing.assert_allclose(p["dx"], xt.grad.numpy(), **tol)
        np.testing.assert_allclose(p["dweight"], module.weight.grad.numpy(), **tol)
        np.testing.assert_allclose(p["dbias"], module.bias.grad.numpy(), **tol)
    module.eval()
    x = rng.standard_normal(shape)
    y = np.empty(shape)
    gf.ops.batchnorm_forward(x, weight, bias, running_mean, running_var, y, np.empty(c), np.empty(c), training=False)
    with torch.no_grad():
        np.testing.assert_allclose(y, module(torch.tensor(x)).numpy(), **TORCH_TOL[np.float64])


def test_large_mean_small_std_against_torch_float64(backend, torch):
    """mean 1e4, std 1 in float32: E[x^2] - E[x]^2 would lose every digit; the pivot shift keeps the
    statistics at float64 accuracy and the output at float32 accuracy (torch float32 is worse)."""
    rng = np.random.default_rng(3)
    for shape in [(4096, 3), (16, 3, 10, 10)]:
        p = make_problem(shape, np.float32)
        p["x"] = (1e4 + rng.standard_normal(shape)).astype(np.float32)
        exact = torch_reference(torch, p, dtype=np.float64)  # the same float32 values, in float64
        fast = torch_reference(torch, p)
        run_both(p)
        err = {k: np.abs(p[k] - exact[k]).max() for k in ("y", "save_mean", "running_var", "dx")}
        torch_err = {k: np.abs(fast[k] - exact[k]).max() for k in err}
        rel_invstd = np.abs(p["save_invstd"] / exact["save_invstd"] - 1).max()
        assert err["y"] < 2e-6 and err["dx"] < 2e-6, (err, torch_err)  # ~ulps of values up to ~5
        assert err["save_mean"] <= 1e4 * 2**-24 and rel_invstd < 2e-7, (err, rel_invstd)
        assert np.abs(p["running_var"] / exact["running_var"] - 1).max() < 2e-7
        assert err["y"] <= torch_err["y"] and err["dx"] <= torch_err["dx"]


# ---- C++ == NumPy twin on every ISA path; determinism ----------------------------------------------

# (shape, channels_last): each layout and the corners of the blocking (kColBlock = 1024 columns,
# 2^17 elements per reduction block, rows narrower than 256 grouped, planes from L = 64)
TWIN_CASES = [
    ((100_003, 3), False),  # grouped rows (86 per row), a partial last row, 3 row blocks
    ((300, 1500), False),  # two column blocks (the second one with a vector tail), 3 row blocks
    ((3, 5, 17, 3), True),  # channels last, grouped rows
    ((4000, 7, 13), False),  # L < 64: rows of C*L = 91 columns, grouped, partial last row
    ((300, 2, 1000), False),  # planes: 3 blocks of samples per channel, vector tail of 1000 % 16
    ((2, 3, 67), False),  # planes, one block, a tail of 3
    ((1, 1, 130), False),  # N = 1, C = 1
    ((17, 1), False),  # C = 1
]
CASE_IDS = [f"{s}{'-cl' if cl else ''}" for s, cl in TWIN_CASES]


@needs_core
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape, channels_last", TWIN_CASES, ids=CASE_IDS)
def test_cpp_matches_twin(shape, channels_last, dtype, training, isa):
    start = make_problem(shape, dtype, channels_last=channels_last, seed=11)
    cpp = run_both(
        copy_problem(start),
        training=training,
        channels_last=channels_last,
        forward=_core.batchnorm_forward,
        backward=_core.batchnorm_backward,
    )
    ref = run_both(
        copy_problem(start),
        training=training,
        channels_last=channels_last,
        forward=gf.ops.batchnorm_forward.numpy,
        backward=gf.ops.batchnorm_backward.numpy,
    )
    assert_outputs_close(cpp, ref, TWIN_TOL[dtype], f"{isa} {shape}")
    if not training:  # no reductions in the forward: the same operations on the same values
        assert_outputs_equal(cpp, ref, f"{isa} eval", names=("y", "save_mean", "save_invstd"))


@needs_core
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(
    "shape, channels_last",
    [c for c in TWIN_CASES if np.prod(c[0]) > 100_000],
    ids=[i for c, i in zip(TWIN_CASES, CASE_IDS) if np.prod(c[0]) > 100_000],
)
def test_one_and_two_threads_and_two_runs_are_bitwise_equal(shape, channels_last, dtype, isa, threads):
    start = make_problem(shape, dtype, channels_last=channels_last, seed=5)
    results = []
    for n in (1, 2, 2):
        threads(n)
        if gf.get_num_threads() != n:
            pytest.skip(f"OpenMP gives {gf.get_num_threads()} threads here, not {n}")
        results.append(
            run_both(
                copy_problem(start),
                channels_last=channels_last,
                forward=_core.batchnorm_forward,
                backward=_core.batchnorm_backward,
            )
        )
    assert_outputs_equal(results[1], results[2], "two 2-thread runs")
    assert_outputs_equal(results[0], results[1], "1 vs 2 threads")


# Outputs of 16 MiB and more are streamed (non-temporal stores from the first vector-aligned
# column of each row / plane): odd row and plane lengths put those starts everywhere.
STREAMED = [(1033, 4067), (2, 3, 699_051)]


@functools.lru_cache(maxsize=None)
def _streamed_problem(shape):
    return make_problem(shape, np.float32, seed=9)


@functools.lru_cache(maxsize=None)
def _streamed_reference(shape):
    return run_both(
        copy_problem(_streamed_problem(shape)),
        forward=gf.ops.batchnorm_forward.numpy,
        backward=gf.ops.batchnorm_backward.numpy,
    )


@needs_core
@pytest.mark.parametrize("shape", STREAMED, ids=str)
def test_streamed_outputs(shape, isa, threads):
    if isa == "scalar":
        pytest.skip("one lane: no alignment peel, and stream() is a plain store")
    assert np.prod(shape) * 4 >= 16 << 20
    ref = _streamed_reference(shape)
    results = []
    for n in (1, 2):
        threads(n)
        results.append(
            run_both(
                copy_problem(_streamed_problem(shape)),
                forward=_core.batchnorm_forward,
                backward=_core.batchnorm_backward,
            )
        )
    assert_outputs_close(results[0], ref, TWIN_TOL[np.float32], f"{isa} streamed {shape}")
    assert_outputs_equal(results[1], results[0], f"{isa} streamed {shape}: 1 vs 2 threads")
    # in place: y is x, dx is dy
    p = copy_problem(_streamed_problem(shape))
    x, dy = p["x"].copy(), p["dy"].copy()
    run_forward(_core.batchnorm_forward, dict(p, x=x, y=x))
    run_backward(_core.batchnorm_backward, dict(p, dy=dy, dx=dy))
    np.testing.assert_array_equal(x, results[1]["y"])
    np.testing.assert_array_equal(dy, results[1]["dx"])


# ---- odd and empty shapes ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 1), (1, 1, 2), (1, 3, 5), (1, 2, 3, 3), (5, 1, 1, 1), (2, 4, 1, 1)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_smallest_batches_match_torch(shape, dtype, backend, torch):
    """Two values per channel is enough for training; N = 1 is fine when L > 1."""
    p = make_problem(shape, dtype)
    want = torch_reference(torch, p)
    run_both(p)
    assert_outputs_close(p, want, TORCH_TOL[dtype], f"{backend} {shape}")


@pytest.mark.parametrize("shape", [(1, 4), (1, 4, 1), (1, 1, 1, 1), (1, 0)], ids=str)
def test_one_value_per_channel_when_training_raises(shape, backend, torch):
    p = make_problem(shape, np.float32)
    before = snapshot(*p.values())
    for training, running in [(True, True), (True, False), (False, False)]:
        q = dict(
            p, running_mean=p["running_mean"] if running else None, running_var=p["running_var"] if running else None
        )
        with pytest.raises(
            ValueError,
            match=r"Expected more than 1 value per channel when training, got input "
            r"size \(" + ", ".join(map(str, shape)),
        ):
            run_forward(gf.ops.batchnorm_forward, q, training=training)
    assert_unchanged(before, *p.values())
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        torch.nn.functional.batch_norm(torch.zeros(shape), None, None, training=True)
    if shape != (1, 0):  # eval with running statistics is fine
        run_both(p, training=False)
        assert np.isfinite(p["y"]).all() and np.isfinite(p["dx"]).all()


@pytest.mark.parametrize("shape", [(0, 3), (0, 3, 4), (2, 3, 0), (0, 3, 2, 2), (0, 2, 70)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_empty_batch(shape, dtype, backend, torch):
    """No values per channel: torch's F.batch_norm returns an empty output and leaves the running
    statistics alone; so do we, writing save_mean = save_invstd = 0 ("no statistics"); the backward
    gives an empty dx and zero dweight / dbias (torch's autograd too)."""
    p = make_problem(shape, dtype)
    want = torch_reference(torch, p)
    rm, rv = p["running_mean"].copy(), p["running_var"].copy()
    run_both(p)
    np.testing.assert_array_equal(p["running_mean"], rm)
    np.testing.assert_array_equal(p["running_var"], rv)
    np.testing.assert_array_equal(want["running_mean"], rm)
    assert (p["save_mean"] == 0).all() and (p["save_invstd"] == 0).all()
    assert p["y"].shape == shape and p["dx"].shape == shape
    for k in ("dweight", "dbias"):
        np.testing.assert_array_equal(p[k], 0)
        np.testing.assert_array_equal(want[k], 0)  # torch's autograd agrees
    # eval: the running statistics are saved, the output is empty
    q = make_problem(shape, dtype)
    run_both(q, training=False)
    np.testing.assert_array_equal(q["save_mean"], q["running_mean"])
    np.testing.assert_allclose(
        q["save_invstd"], 1 / np.sqrt(q["running_var"].astype(np.float64) + 1e-5), **TWIN_TOL[dtype]
    )


@pytest.mark.parametrize("shape", [(5, 0), (0, 0), (3, 0, 4)], ids=str)
def test_no_channels(shape, backend):
    p = make_problem(shape, np.float32)
    run_both(p)
    run_both(p, training=False)
    assert p["save_mean"].shape == (0,)


# ---- in place, optional outputs, non-finite values ----------------------------------------------------


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(300, 5), (3, 4, 70), (3, 4, 5)], ids=str)
def test_in_place_y_is_x_and_dx_is_dy(shape, training, backend):
    p = make_problem(shape, np.float32)
    out_of_place = run_both(copy_problem(p), training=training)
    q = copy_problem(p)
    x, dy = q["x"].copy(), q["dy"].copy()
    run_forward(gf.ops.batchnorm_forward, dict(q, x=x, y=x), training=training)
    run_backward(gf.ops.batchnorm_backward, dict(q, dy=dy, dx=dy, x=p["x"]), training=training)
    np.testing.assert_array_equal(x, out_of_place["y"])
    np.testing.assert_array_equal(dy, out_of_place["dx"])
    assert_outputs_equal(
        q,
        out_of_place,
        "in place",
        names=("save_mean", "save_invstd", "running_mean", "running_var", "dweight", "dbias"),
    )


def test_optional_gradients(backend):
    p = run_both(make_problem((6, 4, 5), np.float64))
    for training in (True, False):
        q = copy_problem(p)
        q["dweight"] = q["dbias"] = None
        run_backward(gf.ops.batchnorm_backward, q, training=training)
        r = copy_problem(p)
        run_backward(gf.ops.batchnorm_backward, r, training=training)
        np.testing.assert_array_equal(q["dx"], r["dx"])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("shape", [(40, 3), (4, 3, 70)], ids=str)
def test_non_finite_values_stay_in_their_channel(shape, bad, backend):
    p = make_problem(shape, np.float64)
    clean = run_both(copy_problem(p))
    p["x"][(1, 1) + (0,) * (len(shape) - 2)] = bad
    run_both(p)
    assert np.isnan(p["y"][:, 1]).all() and np.isnan(p["save_invstd"][1])
    for k in ("y", "dx"):
        np.testing.assert_array_equal(p[k][:, [0, 2]], clean[k][:, [0, 2]])


# ---- bfloat16 (ml_dtypes) -----------------------------------------------------------------------------
# The contract (batchnorm.hpp, "dtypes"): x, y, dy, dx may be bf16, the per-channel arrays then
# float32; the kernel runs the float32 code on the widened data and rounds y / dx once. So a bf16
# call is bitwise the float32 call on the widened data, its bf16 outputs rounded, its float32 ones
# equal (tests/test_bf16.py checks the table's small examples; here every layout and blocking
# corner, streamed outputs, threads, special values, tiny and empty batches, torch).

BF16 = np.dtype(ml_dtypes.bfloat16)
DATA = ("x", "dy", "y", "dx")  # bf16 in a bf16 call; the rest float32


def bf16_problem(shape, channels_last=False, seed=0, **kw):
    """make_problem in float32 with its data rounded to bf16 (outputs NaN-filled)."""
    p = make_problem(shape, np.float32, channels_last=channels_last, seed=seed, **kw)
    return {k: v.astype(BF16) if k in DATA else v for k, v in p.items()}


def widened(p):
    return {k: v.astype(np.float32) if v is not None and v.dtype == BF16 else v for k, v in copy_problem(p).items()}


def assert_bf16_is_the_float32_call_rounded(got, ref, what):
    for k in OUTPUTS:
        if ref[k] is None:
            continue
        if k in DATA:
            assert got[k].dtype == BF16, k
            with np.errstate(over="ignore"):
                want = ref[k].astype(BF16)
            np.testing.assert_array_equal(got[k].view(np.uint16), want.view(np.uint16), err_msg=f"{what}: {k}")
        else:
            assert got[k].dtype == np.float32, k
            np.testing.assert_array_equal(got[k], ref[k], err_msg=f"{what}: {k}")


def cpp_both(p, **kw):
    return run_both(p, forward=_core.batchnorm_forward, backward=_core.batchnorm_backward, **kw)


@needs_core
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape, channels_last", TWIN_CASES, ids=CASE_IDS)
def test_bf16_is_the_float32_call_rounded_once(shape, channels_last, training, isa, threads):
    start = bf16_problem(shape, channels_last=channels_last, seed=12)
    ref = cpp_both(widened(start), training=training, channels_last=channels_last)
    for n in (1, 2):
        threads(n)
        got = cpp_both(copy_problem(start), training=training, channels_last=channels_last)
        assert_bf16_is_the_float32_call_rounded(got, ref, f"{isa} {shape} {n} threads")


@needs_core
@pytest.mark.parametrize("shape", [(4099, 2049), (2, 3, 1_398_103)], ids=str)
def test_bf16_streamed_outputs(shape, isa, threads):
    """bf16 outputs of 16 MiB and more are streamed (from the first column whose address is on a
    vector of bf16 storage, 32 / 16 bytes); in place too."""
    assert np.prod(shape) * 2 >= 16 << 20
    start = bf16_problem(shape, seed=10)
    ref = cpp_both(widened(start))
    threads(2)
    assert_bf16_is_the_float32_call_rounded(cpp_both(copy_problem(start)), ref, f"{isa} streamed {shape}")
    p = copy_problem(start)
    x, dy = p["x"].copy(), p["dy"].copy()
    run_forward(_core.batchnorm_forward, dict(p, x=x, y=x))
    run_backward(_core.batchnorm_backward, dict(p, dy=dy, dx=dy, x=start["x"]))
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(x.view(np.uint16), ref["y"].astype(BF16).view(np.uint16))
        np.testing.assert_array_equal(dy.view(np.uint16), ref["dx"].astype(BF16).view(np.uint16))


@needs_core
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape, channels_last", [((300, 5), False), ((3, 4, 70), False), ((4, 3, 5), True)], ids=str)
def test_bf16_twin_agrees(shape, channels_last, training):
    """The twin (upcast, the float32 twin, round once) against the kernel: the float32 twin's
    agreement (TWIN_TOL) plus one bf16 rounding either way."""
    start = bf16_problem(shape, channels_last=channels_last, seed=13)
    got = cpp_both(copy_problem(start), training=training, channels_last=channels_last)
    ref = run_both(
        copy_problem(start),
        training=training,
        channels_last=channels_last,
        forward=gf.ops.batchnorm_forward.numpy,
        backward=gf.ops.batchnorm_backward.numpy,
    )
    for k in OUTPUTS:
        assert got[k].dtype == ref[k].dtype
        tol = dict(rtol=2**-7, atol=1e-6) if k in DATA else TWIN_TOL[np.float32]
        np.testing.assert_allclose(got[k].astype(np.float32), ref[k].astype(np.float32), err_msg=k, **tol)


def _bf16_torch(torch, a):
    return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("shape", [(64, 5), (8, 3, 7), (4, 3, 70), (3, 4, 5, 6)], ids=str)
def test_bf16_matches_torch_mixed_batch_norm(shape, mode, backend, torch):
    """torch's F.batch_norm on a bf16 input with float32 weight, bias and running statistics, the
    mixed call an autocast model makes (autocast's CPU lists leave batch_norm to its input's dtype,
    bf16 after an autocast Linear, and keep the module's float32 parameters): y and autograd's dx
    bf16, dweight, dbias and the running statistics float32. torch rounds its float32 result once
    too, from other float32 sums: y and dx within a bf16 ulp of the value (dx: of the largest, where
    its three terms cancel), the float32 outputs close to float32 accuracy."""
    training = mode == "train"
    p = bf16_problem(shape, seed=14)
    F = torch.nn.functional
    tx = _bf16_torch(torch, p["x"]).requires_grad_(True)
    tw, tb = (torch.from_numpy(p[k].copy()).requires_grad_(True) for k in ("weight", "bias"))
    trm, trv = (torch.from_numpy(p[k].copy()) for k in ("running_mean", "running_var"))
    ty = F.batch_norm(tx, trm, trv, tw, tb, training=training, momentum=0.1, eps=1e-5)
    assert ty.dtype == torch.bfloat16
    ty.backward(_bf16_torch(torch, p["dy"]))
    assert tx.grad.dtype == torch.bfloat16 and tw.grad.dtype == torch.float32
    run_both(p, training=training)
    y, dx = p["y"].astype(np.float32), p["dx"].astype(np.float32)
    ty32, tdx32 = ty.detach().float().numpy(), tx.grad.float().numpy()
    np.testing.assert_allclose(y, ty32, rtol=2**-7, atol=2**-8 * np.abs(ty32).max())
    np.testing.assert_allclose(dx, tdx32, rtol=2**-7, atol=2**-8 * np.abs(tdx32).max())
    for k, t in (("running_mean", trm), ("running_var", trv)):
        np.testing.assert_allclose(p[k], t.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
    for k, t in (("dweight", tw.grad), ("dbias", tb.grad)):
        np.testing.assert_allclose(p[k], t.numpy(), rtol=1e-4, atol=1e-4 * np.abs(t.numpy()).max(), err_msg=k)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("shape", [(40, 3), (4, 3, 70)], ids=str)
def test_bf16_non_finite_values_stay_in_their_channel(shape, bad, backend):
    p = bf16_problem(shape, seed=15)
    clean = run_both(copy_problem(p))
    p["x"][(1, 1) + (0,) * (p["x"].ndim - 2)] = bad
    run_both(p)
    assert np.isnan(p["y"][:, 1].astype(np.float32)).all() and np.isnan(p["save_invstd"][1])
    assert (p["y"][:, 1].view(np.uint16) & 0x7FFF == 0x7FC0).all()  # the quiet NaN
    for k in ("y", "dx"):
        np.testing.assert_array_equal(p[k][:, [0, 2]].view(np.uint16), clean[k][:, [0, 2]].view(np.uint16))


@pytest.mark.parametrize("shape", [(2, 1), (1, 3, 2), (2, 4, 1, 1)], ids=str)
def test_bf16_smallest_batches(shape, backend):
    """Two values per channel (a, b): y = +-(a - b) / 2 / sqrt((a - b)^2 / 4 + eps), near +-1, rounded
    to bf16 once; the float32 call on the widened data rounds to the same bits."""
    p = bf16_problem(shape, seed=16, affine=False)
    q = widened(p)
    run_both(p)
    run_both(q)
    np.testing.assert_array_equal(p["y"].view(np.uint16), q["y"].astype(BF16).view(np.uint16))
    x = to_channels_first(q["x"], False).astype(np.float64)
    dims = (0, *range(2, x.ndim))
    want = (x - x.mean(dims, keepdims=True)) / np.sqrt(x.var(dims, keepdims=True) + 1e-5)
    np.testing.assert_allclose(p["y"].astype(np.float64), want, rtol=2**-8)


@pytest.mark.parametrize("shape", [(0, 3), (0, 2, 70), (5, 0), (2, 3, 0)], ids=str)
def test_bf16_empty(shape, backend):
    p = bf16_problem(shape)
    rm = p["running_mean"].copy()
    run_both(p)
    assert p["y"].dtype == BF16 and p["y"].shape == shape and p["dx"].shape == shape
    np.testing.assert_array_equal(p["running_mean"], rm)
    assert (p["save_mean"] == 0).all() and (p["dweight"] == 0).all() and (p["dbias"] == 0).all()


def test_bf16_wide_arrays_must_be_float32(backend):
    """bf16 data with a float64 (or bf16) per-channel array: TypeError naming it, nothing written."""
    p = bf16_problem((6, 3))
    for name, dtype in (("weight", np.float64), ("running_var", BF16), ("save_invstd", np.float64)):
        q = copy_problem(p)
        q[name] = q[name].astype(dtype)
        before = snapshot(*q.values())
        with pytest.raises(
            TypeError,
            match=f"{name} has dtype (float64; expected float32 beside x in bfloat16|bfloat16; expected float32 or "
            "float64)",
        ):
            run_forward(gf.ops.batchnorm_forward, q)
        assert_unchanged(before, *q.values())
    q = copy_problem(p)
    q["dx"] = q["dx"].astype(np.float32)  # a data array in float32 beside bf16 ones
    with pytest.raises(TypeError, match="dx has dtype float32"):
        run_backward(gf.ops.batchnorm_backward, q)


# ---- signatures and dispatch ------------------------------------------------------------------------

# ---- bad inputs: the documented exception, the same error on both backends, nothing mutated ---------


def _view_into(buf, offset, shape):
    n = int(np.prod(shape))
    return buf[offset : offset + n].reshape(shape)


def _overlapping_y(p):
    buf = np.zeros(p["x"].size + 4, p["x"].dtype)
    x = _view_into(buf, 0, p["x"].shape)
    x[...] = p["x"]
    return dict(p, x=x, y=_view_into(buf, 4, p["x"].shape))


def _readonly(p, name):
    a = p[name].copy()
    a.flags.writeable = False
    return dict(p, **{name: a})


def _noncontiguous(p, name):
    a = np.repeat(p[name], 2, axis=-1)[..., ::2]
    return dict(p, **{name: a})


def _big_endian(p, name):
    return dict(p, **{name: p[name].astype(p[name].dtype.newbyteorder(">"))})


# (id, kernel, mutate(problem) -> problem, keyword arguments, exception, message after "fn: ")
BAD = [
    (
        "x_int",
        "forward",
        lambda p: dict(p, x=p["x"].astype(np.int32)),
        {},
        TypeError,
        "x has dtype int32; expected float32, float64 or bfloat16",
    ),
    ("x_list", "forward", lambda p: dict(p, x=p["x"].tolist()), {}, TypeError, "x must be a numpy.ndarray, got list"),
    ("x_big_endian", "forward", lambda p: _big_endian(p, "x"), {}, TypeError, "x is big-endian"),
    (
        "weight_float64",
        "forward",
        lambda p: dict(p, weight=p["weight"].astype(np.float64)),
        {},
        TypeError,
        "weight has dtype float64 but x is float32 (one call takes one dtype)",
    ),
    ("y_none", "forward", lambda p: dict(p, y=None), {}, TypeError, "y is required (got None)"),
    ("x_noncontiguous", "forward", lambda p: _noncontiguous(p, "x"), {}, ValueError, "x is not C-contiguous"),
    ("y_readonly", "forward", lambda p: _readonly(p, "y"), {}, ValueError, "y is read-only (it is written in place)"),
    (
        "running_var_readonly",
        "forward",
        lambda p: _readonly(p, "running_var"),
        {},
        ValueError,
        "running_var is read-only",
    ),
    (
        "x_1d",
        "forward",
        lambda p: dict(p, x=p["x"][0, 0].copy(), y=p["y"][0, 0].copy()),
        {},
        ValueError,
        "x must have at least 2 dimensions (N, C, ...), got shape (5,)",
    ),
    (
        "save_mean_shape",
        "forward",
        lambda p: dict(p, save_mean=p["save_mean"][:3].copy()),
        {},
        ValueError,
        "save_mean has shape (3,) but must be (C,) = (4,) (C from x)",
    ),
    (
        "weight_channels_last",
        "forward",
        lambda p: p,
        dict(channels_last=True),
        ValueError,
        "weight has shape (4,) but must be (C,) = (5,) (C from x)",
    ),
    (
        "y_shape",
        "forward",
        lambda p: dict(p, y=p["y"][:, :, :4].copy()),
        {},
        ValueError,
        "y has shape (6, 4, 4) but x has shape (6, 4, 5)",
    ),
    (
        "running_var_missing",
        "forward",
        lambda p: dict(p, running_var=None),
        {},
        ValueError,
        "running_mean and running_var must both be arrays or both be None",
    ),
    ("momentum", "forward", lambda p: p, dict(momentum=1.5), ValueError, "momentum must be in [0, 1], got 1.5"),
    ("eps_negative", "forward", lambda p: p, dict(eps=-1.0), ValueError, "eps must be a finite number >= 0, got -1.0"),
    ("eps_nan", "forward", lambda p: p, dict(eps=float("nan")), ValueError, "eps must be a finite number >= 0"),
    (
        "eps_zero_training",
        "forward",
        lambda p: p,
        dict(eps=0.0),
        ValueError,
        "eps must be > 0 when the batch statistics are used (training), got 0.0",
    ),
    (
        "y_overlaps_x",
        "forward",
        _overlapping_y,
        {},
        ValueError,
        "y shares memory with x (an array that is written must not overlap any other argument)",
    ),
    (
        "running_mean_is_running_var",
        "forward",
        lambda p: dict(p, running_var=p["running_mean"]),
        {},
        ValueError,
        "running_var shares memory with running_mean",
    ),
    (
        "save_invstd_is_weight",
        "forward",
        lambda p: dict(p, save_invstd=p["weight"]),
        {},
        ValueError,
        "save_invstd shares memory with weight",
    ),
    (
        "save_mean_in_y",
        "forward",
        lambda p: dict(p, save_mean=p["y"][0, 0, :4]),
        {},
        ValueError,
        "save_mean shares memory with y",
    ),
    (
        "dy_shape",
        "backward",
        lambda p: dict(p, dy=p["dy"][:5].copy()),
        {},
        ValueError,
        "dy has shape (5, 4, 5) but x has shape (6, 4, 5)",
    ),
    ("dx_readonly", "backward", lambda p: _readonly(p, "dx"), {}, ValueError, "dx is read-only"),
    ("dx_noncontiguous", "backward", lambda p: _noncontiguous(p, "dx"), {}, ValueError, "dx is not C-contiguous"),
    (
        "dweight_shape",
        "backward",
        lambda p: dict(p, dweight=np.zeros(5, np.float32)),
        {},
        ValueError,
        "dweight has shape (5,) but must be (C,) = (4,) (C from x)",
    ),
    (
        "save_mean_float64",
        "backward",
        lambda p: dict(p, save_mean=p["save_mean"].astype(np.float64)),
        {},
        TypeError,
        "save_mean has dtype float64 but dy is float32",
    ),
    ("dx_is_x", "backward", lambda p: dict(p, dx=p["x"]), {}, ValueError, "dx shares memory with x"),
    (
        "dweight_is_dbias",
        "backward",
        lambda p: dict(p, dweight=p["dbias"]),
        {},
        ValueError,
        "dbias shares memory with dweight",
    ),
    (
        "save_invstd_none",
        "backward",
        lambda p: dict(p, save_invstd=None),
        {},
        TypeError,
        "save_invstd is required (got None)",
    ),
    (
        "x_1d_backward",
        "backward",
        lambda p: dict(p, x=p["x"].ravel()),
        {},
        ValueError,
        "x must have at least 2 dimensions",
    ),
]


def _bad_problem():
    p = make_problem((6, 4, 5), np.float32)
    run_both(p)  # saved statistics for the backward
    return p


@pytest.mark.parametrize("case", BAD, ids=[b[0] for b in BAD])
def test_bad_input_raises_and_mutates_nothing(case, backend):
    _, kernel, mutate, kwargs, exc, message = case
    p = mutate(_bad_problem())
    arrays = [v for v in p.values() if isinstance(v, np.ndarray)]
    before = snapshot(*arrays)
    fn = "batchnorm_" + kernel
    run = run_forward if kernel == "forward" else run_backward
    with pytest.raises(exc) as info:
        run(getattr(gf.ops, fn), p, **kwargs)
    assert_kernel_error(info.value, fn)
    assert message in str(info.value)
    assert_unchanged(before, *arrays)


@needs_core
@pytest.mark.parametrize("case", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_the_same_error_on_both_backends(case):
    _, kernel, mutate, kwargs, exc, _ = case
    errors = []
    for backend in ("cpp", "numpy"):
        p = mutate(_bad_problem())
        run = run_forward if kernel == "forward" else run_backward
        with pytest.raises(exc) as info:
            run(getattr(getattr(gf.ops, "batchnorm_" + kernel), backend), p, **kwargs)
        errors.append(info.value)
    assert_same_error(*errors)
