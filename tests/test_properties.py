"""Property tests (hypothesis): every gf.ops kernel against its NumPy twin on random shapes and values
(extremes near the dtype's max, subnormals, +-inf and NaN where the kernel's contract covers them),
and invariants of the training API.

What each kernel family promises against the twin (the contract comments of cpp/include/gradfuse/*.hpp),
and so what is asserted here:

| family                         | against the twin                  | values drawn                             |
|--------------------------------|-----------------------------------|------------------------------------------|
| optimizers, all_finite         | bitwise (no fma, same op order)   | any float: extremes, subnormals, inf, NaN|
| grad_norm / clip (p=1, 2, inf) | bitwise (same blocks and lanes)   | any float                                |
| grad_norm / clip (other p)     | 4 ulp of double (libm pow)        | any float                                |
| dropout, philox                | bitwise (counter-based RNG)       | any float, any 64-bit seed and counter   |
| activations                    | a few ulp (Eigen's tanh/exp/erf)  | any float                                |
| batch norm                     | ~1 ulp of the outputs (sum order) | finite, scales 10^+-15 f32, 10^+-30 f64  |
| matmul / dense                 | GEMM error bound k u (|A| |B|)    | finite, |x| <= 1e15 (products fit)       |
| softmax / losses               | a few ulp of exp/log, sums        | finite logits up to 1e4, -inf entries    |
| mse gradient, penalty grads    | bitwise (element-wise, no fma)    | finite                                   |

"Bitwise" treats every NaN as the same value (a NaN's payload and sign are not part of any contract);
signed zeros and every other bit must match. The optimizers' hyperparameters are drawn from their
kernel table rows (an example, each scalar kept or redrawn within its Range, the rules holding), so
a new optimizer is covered by its row. The C++ side runs on the ISA path this process selected:
CI runs this file again under GRADFUSE_CPU=scalar, avx2 and avx512 (the `kernels` marker).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gradfuse as gf
import kernel_cases as kc
from conftest import HAS_CORE
from gradfuse.table import ACTIVATION_NEEDS, ACTIVATIONS

# NumPy warns about the overflow / NaN the extreme values produce on purpose
pytestmark = [pytest.mark.kernels, pytest.mark.filterwarnings("ignore::RuntimeWarning")]
needs_core = pytest.mark.skipif(not HAS_CORE, reason="the C++ extension is not available")

# the `backend` fixture only selects a backend for the whole test: it is the same for every example
HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
FAST = settings(
    max_examples=int(__import__("os").environ.get("GF_HYPOTHESIS_EXAMPLES", 30)),
    deadline=None,
    suppress_health_check=HEALTH,
)
DTYPES = st.sampled_from([np.float32, np.float64])


# ---- strategies ------------------------------------------------------------------------------------


def values(dtype, *, finite=False, max_abs=None):
    """Floats of dtype: hypothesis favours the corners (0, -0, subnormals, the largest finite values,
    and inf / NaN unless finite)."""
    width = 32 if dtype == np.float32 else 64
    bound = None if max_abs is None else float(dtype(max_abs))
    return st.floats(
        width=width,
        allow_nan=not finite,
        allow_infinity=not finite and bound is None,
        allow_subnormal=True,
        min_value=None if bound is None else -bound,
        max_value=bound,
    )


def arrays(dtype, shape=None, **kw):
    shape = hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=6) if shape is None else shape
    return hnp.arrays(dtype, shape, elements=values(dtype, **kw))


@st.composite
def array_lists(draw, dtype, count, **kw):
    """`count` parallel lists of arrays with the same shapes: [[p0, p1, ..], [g0, g1, ..], ...]."""
    shapes = draw(st.lists(hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=40), min_size=1, max_size=3))
    return [[draw(arrays(dtype, s, **kw)) for s in shapes] for _ in range(count)]


def nonneg(hi=1.0):
    return st.one_of(st.just(0.0), st.floats(1e-8, hi))


# ---- comparisons -----------------------------------------------------------------------------------


def assert_same_bits(a, b, what=""):
    """Bitwise equal, except that any NaN equals any NaN."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, what
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    assert np.array_equal(nan_a, nan_b), f"{what}: NaN at different places"
    ints = {2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    diff = (a.view(ints) != b.view(ints)) & ~nan_a
    assert not diff.any(), f"{what}: {a[diff][:5]} vs {b[diff][:5]}"


def assert_close(a, b, rtol, atol, what=""):
    """|a - b| <= atol + rtol |b| elementwise (atol may be an array); equal inf and NaN positions."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.array_equal(np.isnan(a), np.isnan(b)), f"{what}: NaN at different places\n{a}\n{b}"
    finite = np.isfinite(b)
    assert np.array_equal(a[~finite & ~np.isnan(b)], b[~finite & ~np.isnan(b)]), f"{what}: infinities differ"
    atol = np.broadcast_to(np.asarray(atol, np.float64), b.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(a - b)
    bad = finite & (a != b) & ~(err <= atol + rtol * np.abs(b))  # (atol may be NaN: scaled by a NaN)
    assert not bad.any(), f"{what}: {a[bad][:5]} vs {b[bad][:5]} (err {err[bad][:5]})"


def run_both(name, make_args, **kwargs):
    """Call gf.ops.<name> on the C++ and NumPy backends with fresh copies of the arguments.
    Returns (cpp result, cpp args, twin result, twin args)."""
    out = []
    for fn in (getattr(gf.ops, name).cpp, getattr(gf.ops, name).numpy):
        args = make_args()
        out += [fn(*args, **kwargs), args]
    return out


def deep_copy(obj):
    if isinstance(obj, np.ndarray):
        return obj.copy()
    if isinstance(obj, list):
        return [deep_copy(o) for o in obj]
    if isinstance(obj, dict):
        return {k: deep_copy(v) for k, v in obj.items()}
    return obj


def flat_arrays(obj):
    if isinstance(obj, np.ndarray):
        return [obj]
    if isinstance(obj, list):
        return [a for o in obj for a in flat_arrays(o)]
    return []


# ---- optimizers: bitwise, on any values --------------------------------------------------------------


def scalar_values(spec, known):
    """Values of one kernel scalar (gradfuse.table.Scalar): both flags, each choice; for a number its
    Range's good probes, the values the row knows (default, examples) and anything between the least
    and the greatest of those, filtered by the Range (a number without one: from half the least to
    twice the greatest, the row's rules deciding)."""
    if spec.type == "bool":
        return st.booleans()
    if isinstance(spec.range, tuple):
        return st.sampled_from(spec.range)
    seen = sorted({v for v in (*known, *kc.good_values(spec)) if v is not None and math.isfinite(v)})
    lo, hi = seen[0], seen[-1]
    if spec.range is None:
        lo, hi = lo * 0.5 if lo > 0 else lo * 2, hi * 2 if hi > 0 else hi * 0.5
    between = st.integers(int(lo), int(hi)) if spec.type in ("int", "u64") else st.floats(lo, hi)
    out = st.one_of(st.sampled_from([v for v in (*known, *kc.good_values(spec)) if v is not None]), between)
    if spec.range is not None:
        out = out.filter(lambda v: kc.in_range(spec, v))
    return st.one_of(st.none(), out) if spec.nullable else out


@st.composite
def kernel_scalars(draw, row):
    """The scalars of a valid call of `row`: an example, each scalar either kept or drawn from
    scalar_values; the row's joint rules must hold."""
    ex = draw(st.sampled_from(kc.examples(row)), label="example")
    s = kc.scalars_of(row, ex)
    known = {
        spec.name: [s[spec.name]] + [e.scalars[spec.name] for e in kc.examples(row) if spec.name in e.scalars]
        for spec in row.scalars
    }
    for spec in row.scalars:
        if draw(st.booleans(), label=f"draw {spec.name}"):
            s[spec.name] = draw(scalar_values(spec, known[spec.name]), label=spec.name)
    assume(kc.rules_hold(row, s))
    return s


@needs_core
@FAST
@given(data=st.data(), row=st.sampled_from(kc.OPTIMIZER_ROWS), dtype=DTYPES)
def test_optimizer_kernels_equal_the_twin_bitwise(data, row, dtype):
    scalars = data.draw(kernel_scalars(row), label="scalars")
    lists = data.draw(array_lists(dtype, len(row.arrays)), label="params, grads, states, copies")
    start = {**scalars, **{a.name: (lst if row.used(a, scalars) else None) for a, lst in zip(row.arrays, lists)}}
    # the bf16 compute copies (overwritten by the step): beside float32 masters only
    start["copies"] = [a.astype(kc.BF16) for a in start["copies"]] if dtype is np.float32 else None
    op = getattr(gf.ops, row.name)
    cpp, twin = deep_copy(start), deep_copy(start)
    got, want = op.cpp(**cpp), op.numpy(**twin)
    assert got == want
    for i, (a, b) in enumerate(zip(kc.arrays_in(cpp), kc.arrays_in(twin))):
        assert_same_bits(a, b, f"{row.name} array {i}")


@needs_core
@FAST
@given(lists=st.data(), dtype=DTYPES, scale=st.one_of(st.none(), st.floats(1e-30, 1e30)))
def test_all_finite_equals_the_twin(lists, dtype, scale):
    (arrays_,) = lists.draw(array_lists(dtype, 1))
    assert gf.ops.all_finite.cpp(arrays_, grad_scale=scale) == gf.ops.all_finite.numpy(arrays_, grad_scale=scale)


# ---- clipping ------------------------------------------------------------------------------------------

NORMS = st.sampled_from([1.0, 2.0, math.inf, 0.5, 3.0])


@needs_core
@FAST
@given(data=st.data(), dtype=DTYPES, p=NORMS, max_norm=st.floats(1e-6, 1e6))
def test_clip_kernels_equal_the_twin(data, dtype, p, max_norm):
    (grads,) = data.draw(array_lists(dtype, 1))
    exact = p in (1.0, 2.0, math.inf)  # other p: libm pow per element, to an ulp

    def same(a, b, what):
        if exact:
            assert_same_bits(np.float64(a), np.float64(b), what)
        else:
            assert_close(a, b, 4 * np.finfo(np.float64).eps, 0.0, what)

    same(gf.ops.grad_norm.cpp(grads, norm_type=p), gf.ops.grad_norm.numpy(grads, norm_type=p), "grad_norm")
    for name in ("clip_grad_norm", "clip_grad_norm_per_tensor"):
        got, cpp_args, want, twin_args = run_both(name, lambda: [deep_copy(grads)], max_norm=max_norm, norm_type=p)
        same(got, want, name)
        for a, b in zip(cpp_args[0], twin_args[0]):
            if exact:
                assert_same_bits(a, b, name)
            else:  # the coefficient comes from the norm: an ulp of double, rounded to the dtype
                assert_close(a, b, 2 * np.finfo(dtype).eps, 0.0, name)
    clip_value = data.draw(st.floats(0.0, 1e30), label="clip_value")
    _, cpp_args, _, twin_args = run_both("clip_grad_value", lambda: [deep_copy(grads)], clip_value=clip_value)
    for a, b in zip(cpp_args[0], twin_args[0]):
        assert_same_bits(a, b, "clip_grad_value")


# ---- dropout ---------------------------------------------------------------------------------------------

U64 = st.integers(0, 2**64 - 1)
PROBABILITY = st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 1.0))


@needs_core
@FAST
@given(data=st.data(), dtype=DTYPES, p=PROBABILITY, seed=U64, counter=U64)
def test_dropout_equals_the_twin_bitwise(data, dtype, p, seed, counter):
    x = data.draw(arrays(dtype), label="x")
    dy = data.draw(arrays(dtype, x.shape), label="dy")
    n_bytes = gf.ops.dropout_mask_bytes.cpp(x.size)
    assert n_bytes == gf.ops.dropout_mask_bytes.numpy(x.size)

    def fresh():
        return [x, np.full_like(x, 7), np.full(n_bytes, 0xAB, np.uint8)]

    _, cpp_args, _, twin_args = run_both("dropout_forward", fresh, p=p, seed=seed, counter=counter)
    assert_same_bits(cpp_args[1], twin_args[1], "y")
    assert np.array_equal(cpp_args[2], twin_args[2]), "mask"
    mask = cpp_args[2]
    _, cpp_args, _, twin_args = run_both("dropout_backward", lambda: [dy, mask, np.empty_like(dy)], p=p)
    assert_same_bits(cpp_args[2], twin_args[2], "dx")


@needs_core
@FAST
@given(counters=hnp.arrays(np.uint32, st.tuples(st.integers(0, 40), st.just(4))), key=hnp.arrays(np.uint32, (2,)))
def test_philox_equals_the_twin(counters, key):
    _, cpp_args, _, twin_args = run_both("philox4x32_10", lambda: [counters, key, np.zeros_like(counters)])
    assert np.array_equal(cpp_args[2], twin_args[2])


# ---- activations: a few ulp --------------------------------------------------------------------------------

ACT_TOL = {np.float32: (1e-5, 1e-5), np.float64: (1e-12, 2e-14)}  # (rtol, atol) as tests/test_activation.py
# what each activation's backward is given: the first of what it needs (the table's ACTIVATION_NEEDS)
SAVED = {act: ACTIVATION_NEEDS[act][:1] for act in ACTIVATIONS}


@needs_core
@FAST
@given(data=st.data(), dtype=DTYPES, act=st.sampled_from(sorted(SAVED)), slope=st.floats(-2.0, 2.0))
def test_activations_equal_the_twin_within_a_few_ulp(data, dtype, act, slope):
    x = data.draw(arrays(dtype), label="x")
    dy = data.draw(arrays(dtype, x.shape), label="dy")
    rtol, atol = ACT_TOL[dtype]
    with np.errstate(all="ignore"):
        _, cpp_args, _, twin_args = run_both(
            "activation_forward", lambda: [x, np.empty_like(x)], activation=act, negative_slope=slope
        )
        assert_close(cpp_args[1], twin_args[1], rtol, atol, f"{act} forward")
        y = twin_args[1]
        saved = {k: {"x": x, "y": y}[k] for k in SAVED[act]}
        _, cpp_args, _, twin_args = run_both(
            "activation_backward", lambda: [dy, np.empty_like(dy)], activation=act, negative_slope=slope, **saved
        )
        # the derivative's error is relative to dy (dx = dy * act'(x), act' computed to a few ulp)
        assert_close(cpp_args[1], twin_args[1], rtol, atol * np.abs(dy.astype(np.float64)), f"{act} backward")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_backward_of_an_infinite_gradient_where_x_is_not_positive_is_zero(dtype, backend, torch):
    """Found by the property above: the twin computed dy * 0 (NaN for an infinite dy) where the kernel
    and torch select 0."""
    x = np.array([0.0, -1.0, 2.0], dtype)
    dy = np.array([np.inf, np.nan, np.inf], dtype)
    dx = np.empty_like(x)
    gf.ops.activation_backward(dy, dx, activation="relu", x=x)
    tx = torch.tensor(x, requires_grad=True)
    torch.relu(tx).backward(torch.tensor(dy))
    assert_same_bits(dx, tx.grad.numpy(), "relu backward")


# ---- batch norm: about an ulp of the outputs; zero mean, unit variance --------------------------------------


@st.composite
def batch(draw, dtype, max_n=40):
    """(N, C[, L]) data: N(offset, scale^2) with log-uniform scale and offset, a few values replaced by
    hypothesis' corner cases of the same magnitude (subnormals, zeros)."""
    shape = draw(
        st.one_of(
            st.tuples(st.integers(2, max_n), st.integers(1, 5)),
            st.tuples(st.integers(1, 8), st.integers(1, 4), st.integers(1, 70)),
        )
    )
    exp_scale = draw(st.floats(-30, 30)) if dtype == np.float64 else draw(st.floats(-15, 15))
    offset = draw(st.sampled_from([0.0, 1.0, 1e3])) * 10.0**exp_scale * draw(st.sampled_from([0, 1, 100]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = (rng.standard_normal(shape) * 10.0**exp_scale + offset).astype(dtype)
    if draw(st.booleans()):  # a constant channel: variance 0
        x[:, 0] = x.flat[0]
    return x


@needs_core
@FAST
@given(data=st.data(), dtype=DTYPES, training=st.booleans(), eps=st.sampled_from([1e-5, 1e-3, 1e-12]))
def test_batchnorm_equals_the_twin_within_an_ulp(data, dtype, training, eps):
    x = data.draw(batch(dtype), label="x")
    assume(np.isfinite(x).all() and x.size > x.shape[1])  # training needs 2 values per channel
    c = x.shape[1]
    rng = np.random.default_rng(0)
    weight, bias = (rng.uniform(0.5, 1.5, c).astype(dtype), rng.uniform(-1, 1, c).astype(dtype))
    dy = rng.standard_normal(x.shape).astype(dtype)

    def forward_args():
        return [
            x,
            weight,
            bias,
            np.zeros(c, dtype),
            np.ones(c, dtype),
            np.empty_like(x),
            np.empty(c, dtype),
            np.empty(c, dtype),
        ]

    _, cpp_f, _, twin_f = run_both("batchnorm_forward", forward_args, training=training, eps=eps)
    u = np.finfo(dtype).eps
    # y is O(weight * (x - mean) invstd + bias): its error is ulps of that magnitude
    scale = np.abs(twin_f[5]).max() if x.size else 1.0
    # the means are sums of the data: ulps of max|x| (they may cancel to far less)
    data_scale = float(np.abs(x).max(initial=0.0))
    atols = {"y": scale, "running_mean": data_scale, "save_mean": data_scale, "running_var": 0.0, "save_invstd": 0.0}
    # the statistics are double sums in another order, var = S2/n - (S1/n)^2 cancelling a little: the
    # last bits of double, which in float64 are several ulp of the dtype
    # Both sum a channel's n values in double, in different orders: a recursive sum's error bound is
    # n u_double sum|x|, which is far below float32's ulp but several float64 ulps of the mean.
    n = x.size // c
    if training:
        sums = n * float(np.finfo(np.float64).eps)
        atols["y"] += 4 * sums * float(np.abs(weight * twin_f[7]).max()) * data_scale / (8 * u)
    for i, name in ((5, "y"), (3, "running_mean"), (4, "running_var"), (6, "save_mean"), (7, "save_invstd")):
        assert_close(cpp_f[i], twin_f[i], (8 if name == "y" else 32) * u, 8 * u * atols[name], name)
    save_mean, save_invstd = twin_f[6], twin_f[7]

    def backward_args():
        return [dy, x, weight, save_mean, save_invstd, np.empty_like(x), np.empty(c, dtype), np.empty(c, dtype)]

    _, cpp_b, _, twin_b = run_both("batchnorm_backward", backward_args, training=training)
    for i, name in ((5, "dx"), (6, "dweight"), (7, "dbias")):
        # dx's terms are of size weight invstd |dy|; the sums over a channel, n |dy| |xhat| at most
        xhat = float(np.abs(np.moveaxis(x, 1, -1) - save_mean).max() * save_invstd.max())
        sums = np.abs(dy).max() * n * {6: xhat, 7: 1.0}.get(i, 0.0)
        size = np.abs(twin_b[i]).max() + (sums if i > 5 else np.abs(weight * save_invstd).max() * np.abs(dy).max() * 4)
        assert_close(cpp_b[i], twin_b[i], 8 * u, 16 * u * size, name)


@FAST
@given(data=st.data(), dtype=DTYPES, eps=st.sampled_from([1e-5, 1e-3, 0.0]))
def test_batchnorm_training_output_has_zero_mean_and_unit_variance(data, dtype, eps, backend):
    """Per channel, y = (x - mean) / sqrt(var + eps) (weight 1, bias 0) has mean 0 and variance
    var / (var + eps): 1 when var >> eps; less when the data vary on the scale of sqrt(eps) or less.
    Rounding: y is within a few ulp of max|y| (<= sqrt(n - 1)), so mean and variance are too."""
    x = data.draw(batch(dtype), label="x")
    assume(np.isfinite(x).all() and x.size > x.shape[1])
    c = x.shape[1]
    eps = eps or float(np.finfo(dtype).tiny)  # eps must be > 0
    y = np.empty_like(x)
    gf.ops.batchnorm_forward(x, None, None, None, None, y, np.empty(c, dtype), np.empty(c, dtype), eps=eps)
    per_channel = np.moveaxis(y, 1, 0).reshape(c, -1).astype(np.float64)
    xs = np.moveaxis(x, 1, 0).reshape(c, -1).astype(np.float64)
    var_x = (xs - xs[:, :1]).var(axis=1)  # shifted by the first value: a constant channel has var 0
    target = var_x / (var_x + eps)
    u = float(np.finfo(dtype).eps)
    top = np.abs(per_channel).max(axis=1)
    np.testing.assert_array_less(np.abs(per_channel.mean(axis=1)), 16 * u * top + 1e-300)
    np.testing.assert_array_less(np.abs(per_channel.var(axis=1) - target), 32 * u * np.maximum(top * top, 1.0))


# ---- matmul and dense: the GEMM error bound ---------------------------------------------------------------


def gemm_bound(a, b, dtype):
    """|computed - exact| <= k u (|A| @ |B|) for any summation order; twice that between two of them."""
    k = a.shape[1]
    u = float(np.finfo(dtype).eps)
    return 2 * (k + 2) * u * (np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64))) + np.finfo(dtype).tiny * k


@st.composite
def matrices(draw, dtype, max_abs=1e15):
    m, k, n = (draw(st.integers(1, 12)) for _ in range(3))
    return (
        draw(arrays(dtype, (m, k), finite=True, max_abs=max_abs)),
        draw(arrays(dtype, (k, n), finite=True, max_abs=max_abs)),
    )


@needs_core
@FAST
@given(data=st.data(), dtype=DTYPES, trans_a=st.booleans(), trans_b=st.booleans(), accumulate=st.booleans())
def test_matmul_equals_the_twin_within_the_gemm_bound(data, dtype, trans_a, trans_b, accumulate):
    a, b = data.draw(matrices(dtype))
    c0 = data.draw(arrays(dtype, (a.shape[0], b.shape[1]), finite=True, max_abs=1e15))
    a_arg = np.ascontiguousarray(a.T) if trans_a else a
    b_arg = np.ascontiguousarray(b.T) if trans_b else b
    _, cpp_args, _, twin_args = run_both(
        "matmul", lambda: [a_arg, b_arg, c0.copy()], trans_a=trans_a, trans_b=trans_b, accumulate=accumulate
    )
    bound = gemm_bound(a, b, dtype) + (2 * np.finfo(dtype).eps * np.abs(c0) if accumulate else 0)
    assert_close(cpp_args[2], twin_args[2], 0.0, bound, "matmul")


@needs_core
@FAST
@given(
    data=st.data(),
    dtype=DTYPES,
    act=st.sampled_from(["none", "relu", "leaky_relu", "tanh", "sigmoid"]),
    with_bias=st.booleans(),
)
def test_dense_equals_the_twin_within_the_gemm_bound(data, dtype, act, with_bias):
    x, w = data.draw(matrices(dtype, max_abs=1e6))
    bias = data.draw(arrays(dtype, (w.shape[1],), finite=True, max_abs=1e6)) if with_bias else None
    shape = (x.shape[0], w.shape[1])
    _, cpp_args, _, twin_args = run_both(
        "dense_forward", lambda: [x, w, bias, np.empty(shape, dtype)], activation=act, z=None
    )
    rtol, atol = ACT_TOL[dtype]
    # these activations are 1-Lipschitz: the GEMM error passes through, plus the activation's ulps
    bound = gemm_bound(x, w, dtype) + (np.finfo(dtype).eps * 2 * np.abs(bias) if with_bias else 0) + atol
    assert_close(cpp_args[3], twin_args[3], rtol, bound, f"dense_forward {act}")
    y = twin_args[3]
    dy = data.draw(arrays(dtype, shape, finite=True, max_abs=1e6), label="dy")
    saved = {"y": y} if act in ("tanh", "sigmoid", "relu") else {"z": None, "y": None}
    if act == "leaky_relu":
        saved = {"y": y}
    _, cpp_args, _, twin_args = run_both(
        "dense_backward",
        lambda: [dy, x, w, np.empty_like(x), np.empty_like(w), np.empty(shape[1], dtype)],
        activation=act,
        **{k: v for k, v in saved.items() if v is not None},
    )
    dz = np.abs(dy.astype(np.float64))  # |dz| <= |dy| for these activations
    u = np.finfo(dtype).eps
    assert_close(cpp_args[3], twin_args[3], rtol, gemm_bound(dz, np.abs(w.T), dtype) + atol, "dx")
    assert_close(cpp_args[4], twin_args[4], rtol, gemm_bound(np.abs(x.T), dz, dtype) + atol, "dweight")
    assert_close(cpp_args[5], twin_args[5], rtol, 2 * (x.shape[0] + 2) * u * dz.sum(axis=0) + atol, "dbias")


# ---- softmax and the losses -------------------------------------------------------------------------------


def loss_tol(dtype):
    return (2e-5, 1e-7) if dtype == np.float32 else (1e-11, 1e-14)


@st.composite
def logits(draw, dtype, neg_inf=False):
    n, k = draw(st.integers(1, 6)), draw(st.integers(1, 20))
    x = draw(arrays(dtype, (n, k), finite=True, max_abs=1e4))
    if neg_inf and k > 1:
        x[draw(st.integers(0, n - 1)), draw(st.integers(0, k - 1))] = -np.inf
    return x


@needs_core
@FAST
@given(data=st.data(), dtype=DTYPES, log=st.booleans())
def test_softmax_equals_the_twin(data, dtype, log):
    x = data.draw(logits(dtype, neg_inf=True))
    rtol, atol = loss_tol(dtype)
    fwd, bwd = ("log_softmax_forward", "log_softmax_backward") if log else ("softmax_forward", "softmax_backward")
    _, cpp_args, _, twin_args = run_both(fwd, lambda: [x, np.empty_like(x)])
    # log_softmax: (x - max) - lse, both terms up to ~1e4: ulps of that size
    scale = np.abs(x[np.isfinite(x)]).max(initial=1.0) + 10.0 if log else 1.0
    assert_close(cpp_args[1], twin_args[1], rtol, atol * scale * 10, fwd)
    y = twin_args[1]
    dy = data.draw(arrays(dtype, x.shape, finite=True, max_abs=1e3), label="dy")
    _, cpp_args, _, twin_args = run_both(bwd, lambda: [y, dy, np.empty_like(dy)])
    dscale = np.abs(dy).sum(axis=1, keepdims=True) + 1.0
    assert_close(cpp_args[2], twin_args[2], rtol, 10 * atol * dscale, bwd)


@needs_core
@FAST
@given(
    data=st.data(),
    dtype=DTYPES,
    smoothing=st.sampled_from([0.0, 0.1]),
    reduction=st.sampled_from(["mean", "sum"]),
    margin_p=st.sampled_from([1, 2]),
)
def test_classification_losses_equal_the_twin(data, dtype, smoothing, reduction, margin_p):
    x = data.draw(logits(dtype))
    labels = np.asarray(
        data.draw(st.lists(st.integers(0, x.shape[1] - 1), min_size=x.shape[0], max_size=x.shape[0])), np.int64
    )
    rtol, atol = loss_tol(dtype)
    scale = np.abs(x).max() + 1.0  # lse - x_y cancels terms of size |x|
    got, cpp_args, want, twin_args = run_both(
        "softmax_cross_entropy", lambda: [x, labels, np.empty_like(x)], reduction=reduction, label_smoothing=smoothing
    )
    n = 1 if reduction == "mean" else x.shape[0]
    assert_close(got, want, rtol, atol * scale * n * 10, "cross entropy")
    assert_close(cpp_args[2], twin_args[2], rtol, atol * 10, "cross entropy grad")
    got, cpp_args, want, twin_args = run_both(
        "multi_margin_loss", lambda: [x, labels, np.empty_like(x)], p=margin_p, reduction=reduction
    )
    assert_close(got, want, rtol, atol * scale**margin_p * n * 10, "multi margin")
    assert_close(cpp_args[2], twin_args[2], rtol, atol * scale * 10, "multi margin grad")


@needs_core
@FAST
@given(data=st.data(), dtype=DTYPES, reduction=st.sampled_from(["mean", "sum"]))
def test_regression_losses_and_penalty_equal_the_twin(data, dtype, reduction):
    pred = data.draw(arrays(dtype, finite=True, max_abs=1e15))
    target = data.draw(arrays(dtype, pred.shape, finite=True, max_abs=1e15))
    rtol, atol = loss_tol(dtype)
    got, cpp_args, want, twin_args = run_both(
        "mse_loss", lambda: [pred, target, np.empty_like(pred)], reduction=reduction
    )
    with np.errstate(all="ignore"):
        assert_close(got, want, 1e-12, 0.0, "mse")  # a double sum of squares, in another order
    assert_same_bits(cpp_args[2], twin_args[2], "mse grad")  # element-wise: bitwise
    logits_ = data.draw(arrays(dtype, pred.shape, finite=True, max_abs=1e4))
    targets = data.draw(hnp.arrays(dtype, pred.shape, elements=st.floats(0, 1, width=32)))
    got, cpp_args, want, twin_args = run_both(
        "bce_with_logits", lambda: [logits_, targets, np.empty_like(logits_)], reduction=reduction
    )
    n = 1 if reduction == "mean" else max(pred.size, 1)
    assert_close(got, want, rtol, atol * (np.abs(logits_).max(initial=0) + 1) * n * 10, "bce")
    assert_close(cpp_args[2], twin_args[2], rtol, atol * 10, "bce grad")
    params = [pred, target]
    l1, l2 = data.draw(nonneg()), data.draw(nonneg())
    got, cpp_args, want, twin_args = run_both(
        "penalty", lambda: [params, [np.zeros_like(p) for p in params]], l1=l1, l2=l2
    )
    with np.errstate(all="ignore"):
        assert_close(got, want, 1e-12, 0.0, "penalty")
    for a, b in zip(cpp_args[1], twin_args[1]):
        assert_same_bits(a, b, "penalty grads")


# ---- invariants of the training API ----------------------------------------------------------------------

# Every optimizer with a learning rate among its kernel's scalars, with settings that move every number
# off its default and use every state (tests/kernel_cases.py: varied); the others (lr only an initial
# step size) move with lr = 0 too, as torch's do.
# lr is a factor of the update where the kernel takes it, or takes a step size that lr scales (ASGD's
# eta); elsewhere (Rprop) it only seeds a per-element step size that the lower clamp lifts.
WITH_LR = [cls for cls in kc.optimizer_classes() if "lr" in cls._row.by_name or "eta" in cls._row.by_name]
WITHOUT_LR = [cls for cls in kc.optimizer_classes() if cls not in WITH_LR]


@pytest.mark.parametrize("cls", WITH_LR, ids=lambda c: c.__name__)
@settings(max_examples=8, deadline=None, suppress_health_check=HEALTH)
@given(data=st.data(), dtype=DTYPES)
def test_lr_zero_leaves_parameters_unchanged(data, cls, dtype, backend):
    """With lr = 0 no optimizer moves its parameters, weight decay included (torch: coupled decay
    enters the update, which lr multiplies; decoupled decay multiplies by 1 - lr wd = 1). The
    comparison is by value: p + (-0.0) turns a -0.0 parameter into +0.0 in some algorithms, as in
    torch. Gradients whose squares underflow are left out: centered RMSprop's variance estimate
    E[g^2] - E[g]^2 can then round below zero, and its sqrt is NaN (torch's too), which lr = 0 cannot
    cancel (found by hypothesis: g = 3.6e-23 in float32)."""
    (params, grads) = data.draw(array_lists(dtype, 2, finite=True, max_abs=1e3))
    tiny = np.sqrt(np.finfo(dtype).smallest_normal)
    assume(all(((g == 0) | (np.abs(g) >= tiny)).all() for g in grads))
    before = deep_copy(params)
    opt = cls(params, **{**kc.varied(cls), "lr": 0.0})
    for _ in range(3):
        assert opt.step(grads) is True
    for a, b in zip(params, before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cls", [c for c in WITH_LR if c._row.torch], ids=lambda c: c.__name__)
def test_torch_also_leaves_parameters_unchanged_with_lr_zero(cls, torch):
    """The property above is torch's behaviour too."""
    rng = np.random.default_rng(0)
    p = torch.nn.Parameter(torch.tensor(rng.standard_normal(50), dtype=torch.float32))
    before = p.detach().clone()
    opt = kc.torch_class(cls, torch)([p], **{**kc.varied(cls), "lr": 0.0})
    for _ in range(3):
        p.grad = torch.tensor(rng.standard_normal(50), dtype=torch.float32)
        opt.step()
    assert torch.equal(p.detach(), before)


@pytest.mark.parametrize("cls", [c for c in WITHOUT_LR if c._row.torch], ids=lambda c: c.__name__)
def test_lr_zero_still_moves_like_torch_where_lr_is_no_kernel_scalar(cls, torch):
    """Where lr is no factor of the update (only the first step size, which the lower clamp lifts),
    lr = 0 still moves each parameter against its gradient, exactly as torch does."""
    p = np.array([1.0, -2.0, 3.0], np.float32)
    g = np.array([0.5, -0.5, 0.0], np.float32)
    start = p.copy()
    tp = torch.nn.Parameter(torch.tensor(p))
    topt = kc.torch_class(cls, torch)([tp], lr=0.0)
    opt = cls([p], lr=0.0)
    for _ in range(2):
        tp.grad = torch.tensor(g)
        topt.step()
        opt.step([g])
    np.testing.assert_array_equal(p, tp.detach().numpy())
    assert (np.sign(p - start) == -np.sign(g)).all()  # moved against the gradient, where there is one


@FAST
@given(x=arrays(np.float32), seed=U64)
def test_dropout_p0_is_the_identity_with_a_full_mask(x, seed, backend):
    y = np.empty_like(x)
    mask = np.zeros(gf.ops.dropout_mask_bytes(x.size), np.uint8)
    gf.ops.dropout_forward(x, y, mask, p=0.0, seed=seed, counter=seed // 3)
    assert_same_bits(y, x, "y")  # x * 1: NaN, inf, -0.0, subnormals kept
    bits = np.unpackbits(mask, bitorder="little")
    assert bits[: x.size].all() and not bits[x.size :].any()
    layer = gf.nn.Dropout(p=0.0, seed=seed)
    assert_same_bits(layer.forward(x, training=True), x, "Dropout(p=0)")
    dy = x[::-1].copy()
    assert_same_bits(layer.backward(dy), dy, "Dropout(p=0).backward")


def norm(arrays_, p):
    """The p-norm in double, scaled by max|g| first: (sum |g|^p)^(1/p) unscaled underflows for tiny g
    and p > 2, and pow's rounding of 1/p costs |ln norm| ulps (1e-14 at 1e-83)."""
    flat = np.concatenate([a.ravel().astype(np.float64) for a in arrays_]) if arrays_ else np.zeros(0)
    top = float(np.abs(flat).max(initial=0.0))
    if not flat.size or top == 0.0 or not math.isfinite(top):
        return top
    return top * float(np.linalg.norm(flat / top, p))


def assert_no_element_grew(after, before):
    for a, b in zip(after, before):  # a coefficient <= 1 or a clamp: |a| <= |b| exactly, and no sign flips
        assert (np.abs(a) <= np.abs(b)).all() and not (np.sign(a) * np.sign(b) < 0).any()


@FAST
@given(data=st.data(), dtype=DTYPES, p=NORMS, max_norm=st.floats(0.0, 1e3))
def test_clipping_never_increases_a_norm(data, dtype, p, max_norm, backend):
    """Element-wise, exactly: scaling by a coefficient <= 1 (rounded to the dtype) or clamping never
    makes an element larger, so no norm grows. The norm after clip_grad_norm is at most max_norm, up
    to the rounding of c g (1 ulp of the dtype) and of the norms (libm pow for p other than 1, 2, inf:
    a few ulp each), hence the slack of 64 ulp."""
    (grads,) = data.draw(array_lists(dtype, 1, finite=True, max_abs=1e30))
    slack = 1 + 64 * float(np.finfo(dtype).eps)
    # c g rounded into the subnormals errs by up to half the smallest subnormal per element, however
    # small max_norm is; and c is rounded to the dtype (as torch does), so when it is subnormal every
    # element carries |g| times that error: an absolute slack (the p-norm of those errors) on top of
    # the relative one
    count = sum(a.size for a in grads)
    sub = float(np.finfo(dtype).smallest_subnormal)
    tiny = ((count ** max(1.0, 1.0 / p) if p != math.inf else 1.0) + norm(grads, p)) * sub

    def at_most(limit):
        return limit * slack + tiny

    g = deep_copy(grads)
    gf.ops.clip_grad_norm(g, max_norm=max_norm, norm_type=p)
    assert_no_element_grew(g, grads)
    assert norm(g, p) <= at_most(max(max_norm, norm(grads, p)))
    assert norm(g, p) <= at_most(max_norm) or norm(grads, p) <= at_most(max_norm)
    g = deep_copy(grads)
    gf.ops.clip_grad_norm_per_tensor(g, max_norm=max_norm, norm_type=p)
    assert_no_element_grew(g, grads)
    for a, b in zip(g, grads):
        assert norm([a], p) <= at_most(max_norm) or norm([b], p) <= at_most(max_norm)
    clip_value = data.draw(st.floats(0.0, 1e3), label="clip_value")
    g = deep_copy(grads)
    gf.ops.clip_grad_value(g, clip_value=clip_value)
    assert_no_element_grew(g, grads)
    # the inf-norm: at most the clip value rounded to the dtype (as torch.clamp rounds it)
    assert norm(g, math.inf) <= min(norm(grads, math.inf), float(dtype(clip_value)))
