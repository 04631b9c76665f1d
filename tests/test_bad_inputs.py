"""Bad inputs to every gf.ops kernel, on both backends: wrong dtypes, layouts, read-only arrays,
broadcast views, wrong shapes, aliased arguments, bad scalars; zero-size arrays, NaN and Inf.

The cases are generated from one spec per kernel (SPECS): which arguments are floating arrays that
are read or written, typed arrays (uint8 masks, int64 labels, uint32 counters), lists of arrays
(the multi-tensor kernels), and scalar hyperparameters with their bad values. Every refused call
must raise the same exception type on the C++ binding and on the NumPy twin, name the kernel and
the argument in its message, and leave every array argument bitwise unchanged. Calls that are
documented to work (read-only inputs, in-place pairs, zero-size arrays, NaN/Inf) must give the
same results on both backends.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest

import gradfuse as gf
from conftest import BACKENDS

pytestmark = pytest.mark.kernels

READ, WRITE = "read", "write"


@dataclass
class Spec:
    """build(n) -> keyword arguments of a valid float32 call (n: the batch size, 0 for zero-size).
    floats: {name: READ|WRITE}; typed: {name: (READ|WRITE, dtype)}; lists: the floating args that
    are lists of arrays; in_place: pairs (out, in) that may be the same array; shape_free: args
    whose shape is not tied to another's; scalars: [(name, bad value, exception type)]."""

    build: callable
    floats: dict
    typed: dict = field(default_factory=dict)
    lists: tuple = ()
    in_place: tuple = ()
    shape_free: tuple = ()
    scalars: list = field(default_factory=list)


def rng_array(shape, seed=0, low=-1.0, high=1.0):
    return np.random.default_rng(seed + len(shape) * 7 + sum(shape)).uniform(low, high, shape).astype(np.float32)


def pos_array(shape, seed=0):
    return rng_array(shape, seed, 0.1, 1.0)


def pair_list(n, seed, positive=False):
    """Two tensors of one multi-tensor argument: shapes (n, 4) and (n, 4)."""
    make = pos_array if positive else rng_array
    return [make((n, 4), seed), make((n, 4), seed + 1)]


# Bad values shared by many scalars
NEG, NAN, INF = -1.0, math.nan, math.inf
COMMON_GRAD_SCALE = [("grad_scale", 0.0, ValueError), ("grad_scale", -2.0, ValueError),
                     ("grad_scale", NAN, ValueError), ("grad_scale", "2", TypeError)]


def nonneg_scalar(name):
    return [(name, NEG, ValueError), (name, NAN, ValueError), (name, INF, ValueError), (name, "0.1", TypeError),
            (name, None, TypeError)]


def unit_scalar(name):
    return [(name, 1.0, ValueError), (name, -0.1, ValueError), (name, NAN, ValueError), (name, "0.5", TypeError)]


def step_scalar():
    return [("step", 0, ValueError), ("step", -3, ValueError), ("step", 1.5, TypeError), ("step", "1", TypeError)]


def optim_spec(states, scalars, extra=None, positive_states=()):
    def build(n):
        args = {"params": pair_list(n, 1), "grads": pair_list(n, 2)}
        for i, name in enumerate(states):
            args[name] = pair_list(n, 10 + 2 * i, positive=name in positive_states)
        args.update(extra or {})
        return args
    floats = {"params": WRITE, "grads": READ, **{s: WRITE for s in states}}
    return Spec(build, floats, lists=tuple(floats), scalars=scalars + COMMON_GRAD_SCALE)


ADAM_FAMILY = (step_scalar() + nonneg_scalar("lr") + unit_scalar("beta1") + unit_scalar("beta2")
               + nonneg_scalar("eps") + nonneg_scalar("weight_decay"))

SPECS = {
    "sgd": optim_spec(["momentum_buffers"], step_scalar() + nonneg_scalar("lr") + nonneg_scalar("momentum")
                      + [("dampening", NAN, ValueError), ("dampening", "0", TypeError)] + nonneg_scalar("weight_decay"),
                      extra={"momentum": 0.9, "step": 2}),
    "adam": optim_spec(["exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"], ADAM_FAMILY, extra={"step": 3, "amsgrad": True},
                       positive_states=("exp_avg_sqs", "max_exp_avg_sqs")),
    "adagrad": optim_spec(["state_sums"], step_scalar() + nonneg_scalar("lr") + nonneg_scalar("lr_decay")
                          + nonneg_scalar("weight_decay") + nonneg_scalar("eps"), extra={"step": 2},
                          positive_states=("state_sums",)),
    "rmsprop": optim_spec(["square_avgs", "grad_avgs", "momentum_buffers"],
                          nonneg_scalar("lr") + [("alpha", 1.5, ValueError), ("alpha", -0.5, ValueError),
                                                 ("alpha", NAN, ValueError)]
                          + nonneg_scalar("eps") + nonneg_scalar("weight_decay") + nonneg_scalar("momentum"),
                          extra={"centered": True, "momentum": 0.9}, positive_states=("square_avgs",)),
    "adadelta": optim_spec(["square_avgs", "acc_deltas"],
                           nonneg_scalar("lr") + [("rho", 1.5, ValueError), ("rho", NAN, ValueError)]
                           + nonneg_scalar("eps") + nonneg_scalar("weight_decay"),
                           positive_states=("square_avgs", "acc_deltas")),
    "adamax": optim_spec(["exp_avgs", "exp_infs"], ADAM_FAMILY, extra={"step": 2}, positive_states=("exp_infs",)),
    "nadam": optim_spec(["exp_avgs", "exp_avg_sqs"], ADAM_FAMILY + nonneg_scalar("momentum_decay")
                        + unit_scalar("mu_product"), extra={"step": 2, "mu_product": 0.5},
                        positive_states=("exp_avg_sqs",)),
    "radam": optim_spec(["exp_avgs", "exp_avg_sqs"], ADAM_FAMILY, extra={"step": 7}, positive_states=("exp_avg_sqs",)),
    "rprop": optim_spec(["prevs", "step_sizes"],
                        [("etaminus", 1.5, ValueError), ("etaminus", 0.0, ValueError), ("etaplus", 0.9, ValueError),
                         ("etaplus", INF, ValueError), ("etaminus", NAN, ValueError)]
                        + nonneg_scalar("step_size_min") + nonneg_scalar("step_size_max"),
                        positive_states=("step_sizes",)),
    "lion": optim_spec(["exp_avgs"], nonneg_scalar("lr") + unit_scalar("beta1") + unit_scalar("beta2")
                       + nonneg_scalar("weight_decay")),
    "all_finite": Spec(lambda n: {"arrays": pair_list(n, 3)}, {"arrays": READ}, lists=("arrays",),
                       shape_free=("arrays",), scalars=COMMON_GRAD_SCALE),
    "grad_norm": Spec(lambda n: {"grads": pair_list(n, 4), "norm_type": 3.0}, {"grads": READ}, lists=("grads",),
                      shape_free=("grads",),
                      scalars=[("norm_type", 0.0, ValueError), ("norm_type", -1.0, ValueError),
                               ("norm_type", NAN, ValueError), ("norm_type", "2", TypeError)]),
    "clip_grad_norm": Spec(lambda n: {"grads": pair_list(n, 5), "max_norm": 0.5}, {"grads": WRITE},
                           lists=("grads",), shape_free=("grads",),
                           scalars=[("max_norm", -1.0, ValueError), ("max_norm", NAN, ValueError),
                                    ("max_norm", "1", TypeError), ("norm_type", 0.0, ValueError),
                                    ("norm_type", NAN, ValueError)]),
    "clip_grad_norm_per_tensor": Spec(lambda n: {"grads": pair_list(n, 6), "max_norm": 0.5}, {"grads": WRITE},
                                      lists=("grads",), shape_free=("grads",),
                                      scalars=[("max_norm", -1.0, ValueError), ("max_norm", NAN, ValueError),
                                               ("norm_type", -2.0, ValueError), ("norm_type", None, TypeError)]),
    "clip_grad_value": Spec(lambda n: {"grads": pair_list(n, 7), "clip_value": 0.5}, {"grads": WRITE},
                            lists=("grads",), shape_free=("grads",),
                            scalars=[("clip_value", -1.0, ValueError), ("clip_value", NAN, ValueError),
                                     ("clip_value", "1", TypeError)]),
    "penalty": Spec(lambda n: {"params": pair_list(n, 8), "grads": pair_list(n, 9), "l1": 0.1, "l2": 0.2},
                    {"params": READ, "grads": WRITE}, lists=("params", "grads"),
                    scalars=nonneg_scalar("l1") + nonneg_scalar("l2")),
    "batchnorm_forward": Spec(
        lambda n: {"x": rng_array((n, 3, 5)), "weight": pos_array((3,)), "bias": rng_array((3,), 1),
                   "running_mean": rng_array((3,), 2), "running_var": pos_array((3,), 3),
                   "y": np.zeros((n, 3, 5), np.float32), "save_mean": np.zeros(3, np.float32),
                   "save_invstd": np.zeros(3, np.float32)},
        {"x": READ, "weight": READ, "bias": READ, "running_mean": WRITE, "running_var": WRITE, "y": WRITE,
         "save_mean": WRITE, "save_invstd": WRITE}, in_place=(("y", "x"),),
        scalars=[("momentum", 1.5, ValueError), ("momentum", NAN, ValueError), ("momentum", "0.1", TypeError),
                 ("eps", 0.0, ValueError), ("eps", NEG, ValueError), ("eps", NAN, ValueError)]),
    "batchnorm_backward": Spec(
        lambda n: {"dy": rng_array((n, 3, 5), 1), "x": rng_array((n, 3, 5)), "weight": pos_array((3,)),
                   "save_mean": rng_array((3,), 2), "save_invstd": pos_array((3,), 3),
                   "dx": np.zeros((n, 3, 5), np.float32), "dweight": np.zeros(3, np.float32),
                   "dbias": np.zeros(3, np.float32)},
        {"dy": READ, "x": READ, "weight": READ, "save_mean": READ, "save_invstd": READ, "dx": WRITE,
         "dweight": WRITE, "dbias": WRITE}, in_place=(("dx", "dy"),),
        scalars=[("training", "yes", TypeError)]),
    "dropout_forward": Spec(
        lambda n: {"x": rng_array((n, 13)), "y": np.zeros((n, 13), np.float32),
                   "mask": np.zeros(gf.ops.dropout_mask_bytes(n * 13), np.uint8), "p": 0.3, "seed": 5, "counter": 2},
        {"x": READ, "y": WRITE}, typed={"mask": (WRITE, np.uint8)}, in_place=(("y", "x"),),
        scalars=[("p", 1.5, ValueError), ("p", -0.1, ValueError), ("p", NAN, ValueError), ("p", "0.5", TypeError),
                 ("seed", -1, ValueError), ("seed", 2**64, ValueError), ("seed", 1.0, TypeError),
                 ("seed", True, TypeError), ("counter", -1, ValueError), ("counter", "1", TypeError)]),
    "dropout_backward": Spec(
        lambda n: {"dy": rng_array((n, 13)), "mask": np.full(gf.ops.dropout_mask_bytes(n * 13), 0xA5, np.uint8),
                   "dx": np.zeros((n, 13), np.float32), "p": 0.3},
        {"dy": READ, "dx": WRITE}, typed={"mask": (READ, np.uint8)}, in_place=(("dx", "dy"),),
        scalars=[("p", 1.5, ValueError), ("p", NAN, ValueError), ("p", None, TypeError)]),
    "philox4x32_10": Spec(
        lambda n: {"counters": np.arange(4 * n, dtype=np.uint32).reshape(n, 4), "key": np.array([1, 2], np.uint32),
                   "out": np.zeros((n, 4), np.uint32)},
        {}, typed={"counters": (READ, np.uint32), "key": (READ, np.uint32), "out": (WRITE, np.uint32)}),
    "activation_forward": Spec(
        lambda n: {"x": rng_array((n, 6)), "y": np.zeros((n, 6), np.float32), "activation": "gelu_tanh"},
        {"x": READ, "y": WRITE}, in_place=(("y", "x"),),
        scalars=[("activation", "nope", ValueError), ("activation", 3, TypeError),
                 ("negative_slope", NAN, ValueError), ("negative_slope", "0.1", TypeError)]),
    "activation_backward": Spec(
        lambda n: {"dy": rng_array((n, 6), 1), "dx": np.zeros((n, 6), np.float32), "x": rng_array((n, 6)),
                   "y": rng_array((n, 6), 2), "activation": "leaky_relu", "negative_slope": 0.2},
        {"dy": READ, "dx": WRITE, "x": READ, "y": READ}, in_place=(("dx", "dy"),),
        scalars=[("activation", "nope", ValueError), ("activation", None, TypeError),
                 ("negative_slope", INF, ValueError)]),
    "matmul": Spec(
        lambda n: {"a": rng_array((n, 4)), "b": rng_array((4, 5), 1), "c": np.zeros((n, 5), np.float32)},
        {"a": READ, "b": READ, "c": WRITE}, scalars=[("trans_a", "no", TypeError)]),
    "dense_forward": Spec(
        lambda n: {"x": rng_array((n, 4)), "weight": rng_array((4, 5), 1), "bias": rng_array((5,), 2),
                   "y": np.zeros((n, 5), np.float32), "z": np.zeros((n, 5), np.float32), "activation": "gelu"},
        {"x": READ, "weight": READ, "bias": READ, "y": WRITE, "z": WRITE},
        scalars=[("activation", "softplus", ValueError), ("activation", 1, TypeError),
                 ("negative_slope", NAN, ValueError)]),
    "dense_backward": Spec(
        lambda n: {"dy": rng_array((n, 5), 3), "x": rng_array((n, 4)), "weight": rng_array((4, 5), 1),
                   "dx": np.zeros((n, 4), np.float32), "dweight": np.zeros((4, 5), np.float32),
                   "dbias": np.zeros(5, np.float32), "y": rng_array((n, 5), 4), "z": rng_array((n, 5), 5),
                   "dz": np.zeros((n, 5), np.float32), "activation": "relu"},
        {"dy": READ, "x": READ, "weight": READ, "dx": WRITE, "dweight": WRITE, "dbias": WRITE, "y": READ, "z": READ,
         "dz": WRITE},
        scalars=[("activation", "nope", ValueError), ("negative_slope", NAN, ValueError),
                 ("accumulate", "yes", TypeError)]),
    "softmax_cross_entropy": Spec(
        lambda n: {"logits": rng_array((n, 3)), "labels": np.arange(n, dtype=np.int64) % 3,
                   "grad": np.zeros((n, 3), np.float32), "label_smoothing": 0.1},
        {"logits": READ, "grad": WRITE}, typed={"labels": (READ, np.int64)},
        scalars=[("reduction", "avg", ValueError), ("reduction", None, TypeError), ("ignore_index", 1.5, TypeError),
                 ("label_smoothing", 1.5, ValueError), ("label_smoothing", NAN, ValueError),
                 ("label_smoothing", "0", TypeError)]),
    "multi_margin_loss": Spec(
        lambda n: {"scores": rng_array((n, 3)), "labels": np.arange(n, dtype=np.int64) % 3,
                   "grad": np.zeros((n, 3), np.float32), "p": 2},
        {"scores": READ, "grad": WRITE}, typed={"labels": (READ, np.int64)},
        scalars=[("p", 3, ValueError), ("p", 1.0, TypeError), ("margin", NAN, ValueError),
                 ("margin", INF, ValueError), ("reduction", "none", ValueError)]),
    "mse_loss": Spec(
        lambda n: {"pred": rng_array((n, 3)), "target": rng_array((n, 3), 1), "grad": np.zeros((n, 3), np.float32)},
        {"pred": READ, "target": READ, "grad": WRITE}, scalars=[("reduction", "max", ValueError),
                                                                ("reduction", 0, TypeError)]),
    "sum_of_squares_loss": Spec(
        lambda n: {"pred": rng_array((n, 3)), "target": rng_array((n, 3), 1), "grad": np.zeros((n, 3), np.float32)},
        {"pred": READ, "target": READ, "grad": WRITE}),
    "bce_with_logits": Spec(
        lambda n: {"logits": rng_array((n, 3)), "targets": pos_array((n, 3), 1), "grad": np.zeros((n, 3), np.float32),
                   "pos_weight": pos_array((3,), 2)},
        {"logits": READ, "targets": READ, "grad": WRITE, "pos_weight": READ},
        scalars=[("reduction", "mean ", ValueError)]),
    "softmax_forward": Spec(lambda n: {"x": rng_array((n, 4)), "y": np.zeros((n, 4), np.float32)},
                            {"x": READ, "y": WRITE}, in_place=(("y", "x"),)),
    "log_softmax_forward": Spec(lambda n: {"x": rng_array((n, 4)), "y": np.zeros((n, 4), np.float32)},
                                {"x": READ, "y": WRITE}, in_place=(("y", "x"),)),
    "softmax_backward": Spec(lambda n: {"y": pos_array((n, 4)), "dy": rng_array((n, 4), 1),
                                        "dx": np.zeros((n, 4), np.float32)},
                             {"y": READ, "dy": READ, "dx": WRITE}, in_place=(("dx", "dy"),)),
    "log_softmax_backward": Spec(lambda n: {"y": rng_array((n, 4)), "dy": rng_array((n, 4), 1),
                                            "dx": np.zeros((n, 4), np.float32)},
                                 {"y": READ, "dy": READ, "dx": WRITE}, in_place=(("dx", "dy"),)),
    "dropout_mask_bytes": Spec(lambda n: {"n": 65}, {},
                               scalars=[("n", -1, ValueError), ("n", 1.5, TypeError), ("n", "3", TypeError)]),
}

N = 4  # the batch size of the valid calls


def test_every_kernel_has_a_spec():
    assert sorted(SPECS) == sorted(gf.ops.__all__)


# ---- substitutions -------------------------------------------------------------------------------


def _get(args, spec, name):
    """The array a substitution replaces: the argument, or the first array of a list argument."""
    return args[name][0] if name in spec.lists else args[name]


def _put(args, spec, name, value):
    if name in spec.lists:
        args[name] = [value] + list(args[name][1:])
    else:
        args[name] = value


def non_contiguous(a):
    wide = np.repeat(a[..., None], 2, axis=-1)
    return wide[..., 0]


def fortran(a):
    return np.asfortranarray(a)


def read_only(a):
    b = a.copy()
    b.flags.writeable = False
    return b


def broadcast(a):
    return np.broadcast_to(a.reshape(-1)[:1].reshape((1,) * a.ndim), a.shape)


def wrong_shape(a):
    return np.zeros(a.shape[:-1] + (a.shape[-1] + 1,), a.dtype)


FLOAT_BAD_DTYPES = {"float64": np.float64, "int32": np.int32, "big_endian": ">f4", "float16": np.float16,
                    "complex64": np.complex64, "object": object}
TYPED_BAD_DTYPES = {"float32": np.float32, "int16": np.int16, "big_endian": None, "object": object}


def bad_cases():
    """(kernel, case id, mutate(args) -> None, expected exception, the name the message must hold)."""
    for kernel, spec in SPECS.items():
        arrays = {name: (role, None) for name, role in spec.floats.items()}
        arrays.update(spec.typed)
        for name, (role, typed_dtype) in arrays.items():
            dtypes = FLOAT_BAD_DTYPES if typed_dtype is None else TYPED_BAD_DTYPES
            for label, dt in dtypes.items():
                if dt is None:
                    if np.dtype(typed_dtype).itemsize == 1:
                        continue  # a byte has no byte order
                    dt = np.dtype(typed_dtype).newbyteorder(">")
                yield kernel, f"{name}-dtype-{label}", _sub(spec, name, lambda a, dt=dt: a.astype(dt)), TypeError, name
            yield kernel, f"{name}-not-an-array", _sub(spec, name, lambda a: a.tolist()), TypeError, name
            yield kernel, f"{name}-non-contiguous", _sub(spec, name, non_contiguous), ValueError, name
            yield kernel, f"{name}-fortran", _sub(spec, name, fortran, min_ndim=2), ValueError, name
            yield kernel, f"{name}-broadcast", _sub(spec, name, broadcast), ValueError, name
            if role == WRITE:
                yield kernel, f"{name}-read-only", _sub(spec, name, read_only), ValueError, name
            if name not in spec.shape_free:
                yield kernel, f"{name}-wrong-shape", _sub(spec, name, wrong_shape), ValueError, None
            if name in spec.lists:
                yield kernel, f"{name}-not-a-list", _whole(name, {"a": 1}), TypeError, name
                yield kernel, f"{name}-short-list", _whole(name, "short"), None, None
        for w in [n for n, r in spec.floats.items() if r == WRITE]:
            for o in spec.floats:
                if o == w:
                    continue
                exact_ok = (w, o) in spec.in_place or (o, w) in spec.in_place
                if not exact_ok:
                    yield kernel, f"{w}-is-{o}", _alias(spec, w, o, 0), ValueError, w
                yield kernel, f"{w}-overlaps-{o}", _alias(spec, w, o, 1), ValueError, w
            if w in spec.lists:
                yield kernel, f"{w}-twice-in-list", _twice(w), ValueError, w
        for w, (role, dtype) in spec.typed.items():  # a written mask / output over another argument's bytes
            if role == WRITE:
                for o in [*spec.floats, *spec.typed]:
                    if o != w:
                        yield kernel, f"{w}-inside-{o}", _bytes_of(spec, w, o, dtype), ValueError, w
        for name, value, exc in spec.scalars:
            yield kernel, f"{name}={value!r}", _scalar(name, value), exc, name


def _sub(spec, name, transform, min_ndim=0):
    def mutate(args):
        a = _get(args, spec, name)
        if a.ndim < min_ndim or min(a.shape) < 2:
            return False  # the layout is C-contiguous anyway: nothing to test
        _put(args, spec, name, transform(a))
        return True
    return mutate


def _whole(name, value):
    def mutate(args):
        if value == "short":
            if len(args) < 2 or name == next(iter(args)):
                return False
            args[name] = args[name][:1]
        else:
            args[name] = value
        return True
    return mutate


def _alias(spec, w, o, shift):
    """o becomes w itself (shift 0), or both become views of one buffer, one element apart."""
    def mutate(args):
        a, b = _get(args, spec, w), _get(args, spec, o)
        if a.shape != b.shape or a.size < 2:
            return False
        if shift == 0:
            _put(args, spec, o, a)
        else:
            buf = np.concatenate([a.reshape(-1), b.reshape(-1)[-1:]])
            _put(args, spec, w, buf[:a.size].reshape(a.shape))
            _put(args, spec, o, buf[1:].reshape(b.shape))
        return True
    return mutate


def _bytes_of(spec, w, o, dtype):
    """w becomes a view of the first bytes of o, reinterpreted as w's dtype and shape."""
    def mutate(args):
        a, b = _get(args, spec, w), _get(args, spec, o)
        if b.nbytes < a.nbytes or a.size == 0:
            return False
        _put(args, spec, w, b.reshape(-1).view(np.uint8)[:a.nbytes].view(dtype).reshape(a.shape))
        return True
    return mutate


def _twice(name):
    def mutate(args):
        args[name] = [args[name][0], args[name][0]]
        return True
    return mutate


def _scalar(name, value):
    def mutate(args):
        args[name] = value
        return True
    return mutate


# cases that do not apply (e.g. Fortran order of a 1-D array, which is C-contiguous) are not generated
BAD = [case for case in bad_cases() if case[2](SPECS[case[0]].build(N))]


def snapshot(args):
    """Every array of a call (list elements too), as (array, its bytes, shape, dtype)."""
    out = []
    for v in args.values():
        for a in (v if isinstance(v, list) else [v]):
            if isinstance(a, np.ndarray):
                out.append((a, a.tobytes(), a.shape, a.dtype, a.__array_interface__["data"][0]))
    return out


def assert_unchanged(snap):
    for a, data, shape, dtype, address in snap:
        assert a.shape == shape and a.dtype == dtype and a.__array_interface__["data"][0] == address
        assert a.tobytes() == data, "an array changed in a call that raised"


@pytest.mark.parametrize("kernel,case,mutate,exc,arg", BAD, ids=[f"{k}-{c}" for k, c, *_ in BAD])
def test_bad_input_raises_and_changes_nothing(kernel, case, mutate, exc, arg):
    spec = SPECS[kernel]
    raised = {}
    for backend in BACKENDS:
        args = spec.build(N)
        assert mutate(args)
        snap = snapshot(args)
        with gf.use_backend(backend):
            with pytest.raises(Exception) as info:
                getattr(gf.ops, kernel)(**args)
        raised[backend] = info.value
        assert_unchanged(snap)
        if exc is not None:
            assert isinstance(info.value, exc), f"{backend}: {type(info.value).__name__}: {info.value}"
        assert isinstance(info.value, (TypeError, ValueError)), f"{backend}: {info.value!r}"
        message = str(info.value)
        assert kernel in message, f"{backend}: the message does not name {kernel}: {message}"
        if arg is not None:
            assert arg in message, f"{backend}: the message does not name {arg}: {message}"
    types = {b: type(e) for b, e in raised.items()}
    assert len(set(types.values())) == 1, f"the backends disagree: {types}"


# ---- inputs that are documented to work: the same result on both backends ------------------------


def good_cases():
    """(kernel, case id, mutate(args)) for calls that must succeed."""
    for kernel, spec in SPECS.items():
        if not spec.floats:
            continue
        for name, role in spec.floats.items():
            if role == READ:  # inputs are only read: a read-only array is fine
                yield kernel, f"{name}-read-only", _sub(spec, name, read_only)
                for label, value in (("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf)):
                    yield kernel, f"{name}-{label}", _poison(spec, name, value)
        for out, inp in spec.in_place:  # documented in-place pairs: out may be exactly in
            yield kernel, f"{out}-is-{inp}", _alias(spec, out, inp, 0)
        yield kernel, "zero-size", None


def _poison(spec, name, value):
    def mutate(args):
        a = _get(args, spec, name)
        if a.size == 0:
            return False
        a.reshape(-1)[a.size // 2] = value
        return True
    return mutate


GOOD = [case for case in good_cases() if case[2] is None or case[2](SPECS[case[0]].build(N))]


def _outputs(result, args):
    arrays = [a for v in args.values() for a in (v if isinstance(v, list) else [v]) if isinstance(a, np.ndarray)]
    return result, arrays


def _same(a, b, where):
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        if a.dtype.kind == "f":
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{where}: NaN positions differ")
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6, equal_nan=True, err_msg=where)
        else:
            np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=2e-5, abs=1e-6), f"{where}: {a} vs {b}"
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


@pytest.mark.skipif(len(BACKENDS) < 2, reason="compares the C++ kernels with their twins")
@pytest.mark.parametrize("kernel,case,mutate", GOOD, ids=[f"{k}-{c}" for k, c, _ in GOOD])
def test_documented_inputs_give_the_same_result_on_both_backends(kernel, case, mutate):
    spec = SPECS[kernel]
    got = {}
    for backend in BACKENDS:
        args = spec.build(0 if mutate is None else N)
        if mutate is not None:
            assert mutate(args)
        with gf.use_backend(backend), warnings.catch_warnings():
            warnings.simplefilter("error")  # the kernels never warn: NaN / Inf arithmetic is silent
            got[backend] = _outputs(getattr(gf.ops, kernel)(**args), args)
    _same(got["cpp"], got["numpy"], f"{kernel} {case}")


@pytest.mark.parametrize("kernel", [k for k, s in SPECS.items() if "grads" in s.lists and "params" in s.lists
                                    and k != "penalty"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_skip_nonfinite_skips_the_whole_step(backend, kernel, value):
    """skip_nonfinite=True: a non-finite gradient anywhere -> False, nothing written (documented)."""
    args = SPECS[kernel].build(N)
    args["grads"][1][2, 3] = value
    snap = snapshot(args)
    assert getattr(gf.ops, kernel)(**args, skip_nonfinite=True) is False
    assert_unchanged(snap)


@pytest.mark.parametrize("kernel", ["grad_norm", "clip_grad_norm", "clip_grad_norm_per_tensor"])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0, 0.5, 0.1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_norms_of_huge_values_agree_on_both_backends(kernel, norm_type, dtype):
    """Norms of values near the dtype's maximum: float32 ones accumulate in double without overflow;
    float64 ones may overflow to inf. Both backends give the same norm (no exception, no warning)
    and scale the same way."""
    big = np.finfo(dtype).max / 4
    got = {}
    for backend in BACKENDS:
        grads = [np.full((3, 5), big, dtype), np.full(7, -big / 3, dtype)]
        kwargs = {"norm_type": norm_type} if kernel == "grad_norm" else {"norm_type": norm_type, "max_norm": 1.0}
        with gf.use_backend(backend), np.errstate(all="raise"):
            got[backend] = (getattr(gf.ops, kernel)(grads, **kwargs), grads)
    _same(got[BACKENDS[0]], got[BACKENDS[-1]], kernel)
    if dtype == np.float32 and norm_type >= 1:
        norm = got[BACKENDS[0]][0]
        assert all(math.isfinite(n) for n in (norm if isinstance(norm, list) else [norm]))


@pytest.mark.skipif(len(BACKENDS) < 2, reason="compares the C++ kernels with their twins")
@pytest.mark.parametrize("activation", ["none", "relu", "leaky_relu", "tanh", "sigmoid", "gelu", "gelu_tanh"])
def test_nan_and_inf_through_every_activation(activation):
    """NaN / Inf inputs and gradients: the same outputs on both backends (relu's backward gives 0
    where its input is <= 0, whatever dy is, as torch's threshold_backward)."""
    special = np.array([np.nan, np.inf, -np.inf, 1.5, -1.5, 0.0, -0.0] * 3, np.float32)
    got = {}
    for backend in BACKENDS:
        with gf.use_backend(backend):
            y, dx = np.empty_like(special), np.empty_like(special)
            gf.ops.activation_forward(special, y, activation=activation)
            gf.ops.activation_backward(special[::-1].copy(), dx, activation=activation, x=special, y=y)
            got[backend] = (y, dx)
    _same(got["cpp"], got["numpy"], activation)
