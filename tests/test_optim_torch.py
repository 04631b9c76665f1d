"""gf.optim against torch.optim (foreach=False), step by step, parameters AND state.

Every optimizer with a torch counterpart (its kernel row's Kernel.torch) x backend (cpp, numpy) x
dtype (float32, float64) x its settings (from the kernel table: tests/kernel_cases.py) runs
STEPS steps from the same parameters with the same gradients as torch.optim.<Name>, and after
every step compares each parameter and every entry of torch's per-parameter state (the arrays:
exp_avg, exp_avg_sq, max_exp_avg_sq, momentum_buffer, sum, square_avg, acc_delta, exp_inf, grad_avg,
prev, step_size; the scalars: step, mu_product), with the same set of keys. Lion, which torch
lacks, is checked against a literal float64 reimplementation of the paper's update.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import gradfuse as gf
import kernel_cases as kc
from conftest import assert_unchanged, snapshot

# Sizes 0, 1, 15, 16, 17 and 33 (around the float32/float64 vector widths), several ranks, and a
# zero-size parameter last.
SHAPES = [(0,), (1,), (3, 5), (16,), (17,), (3, 11), (2, 0)]
STEPS = 10
DTYPES = [np.float32, np.float64]

# float64: tight, this checks the math. float32: both sides round every operation to float32 but in
# a slightly different order (torch's addcdiv/addcmul/lerp vs our fused expression), so after 10
# steps they agree to a few float32 ulps -- of the LARGEST values that went into an element: a
# momentum buffer of |b| ~ 15 that cancels down to 0.06 carries an absolute error of a few
# ulp(15) ~ 1e-6, which no rtol on 0.06 covers. So float32's atol is 1e-6 per unit of the array's
# largest magnitude (at least 1e-6); float64's stays absolute.
TOLERANCES = {
    np.float32: dict(rtol=1e-5, atol=1e-6),
    np.float64: dict(rtol=1e-10, atol=1e-12),
}


def assert_close(actual, desired, dtype, err_msg=""):
    tol = dict(TOLERANCES[dtype])
    if dtype == np.float32 and desired.size:
        tol["atol"] *= max(1.0, float(np.abs(desired).max()))
    np.testing.assert_allclose(actual, desired, **tol, err_msg=err_msg)


# Every gf.optim class whose kernel row has a torch counterpart (Kernel.torch), and its settings from the
# kernel table (tests/kernel_cases.py): the defaults, each example of its row as hyperparameters
# (Scalar.hyper), with and without maximize, and one with every number moved off its default.
TORCH_OPTIMIZERS = [cls for cls in kc.optimizer_classes() if cls._row.torch is not None]
CLASS_IDS = [cls.__name__ for cls in TORCH_OPTIMIZERS]
SETTINGS = [(cls, kwargs) for cls in TORCH_OPTIMIZERS for kwargs in kc.settings(cls, prologue=True)]


# OVERRIDE (a torch fact, test-only): constructor arguments torch reads from the constructor for every
# group, whatever a group says (an initial state value). gf.optim honours a group's value: reported;
# the groups below leave it alone.
TORCH_CONSTRUCTOR_ONLY = {"initial_accumulator_value"}


def two_groups(cls):
    """Two param groups that differ in every hyperparameter: the base settings, and the varied ones."""
    return {}, {k: v for k, v in kc.varied(cls).items() if k != "maximize" and k not in TORCH_CONSTRUCTOR_ONLY}


# step -> indices of the parameters whose gradient is None at that step (torch skips them, so their
# step counters fall behind): a parameter that starts late, one that pauses, one that misses the last.
NONE_GRADS = {0: {1}, 1: {1}, 3: {2, 5}, 4: {2}, 9: {4}}

# state entries that are numbers, not arrays (torch keeps them as 0-d tensors): each class declares its own
SCALAR_KEYS = {key for cls in kc.optimizer_classes() for key in cls._scalar_keys} | {"step"}


def _id(setting):
    cls, kwargs = setting
    return f"{cls.__name__}({kc.setting_id(kwargs)})"


def make_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]


def make_grads(rng, dtype):
    """Gradients with magnitudes spread over 1e-4 .. 10 and both signs."""
    return [(rng.standard_normal(shape) * 10.0 ** rng.uniform(-4, 1, size=shape)).astype(dtype) for shape in SHAPES]


def torch_twin(torch, cls, params, groups=None, **kwargs):
    """torch parameters holding copies of `params`, and torch.optim's counterpart of cls over them."""
    tparams = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    if groups is None:
        spec = tparams
    else:
        spec = [dict(g, params=tparams[g["params"].start : g["params"].stop]) for g in groups]
    return tparams, kc.torch_class(cls, torch)(spec, foreach=False, **kwargs)


def step_both(torch, opt, topt, tparams, grads, **step_kwargs):
    for tp, g in zip(tparams, grads):
        tp.grad = None if g is None else torch.from_numpy(g.copy())
    topt.step()
    before = snapshot(grads)
    assert opt.step(grads, **step_kwargs) is True
    assert_unchanged(before, grads)  # gradients are only read


def assert_state_matches(ours, theirs, dtype, where):
    """One parameter's state: the same keys, equal arrays (in the parameter's dtype), equal scalars."""
    assert set(ours) == set(theirs), f"{where}: state keys {sorted(ours)} != torch's {sorted(theirs)}"
    for key, value in theirs.items():
        if key in SCALAR_KEYS:
            if key == "step":
                assert ours[key] == int(value.item()), f"{where}: step {ours[key]} != torch's {value.item()}"
            else:  # mu_product, eta, mu: float32 scalars in torch; the optimizer reproduces their rounding
                assert ours[key] == value.item(), f"{where}: {key} {ours[key]!r} != torch's {value.item()!r}"
            continue
        arr = ours[key]
        assert isinstance(arr, np.ndarray) and arr.dtype == dtype, f"{where}: {key} is {type(arr)} {arr.dtype}"
        assert_close(arr, value.detach().numpy(), dtype, err_msg=f"{where}: {key}")


def assert_matches_torch(opt, params, topt, tparams, dtype, where):
    for i, (p, tp) in enumerate(zip(params, tparams)):
        assert_close(p, tp.detach().numpy(), dtype, err_msg=f"{where}: param {i}")
        assert_state_matches(opt.state[p], topt.state.get(tp, {}), dtype, f"{where}: param {i}")


def assert_state_dict_matches(opt, topt, dtype, where):
    """opt.state_dict()["state"][i] against torch's state_dict()["state"][i]."""
    ours, theirs = opt.state_dict()["state"], topt.state_dict()["state"]
    assert set(ours) == set(theirs), f"{where}: state_dict indices {sorted(ours)} != torch's {sorted(theirs)}"
    for i in theirs:
        assert_state_matches(ours[i], theirs[i], dtype, f"{where}: state_dict param {i}")


# ---- every optimizer, every setting, both backends and dtypes -------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("setting", SETTINGS, ids=_id)
def test_matches_torch_step_by_step(setting, dtype, backend, torch):
    cls, kwargs = setting
    params = make_params(dtype)
    tparams, topt = torch_twin(torch, cls, params, **kwargs)
    opt = cls(params, **kwargs)
    rng = np.random.default_rng(1)
    for step in range(STEPS):
        step_both(torch, opt, topt, tparams, make_grads(rng, dtype))
        assert_matches_torch(opt, params, topt, tparams, dtype, f"step {step + 1}")
    assert_state_dict_matches(opt, topt, dtype, f"after {STEPS} steps")


def test_settings_cover_every_hyperparameter_and_flag():
    """The generated settings of each class set every numeric hyperparameter (the kernel's and the
    class's own) off its default somewhere, every flag both ways, and maximize."""
    for cls in kc.optimizer_classes():
        sig = inspect.signature(cls).parameters
        mine = kc.settings(cls)
        keys = {kc.hyper_key(s) for s in cls._row.scalars if s.hyper is not None} & set(sig) | set(kc.class_only(cls))
        for key in keys:
            values = {repr(kw.get(key, sig[key].default)) for kw in mine}
            assert len(values) > 1, f"{cls.__name__}: {key} is never moved off {sig[key].default!r}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("cls", TORCH_OPTIMIZERS, ids=CLASS_IDS)
def test_two_param_groups_match_torch(cls, dtype, backend, torch):
    first, second = two_groups(cls)
    groups = [dict(first, params=slice(0, 3)), dict(second, params=slice(3, len(SHAPES)))]
    base = kc.all_states(cls)  # every state in use
    params = make_params(dtype, seed=2)
    tparams, topt = torch_twin(torch, cls, params, groups=groups, **base)
    opt = cls([dict(g, params=params[g["params"]]) for g in groups], **base)
    assert [len(g["params"]) for g in opt.param_groups] == [3, len(SHAPES) - 3]
    rng = np.random.default_rng(3)
    for step in range(STEPS):
        step_both(torch, opt, topt, tparams, make_grads(rng, dtype))
        assert_matches_torch(opt, params, topt, tparams, dtype, f"step {step + 1}")
    assert_state_dict_matches(opt, topt, dtype, f"after {STEPS} steps")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("cls", TORCH_OPTIMIZERS, ids=CLASS_IDS)
def test_none_gradients_are_skipped_like_torch(cls, dtype, backend, torch):
    base = kc.all_states(cls)  # every state in use
    params = make_params(dtype, seed=4)
    tparams, topt = torch_twin(torch, cls, params, **base)
    opt = cls(params, **base)
    rng = np.random.default_rng(5)
    for step in range(STEPS):
        grads = make_grads(rng, dtype)
        grads = [None if i in NONE_GRADS.get(step, ()) else g for i, g in enumerate(grads)]
        step_both(torch, opt, topt, tparams, grads)
        assert_matches_torch(opt, params, topt, tparams, dtype, f"step {step + 1}")
    assert_state_dict_matches(opt, topt, dtype, f"after {STEPS} steps")
    if "step" in topt.state[tparams[0]]:  # where torch keeps a step counter, it fell behind where grads
        # were None
        steps = [opt.state[p]["step"] for p in params]
        assert steps == [STEPS, STEPS - 2, STEPS - 2, STEPS, STEPS - 1, STEPS - 1, STEPS]


@pytest.mark.parametrize("cls", TORCH_OPTIMIZERS, ids=CLASS_IDS)
def test_mixed_dtypes_in_groups_with_none_grads_match_torch(cls, backend, torch):
    """float32 and float64 parameters in each of two groups (torch allows it), with None gradients:
    each parameter keeps its dtype and its own step count."""
    base = kc.all_states(cls)  # every state in use
    dtypes = [np.float32, np.float64, np.float64, np.float32, np.float64, np.float32, np.float64]
    first, second = two_groups(cls)
    groups = [dict(first, params=slice(0, 4)), dict(second, params=slice(4, 7))]
    params = [p.astype(dt) for p, dt in zip(make_params(np.float64, seed=8), dtypes)]
    tparams, topt = torch_twin(torch, cls, params, groups=groups, **base)
    opt = cls([dict(g, params=params[g["params"]]) for g in groups], **base)
    none_grads = {0: {0, 4}, 2: {0, 1, 2, 3}, 5: {5}, 6: {4, 5, 6}, 7: {6}}  # incl. a whole group at once
    rng = np.random.default_rng(9)
    for step in range(STEPS):
        grads = [
            None if i in none_grads.get(step, ()) else g.astype(dt)
            for i, (g, dt) in enumerate(zip(make_grads(rng, np.float64), dtypes))
        ]
        step_both(torch, opt, topt, tparams, grads)
        for i, (p, tp, dt) in enumerate(zip(params, tparams, dtypes)):
            where = f"step {step + 1}: param {i} ({np.dtype(dt).name})"
            assert p.dtype == dt
            assert_close(p, tp.detach().numpy(), dt, err_msg=where)
            assert_state_matches(opt.state[p], topt.state.get(tp, {}), dt, where)


@pytest.mark.parametrize("cls", TORCH_OPTIMIZERS, ids=CLASS_IDS)
def test_hyperparameters_edited_between_steps_match_torch(cls, backend, torch):
    """An LR schedule: param_groups[...]["lr"] (and weight_decay where there is one) change mid-run."""
    base = kc.all_states(cls)  # every state in use
    params = make_params(np.float64, seed=10)
    tparams, topt = torch_twin(torch, cls, params, **base)
    opt = cls(params, **base)
    rng = np.random.default_rng(11)
    for step in range(STEPS):
        if step in (3, 6):
            for group in (opt.param_groups[0], topt.param_groups[0]):
                group["lr"] *= 0.5
                if "weight_decay" in group:
                    group["weight_decay"] += 0.05
        step_both(torch, opt, topt, tparams, make_grads(rng, np.float64))
        assert_matches_torch(opt, params, topt, tparams, np.float64, f"step {step + 1}")


@pytest.mark.parametrize("cls", TORCH_OPTIMIZERS, ids=CLASS_IDS)
def test_resume_from_torch_state_dict(cls, backend, torch):
    """torch steps half-way; ours loads torch's state_dict (tensors) and both finish together."""
    base = kc.all_states(cls)  # every state in use
    params = make_params(np.float64, seed=12)
    tparams, topt = torch_twin(torch, cls, params, **base)
    rng = np.random.default_rng(13)
    for step in range(STEPS // 2):
        for tp, g in zip(tparams, make_grads(rng, np.float64)):
            tp.grad = torch.from_numpy(g)
        topt.step()
    params = [tp.detach().numpy().copy() for tp in tparams]
    opt = cls(params, **base)
    opt.load_state_dict(topt.state_dict())
    assert_matches_torch(opt, params, topt, tparams, np.float64, "after loading")
    for step in range(STEPS // 2, STEPS):
        step_both(torch, opt, topt, tparams, make_grads(rng, np.float64))
        assert_matches_torch(opt, params, topt, tparams, np.float64, f"step {step + 1}")


@pytest.mark.parametrize("cls", TORCH_OPTIMIZERS, ids=CLASS_IDS)
def test_skipped_nonfinite_step_is_a_step_torch_never_took(cls, backend, torch):
    """skip_nonfinite=True: a step whose gradients hold NaN/Inf changes nothing (step counters
    included), so the run goes on exactly like a torch run without that step."""
    base = kc.all_states(cls)  # every state in use
    params = make_params(np.float64, seed=14)
    tparams, topt = torch_twin(torch, cls, params, **base)
    opt = cls(params, skip_nonfinite=True, **base)
    rng = np.random.default_rng(15)
    for step in range(STEPS):
        grads = make_grads(rng, np.float64)
        if step in (0, 4):  # before any state exists, and mid-run
            bad = [g.copy() for g in grads]
            bad[3][7] = np.nan if step == 0 else np.inf
            params_before, state_before = snapshot(params), opt.state_dict()["state"]
            assert opt.step(bad) is False
            assert opt.last_step_skipped
            assert_unchanged(params_before, params)
            state_after = opt.state_dict()["state"]
            assert set(state_after) == set(state_before)
            for i, entry in state_after.items():
                assert set(entry) == set(state_before[i])
                for key, value in entry.items():
                    np.testing.assert_array_equal(value, state_before[i][key], err_msg=f"param {i}: {key}")
        step_both(torch, opt, topt, tparams, grads)
        assert not opt.last_step_skipped
        assert_matches_torch(opt, params, topt, tparams, np.float64, f"step {step + 1}")
    assert opt.skipped_steps == 2


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("cls", TORCH_OPTIMIZERS, ids=CLASS_IDS)
def test_step_grad_scale_matches_torch_on_unscaled_grads(cls, dtype, backend, torch):
    """step(grads * s, grad_scale=s) follows torch fed grads (s a power of two: the scaling is exact)."""
    base = kc.all_states(cls)  # every state in use
    params = make_params(dtype, seed=16)
    tparams, topt = torch_twin(torch, cls, params, **base)
    opt = cls(params, **base)
    rng = np.random.default_rng(17)
    scale = 2.0**12
    for step in range(STEPS):
        grads = make_grads(rng, dtype)
        for tp, g in zip(tparams, grads):
            tp.grad = torch.from_numpy(g.copy())
        topt.step()
        assert opt.step([g * dtype(scale) for g in grads], grad_scale=scale) is True
        assert_matches_torch(opt, params, topt, tparams, dtype, f"step {step + 1}")


# ---- Lion: not in torch; against the paper's update ----------------------------------------------


def lion_reference(params, grad_steps, lr, betas, weight_decay, maximize):
    """Chen et al. 2023, Algorithm 2 (decoupled weight decay), in float64, one array at a time."""
    beta1, beta2 = betas
    params = [p.astype(np.float64) for p in params]
    exp_avgs = [np.zeros_like(p) for p in params]
    for grads in grad_steps:
        for p, m, g in zip(params, exp_avgs, grads):
            g = -g if maximize else g
            p *= 1 - lr * weight_decay
            p -= lr * np.sign(beta1 * m + (1 - beta1) * g)
            m[...] = beta2 * m + (1 - beta2) * g
    return params, exp_avgs


LION_SETTINGS = kc.settings(gf.optim.Lion, prologue=True)  # its row's examples, defaults and varied settings


@pytest.mark.parametrize("kwargs", LION_SETTINGS, ids=kc.setting_id)
def test_lion_matches_the_paper(kwargs, backend):
    params = make_params(np.float64, seed=6)
    rng = np.random.default_rng(7)
    grad_steps = [make_grads(rng, np.float64) for _ in range(STEPS)]
    full = dict(dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, maximize=False), **kwargs)
    want_params, want_avgs = lion_reference(params, grad_steps, **full)
    opt = gf.optim.Lion(params, **kwargs)
    for grads in grad_steps:
        assert opt.step(grads) is True
    tol = TOLERANCES[np.float64]
    for i, (p, want_p, want_m) in enumerate(zip(params, want_params, want_avgs)):
        np.testing.assert_allclose(p, want_p, **tol, err_msg=f"param {i}")
        np.testing.assert_allclose(opt.state[p]["exp_avg"], want_m, **tol, err_msg=f"exp_avg {i}")
        assert opt.state[p]["step"] == STEPS
        np.testing.assert_allclose(opt.state_dict()["state"][i]["exp_avg"], want_m, **tol)


def test_lion_defaults_are_the_papers():
    sig = inspect.signature(gf.optim.Lion)
    assert sig.parameters["lr"].default == 1e-4
    assert sig.parameters["betas"].default == (0.9, 0.99)
    assert sig.parameters["weight_decay"].default == 0.0


# ---- constructors: torch's arguments, order, kinds and defaults -----------------------------------


@pytest.mark.parametrize("cls", TORCH_OPTIMIZERS, ids=CLASS_IDS)
def test_constructor_signature_matches_torch(cls, torch):
    ours = inspect.signature(cls).parameters
    theirs = inspect.signature(kc.torch_class(cls, torch)).parameters
    assert "skip_nonfinite" in ours and ours["skip_nonfinite"].kind is inspect.Parameter.KEYWORD_ONLY
    assert ours["skip_nonfinite"].default is False
    got = [(p.name, p.kind, p.default) for p in ours.values() if p.name != "skip_nonfinite"]
    want = [(p.name, p.kind, p.default) for p in theirs.values()]
    assert got == want


@pytest.mark.parametrize("cls", TORCH_OPTIMIZERS, ids=CLASS_IDS)
def test_constructor_defaults_reach_param_groups_like_torch(cls, torch):
    """Built with no hyperparameters, our param group holds torch's default hyperparameters."""
    ours = cls([np.zeros(3)]).param_groups[0]
    theirs = kc.torch_class(cls, torch)([torch.nn.Parameter(torch.zeros(3))]).param_groups[0]
    shared = {k for k in theirs if k not in ("params", "foreach", "fused")} & set(ours)
    assert shared, "no hyperparameters in common"
    for key in sorted(shared):
        assert ours[key] == theirs[key], key
