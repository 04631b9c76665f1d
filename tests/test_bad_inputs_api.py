"""Bad inputs to the training API on both backends: optimizers (constructor and step), layers
(forward / backward), Sequential, losses, gf.train.fit, gf.save / gf.load.

Each case builds fresh objects per backend, snapshots every array argument, the optimizer's state
(state_dict, step counters, skipped steps), the model's parameters, gradients, buffers and RNG
counters, makes the call, and requires the documented exception (the same type on both backends)
with nothing changed, bitwise. The documented results of unusual but valid inputs (NaN gradients
with skip_nonfinite, NaN logits, zero-size parameters, any array layout in a checkpoint) are checked
too. The kernels' own bad-input table is tests/test_bad_inputs.py.
"""

from __future__ import annotations

import copy
import math
import os

import numpy as np
import pytest

import gradfuse as gf
import kernel_cases as kc
from conftest import BACKENDS

nn = gf.nn


# ---- snapshots -----------------------------------------------------------------------------------


def frozen(obj):
    """A deep, comparable copy: arrays as (dtype, shape, bytes), containers recursively."""
    if isinstance(obj, np.ndarray):
        return ("array", obj.dtype.str, obj.shape, obj.tobytes())
    if isinstance(obj, dict):
        return {k: frozen(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(frozen(v) for v in obj)
    if isinstance(obj, float) and math.isnan(obj):
        return ("nan",)
    return copy.deepcopy(obj)


def model_state(model):
    """Parameters, buffers and counters (state_dict), every gradient and the train/eval mode."""
    return frozen(
        {
            "state": model.state_dict(),
            "grads": [p.grad for p in model.parameters()],
            "training": [m.training for m in _modules(model)],
        }
    )


def _modules(model):
    yield model
    for child in model.children():
        yield from _modules(child)


def optimizer_state(opt):
    return frozen({"state_dict": opt.state_dict(), "skipped": opt.skipped_steps, "last_skipped": opt.last_step_skipped})


def check_raises_same_on_both(make, call, exc, match=None):
    """For each backend: objects = make(); snap = the state of every object; call(objects) must
    raise exc (matching `match`) and leave every snapshot unchanged. The types must agree."""
    types = {}
    for backend in BACKENDS:
        with gf.use_backend(backend):
            objects = make()
            before = [state_of(o) for o in objects]
            with pytest.raises((TypeError, ValueError)) as info:
                call(*objects)
            assert isinstance(info.value, exc), f"{backend}: {type(info.value).__name__}: {info.value}"
            if match is not None:
                assert match in str(info.value), f"{backend}: {info.value}"
            after = [state_of(o) for o in objects]
            assert after == before, f"{backend}: state changed by a call that raised"
            types[backend] = type(info.value)
    assert len(set(types.values())) == 1, types


def state_of(obj):
    if isinstance(obj, gf.optim.Optimizer):
        return optimizer_state(obj)
    if isinstance(obj, nn.Module):
        return model_state(obj)
    return frozen(obj)


# ---- optimizers ------------------------------------------------------------------------------------

# Every optimizer class (gf.optim.__all__) with settings from its kernel table row that use every
# state (tests/kernel_cases.py: varied); and every hyperparameter value each refuses, with its message
# (kernel_cases.bad_hyperparameters: Range probes, torch's wording, wrong types, joint rules).
CLASSES = {cls.__name__: cls for cls in kc.optimizer_classes()}
OPTIMIZERS = {name: kc.varied(cls) for name, cls in CLASSES.items()}
HYPER_CASES = [
    (name, kwargs, exc, message)
    for name, cls in CLASSES.items()
    for _, kwargs, exc, message in kc.bad_hyperparameters(cls)
]
HYPER_IDS = [f"{name}-{case}" for name, cls in CLASSES.items() for case, *_ in kc.bad_hyperparameters(cls)]


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    buffer = rng.standard_normal(13).astype(np.float32)  # params[0] and one spare element (overlap cases)
    return [buffer[:12].reshape(3, 4), rng.standard_normal(5).astype(np.float32)]


def make_grads(params, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(p.shape).astype(p.dtype) for p in params]


def stepped(name, **extra):
    """An optimizer over two arrays after one good step (so it has state), and those arrays."""
    params = make_params()
    opt = CLASSES[name](params, **{**OPTIMIZERS[name], **extra})
    opt.step(make_grads(params))
    return opt, params


@pytest.mark.parametrize("name,kwargs,exc,message", HYPER_CASES, ids=HYPER_IDS)
def test_optimizer_constructor_refuses_bad_hyperparameters(name, kwargs, exc, message):
    params = make_params()
    check_raises_same_on_both(
        lambda: (params,), lambda ps: CLASSES[name](ps, **{**OPTIMIZERS[name], **kwargs}), exc, message
    )


@pytest.mark.parametrize("name,kwargs,exc,message", HYPER_CASES, ids=HYPER_IDS)
def test_optimizer_step_refuses_an_edited_bad_hyperparameter(name, kwargs, exc, message):
    """A schedule gone wrong: param_groups edited between steps; the step changes nothing."""

    def make():
        opt, params = stepped(name)
        opt.param_groups[0].update(kwargs)
        return opt, params, make_grads(params, 2)

    check_raises_same_on_both(make, lambda opt, params, grads: opt.step(grads), exc, message)


def non_contiguous(a):
    return np.repeat(a[..., None], 2, axis=-1)[..., 0]


BAD_GRADS = {  # (what grads[0] becomes, given params and grads; exception; name in the message)
    "float64": (lambda p, g: g[0].astype(np.float64), TypeError, "grads[0]"),
    "int32": (lambda p, g: g[0].astype(np.int32), TypeError, "grads[0]"),
    "big-endian": (lambda p, g: g[0].astype(">f4"), TypeError, "grads[0]"),
    "object": (lambda p, g: g[0].astype(object), TypeError, "grads[0]"),
    "list": (lambda p, g: g[0].tolist(), TypeError, "grads[0]"),
    "non-contiguous": (lambda p, g: non_contiguous(g[0]), ValueError, "grads[0]"),
    "fortran": (lambda p, g: np.asfortranarray(g[0]), ValueError, "grads[0]"),
    "broadcast": (lambda p, g: np.broadcast_to(np.float32(1), g[0].shape), ValueError, "grads[0]"),
    "wrong-shape": (lambda p, g: g[0].reshape(4, 3), ValueError, "grads[0]"),
    "is-its-param": (lambda p, g: p[0], ValueError, "grads[0]"),
    # params[0] is the start of a 13-element buffer: this gradient shares 11 elements with it
    "overlaps-its-param": (lambda p, g: p[0].base[1:13].reshape(3, 4), ValueError, "grads[0]"),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("case", BAD_GRADS)
def test_optimizer_step_refuses_bad_gradients(name, case):
    transform, exc, where = BAD_GRADS[case]

    def make():
        opt, params = stepped(name)
        grads = make_grads(params, 2)
        return opt, params, [transform(params, grads)] + grads[1:]

    check_raises_same_on_both(make, lambda opt, params, grads: opt.step(grads), exc, where)


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize(
    "call,exc",
    [
        (lambda opt, params, grads: opt.step(grads[:1]), ValueError),  # one gradient too few
        (lambda opt, params, grads: opt.step(grads, grad_scale=0.0), ValueError),
        (lambda opt, params, grads: opt.step(grads, grad_scale=math.nan), ValueError),
        (lambda opt, params, grads: opt.step(grads, grad_scale="2"), TypeError),
        (lambda opt, params, grads: opt.step(), TypeError),  # plain arrays have no .grad
    ],
    ids=["short", "scale-0", "scale-nan", "scale-str", "no-grads"],
)
def test_optimizer_step_refuses_bad_calls(name, call, exc):
    def make():
        opt, params = stepped(name)
        return opt, params, make_grads(params, 2)

    check_raises_same_on_both(make, call, exc)


def test_optimizer_constructor_refuses_bad_parameters():
    good = make_params()
    cases = [
        ([good[0].astype(np.int32)], TypeError),
        ([good[0].astype(">f4")], TypeError),
        ([good[0].astype(object)], TypeError),
        ([non_contiguous(good[0])], ValueError),
        ([np.asfortranarray(good[0])], ValueError),
        ([np.broadcast_to(good[1], (2, 5))], ValueError),
        ([good[0], good[0]], ValueError),
        ([], ValueError),
        (good[0], TypeError),
        ([[1.0, 2.0]], TypeError),
    ]
    read_only = good[1].copy()
    read_only.flags.writeable = False
    cases.append(([read_only], ValueError))
    for params, exc in cases:
        for name in OPTIMIZERS:
            check_raises_same_on_both(lambda: (params,), lambda ps: getattr(gf.optim, name)(ps), exc)


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_skip_nonfinite_step_changes_nothing_but_the_skip_count(backend, name, value):
    opt, params = stepped(name, skip_nonfinite=True)
    grads = make_grads(params, 2)
    grads[1][3] = value
    before, sd = frozen(params), frozen(opt.state_dict())
    assert opt.step(grads) is False
    assert frozen(params) == before and frozen(opt.state_dict()) == sd
    assert opt.skipped_steps == 1 and opt.last_step_skipped


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_nan_gradient_without_skip_propagates_the_same_on_both_backends(name):
    got = {}
    for backend in BACKENDS:
        with gf.use_backend(backend):
            opt, params = stepped(name)
            grads = make_grads(params, 2)
            grads[0][1, 2] = math.nan
            assert opt.step(grads) is True
            got[backend] = [np.isnan(p) for p in params]
    for a, b in zip(got[BACKENDS[0]], got[BACKENDS[-1]]):
        np.testing.assert_array_equal(a, b)
    if CLASSES[name]._row.torch is not None:  # where the NaN goes is torch's: sign-based updates take
        torch = pytest.importorskip("torch")  # sign(NaN) = 0, the others propagate it
        params = make_params()
        tparams = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
        topt = kc.torch_class(CLASSES[name], torch)(tparams, **OPTIMIZERS[name])
        for step, grads in enumerate([make_grads(params), make_grads(params, 2)]):
            if step == 1:
                grads[0][1, 2] = math.nan
            for tp, g in zip(tparams, grads):
                tp.grad = torch.from_numpy(g)
            topt.step()
        for a, tp in zip(got[BACKENDS[0]], tparams):
            np.testing.assert_array_equal(a, np.isnan(tp.detach().numpy()))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_zero_size_parameters_step_as_a_no_op(backend, name):
    params = [np.zeros((0, 3), np.float32), np.ones(4, np.float32)]
    opt = CLASSES[name](params, **OPTIMIZERS[name])
    assert opt.step([np.zeros((0, 3), np.float32), np.ones(4, np.float32)]) is True
    assert params[0].shape == (0, 3)


# ---- layers --------------------------------------------------------------------------------------


def x_of(shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _append(model, layer):
    model.layers.append(layer)
    return model


LAYERS = {  # name -> (make the layer, a good input)
    "Dense": (lambda: nn.Dense(4, 3, activation="relu", seed=0), x_of((5, 4))),
    "DropConnect": (lambda: nn.DropConnect(4, 3, p=0.5, seed=0), x_of((5, 4))),
    "BatchNorm": (lambda: nn.BatchNorm(4), x_of((5, 4))),
    "BatchNorm-cumulative": (lambda: nn.BatchNorm(4, momentum=None), x_of((5, 4))),
    "Dropout": (lambda: nn.Dropout(0.5, seed=0), x_of((5, 4))),
    "ReLU": (lambda: nn.ReLU(), x_of((5, 4))),
    "LeakyReLU": (lambda: nn.LeakyReLU(0.2), x_of((5, 4))),
    "Tanh": (lambda: nn.Tanh(), x_of((5, 4))),
    "Sigmoid": (lambda: nn.Sigmoid(), x_of((5, 4))),
    "GELU": (lambda: nn.GELU(), x_of((5, 4))),
    "Sequential": (
        lambda: nn.Sequential(
            [nn.Dense(4, 8, seed=0), nn.BatchNorm(8), nn.ReLU(), nn.Dropout(0.3), nn.DropConnect(8, 3, p=0.2)], seed=0
        ),
        x_of((5, 4)),
    ),
    # layers that do not fit together: the last one raises after the others moved their state
    # a model whose layers do not chain is refused when built: this one gets its stray layer
    # appended afterwards, so that its forward still fails after the first layers moved state
    "Sequential-misbuilt": (
        lambda: _append(
            nn.Sequential(
                [nn.Dense(4, 8, seed=0), nn.BatchNorm(8), nn.Dropout(0.3), nn.DropConnect(8, 3, p=0.2)], seed=0
            ),
            nn.Dense(4, 2),
        ),
        x_of((5, 4)),
    ),
}
SHAPE_BOUND = {"Dense", "DropConnect", "BatchNorm", "BatchNorm-cumulative", "Sequential"}  # a feature count
# parameter-free layers take float32 and float64 inputs alike; layers with parameters take their dtype

BAD_X = {  # (transform of the good x, exception, the layers it applies to)
    "float64": (lambda x: x.astype(np.float64), TypeError, SHAPE_BOUND),
    "int32": (lambda x: x.astype(np.int32), TypeError, LAYERS),
    "big-endian": (lambda x: x.astype(">f4"), TypeError, LAYERS),
    "object": (lambda x: x.astype(object), TypeError, LAYERS),
    "list": (lambda x: x.tolist(), TypeError, LAYERS),
    "non-contiguous": (non_contiguous, ValueError, LAYERS),
    "fortran": (np.asfortranarray, ValueError, LAYERS),
    "broadcast": (lambda x: np.broadcast_to(x[:1], x.shape), ValueError, LAYERS),
    "features+1": (lambda x: x_of((5, 5)), ValueError, SHAPE_BOUND),
    "1-D": (lambda x: x[0].copy(), ValueError, SHAPE_BOUND),
    "one-sample": (lambda x: x[:1].copy(), ValueError, {"BatchNorm", "BatchNorm-cumulative", "Sequential"}),
}
X_CASES = [
    (layer, case)
    for case, (_, _, applies) in BAD_X.items()
    for layer in LAYERS
    if layer in applies and layer != "Sequential-misbuilt"
]


def test_misbuilt_sequential_forward_puts_the_state_back():
    make_layer, x = LAYERS["Sequential-misbuilt"]

    def make():
        model = make_layer()
        model[1].forward(np.ones((3, 8), np.float32))  # a BatchNorm that has seen a batch
        return (model,)

    check_raises_same_on_both(make, lambda model: model.forward(x, training=True), ValueError, "x")


@pytest.mark.parametrize("layer,case", X_CASES, ids=[f"{layer}-{c}" for layer, c in X_CASES])
def test_layer_forward_refuses_bad_input_and_changes_nothing(layer, case):
    make_layer, x = LAYERS[layer]
    transform, exc, _ = BAD_X[case]

    def make():
        model = make_layer()
        model.forward(x, training=True)  # counters and running statistics away from their start
        return model, transform(x)

    check_raises_same_on_both(make, lambda model, bad: model.forward(bad, training=True), exc)


BAD_DY = {
    "float64": (lambda dy: dy.astype(np.float64), TypeError),
    "int32": (lambda dy: dy.astype(np.int32), TypeError),
    "list": (lambda dy: dy.tolist(), TypeError),
    "non-contiguous": (non_contiguous, ValueError),
    "transposed": (lambda dy: np.ascontiguousarray(dy.reshape(dy.shape[::-1])), ValueError),  # same size
    "one-row-more": (lambda dy: np.concatenate([dy, dy[:1]]), ValueError),
    "one-column-less": (lambda dy: np.ascontiguousarray(dy[:, :-1]), ValueError),
}


WORKING_LAYERS = [name for name in LAYERS if name != "Sequential-misbuilt"]


@pytest.mark.parametrize("layer", WORKING_LAYERS)
@pytest.mark.parametrize("case", BAD_DY)
def test_layer_backward_refuses_bad_gradient_and_changes_nothing(layer, case):
    make_layer, x = LAYERS[layer]
    transform, exc = BAD_DY[case]

    def make():
        model = make_layer()
        y = model.forward(x, training=True)
        return model, transform(np.ones_like(y))

    check_raises_same_on_both(make, lambda model, dy: model.backward(dy), exc)


def test_layer_constructors_refuse_bad_arguments():
    for make, exc in [
        (lambda: nn.Dropout(1.5), ValueError),
        (lambda: nn.Dropout(-0.1), ValueError),
        (lambda: nn.DropConnect(4, 3, p=math.nan), ValueError),
        (lambda: nn.Dense(4, 3, activation="softplus"), ValueError),
        (lambda: nn.GELU(approximate="fast"), ValueError),
        (lambda: nn.BatchNorm(3, eps=0.0), ValueError),
        (lambda: nn.BatchNorm(3, eps=-1.0), ValueError),
        (lambda: nn.BatchNorm(3, momentum=1.5), ValueError),
        (lambda: nn.BatchNorm(3, momentum=math.nan), ValueError),
        (lambda: nn.Sequential([nn.ReLU(), "relu"]), TypeError),
    ]:
        with pytest.raises(exc):
            make()


@pytest.mark.parametrize("layer", WORKING_LAYERS)
def test_layer_nan_input_gives_the_same_outputs_on_both_backends(layer):
    make_layer, x = LAYERS[layer]
    bad = x.copy()
    bad[2, 1] = math.nan
    bad[3, 0] = math.inf
    got = {}
    for backend in BACKENDS:
        with gf.use_backend(backend):
            model = make_layer()
            y = model.forward(bad, training=True)
            dx = model.backward(np.ones_like(y))
            got[backend] = (np.isnan(y), None if dx is None else np.isnan(dx))
    for a, b in zip(got[BACKENDS[0]], got[BACKENDS[-1]]):
        np.testing.assert_array_equal(a, b)


# ---- losses --------------------------------------------------------------------------------------


def logits():
    return x_of((4, 3))


LOSS_CASES = [
    ("cross_entropy", lambda: (logits(), np.array([0, 1, 2, 0.5])), TypeError, "labels"),
    ("cross_entropy", lambda: (logits(), np.array([0, 1, 2])), ValueError, "labels"),
    ("cross_entropy", lambda: (logits(), np.array([0, 1, 2, 3])), ValueError, "labels[3]"),
    ("cross_entropy", lambda: (logits(), np.array([0, -1, 2, 1])), ValueError, "labels[1]"),
    ("cross_entropy", lambda: (logits().astype(np.int64), np.array([0, 1, 2, 1])), TypeError, "logits"),
    ("cross_entropy", lambda: (logits().tolist(), np.array([0, 1, 2, 1])), TypeError, "logits"),
    ("cross_entropy", lambda: (non_contiguous(logits()), np.array([0, 1, 2, 1])), ValueError, "logits"),
    ("hinge", lambda: (logits(), np.array(["a", "b", "c", "d"])), TypeError, "labels"),
    ("hinge", lambda: (logits(), np.array([0, 1, 2, 9])), ValueError, "labels[3]"),
    ("mse", lambda: (logits(), x_of((4, 2))), ValueError, "target"),
    ("mse", lambda: (logits().tolist(), logits()), TypeError, "pred"),
    ("mse", lambda: (logits(), np.array([["a"] * 3] * 4)), TypeError, "target"),
    ("sum_of_squares", lambda: (logits(), x_of((3, 4))), ValueError, "target"),
    ("bce_with_logits", lambda: (logits(), x_of((4, 1))), ValueError, "targets"),
    ("bce_with_logits", lambda: (logits().astype(np.float16), logits()), TypeError, "logits"),
]


@pytest.mark.parametrize("loss,make,exc,text", LOSS_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(LOSS_CASES)])
def test_losses_refuse_bad_inputs(loss, make, exc, text):
    check_raises_same_on_both(make, getattr(gf.losses, loss), exc, text)


@pytest.mark.parametrize("loss", ["cross_entropy", "hinge", "mse", "bce_with_logits"])
def test_nan_logits_propagate_the_same_on_both_backends(loss):
    got = {}
    for backend in BACKENDS:
        with gf.use_backend(backend):
            z = logits()
            z[1, 1] = math.nan
            target = np.array([0, 1, 2, 1]) if loss in ("cross_entropy", "hinge") else np.abs(logits()) / 4
            value, grad = getattr(gf.losses, loss)(z, target)
            # the hinge's max(0, .) skips a NaN margin term, as torch's multi_margin_loss does
            assert math.isnan(value) != (loss == "hinge")
            got[backend] = (math.isnan(value), np.isnan(grad))
    assert got[BACKENDS[0]][0] == got[BACKENDS[-1]][0]
    np.testing.assert_array_equal(got[BACKENDS[0]][1], got[BACKENDS[-1]][1])


# ---- fit -----------------------------------------------------------------------------------------


def fit_setup():
    model = nn.Sequential(
        [nn.Dense(4, 8, activation="relu", seed=0), nn.BatchNorm(8), nn.Dropout(0.2), nn.Dense(8, 3, seed=1)], seed=0
    )
    opt = gf.optim.Adam(model.parameters(), lr=0.01)
    x = x_of((12, 4))
    y = np.arange(12) % 3
    gf.train.fit(model, "cross_entropy", opt, x, y, epochs=1, batch_size=4, verbose=0)  # some state first
    return model, opt, x, y


FIT_CASES = {  # (x, y, extra kwargs) from the good ones -> exception, text in the message
    "y-too-short": (lambda x, y: (x, y[:-1], {}), ValueError, "samples"),
    "y-float": (lambda x, y: (x, y.astype(np.float64), {}), TypeError, "integer"),
    "y-class-out-of-range": (lambda x, y: (x, np.where(y == 2, 3, y), {}), ValueError, "y[2] = 3"),
    "y-negative": (lambda x, y: (x, -y, {}), ValueError, "y[1] = -1"),
    "y-2-D": (lambda x, y: (x, y.reshape(-1, 1), {}), ValueError, "1-D"),
    "x-features": (lambda x, y: (x_of((12, 5)), y, {}), ValueError, "x"),
    "x-strings": (lambda x, y: (x.astype(str), y, {}), TypeError, "strings"),
    "x-empty": (lambda x, y: (x[:0], y[:0], {}), ValueError, "empty"),
    "epochs-negative": (lambda x, y: (x, y, {"epochs": -1}), ValueError, "epochs"),
    "schedule_per-without-schedule": (lambda x, y: (x, y, {"schedule_per": "batch"}), ValueError, "schedule_per"),
    "x-multi-input": (lambda x, y: ([x[:, :2], x[:, 2:]], y, {}), TypeError, "multi-input"),
    "x-ragged": (lambda x, y: (x.tolist()[:-1] + [[1.0]], y, {}), ValueError, "different lengths"),
    "validation-y-out-of-range": (
        lambda x, y: (x, y, {"validation_data": (x[:3], np.array([0, 1, 7]))}),
        ValueError,
        "validation",
    ),
    "validation-lengths": (lambda x, y: (x, y, {"validation_data": (x[:3], y[:2])}), ValueError, "validation"),
    "batch-size-0": (lambda x, y: (x, y, {"batch_size": 0}), ValueError, "batch_size"),
    "validation-split-1": (lambda x, y: (x, y, {"validation_split": 1.0}), ValueError, "fraction"),
}


@pytest.mark.parametrize("case", FIT_CASES)
def test_fit_refuses_bad_data_before_changing_anything(case):
    transform, exc, text = FIT_CASES[case]

    def make():
        model, opt, x, y = fit_setup()
        return (model, opt, *transform(x, y))

    def call(model, opt, x, y, kwargs):
        gf.train.fit(model, "cross_entropy", opt, x, y, **{"epochs": 2, "batch_size": 4, "verbose": 0, **kwargs})

    check_raises_same_on_both(make, call, exc, text)


def test_fit_refuses_bad_labels_for_the_hinge_loss_too():
    def make():
        model, opt, x, y = fit_setup()
        return model, opt, x, y + 1

    check_raises_same_on_both(
        make, lambda model, opt, x, y: gf.train.fit(model, "hinge", opt, x, y, verbose=0), ValueError, "y[2] = 3"
    )


# ---- gf.save / gf.load ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [np.array([1, "a"], dtype=object), np.array(["ab"]), lambda: None, {1.5: 1}, {"a": {1, 2}}],
    ids=["object-array", "str-array", "function", "float-key", "set"],
)
def test_save_refuses_unsupported_values_and_keeps_the_old_file(tmp_path, bad):
    path = tmp_path / "ckpt.gfc"
    gf.save({"w": np.ones(3, np.float32)}, path)
    old = path.read_bytes()
    with pytest.raises(TypeError):
        gf.save({"w": np.zeros(3, np.float32), "bad": bad}, path)
    assert path.read_bytes() == old
    assert sorted(os.listdir(tmp_path)) == ["ckpt.gfc"]  # no temporary file left behind


def test_save_to_a_folder_and_load_of_missing_or_damaged_files(tmp_path):
    with pytest.raises(IsADirectoryError):
        gf.save({"a": 1}, tmp_path)
    with pytest.raises(FileNotFoundError):
        gf.load(tmp_path / "missing.gfc")
    path = tmp_path / "ckpt.gfc"
    gf.save({"w": np.arange(100, dtype=np.float32)}, path)
    data = bytearray(path.read_bytes())
    for damaged in (data[:-1], data[:50], data[:-40] + bytes([data[-40] ^ 1]) + data[-39:], b"", b"not a checkpoint"):
        path.write_bytes(bytes(damaged))
        with pytest.raises(gf.checkpoint.CheckpointError):
            gf.load(path)


def test_save_accepts_any_layout_and_loads_c_contiguous_native_arrays(tmp_path):
    """Documented: strided, Fortran, broadcast, read-only, big-endian, zero-size arrays and NaN / Inf
    round-trip bit for bit and load as fresh, writeable, C-contiguous native arrays."""
    base = x_of((3, 4))
    base[0, 0], base[1, 1] = math.nan, -math.inf
    read_only = base.copy()
    read_only.flags.writeable = False
    state = {
        "strided": non_contiguous(base),
        "fortran": np.asfortranarray(base),
        "broadcast": np.broadcast_to(base[:1], (3, 4)),
        "read_only": read_only,
        "big": base.astype(">f4"),
        "empty": np.zeros((0, 3), np.float32),
        "nan": math.nan,
    }
    gf.save(state, tmp_path / "c.gfc")
    loaded = gf.load(tmp_path / "c.gfc")
    for key, value in state.items():
        if key == "nan":
            assert math.isnan(loaded[key])
            continue
        got = loaded[key]
        assert got.flags.c_contiguous and got.flags.writeable and got.dtype.isnative, key
        assert got.shape == value.shape and got.tobytes() == np.ascontiguousarray(value, got.dtype).tobytes(), key
