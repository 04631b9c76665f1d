"""The torch.optim-style API of gradfuse.optim: parameter groups, step/zero_grad semantics, the
ParameterArena, state_dict round trips (ours and torch's), validation, all-or-nothing steps on bad
inputs, skip_nonfinite / grad_scale, mixed dtypes, and thread safety.

Results are compared BITWISE wherever two gradfuse runs should do the same arithmetic (an
interrupted vs an uninterrupted run, an arena vs separate arrays, one optimizer vs per-dtype ones),
and with a tight tolerance against torch.
"""

from __future__ import annotations

import copy
import inspect
import re
import threading

import numpy as np
import pytest

import gradfuse as gf
import kernel_cases as kc
from conftest import assert_unchanged, snapshot
from gradfuse.nn import Parameter, ParameterArena

# ------------------------------------------------------------------------------------------------
# Tables and helpers
# ------------------------------------------------------------------------------------------------

# Every optimizer (gf.optim.__all__), with settings from its kernel table row that use every state
# and move every number off its default (tests/kernel_cases.py: varied).
CLASSES = kc.optimizer_classes()
OPTIMIZERS = [(cls.__name__, kc.varied(cls)) for cls in CLASSES]
OPT_IDS = [name for name, _ in OPTIMIZERS]
TORCH_OPTIMIZERS = [(cls.__name__, kw) for cls, (_, kw) in zip(CLASSES, OPTIMIZERS) if cls._row.torch is not None]
# An optimizer with the most states (every one in use): where a test needs one with a lot of state.
RICHEST = max(CLASSES, key=lambda cls: len(cls._row.states))

SHAPES = [(3, 5), (7,), (2, 2, 3)]


def make_params(shapes=SHAPES, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def make_grads(params, step, seed=1):
    """Deterministic gradients for step `step`, one per parameter, in each parameter's dtype."""
    rng = np.random.default_rng(seed * 1000 + step)
    return [rng.standard_normal(p.shape).astype(p.dtype) for p in params]


def two_groups(params, kwargs):
    """params[:-1] in group 0 (the defaults), params[-1] in group 1 with half the learning rate."""
    return [{"params": list(params[:-1])}, {"params": [params[-1]], "lr": kwargs["lr"] * 0.5}]


def copies(arrays):
    return [a.copy() for a in arrays]


def state_arrays(opt, params):
    """Every state array of every parameter (views into the optimizer's arenas)."""
    return [v for p in params for _, v in sorted(opt.state[p].items()) if isinstance(v, np.ndarray)]


def assert_state_dicts_equal(a, b):
    """Two state_dicts are equal: same keys, arrays bitwise, scalars and groups equal."""
    assert set(a) == set(b) == {"state", "param_groups"}
    assert set(a["state"]) == set(b["state"])
    for i in a["state"]:
        assert set(a["state"][i]) == set(b["state"][i]), i
        for key, va in a["state"][i].items():
            vb = b["state"][i][key]
            if isinstance(va, np.ndarray) or isinstance(vb, np.ndarray):
                np.testing.assert_array_equal(np.asarray(va), np.asarray(vb), err_msg=f"state[{i}][{key}]")
                assert np.asarray(va).dtype == np.asarray(vb).dtype
            else:
                assert va == vb, (i, key, va, vb)
    assert a["param_groups"] == b["param_groups"]


def assert_bitwise(actual, expected):
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a.dtype == e.dtype and a.shape == e.shape, i
        np.testing.assert_array_equal(a, e, err_msg=f"array {i}")


def opt_class(name):
    return getattr(gf.optim, name)


# ------------------------------------------------------------------------------------------------
# Parameter groups
# ------------------------------------------------------------------------------------------------


def test_param_groups_fill_defaults_and_match_torch_keys(torch):
    a, b = make_params([(3,), (4,)])
    opt = gf.optim.Adam([{"params": [a]}, {"params": [b], "lr": 0.1, "betas": (0.8, 0.9)}], lr=0.01, eps=1e-6)
    g0, g1 = opt.param_groups
    assert g0["params"][0] is a and g1["params"][0] is b
    assert (g0["lr"], g0["betas"], g0["eps"]) == (0.01, (0.9, 0.999), 1e-6)
    assert (g1["lr"], g1["betas"], g1["eps"]) == (0.1, (0.8, 0.9), 1e-6)  # eps from the defaults
    assert opt.defaults["lr"] == 0.01
    t = torch.optim.Adam([{"params": [torch.zeros(3)]}, {"params": [torch.zeros(4)], "lr": 0.1}], lr=0.01)
    for ours, theirs in zip(opt.param_groups, t.param_groups):
        assert set(ours) == set(theirs)


@pytest.mark.parametrize("name, kwargs", OPTIMIZERS, ids=OPT_IDS)
def test_groups_step_like_separate_optimizers(backend, name, kwargs):
    """Two groups with their own lr step exactly like two optimizers, one per group."""
    kwargs = kc.per_parameter(name, kwargs)  # Lamb: no global clip across parameters
    params = make_params()
    alone = copies(params)
    opt = opt_class(name)(two_groups(params, kwargs), **kwargs)
    first = opt_class(name)(alone[:-1], **kwargs)
    second = opt_class(name)(alone[-1:], **{**kwargs, "lr": kwargs["lr"] * 0.5})
    for step in range(3):
        grads = make_grads(params, step)
        assert opt.step(grads) is True
        first.step(grads[:-1])
        second.step(grads[-1:])
    assert_bitwise(params, alone)


def test_add_param_group(backend):
    a, b = make_params([(5,), (6,)])
    ref_a, ref_b = a.copy(), b.copy()
    opt = gf.optim.SGD([a], lr=0.1)
    opt.add_param_group({"params": [b], "momentum": 0.9})
    assert len(opt.param_groups) == 2
    assert opt.param_groups[1]["lr"] == 0.1 and opt.param_groups[1]["momentum"] == 0.9
    assert opt.param_groups[0]["momentum"] == 0
    ra, rb = gf.optim.SGD([ref_a], lr=0.1), gf.optim.SGD([ref_b], lr=0.1, momentum=0.9)
    for step in range(3):
        ga, gb = make_grads([a, b], step)
        opt.step([ga, gb])
        ra.step([ga])
        rb.step([gb])
    assert_bitwise([a, b], [ref_a, ref_b])
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [a]})
    with pytest.raises(TypeError, match="param_group must be a dict"):
        opt.add_param_group([b])
    assert len(opt.param_groups) == 2


def test_add_param_group_single_array_and_required_defaults():
    a, b = make_params([(2,), (3,)])
    opt = gf.optim.Adam([a])
    opt.add_param_group({"params": b})  # a single array is accepted inside a group dict, like torch
    assert opt.param_groups[1]["params"] == [b]

    class Custom(gf.optim.Optimizer):
        def __init__(self, params):
            super().__init__(params, {"lr": gf.optim.required})

    with pytest.raises(ValueError, match="required optimization parameter lr"):
        Custom([a])


def test_named_parameters(torch):
    w, bias = make_params([(3, 2), (2,)])
    opt = gf.optim.Adam([("w", w), ("b", bias)], lr=0.01)
    assert opt.param_groups[0]["param_names"] == ["w", "b"]
    assert opt.param_groups[0]["params"][0] is w and opt.param_groups[0]["params"][1] is bias
    opt.step(make_grads([w, bias], 0))
    sd = opt.state_dict()
    assert sd["param_groups"][0]["param_names"] == ["w", "b"]
    tw, tb = torch.zeros(3, 2, requires_grad=True), torch.zeros(2, requires_grad=True)
    t = torch.optim.Adam([("w", tw), ("b", tb)], lr=0.01)
    assert set(sd["param_groups"][0]) == set(t.state_dict()["param_groups"][0])
    with pytest.raises(ValueError, match="names"):
        gf.optim.Adam([("w", w.copy()), bias.copy()])


@pytest.mark.parametrize("name, kwargs", TORCH_OPTIMIZERS, ids=[o[0] for o in TORCH_OPTIMIZERS])
def test_lr_edited_between_steps_takes_effect_like_torch(backend, torch, name, kwargs):
    params = make_params(dtype=np.float64)
    tparams = [torch.tensor(p, requires_grad=True) for p in params]
    opt = opt_class(name)(params, **kwargs)
    topt = getattr(torch.optim, name)(tparams, **kwargs)
    for step in range(6):
        if step == 3:  # after the optimizer has settled into its one-call-per-group fast path
            opt.param_groups[0]["lr"] = topt.param_groups[0]["lr"] = kwargs["lr"] * 0.1
        grads = make_grads(params, step)
        opt.step(grads)
        for t, g in zip(tparams, grads):
            t.grad = torch.from_numpy(g.copy())
        topt.step()
    for p, t in zip(params, tparams):
        np.testing.assert_allclose(p, t.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_lr_edit_equals_fresh_optimizer_with_new_lr(backend):
    """SGD without momentum has no state: after an lr edit it steps like a fresh SGD(lr=new)."""
    params = make_params()
    opt = gf.optim.SGD(params, lr=0.1)
    for step in range(2):
        opt.step(make_grads(params, step))
    fresh_params = copies(params)
    fresh = gf.optim.SGD(fresh_params, lr=0.025)
    opt.param_groups[0]["lr"] = 0.025
    for step in range(2, 4):
        grads = make_grads(params, step)
        opt.step(grads)
        fresh.step(grads)
    assert_bitwise(params, fresh_params)


def test_edited_invalid_hyperparameter_refused_at_step(backend):
    params = make_params()
    opt = gf.optim.Adam(params, lr=0.01)
    opt.step(make_grads(params, 0))
    opt.param_groups[0]["lr"] = -1.0
    before, sd = snapshot(params, state_arrays(opt, params)), opt.state_dict()
    with pytest.raises(ValueError, match="Invalid learning rate: -1.0"):
        opt.step(make_grads(params, 1))
    assert_unchanged(before, params, state_arrays(opt, params))
    assert opt.state_dict()["state"][0]["step"] == sd["state"][0]["step"] == 1


# ------------------------------------------------------------------------------------------------
# step(): gradients from Parameters, None, frozen parameters, closure
# ------------------------------------------------------------------------------------------------


def test_step_uses_parameter_grads(backend):
    arrays = make_params()
    params = [Parameter(a.copy()) for a in arrays]
    opt = gf.optim.Adam(params, lr=0.01)
    ref = gf.optim.Adam(arrays, lr=0.01)
    for step in range(3):
        grads = make_grads(arrays, step)
        for p, g in zip(params, grads):
            p.grad = g
        assert opt.step() is True
        ref.step(grads)
    assert_bitwise([p.data for p in params], arrays)


def test_step_without_grads_on_plain_arrays_is_a_type_error():
    params = make_params()
    opt = gf.optim.Adam(params)
    before = snapshot(params)
    with pytest.raises(TypeError, match=r"params\[0\] is an ndarray"):
        opt.step()
    # a mix: the plain array has no .grad either
    mixed = gf.optim.Adam([Parameter(np.ones(3, np.float32)), np.ones(3, np.float32)])
    with pytest.raises(TypeError, match=r"params\[1\]"):
        mixed.step()
    assert_unchanged(before, params)
    assert opt.state_dict()["state"] == {}


@pytest.mark.parametrize("count", [2, 4, 0])
def test_grads_length_mismatch_is_a_value_error(backend, count):
    params = make_params()  # 3 parameters
    opt = gf.optim.Adam(params)
    opt.step(make_grads(params, 0))
    before, sd = snapshot(params, state_arrays(opt, params)), opt.state_dict()
    grads = (make_grads(params, 1) * 2)[:count]
    with pytest.raises(ValueError, match=f"got {count} gradients for 3 parameters"):
        opt.step(grads)
    assert_unchanged(before, params, state_arrays(opt, params))
    assert_state_dicts_equal(opt.state_dict(), sd)


@pytest.mark.parametrize("name, kwargs", OPTIMIZERS, ids=OPT_IDS)
def test_none_gradient_skips_that_parameter(backend, name, kwargs):
    """A None gradient leaves the parameter and its state alone; when it comes back, its step
    count continues from where it was (like a separate optimizer over that parameter)."""
    kwargs = kc.per_parameter(name, kwargs)  # Lamb: no global clip across parameters
    params = make_params()
    alone = copies(params)
    opt = opt_class(name)(params, **kwargs)
    refs = [opt_class(name)([a], **kwargs) for a in alone]
    for step in range(4):
        grads = make_grads(params, step)
        if step in (0, 2):
            grads[1] = None
        held = params[1].copy()
        opt.step(grads)
        for ref, g in zip(refs, grads):
            if g is not None:
                ref.step([g])
        if grads[1] is None:
            np.testing.assert_array_equal(params[1], held)
            if step == 0 and not opt._eager_state:  # an eager state exists from construction, like torch's
                assert opt.state[params[1]] == {}
    if opt._group_step:  # the schedule (step count, averaging weights) is the group's: it advanced for params[1] too
        assert opt.param_groups[0]["k" if "k" in opt.param_groups[0] else "step"] == 4
        return
    assert_bitwise(params, alone)
    if "step" in opt.state[params[0]]:
        assert opt.state[params[0]]["step"] == 4 and opt.state[params[1]]["step"] == 2


def test_none_parameter_grad_is_skipped(backend):
    ps = [Parameter(a) for a in make_params()]
    held = ps[1].data.copy()
    grads = make_grads([p.data for p in ps], 0)
    ps[0].grad, ps[2].grad = grads[0], grads[2]
    opt = gf.optim.Adam(ps)
    assert opt.step() is True
    np.testing.assert_array_equal(ps[1].data, held)
    assert opt.state[ps[1]] == {} and opt.state[ps[0]]["step"] == 1


@pytest.mark.parametrize("explicit", [False, True], ids=["param.grad", "grads-list"])
def test_frozen_parameter_left_untouched(backend, explicit):
    arrays = make_params()
    ps = [Parameter(a.copy()) for a in arrays]
    ps[1].trainable = False
    frozen = Parameter(np.ones(4, np.float32), trainable=False)
    ps.append(frozen)
    grads = make_grads([p.data for p in ps], 0)
    for p, g in zip(ps, grads):
        p.grad = g
    held = snapshot([p.data for p in ps])
    opt = gf.optim.Adam(ps, lr=0.1)
    assert opt.step(grads if explicit else None) is True
    np.testing.assert_array_equal(ps[1].data, held[0][1])
    np.testing.assert_array_equal(frozen.data, held[0][3])
    assert opt.state[ps[1]] == {} and opt.state[frozen] == {}
    assert not np.array_equal(ps[0].data, held[0][0])


def test_single_array_gradient_for_a_single_parameter(backend):
    p, ref = make_params([(5,)]), make_params([(5,)])
    opt, ref_opt = gf.optim.Adam(p), gf.optim.Adam(ref)
    g = make_grads(p, 0)
    assert opt.step(g[0]) is True  # a bare ndarray, not a list
    ref_opt.step(g)
    assert_bitwise(p, ref)


def test_step_return_value_and_closure(backend):
    params = make_params()
    opt = gf.optim.SGD(params, lr=0.1)
    assert opt.step(make_grads(params, 0)) is True
    calls = []

    def closure():
        calls.append(1)
        return 1.25

    assert opt.step(make_grads(params, 1), closure=closure) == 1.25
    assert calls == [1]
    # with skip_nonfinite, a skipped step still returns the closure's loss
    sk = gf.optim.SGD(make_params(), lr=0.1, skip_nonfinite=True)
    bad = make_grads(params, 2)
    bad[0][0, 0] = np.nan
    assert sk.step(bad, closure=closure) == 1.25 and sk.last_step_skipped


# ------------------------------------------------------------------------------------------------
# zero_grad and ParameterArena
# ------------------------------------------------------------------------------------------------


def test_zero_grad_plain_parameters():
    ps = [Parameter(a) for a in make_params()]
    grads = make_grads([p.data for p in ps], 0)
    for p, g in zip(ps, grads):
        p.grad = g
    opt = gf.optim.SGD(ps + [np.zeros(2, np.float32)], lr=0.1)  # plain arrays have nothing to clear
    opt.zero_grad(set_to_none=False)
    for p, g in zip(ps, grads):
        assert p.grad is g and not g.any()  # zeroed in place, same array
    opt.zero_grad()  # set_to_none=True by default, like torch
    assert all(p.grad is None for p in ps)
    opt.zero_grad(set_to_none=False)  # nothing to zero: stays None
    assert all(p.grad is None for p in ps)


def _read_only_f32():
    a = np.arange(3, dtype=np.float32)
    a.flags.writeable = False
    return a


PARAMETER_INPUTS = [
    # what, make the input, expected dtype with copy=True, whether the very same array is kept, the
    # error without copy=True (None: shared as it is, or converted: a list has no memory to share)
    ("float32 array", lambda: np.arange(3, dtype=np.float32), np.float32, True, None),
    ("float64 array", lambda: np.arange(3, dtype=np.float64), np.float64, True, None),
    ("list of ints", lambda: [0, 1, 2], np.float32, False, None),
    ("float16 array", lambda: np.arange(3, dtype=np.float16), np.float32, False, TypeError),
    ("non-contiguous", lambda: np.arange(6, dtype=np.float32)[::2], np.float32, False, ValueError),
    ("big-endian float64", lambda: np.arange(3, dtype=">f8"), np.float64, False, TypeError),
    ("big-endian float32", lambda: np.arange(3, dtype=">f4"), np.float32, False, TypeError),
    ("read-only", _read_only_f32, np.float32, False, ValueError),
]


@pytest.mark.parametrize(
    "what, make, dtype, kept, error", PARAMETER_INPUTS, ids=[getattr(c, "values", c)[0] for c in PARAMETER_INPUTS]
)
def test_parameter_data_is_a_native_contiguous_writeable_float_array(what, make, dtype, kept, error):
    """Memory that cannot be shared is refused (the updates would be lost on a silent copy);
    copy=True asks for the copy."""
    given = make()
    if error is not None:
        with pytest.raises(error, match="copy=True"):
            Parameter(given)
    p = Parameter(given) if error is None else Parameter(given, copy=True)
    assert p.data.dtype == dtype and p.data.dtype.isnative
    assert p.data.flags.c_contiguous and p.data.flags.writeable
    assert (p.data is given) == kept
    np.testing.assert_array_equal(p.data, np.asarray(given, dtype=np.float64))
    assert p.grad is None and p.trainable and p.shape == p.data.shape and p.size == p.data.size


def test_parameter_array_protocol_and_repr():
    p = Parameter(np.arange(4, dtype=np.float32).reshape(2, 2), name="w", trainable=False)
    assert np.asarray(p) is p.data
    copied = np.array(p, copy=True)
    assert not np.shares_memory(copied, p.data)
    assert np.asarray(p, dtype=np.float64).dtype == np.float64
    assert repr(p) == "Parameter('w', shape=(2, 2), dtype=float32, trainable=False)"
    assert repr(Parameter(np.zeros(3, np.float64))) == "Parameter(shape=(3,), dtype=float64)"
    arena = ParameterArena([(2,), (3,)], dtype=np.float64)
    assert repr(arena) == "ParameterArena(2 parameters, 5 elements, float64)"


def test_group_params_must_be_iterable():
    with pytest.raises(TypeError, match=r"param_group\['params'\] must be an iterable"):
        gf.optim.Adam([{"params": 3}])


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad_arena_parameters_zeroed_in_place(set_to_none):
    arena = ParameterArena([(3, 4), (5,), (2, 3)])
    opt = gf.optim.Adam(arena.parameters)
    arena.grad[:] = 1.0
    views = [p.grad for p in arena]
    arena.parameters[1].grad = np.ones(5, np.float32)  # rebound by the user: zero_grad restores the view
    opt.zero_grad(set_to_none=set_to_none)
    assert not arena.grad.any()
    for p, v in zip(arena, views):
        assert p.grad is not None and np.shares_memory(p.grad, arena.grad)
        assert p.grad.ctypes.data == v.ctypes.data and p.grad.shape == v.shape
    arena.grad[:] = 2.0
    arena.zero_grad()
    assert not arena.grad.any() and all(np.shares_memory(p.grad, arena.grad) for p in arena)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_arena_parameters_are_contiguous_views_in_order(dtype):
    given = Parameter(np.arange(6, dtype=np.float64).reshape(2, 3))
    original = given.data
    item_array = np.full((4,), 7, np.int64)
    arena = ParameterArena([(3, 4), given, item_array, 5], dtype=dtype)
    assert len(arena) == 4 and arena.size == 12 + 6 + 4 + 5
    assert arena.data.dtype == arena.grad.dtype == dtype and arena.data.ndim == 1
    assert arena.data.ctypes.data % 64 == 0 and arena.grad.ctypes.data % 64 == 0
    assert not np.shares_memory(arena.data, arena.grad)
    offset = 0
    for p, shape in zip(arena, [(3, 4), (2, 3), (4,), (5,)]):
        assert p.shape == shape and p.dtype == dtype
        for view, buf in ((p.data, arena.data), (p.grad, arena.grad)):
            assert view.flags.c_contiguous and np.shares_memory(view, buf)
            assert view.ctypes.data == buf.ctypes.data + offset * buf.itemsize
        offset += p.size
    assert arena.parameters[1] is given  # adopted, not wrapped
    np.testing.assert_array_equal(given.data, original)  # values copied into the arena...
    assert not np.shares_memory(given.data, original)  # ...and .data rebound to the arena view
    np.testing.assert_array_equal(arena.parameters[2].data, 7)
    assert not arena.parameters[0].data.any()
    assert not arena.grad.any()


def test_arena_rejects_bad_items():
    p = Parameter(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="more than once"):
        ParameterArena([p, p])
    with pytest.raises(TypeError, match="float32 or float64"):
        ParameterArena([(2,)], dtype=np.int32)
    with pytest.raises(TypeError, match=r"items\[1\]"):
        ParameterArena([(2,), "x"])


@pytest.mark.parametrize("name, kwargs", OPTIMIZERS, ids=OPT_IDS)
def test_arena_steps_bitwise_like_separate_arrays(backend, name, kwargs):
    arrays = make_params([(33, 17), (5,), (64,), (3, 3, 3)])
    arena = ParameterArena([Parameter(a.copy()) for a in arrays])
    opt = opt_class(name)(arena.parameters, **kwargs)
    ref = opt_class(name)(arrays, **kwargs)
    for step in range(4):
        grads = make_grads(arrays, step)
        for p, g in zip(arena, grads):
            p.grad[...] = g
        opt.step()
        ref.step(grads)
    assert_bitwise([p.data for p in arena], arrays)
    for p in arena:
        assert np.shares_memory(p.data, arena.data)  # still views: stepped in place


ARENA_DEVIATIONS = ["gradient replaced by a separate array", "gradient set to None", "parameter frozen"]


@pytest.mark.parametrize("deviation", ARENA_DEVIATIONS)
def test_arena_fast_path_follows_replaced_gradients(backend, deviation):
    """The arena path steps one flat view per run only while every .grad is its arena view; after
    parameter 1 deviates at step 3, the optimizer must use what is really there."""
    arrays = make_params([(33, 17), (5,), (64,)])
    arena = ParameterArena([Parameter(a.copy()) for a in arrays])
    p1 = arena.parameters[1]
    opt = gf.optim.Adam(arena.parameters, lr=0.01, weight_decay=0.1)
    ref = gf.optim.Adam(arrays, lr=0.01, weight_decay=0.1)
    replacement = None
    for step in range(6):
        grads = make_grads(arrays, step)
        for p, g in zip(arena, grads):
            p._arena_grad[...] = g
        if step == 3:
            if deviation == "gradient replaced by a separate array":
                replacement = p1.grad = grads[1].copy()  # holds the step-3 gradient from now on
            elif deviation == "gradient set to None":
                p1.grad = None
            else:
                p1.trainable = False
        opt.step()
        if step >= 3:
            grads[1] = replacement  # None for the other two deviations
        ref.step(grads)
    assert_bitwise([p.data for p in arena], arrays)
    assert [opt.state[p]["step"] for p in arena] == [ref.state[a]["step"] for a in arrays]


def test_arena_fast_path_follows_rebound_data(backend):
    arrays = make_params([(8,), (9,)])
    arena = ParameterArena([Parameter(a.copy()) for a in arrays])
    opt = gf.optim.SGD(arena.parameters, lr=0.1, momentum=0.9)
    grads = make_grads(arrays, 0)
    for p, g in zip(arena, grads):
        p.grad[...] = g
    opt.step()
    moved = arena.parameters[0].data.copy()
    arena.parameters[0].data = moved  # no longer the arena's memory: must be stepped where it now is
    opt.step()
    ref = gf.optim.SGD(arrays, lr=0.1, momentum=0.9)
    ref.step(grads)
    ref.step(grads)
    assert_bitwise([moved, arena.parameters[1].data], arrays)


def test_arena_group_spanning_two_arenas_and_a_gap(backend):
    """Runs split where parameters stop being neighbours: a second arena, or a skipped parameter."""
    arrays = make_params([(7,), (9,), (11,), (13,)])
    a1 = ParameterArena([Parameter(a.copy()) for a in arrays[:3]])
    a2 = ParameterArena([Parameter(arrays[3].copy())])
    params = [a1.parameters[0], a1.parameters[2], a2.parameters[0]]  # a1's middle one is left out
    opt = RICHEST(params, **kc.all_states(RICHEST))
    ref_arrays = [arrays[0].copy(), arrays[2].copy(), arrays[3].copy()]
    ref = RICHEST(ref_arrays, **kc.all_states(RICHEST))
    for step in range(4):
        grads = make_grads(ref_arrays, step)
        for p, g in zip(params, grads):
            p.grad[...] = g
        opt.step()
        ref.step(grads)
    assert len(opt._groups[0].runs.bounds) == 3
    assert_bitwise([p.data for p in params], ref_arrays)
    np.testing.assert_array_equal(a1.parameters[1].data, arrays[1])  # the one left out is untouched


# ------------------------------------------------------------------------------------------------
# state_dict / load_state_dict
# ------------------------------------------------------------------------------------------------

STATE_KEY_CASES = [(cls.__name__, kc.all_states(cls)) for cls in CLASSES if cls._row.torch is not None]


@pytest.mark.parametrize("name, kwargs", STATE_KEY_CASES, ids=[c[0] for c in STATE_KEY_CASES])
def test_state_dict_keys_match_torch(torch, name, kwargs):
    params = make_params([(3,), (2, 2)])
    tparams = [torch.tensor(p, requires_grad=True) for p in params]
    opt = opt_class(name)(params, **kwargs)
    topt = getattr(torch.optim, name)(tparams, **kwargs)
    assert set(opt.state_dict()["param_groups"][0]) == set(topt.state_dict()["param_groups"][0])
    for step in range(2):
        grads = make_grads(params, step)
        opt.step(grads)
        for t, g in zip(tparams, grads):
            t.grad = torch.from_numpy(g.copy())
        topt.step()
    ours, theirs = opt.state_dict(), topt.state_dict()
    assert set(ours) == set(theirs) == {"state", "param_groups"}
    assert set(ours["state"]) == set(theirs["state"]) == {0, 1}
    for i in (0, 1):
        assert set(ours["state"][i]) == set(theirs["state"][i])
    assert [set(g) for g in ours["param_groups"]] == [set(g) for g in theirs["param_groups"]]
    assert [g["params"] for g in ours["param_groups"]] == [g["params"] for g in theirs["param_groups"]]


def test_state_dict_is_a_snapshot(backend):
    params = make_params()
    opt = gf.optim.Adam(params, lr=0.01)
    opt.step(make_grads(params, 0))
    sd = opt.state_dict()
    kept = copy.deepcopy(sd)
    for key in ("exp_avg", "exp_avg_sq"):
        assert not np.shares_memory(sd["state"][0][key], opt.state[params[0]][key])
    opt.step(make_grads(params, 1))
    opt.param_groups[0]["lr"] = 0.5
    assert_state_dicts_equal(sd, kept)  # later steps and edits do not reach the snapshot
    sd["state"][0]["exp_avg"][...] = 123.0  # and editing the snapshot does not reach the optimizer
    sd["param_groups"][0]["betas"] = (0.1, 0.2)
    assert not (opt.state[params[0]]["exp_avg"] == 123.0).any()
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)
    assert opt.state_dict()["state"][0]["step"] == 2


@pytest.mark.parametrize("name, kwargs", OPTIMIZERS, ids=OPT_IDS)
def test_state_dict_round_trip_is_bitwise(backend, name, kwargs):
    """Save at step k, load into a fresh optimizer over copies of the parameters, continue: the
    same bits as the uninterrupted run (two groups, and per-parameter step counts that differ)."""
    cls = opt_class(name)
    params = make_params()
    opt = cls(two_groups(params, kwargs), **kwargs)
    k, n = 3, 7
    for step in range(k):
        grads = make_grads(params, step)
        if step == 0:
            grads[1] = None  # parameter 1 is one step behind the others
        opt.step(grads)
    sd = opt.state_dict()
    resumed_params = copies(params)
    other = {**kwargs, "lr": kwargs["lr"] * 3}  # the loaded groups must override these
    resumed = cls(two_groups(resumed_params, other), **other)
    resumed.load_state_dict(sd)
    assert_state_dicts_equal(resumed.state_dict(), sd)
    for step in range(k, n):
        grads = make_grads(params, step)
        opt.step(grads)
        resumed.step(grads)
    assert_bitwise(resumed_params, params)
    assert_state_dicts_equal(resumed.state_dict(), opt.state_dict())


@pytest.mark.parametrize("name, kwargs", TORCH_OPTIMIZERS, ids=[o[0] for o in TORCH_OPTIMIZERS])
def test_load_torch_state_dict_and_continue_like_torch(backend, torch, name, kwargs):
    params = make_params(dtype=np.float64)
    tparams = [torch.tensor(p, requires_grad=True) for p in params]
    topt = getattr(torch.optim, name)(tparams, **kwargs)

    def torch_step(grads):
        for t, g in zip(tparams, grads):
            t.grad = torch.from_numpy(g.copy())
        topt.step()

    for step in range(3):
        torch_step(make_grads(params, step))
    ours = [t.detach().numpy().copy() for t in tparams]
    opt = opt_class(name)(ours, **kwargs)
    opt.load_state_dict(topt.state_dict())
    assert set(opt.state[ours[0]]) == set(topt.state[tparams[0]])
    if "step" in topt.state[tparams[0]]:  # where torch keeps a step counter
        assert opt.state[ours[0]]["step"] == 3
    for step in range(3, 6):
        grads = make_grads(params, step)
        opt.step(grads)
        torch_step(grads)
    for p, t in zip(ours, tparams):
        np.testing.assert_allclose(p, t.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name, kwargs", OPTIMIZERS, ids=OPT_IDS)
def test_loading_a_fresh_state_dict_resets_the_optimizer(backend, name, kwargs):
    """A trained optimizer that loads an untrained one's state_dict steps like a new optimizer."""
    cls = opt_class(name)
    params = make_params()
    opt = cls(params, **kwargs)
    for step in range(3):
        opt.step(make_grads(params, step))
    opt.load_state_dict(cls(make_params(seed=9), **kwargs).state_dict())
    fresh_params = copies(params)
    fresh = cls(fresh_params, **kwargs)
    assert_state_dicts_equal(opt.state_dict(), fresh.state_dict())
    for step in range(3, 6):
        grads = make_grads(params, step)
        opt.step(grads)
        fresh.step(grads)
    assert_bitwise(params, fresh_params)


def _corrupt_group_count(sd):
    sd["param_groups"].append(copy.deepcopy(sd["param_groups"][0]))


def _corrupt_group_size(sd):
    sd["param_groups"][0]["params"] = sd["param_groups"][0]["params"][:-1]


def _corrupt_state_shape(sd):
    sd["state"][1]["exp_avg"] = np.zeros((8,), np.float32)


def _corrupt_unknown_key(sd):
    sd["state"][2]["momentum"] = np.zeros((2, 2, 3), np.float32)


def _corrupt_hyperparameter(sd):
    sd["param_groups"][0]["lr"] = -1.0


LOAD_ERRORS = [
    (_corrupt_group_count, "different number of parameter groups"),
    (_corrupt_group_size, "doesn't match the size"),
    (_corrupt_state_shape, r"exp_avg has shape \(8,\)"),
    (_corrupt_unknown_key, "unknown key 'momentum'"),
    (_corrupt_hyperparameter, "Invalid learning rate"),
]


@pytest.mark.parametrize("corrupt, message", LOAD_ERRORS, ids=[c[0].__name__[9:] for c in LOAD_ERRORS])
def test_load_state_dict_errors_change_nothing(backend, corrupt, message):
    src_params = make_params()
    src = gf.optim.Adam(src_params, lr=0.05)
    for step in range(3):
        src.step(make_grads(src_params, step))
    bad = src.state_dict()
    corrupt(bad)

    params = make_params(seed=5)
    twin_params = copies(params)
    opt, twin = gf.optim.Adam(params, lr=0.01), gf.optim.Adam(twin_params, lr=0.01)
    opt.step(make_grads(params, 0))
    twin.step(make_grads(params, 0))

    before, sd = snapshot(params, state_arrays(opt, params)), opt.state_dict()
    groups = copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups])
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(bad)
    assert_unchanged(before, params, state_arrays(opt, params))
    assert_state_dicts_equal(opt.state_dict(), sd)
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == groups
    # and it continues exactly like an optimizer that never saw the failed load
    for step in range(1, 3):
        grads = make_grads(params, step)
        opt.step(grads)
        twin.step(grads)
    assert_bitwise(params, twin_params)


# ------------------------------------------------------------------------------------------------
# Constructor validation
# ------------------------------------------------------------------------------------------------

# Every hyperparameter value a class refuses, from its kernel table row (tests/kernel_cases.py:
# bad_hyperparameters): Range probes with torch's message (Scalar.torch), wrong types, broken joint
# rules (Rule.torch), the class's own numbers. message None: torch's (checked against torch below).
INVALID_HYPERPARAMETERS = [
    (cls.__name__, kwargs, exc, message) for cls in CLASSES for _, kwargs, exc, message in kc.bad_hyperparameters(cls)
]
INVALID_IDS = [f"{cls.__name__}-{case}" for cls in CLASSES for case, *_ in kc.bad_hyperparameters(cls)]


@pytest.mark.parametrize("name, kwargs, exc, message", INVALID_HYPERPARAMETERS, ids=INVALID_IDS)
def test_invalid_hyperparameters_raise_torchs_message(name, kwargs, exc, message):
    with pytest.raises(exc) as info:
        opt_class(name)([np.zeros(2, np.float32)], **kwargs)
    assert message is None or str(info.value) == message
    # and in a group added later
    opt = opt_class(name)([np.zeros(2, np.float32)])
    with pytest.raises(exc) as info:
        opt.add_param_group({"params": [np.zeros(2, np.float32)], **kwargs})
    assert message is None or str(info.value) == message
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("name, kwargs, exc, message", INVALID_HYPERPARAMETERS, ids=INVALID_IDS)
def test_invalid_hyperparameter_messages_are_torchs(torch, name, kwargs, exc, message):
    """Where torch refuses the value too, with the same words as ours. (torch lets some through: inf,
    or NaN where its check is `if not 0.0 <= x`; ours refuse them, as the kernels would: see
    test_hyperparameter_refused_in_second_group_steps_no_group.)"""
    cls = opt_class(name)
    if cls._row.torch is None or exc is not ValueError:
        pytest.skip("no torch counterpart" if cls._row.torch is None else "torch does not check types")
    try:
        kc.torch_class(cls, torch)([torch.zeros(2, requires_grad=True)], **kwargs)
    except ValueError as err:
        with pytest.raises(ValueError) as ours:
            cls([np.zeros(2, np.float32)], **kwargs)
        assert str(ours.value) == str(err)
        if message is not None:
            assert str(err) == message


def _read_only(a):
    b = a.copy()
    b.flags.writeable = False
    return b


BAD_PARAMS = [
    ("empty list", lambda a: [], ValueError, "empty parameter list"),
    ("single ndarray", lambda a: a, TypeError, "should be an iterable"),
    ("single Parameter", lambda a: Parameter(a), TypeError, "should be an iterable"),
    ("set", lambda a: [{"params": {1}}], TypeError, "ordered collections"),
    ("same array twice", lambda a: [a, a], ValueError, "more than once"),
    (
        "same array in two groups",
        lambda a: [{"params": [a]}, {"params": [a]}],
        ValueError,
        "more than one parameter group",
    ),
    ("same Parameter twice", lambda a: [Parameter(a)] * 2, ValueError, "more than once"),
    ("int array", lambda a: [np.zeros(3, np.int32)], TypeError, "dtype int32"),
    ("big-endian", lambda a: [np.zeros(3, ">f4")], TypeError, "expected float32 or float64"),
    ("non-contiguous", lambda a: [np.zeros((3, 4), np.float32)[:, ::2]], ValueError, "not C-contiguous"),
    ("read-only", lambda a: [_read_only(a)], ValueError, "read-only"),
    ("list of lists", lambda a: [[1.0, 2.0]], TypeError, "numpy arrays or gradfuse Parameters"),
]


@pytest.mark.parametrize("what, make, exc, message", BAD_PARAMS, ids=[b[0] for b in BAD_PARAMS])
def test_bad_params_at_construction(what, make, exc, message):
    a = np.zeros(3, np.float32)
    with pytest.raises(exc, match=message):
        gf.optim.Adam(make(a))


@pytest.mark.parametrize("where", ["constructor", "add_param_group"])
def test_a_set_of_params_in_a_group_is_a_type_error(where):
    """torch refuses a set in a group (its order changes between runs); so does gradfuse, with
    torch's message. (ndarrays are unhashable, so the set holds Parameters.)"""
    group = {"params": {Parameter(np.zeros(3, np.float32))}}
    with pytest.raises(TypeError, match="ordered collections"):
        if where == "constructor":
            gf.optim.Adam([group])
        else:
            gf.optim.Adam([np.zeros(2, np.float32)]).add_param_group(group)


# torch's flags the classes take (their signatures) but cannot honour
UNSUPPORTED_FLAGS = [
    (cls.__name__, flag)
    for cls in CLASSES
    for flag in ("capturable", "differentiable")
    if flag in inspect.signature(cls).parameters
]


@pytest.mark.parametrize("name, flag", UNSUPPORTED_FLAGS, ids=[f"{n}-{f}" for n, f in UNSUPPORTED_FLAGS])
def test_capturable_and_differentiable_refused(name, flag):
    with pytest.raises(ValueError, match=f"{flag}=True is not supported"):
        opt_class(name)([np.zeros(3, np.float32)], **{flag: True})
    opt_class(name)([np.zeros(3, np.float32)], **{flag: False})  # False is fine


# ------------------------------------------------------------------------------------------------
# Bad inputs to step: a clear error naming the argument, and nothing mutated
# ------------------------------------------------------------------------------------------------
# Each case builds the bad gradient for the parameter p (a view into `host`, so that a gradient
# can overlap it) and may spoil p itself. It returns the gradient and the argument to be named.


def _readonly_param(p, host):
    p.flags.writeable = False
    return np.ones(p.shape, p.dtype), "params"


BAD_STEP_INPUTS = {
    "float64 grad": (lambda p, host: (p.astype(np.float64), "grads"), TypeError, "dtype float64"),
    "int grad": (lambda p, host: (np.ones(p.shape, np.int32), "grads"), TypeError, "dtype int32"),
    "big-endian grad": (lambda p, host: (p.astype(">f4"), "grads"), TypeError, "big-endian"),
    "non-contiguous grad": (
        lambda p, host: (np.ones((4, 12), p.dtype)[:, ::2], "grads"),
        ValueError,
        "not C-contiguous",
    ),
    "Fortran grad": (
        lambda p, host: (np.asfortranarray(np.ones(p.shape, p.dtype)), "grads"),
        ValueError,
        "not C-contiguous",
    ),
    "wrong shape grad": (lambda p, host: (np.ones((6, 4), p.dtype), "grads"), ValueError, r"has shape \(6, 4\)"),
    "grad is the param": (lambda p, host: (p, "grads"), ValueError, "share"),
    "grad overlaps param": (lambda p, host: (host[12:36].reshape(4, 6), "grads"), ValueError, "share"),
    "list grad": (lambda p, host: (p.tolist(), "grads"), TypeError, "must be a numpy.ndarray, got list"),
    "read-only param": (_readonly_param, ValueError, "read-only"),
}

# With skip_nonfinite=True and a single kernel call, the finiteness pre-pass (ops.all_finite) sees
# these first and names its own argument ("arrays[0]") instead of the step's ("grads[1]").
_NAMED_BY_ALL_FINITE = {"int grad", "big-endian grad", "non-contiguous grad", "Fortran grad", "list grad"}


def _bad_step_cases():
    for case in BAD_STEP_INPUTS:
        for layout in ("one group", "two groups"):
            for skip in (False, True):
                yield pytest.param(case, layout, skip, id=f"{case}-{layout}-{'skip_nonfinite' if skip else 'plain'}")


@pytest.mark.parametrize("first_step", [True, False], ids=["first-step", "later-step"])
@pytest.mark.parametrize("case, layout, skip", list(_bad_step_cases()))
def test_bad_step_input_names_argument_and_mutates_nothing(backend, case, layout, skip, first_step):
    build, exc, message = BAD_STEP_INPUTS[case]
    host = np.zeros(48, np.float32)
    p0 = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    p1 = host[:24].reshape(4, 6)
    p1[...] = np.random.default_rng(1).standard_normal((4, 6))
    params = [p0, p1]
    spec = params if layout == "one group" else [{"params": [p0]}, {"params": [p1], "lr": 0.05}]
    opt = gf.optim.Adam(spec, lr=0.1, amsgrad=True, skip_nonfinite=skip)
    if not first_step:
        opt.step(make_grads(params, 0))
    sd = opt.state_dict()
    before = snapshot(params, state_arrays(opt, params))
    bad, argument = build(p1, host)
    with pytest.raises(exc) as info:
        opt.step([np.ones((4, 6), np.float32), bad])
    # nothing mutated: parameters, state arrays, scalar state (checked first: the xfail cases
    # above fail only on the message)
    assert_unchanged(before, params, state_arrays(opt, params))
    assert_state_dicts_equal(opt.state_dict(), sd)
    if first_step:
        assert opt.state_dict()["state"] == {}
    assert not opt.last_step_skipped and opt.skipped_steps == 0
    text = str(info.value)
    assert re.search(message, text), text
    # the argument is named: grads[1] / params[1] globally, or [0] within param group 1
    if layout == "one group":
        assert f"{argument}[1]" in text, text
    else:
        assert f"{argument}[1]" in text or ("param group 1" in text and f"{argument}[0]" in text), text


@pytest.mark.parametrize("name, kwargs", OPTIMIZERS, ids=OPT_IDS)
@pytest.mark.parametrize("first_step", [True, False], ids=["first-step", "later-step"])
def test_bad_grad_in_second_group_steps_no_group(backend, name, kwargs, first_step):
    """All or nothing, for every optimizer: a bad gradient in group 1 leaves group 0 unstepped,
    and the next good step is exactly the step the failed one would have been."""
    cls = opt_class(name)
    params = make_params()
    twin_params = copies(params)
    opt = cls(two_groups(params, kwargs), **kwargs)
    twin = cls(two_groups(twin_params, kwargs), **kwargs)
    if not first_step:
        opt.step(make_grads(params, 0))
        twin.step(make_grads(params, 0))
    sd = opt.state_dict()
    before = snapshot(params, state_arrays(opt, params))
    grads = make_grads(params, 1)
    with pytest.raises(ValueError, match=r"param group 1.*grads\[0\] has shape"):
        opt.step(grads[:-1] + [np.ones((2, 2), np.float32)])
    assert_unchanged(before, params, state_arrays(opt, params))
    assert_state_dicts_equal(opt.state_dict(), sd)
    opt.step(grads)
    twin.step(grads)
    assert_bitwise(params, twin_params)
    assert_state_dicts_equal(opt.state_dict(), twin.state_dict())


# A bad value edited into the second group (a schedule gone wrong; torch's checks let some of these
# through, the kernels would not): step() refuses it before any group is stepped.
@pytest.mark.parametrize("name, kwargs, exc, message", INVALID_HYPERPARAMETERS, ids=INVALID_IDS)
def test_hyperparameter_refused_in_second_group_steps_no_group(backend, name, kwargs, exc, message):
    params = make_params()
    opt = opt_class(name)([{"params": params[:2]}, {"params": params[2:]}], **dict(OPTIMIZERS)[name])
    opt.step(make_grads(params, 0))
    opt.param_groups[1].update(kwargs)
    sd, before = opt.state_dict(), snapshot(params, state_arrays(opt, params))
    with pytest.raises(exc) as info:
        opt.step(make_grads(params, 1))
    assert message is None or str(info.value) == message
    assert_unchanged(before, params, state_arrays(opt, params))
    assert_state_dicts_equal(opt.state_dict(), sd)


def test_bad_grad_in_second_dtype_bucket_steps_nothing(backend):
    """One group, float32 and float64 parameters (two kernel calls): a bad float64 gradient stops
    the float32 call too."""
    a, b = make_params([(5,)]), make_params([(6,)], dtype=np.float64)
    params = a + b
    opt = gf.optim.Adam(params, lr=0.1)
    opt.step(make_grads(params, 0))
    sd, before = opt.state_dict(), snapshot(params, state_arrays(opt, params))
    grads = make_grads(params, 1)
    with pytest.raises(TypeError, match=r"grads\[0\] has dtype float32 but params\[0\] is float64"):
        opt.step([grads[0], grads[1].astype(np.float32)])
    assert_unchanged(before, params, state_arrays(opt, params))
    assert_state_dicts_equal(opt.state_dict(), sd)


@pytest.mark.parametrize(
    "scale, exc",
    [(0.0, ValueError), (-2.0, ValueError), (float("nan"), ValueError), (float("inf"), ValueError), ("x", TypeError)],
)
@pytest.mark.parametrize("skip", [False, True], ids=["plain", "skip_nonfinite"])
def test_bad_grad_scale_mutates_nothing(backend, scale, exc, skip):
    params = make_params()
    opt = gf.optim.Adam(params, skip_nonfinite=skip)
    opt.step(make_grads(params, 0))
    sd, before = opt.state_dict(), snapshot(params, state_arrays(opt, params))
    with pytest.raises(exc, match="grad_scale"):
        opt.step(make_grads(params, 1), grad_scale=scale)
    assert_unchanged(before, params, state_arrays(opt, params))
    assert_state_dicts_equal(opt.state_dict(), sd)


# ------------------------------------------------------------------------------------------------
# skip_nonfinite and grad_scale
# ------------------------------------------------------------------------------------------------


def _mixed_two_groups(seed=0):
    """group 0: a float32 and a float64 parameter; group 1: a float32 parameter."""
    a = make_params([(4, 5)], np.float32, seed)[0]
    b = make_params([(7,)], np.float64, seed + 1)[0]
    c = make_params([(3, 3)], np.float32, seed + 2)[0]
    return [a, b, c]


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", [0, 1, 2], ids=["group0-float32", "group0-float64", "group1-float32"])
def test_skip_nonfinite_skips_the_whole_step(backend, where, bad_value):
    params = _mixed_two_groups()
    twin_params = copies(params)

    def build(ps):
        return gf.optim.Adam([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.05}], lr=0.01, skip_nonfinite=True)

    opt, twin = build(params), build(twin_params)
    g0 = make_grads(params, 0)
    assert opt.step(g0) is True and twin.step(g0) is True
    assert not opt.last_step_skipped
    sd, before = opt.state_dict(), snapshot(params, state_arrays(opt, params))
    bad = make_grads(params, 1)
    bad[where].flat[3] = bad_value
    assert opt.step(bad) is False
    assert opt.last_step_skipped and opt.skipped_steps == 1
    assert_unchanged(before, params, state_arrays(opt, params))
    assert_state_dicts_equal(opt.state_dict(), sd)
    assert opt.step(bad) is False and opt.skipped_steps == 2
    # the next finite step proceeds as if the bad ones never happened
    for step in (2, 3):
        g = make_grads(params, step)
        assert opt.step(g) is True and twin.step(g) is True
    assert not opt.last_step_skipped and opt.skipped_steps == 2
    assert_bitwise(params, twin_params)
    assert_state_dicts_equal(opt.state_dict(), twin.state_dict())


def test_skip_nonfinite_on_first_step_keeps_state_empty(backend):
    params = _mixed_two_groups()
    opt = RICHEST(params, **kc.all_states(RICHEST), skip_nonfinite=True)
    before = snapshot(params)
    bad = make_grads(params, 0)
    bad[1][0] = np.inf
    assert opt.step(bad) is False
    assert opt.state_dict()["state"] == {} and len(opt.state) == 0
    assert_unchanged(before, params)
    twin_params = copies(params)
    twin = RICHEST(twin_params, **kc.all_states(RICHEST))
    g = make_grads(params, 1)
    assert opt.step(g) is True
    twin.step(g)
    assert_bitwise(params, twin_params)


def test_skip_nonfinite_with_grad_scale_checks_unscaled_gradients(backend):
    """A huge gradient that is finite after unscaling is not skipped; an overflow to inf is."""
    params = make_params([(8,)], np.float32)
    opt = gf.optim.SGD(params, lr=0.1, skip_nonfinite=True)
    g = np.full(8, 1e30, np.float32)
    assert opt.step([g], grad_scale=1e20) is True
    g[0] = np.inf
    assert opt.step([g], grad_scale=1e20) is False and opt.skipped_steps == 1


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the NumPy twin's overflow/NaN notes
def test_skip_nonfinite_with_tiny_grad_scale_overflow_is_skipped(backend):
    """1e30 / 1e-20 overflows float32: the unscaled gradient is inf, so the step is skipped."""
    params = make_params([(8,)], np.float32)
    before = snapshot(params)
    opt = gf.optim.SGD(params, lr=0.1, skip_nonfinite=True)
    assert opt.step([np.full(8, 1e30, np.float32)], grad_scale=1e-20) is False
    assert_unchanged(before, params)


def test_skip_nonfinite_ignores_frozen_and_missing_gradients(backend):
    """Only the gradients that would be applied are checked: a frozen parameter's NaN .grad does
    not skip the step."""
    live, frozen = Parameter(np.ones(3, np.float32)), Parameter(np.ones(3, np.float32), trainable=False)
    live.grad, frozen.grad = np.full(3, 0.5, np.float32), np.full(3, np.nan, np.float32)
    opt = gf.optim.Adam([live, frozen], skip_nonfinite=True)
    assert opt.step() is True and not opt.last_step_skipped
    assert (live.data != 1).all() and (frozen.data == 1).all()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the NumPy twin's overflow/NaN notes
def test_without_skip_nonfinite_nan_propagates_like_torch(backend, torch):
    params = make_params(dtype=np.float64)
    tparams = [torch.tensor(p, requires_grad=True) for p in params]
    opt, topt = gf.optim.Adam(params, lr=0.01), torch.optim.Adam(tparams, lr=0.01)
    for step in range(3):
        grads = make_grads(params, step)
        if step == 1:
            grads[0][1, 2] = np.nan
            grads[2].flat[0] = np.inf
        assert opt.step(grads) is True
        for t, g in zip(tparams, grads):
            t.grad = torch.from_numpy(g.copy())
        topt.step()
    assert not opt.last_step_skipped and opt.skipped_steps == 0
    assert np.isnan(params[0][1, 2])
    for p, t in zip(params, tparams):
        expected = t.detach().numpy()
        np.testing.assert_array_equal(np.isnan(p), np.isnan(expected))
        np.testing.assert_allclose(p, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name, kwargs", OPTIMIZERS, ids=OPT_IDS)
def test_grad_scale_equals_dividing_the_gradients(backend, name, kwargs):
    kwargs = kc.per_parameter(name, kwargs)  # Lamb: no global clip across parameters
    params = make_params()
    twin_params = copies(params)
    opt, twin = opt_class(name)(params, **kwargs), opt_class(name)(twin_params, **kwargs)
    for step, scale in enumerate([1024.0, 3.0, 0.5, 65536.0]):
        grads = [g * np.float32(scale) for g in make_grads(params, step)]
        assert opt.step(grads, grad_scale=scale) is True
        twin.step([g / scale for g in grads])
    assert_bitwise(params, twin_params)


# ------------------------------------------------------------------------------------------------
# Mixed dtypes, opt.state, repr
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, kwargs", OPTIMIZERS, ids=OPT_IDS)
def test_mixed_float32_float64_group_matches_per_dtype_optimizers(backend, name, kwargs):
    kwargs = kc.per_parameter(name, kwargs)  # Lamb: no global clip across parameters
    f32 = make_params([(4, 5), (6,)], np.float32, seed=0)
    f64 = make_params([(3,), (2, 5)], np.float64, seed=1)
    params = [f32[0], f64[0], f32[1], f64[1]]  # interleaved in one group
    ref32, ref64 = copies(f32), copies(f64)
    opt = opt_class(name)(params, **kwargs)
    o32, o64 = opt_class(name)(ref32, **kwargs), opt_class(name)(ref64, **kwargs)
    for step in range(4):
        grads = make_grads(params, step)
        opt.step(grads)
        o32.step([grads[0], grads[2]])
        o64.step([grads[1], grads[3]])
    assert_bitwise(params, [ref32[0], ref64[0], ref32[1], ref64[1]])
    for p in params:
        for value in opt.state[p].values():
            if isinstance(value, np.ndarray):
                assert value.dtype == p.dtype and value.shape == p.shape


def test_opt_state_keys(backend):
    arr = np.ones(3, np.float32)
    par = Parameter(np.ones(4, np.float32))
    opt = gf.optim.Adam([arr, par])
    assert opt.state[arr] == {} and opt.state[par] == {} and len(opt.state) == 0
    opt.step([np.ones(3, np.float32), None])
    assert opt.state[arr]["step"] == 1 and opt.state[arr]["exp_avg"].shape == (3,)
    assert opt.state[par] == {} and len(opt.state) == 1 and list(opt.state) == [arr]
    opt.step([np.ones(3, np.float32), np.ones(4, np.float32)])
    assert opt.state[par]["step"] == 1 and opt.state[arr]["step"] == 2
    assert len(opt.state) == 2 and list(opt.state) == [arr, par]
    with pytest.raises(KeyError):
        opt.state[par.data]  # the Parameter is the key, not its array
    with pytest.raises(KeyError):
        opt.state[np.ones(3, np.float32)]  # looked up by identity, not by value


def test_repr_lists_groups():
    opt = gf.optim.SGD(
        [{"params": [np.zeros(2, np.float32)]}, {"params": [np.zeros(3, np.float32)], "lr": 0.5, "momentum": 0.9}],
        lr=0.1,
    )
    text = repr(opt)
    assert text.startswith("SGD (") and text.endswith(")")
    assert "Parameter Group 0" in text and "Parameter Group 1" in text
    group1 = text.split("Parameter Group 1")[1]
    assert "lr: 0.5" in group1 and "momentum: 0.9" in group1
    assert "lr: 0.1" in text.split("Parameter Group 1")[0]
    assert "params" not in text


# ------------------------------------------------------------------------------------------------
# Threads
# ------------------------------------------------------------------------------------------------


def _run_threads(targets):
    errors = []
    barrier = threading.Barrier(len(targets))

    def wrap(fn):
        def run():
            try:
                barrier.wait()
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


@pytest.mark.parametrize(
    "name, kwargs", [("Adam", dict(lr=0.01)), ("SGD", dict(lr=0.01, momentum=0.9))], ids=["Adam", "SGD-momentum"]
)
def test_concurrent_steps_on_one_optimizer_are_serialised(backend, name, kwargs):
    """Two threads step the same optimizer with the same gradient: with the steps serialised the
    result is exactly that of 2*N sequential steps, and the step count is exact."""
    n = 25
    p = np.random.default_rng(0).standard_normal(100_000).astype(np.float32)
    g = np.random.default_rng(1).standard_normal(100_000).astype(np.float32)
    ref = p.copy()
    opt, ref_opt = opt_class(name)([p], **kwargs), opt_class(name)([ref], **kwargs)

    def worker():
        with gf.use_backend(backend):  # the backend override is per thread
            for _ in range(n):
                assert opt.step([g]) is True

    _run_threads([worker, worker])
    for _ in range(2 * n):
        ref_opt.step([g])
    np.testing.assert_array_equal(p, ref)
    assert_state_dicts_equal(opt.state_dict(), ref_opt.state_dict())


def test_concurrent_steps_on_different_optimizers(backend):
    specs = OPTIMIZERS  # every class at once
    work, refs = [], []
    for i, (name, kwargs) in enumerate(specs):
        params = make_params([(300, 100), (257,)], seed=i)
        ref_params = copies(params)
        refs.append((params, ref_params, opt_class(name)(ref_params, **kwargs)))
        work.append((params, opt_class(name)(params, **kwargs)))

    def worker(params, opt):
        def run():
            with gf.use_backend(backend):
                for step in range(15):
                    opt.step(make_grads(params, step))

        return run

    _run_threads([worker(*w) for w in work])
    for params, ref_params, ref_opt in refs:
        for step in range(15):
            ref_opt.step(make_grads(ref_params, step))
        assert_bitwise(params, ref_params)
