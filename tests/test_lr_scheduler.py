"""gf.optim.lr_scheduler: every schedule torch has against torch.optim.lr_scheduler (the lr of each
of two param groups with different lrs, and the cycled momentum/beta1, after every step), the seeds'
schedules against their formulas, warmups, state_dict round trips mid-run, ReduceLROnPlateau on a
scripted metric sequence, invalid arguments, and one check that the lr really drives a step."""

from __future__ import annotations

import copy
import json
import math
import re
import warnings

import numpy as np
import pytest

import gradfuse as gf

L = gf.optim.lr_scheduler
STEPS = 70
LRS = (0.1, 0.02)  # the two groups' lrs
RTOL, ATOL = 1e-12, 1e-17


# ---- helpers ---------------------------------------------------------------------------------------------
def gf_optimizer(kind="SGD", lrs=LRS, **kwargs):
    groups = [{"params": [np.zeros(3)], "lr": lrs[0]}, {"params": [np.zeros(2)], "lr": lrs[1]}]
    return getattr(gf.optim, kind)(groups, **kwargs)


def torch_optimizer(torch, kind="SGD", lrs=LRS, **kwargs):
    groups = [
        {"params": [torch.zeros(3, requires_grad=True)], "lr": lrs[0]},
        {"params": [torch.zeros(2, requires_grad=True)], "lr": lrs[1]},
    ]
    return getattr(torch.optim, kind)(groups, **kwargs)


def momenta(opt):
    return [g["betas"][0] if "betas" in g else g.get("momentum") for g in opt.param_groups]


def trace(opt, sched, steps=STEPS, metrics=None, step_opt=None):
    """[(groups' lr, get_last_lr(), groups' momentum)] at t = 0 .. steps."""
    out = [([g["lr"] for g in opt.param_groups], list(sched.get_last_lr()), momenta(opt))]
    for t in range(steps):
        if step_opt is not None:
            step_opt()
        if metrics is None:
            sched.step()
        else:
            sched.step(metrics[t])
        out.append(([g["lr"] for g in opt.param_groups], list(sched.get_last_lr()), momenta(opt)))
    return out


def assert_traces_equal(actual, desired):
    assert len(actual) == len(desired)
    for t, (a, d) in enumerate(zip(actual, desired)):
        for what, x, y in zip(("lr", "get_last_lr", "momentum"), a, d):
            if what == "momentum" and None in y:
                continue
            np.testing.assert_allclose(
                np.array(x, float), np.array(y, float), rtol=RTOL, atol=ATOL, err_msg=f"{what} after {t} steps"
            )


def gf_step(opt):
    grads = [np.ones(3), np.ones(2)]
    return lambda: opt.step(grads)


def is_plain(value) -> bool:
    """Only numbers, strings, lists and dicts with string keys (what the checkpoint format stores)."""
    if isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, list):
        return all(is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    return False


# ---- the schedules torch has ------------------------------------------------------------------------------
# (id, optimizer kind and kwargs, factory(lr_scheduler module, optimizer)): the same call builds the gf
# scheduler and torch's.
TORCH_CASES = [
    ("LambdaLR", ("SGD", {}), lambda M, o: M.LambdaLR(o, [lambda t: 0.95**t, lambda t: 1 / (1 + 0.3 * t)])),
    ("LambdaLR-one", ("SGD", {}), lambda M, o: M.LambdaLR(o, lambda t: 1 + math.sin(t))),
    ("MultiplicativeLR", ("SGD", {}), lambda M, o: M.MultiplicativeLR(o, lambda t: 0.97)),
    ("ConstantLR", ("SGD", {}), lambda M, o: M.ConstantLR(o)),
    ("ConstantLR-0.5-7", ("SGD", {}), lambda M, o: M.ConstantLR(o, factor=0.5, total_iters=7)),
    ("ConstantLR-1", ("SGD", {}), lambda M, o: M.ConstantLR(o, factor=1.0)),
    ("StepLR", ("SGD", {}), lambda M, o: M.StepLR(o, step_size=7, gamma=0.5)),
    ("StepLR-default", ("SGD", {}), lambda M, o: M.StepLR(o, 20)),
    ("MultiStepLR", ("SGD", {}), lambda M, o: M.MultiStepLR(o, milestones=[5, 17, 17, 40, 40], gamma=0.3)),
    ("ExponentialLR", ("SGD", {}), lambda M, o: M.ExponentialLR(o, gamma=0.95)),
    ("LinearLR", ("SGD", {}), lambda M, o: M.LinearLR(o)),
    ("LinearLR-decay", ("SGD", {}), lambda M, o: M.LinearLR(o, start_factor=1.0, end_factor=0.0, total_iters=50)),
    ("LinearLR-mid", ("SGD", {}), lambda M, o: M.LinearLR(o, start_factor=0.25, end_factor=0.75, total_iters=30)),
    ("PolynomialLR", ("SGD", {}), lambda M, o: M.PolynomialLR(o)),
    ("PolynomialLR-2", ("SGD", {}), lambda M, o: M.PolynomialLR(o, total_iters=40, power=2.0)),
    ("PolynomialLR-0.5", ("SGD", {}), lambda M, o: M.PolynomialLR(o, total_iters=65, power=0.5)),
    ("CosineAnnealingLR", ("SGD", {}), lambda M, o: M.CosineAnnealingLR(o, T_max=70)),
    ("CosineAnnealingLR-wrap", ("SGD", {}), lambda M, o: M.CosineAnnealingLR(o, T_max=25, eta_min=0.001)),
    ("WarmRestarts", ("SGD", {}), lambda M, o: M.CosineAnnealingWarmRestarts(o, T_0=7)),
    ("WarmRestarts-mult", ("SGD", {}), lambda M, o: M.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=2, eta_min=1e-4)),
    ("CyclicLR", ("SGD", dict(momentum=0.9)), lambda M, o: M.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=8)),
    (
        "CyclicLR-triangular2",
        ("SGD", dict(momentum=0.9)),
        lambda M, o: M.CyclicLR(
            o, base_lr=[0.01, 0.002], max_lr=[0.1, 0.03], step_size_up=6, step_size_down=4, mode="triangular2"
        ),
    ),
    (
        "CyclicLR-exp_range",
        ("Adam", {}),
        lambda M, o: M.CyclicLR(
            o,
            base_lr=0.001,
            max_lr=0.01,
            step_size_up=5,
            mode="exp_range",
            gamma=0.97,
            base_momentum=0.85,
            max_momentum=0.95,
        ),
    ),
    (
        "CyclicLR-scale_fn",
        ("SGD", {}),
        lambda M, o: M.CyclicLR(
            o, 0.01, 0.1, step_size_up=4, scale_fn=lambda x: 0.9**x, scale_mode="iterations", cycle_momentum=False
        ),
    ),
    ("OneCycleLR", ("SGD", dict(momentum=0.9)), lambda M, o: M.OneCycleLR(o, max_lr=[0.1, 0.05], total_steps=STEPS)),
    (
        "OneCycleLR-linear",
        ("Adam", {}),
        lambda M, o: M.OneCycleLR(
            o,
            max_lr=0.01,
            epochs=7,
            steps_per_epoch=10,
            anneal_strategy="linear",
            pct_start=0.25,
            div_factor=10.0,
            final_div_factor=100.0,
        ),
    ),
    (
        "OneCycleLR-three",
        ("AdamW", {}),
        lambda M, o: M.OneCycleLR(
            o, max_lr=[0.01, 0.02], total_steps=STEPS, three_phase=True, base_momentum=[0.8, 0.85], max_momentum=0.9
        ),
    ),
    (
        "OneCycleLR-nomomentum",
        ("Adagrad", {}),
        lambda M, o: M.OneCycleLR(o, max_lr=0.1, total_steps=STEPS, cycle_momentum=False),
    ),
    (
        "OneCycleLR-RMSprop",
        ("RMSprop", dict(momentum=0.5)),
        lambda M, o: M.OneCycleLR(o, max_lr=0.1, total_steps=STEPS),
    ),
    (
        "SequentialLR-warmup-cosine",
        ("SGD", {}),
        lambda M, o: M.SequentialLR(
            o, [M.LinearLR(o, start_factor=0.1, total_iters=5), M.CosineAnnealingLR(o, T_max=60)], milestones=[5]
        ),
    ),
    (
        "SequentialLR-three",
        ("SGD", {}),
        lambda M, o: M.SequentialLR(
            o,
            [M.ConstantLR(o, factor=0.5, total_iters=3), M.ExponentialLR(o, gamma=0.9), M.StepLR(o, step_size=5)],
            milestones=[4, 20],
        ),
    ),
    (
        "ChainedScheduler",
        ("SGD", {}),
        lambda M, o: M.ChainedScheduler([M.ConstantLR(o, factor=0.1, total_iters=5), M.ExponentialLR(o, gamma=0.95)]),
    ),
    (
        "ChainedScheduler-step-cos",
        ("SGD", {}),
        lambda M, o: M.ChainedScheduler(
            [M.StepLR(o, 10, 0.5), M.CosineAnnealingLR(o, T_max=30, eta_min=0.0)], optimizer=o
        ),
    ),
]


@pytest.mark.parametrize("name, opt_spec, factory", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_same_sequence_as_torch(torch, name, opt_spec, factory):
    kind, kwargs = opt_spec
    ours_opt = gf_optimizer(kind, **kwargs)
    ours = trace(ours_opt, factory(L, ours_opt), step_opt=gf_step(ours_opt))
    theirs_opt = torch_optimizer(torch, kind, **kwargs)
    theirs = trace(theirs_opt, factory(torch.optim.lr_scheduler, theirs_opt), step_opt=theirs_opt.step)
    assert_traces_equal(ours, theirs)
    # the keys torch adds to the param groups, with torch's values
    for g_ours, g_theirs in zip(ours_opt.param_groups, theirs_opt.param_groups):
        for key in ("initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum"):
            assert (key in g_ours) == (key in g_theirs), key
            if key in g_ours:
                assert g_ours[key] == pytest.approx(g_theirs[key], rel=RTOL), key


@pytest.mark.parametrize("name, opt_spec, factory", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_state_dict_round_trip(name, opt_spec, factory):
    """Stop mid-run, save both state dicts (the scheduler's through JSON: plain data only), rebuild
    optimizer and scheduler, load, continue: the identical sequence."""
    kind, kwargs = opt_spec
    opt = gf_optimizer(kind, **kwargs)
    sched = factory(L, opt)
    whole = trace(opt, sched, step_opt=gf_step(opt))

    opt = gf_optimizer(kind, **kwargs)
    sched = factory(L, opt)
    first = trace(opt, sched, steps=23, step_opt=gf_step(opt))
    sd = sched.state_dict()
    assert is_plain(sd), sd
    sd = json.loads(json.dumps(sd))
    opt_sd = copy.deepcopy(opt.state_dict())

    opt = gf_optimizer(kind, **kwargs)
    sched = factory(L, opt)
    opt.load_state_dict(opt_sd)
    sched.load_state_dict(sd)
    rest = trace(opt, sched, steps=STEPS - 23, step_opt=gf_step(opt))
    assert_traces_equal(first + rest[1:], whole)


def test_state_dict_keeps_no_callables():
    opt = gf_optimizer()
    for sched in (
        L.LambdaLR(opt, lambda t: 0.5),
        L.MultiplicativeLR(opt, lambda t: 0.5),
        L.CyclicLR(opt, 0.01, 0.1, scale_fn=lambda x: 1.0, cycle_momentum=False),
    ):
        sd = sched.state_dict()
        assert is_plain(sd) and not any(callable(v) for v in sd.values())
        sched.load_state_dict(sd)
        sched.step()


def test_state_dict_is_a_copy():
    opt = gf_optimizer()
    sched = L.MultiStepLR(opt, [3, 5, 5])
    sd = sched.state_dict()
    assert sd["milestones"] == [3, 5, 5]
    sd["base_lrs"].append(1.0)
    sd["milestones"].append(1)
    assert sched.base_lrs == list(LRS) and sorted(sched.milestones.elements()) == [3, 5, 5]
    with pytest.raises(ValueError, match="unknown keys"):
        sched.load_state_dict({"no_such_key": 1})
    sched.load_state_dict({"_get_lr_called_within_step": False, "last_epoch": 4})  # torch's private flags: ignored
    assert sched.last_epoch == 4


def test_loads_torch_state_dicts(torch):
    """A torch scheduler's state dict (Counter milestones, torch's private keys) loads and continues."""
    for factory in (
        lambda M, o: M.MultiStepLR(o, [5, 9, 9], 0.5),
        lambda M, o: M.CosineAnnealingLR(o, 30, 0.001),
        lambda M, o: M.OneCycleLR(o, 0.1, total_steps=40),
    ):
        t_opt = torch_optimizer(torch, momentum=0.9)
        t_sched = factory(torch.optim.lr_scheduler, t_opt)
        for _ in range(12):
            t_opt.step()
            t_sched.step()
        opt = gf_optimizer(momentum=0.9)
        sched = factory(L, opt)
        for g, tg in zip(opt.param_groups, t_opt.param_groups):
            g.update({k: v for k, v in tg.items() if k != "params"})
        sched.load_state_dict(t_sched.state_dict())
        for _ in range(20):
            t_opt.step()
            t_sched.step()
            sched.step()
            np.testing.assert_allclose(sched.get_last_lr(), t_sched.get_last_lr(), rtol=RTOL)


@pytest.mark.parametrize(
    "name, factory",
    [
        ("StepLR", lambda M, o: M.StepLR(o, 7, 0.5)),
        ("MultiStepLR", lambda M, o: M.MultiStepLR(o, [3, 9, 9], 0.5)),
        ("ConstantLR", lambda M, o: M.ConstantLR(o, 0.25, 6)),
        ("LinearLR", lambda M, o: M.LinearLR(o, 0.2, 0.9, 12)),
        ("ExponentialLR", lambda M, o: M.ExponentialLR(o, 0.9)),
        ("PolynomialLR", lambda M, o: M.PolynomialLR(o, 15, 1.5)),
        ("CosineAnnealingLR", lambda M, o: M.CosineAnnealingLR(o, 20, 0.001)),
        ("WarmRestarts", lambda M, o: M.CosineAnnealingWarmRestarts(o, 4, 3, 0.001)),
    ],
)
def test_step_epoch_closed_form_as_torch(torch, name, factory):
    opt, t_opt = gf_optimizer(), torch_optimizer(torch)
    sched, t_sched = factory(L, opt), factory(torch.optim.lr_scheduler, t_opt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in (3, 0, 11, 12, 30, 5.5 if name == "WarmRestarts" else 5, 17, 40):
            t_opt.step()
            sched.step(epoch)
            t_sched.step(epoch)
            np.testing.assert_allclose(sched.get_last_lr(), t_sched.get_last_lr(), rtol=RTOL, atol=ATOL)


# ---- the seeds' formulas ------------------------------------------------------------------------------------
def lr_sequence(sched, steps=STEPS):
    return np.array([tr[0] for tr in trace(sched.optimizer, sched, steps)])


def expected(formula, steps=STEPS):
    return np.array([[formula(a0, t) for a0 in LRS] for t in range(steps + 1)])


@pytest.mark.parametrize(
    "name, factory, formula",
    [
        ("exponential 0.95^t", lambda o: L.ExponentialLR(o, gamma=0.95), lambda a0, t: a0 * 0.95**t),
        ("exponential e^-kt", lambda o: L.ExponentialDecayLR(o, k=0.05), lambda a0, t: a0 * math.exp(-0.05 * t)),
        (
            "linear a0(1-t/T)",
            lambda o: L.LinearLR(o, start_factor=1.0, end_factor=0.0, total_iters=50),
            lambda a0, t: a0 * (1 - min(t, 50) / 50),
        ),
        (
            "linear eps_tau",
            lambda o: L.LinearDecayLR(o, tau=40, final_lr=[1e-3, 1e-4]),
            lambda a0, t: (1 - min(t, 40) / 40) * a0 + min(t, 40) / 40 * (1e-3 if a0 == LRS[0] else 1e-4),
        ),
        (
            "linear eps_tau=1%",
            lambda o: L.LinearDecayLR(o, tau=33),
            lambda a0, t: (1 - min(t, 33) / 33) * a0 + min(t, 33) / 33 * 0.01 * a0,
        ),
        (
            "cosine",
            lambda o: L.CosineAnnealingLR(o, T_max=STEPS),
            lambda a0, t: a0 * 0.5 * (1 + math.cos(math.pi * t / STEPS)),
        ),
        ("inverse sqrt", lambda o: L.InverseSqrtLR(o), lambda a0, t: a0 / math.sqrt(max(t, 1))),
        (
            "inverse sqrt, timescale",
            lambda o: L.InverseSqrtLR(o, timescale=10),
            lambda a0, t: a0 * math.sqrt(10 / max(t, 10)),
        ),
        ("1/t", lambda o: L.InverseTimeDecayLR(o, k=0.1), lambda a0, t: a0 / (1 + 0.1 * t)),
        ("constant", lambda o: L.Constant(o), lambda a0, t: a0),
        ("step", lambda o: L.StepLR(o, 10, 0.5), lambda a0, t: a0 * 0.5 ** (t // 10)),
        ("polynomial", lambda o: L.PolynomialLR(o, 50, 3.0), lambda a0, t: a0 * (1 - min(t, 50) / 50) ** 3),
    ],
)
def test_seed_formulas(name, factory, formula):
    np.testing.assert_allclose(lr_sequence(factory(gf_optimizer())), expected(formula), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (L.ExponentialDecayLR, dict(k=0.05)),
        (L.InverseTimeDecayLR, dict(k=0.1)),
        (L.InverseSqrtLR, dict(timescale=3)),
        (L.LinearDecayLR, dict(tau=20, final_lr=0.001)),
    ],
)
def test_seed_schedules_closed_form_and_chaining(cls, kwargs):
    """step(epoch) jumps to the formula; a manual lr change carries on (chainable, as torch's)."""
    opt = gf_optimizer()
    sched = cls(opt, **kwargs)
    ref = lr_sequence(cls(gf_optimizer(), **kwargs), 40)
    for epoch in (7, 3, 30):
        sched.step(epoch)
        np.testing.assert_allclose(sched.get_last_lr(), ref[epoch], rtol=RTOL)
    sched.step(10)
    for g in opt.param_groups:
        g["lr"] *= 2  # what another schedule (ChainedScheduler) or the user may do
    sched.step()
    if cls is L.LinearDecayLR:  # (lr - final_lr) is what rescales
        np.testing.assert_allclose(
            sched.get_last_lr(),
            [0.001 + (2 * r - 0.001) * (r1 - 0.001) / (r - 0.001) for r, r1 in zip(ref[10], ref[11])],
            rtol=1e-12,
        )
    else:
        np.testing.assert_allclose(sched.get_last_lr(), 2 * ref[11], rtol=1e-12)


def test_chained_with_seed_schedule():
    opt = gf_optimizer()
    sched = L.ChainedScheduler([L.ConstantLR(opt, factor=0.5, total_iters=4), L.InverseTimeDecayLR(opt, k=0.2)])
    got = lr_sequence(sched, 30)
    np.testing.assert_allclose(got, expected(lambda a0, t: a0 / (1 + 0.2 * t) * (0.5 if t < 4 else 1.0), 30), rtol=RTOL)


# ---- warmup ---------------------------------------------------------------------------------------------------
def test_warmup_cosine_as_torch_sequential(torch):
    opt, t_opt = gf_optimizer(), torch_optimizer(torch)
    ours = L.warmup(L.CosineAnnealingLR(opt, T_max=50, eta_min=1e-4), 10, start_factor=0.1)
    tl = torch.optim.lr_scheduler
    theirs = tl.SequentialLR(t_opt, [tl.LinearLR(t_opt, 0.1, 1.0, 10), tl.CosineAnnealingLR(t_opt, 50, 1e-4)], [10])
    assert_traces_equal(trace(opt, ours), trace(t_opt, theirs, step_opt=t_opt.step))


@pytest.mark.parametrize("start_factor", [0.0, 0.25])
def test_warmup_cosine_formula(start_factor):
    W, T = 8, 40
    opt = gf_optimizer()
    sched = L.LinearWarmup(L.CosineAnnealingLR(opt, T_max=T), W, start_factor)

    def formula(a0, t):
        if t < W:
            return a0 * (start_factor + (1 - start_factor) * t / W)
        return a0 * 0.5 * (1 + math.cos(math.pi * (t - W) / T))

    np.testing.assert_allclose(lr_sequence(sched, W + T), expected(formula, W + T), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "factory",
    [
        lambda o: L.StepLR(o, 5, 0.5),
        lambda o: L.InverseSqrtLR(o),
        lambda o: L.ExponentialDecayLR(o, 0.1),
        lambda o: L.OneCycleLR(o, 0.1, total_steps=60),
        lambda o: L.CyclicLR(o, 0.01, 0.1, 4),
        lambda o: L.CosineAnnealingWarmRestarts(o, 6, 2),
        lambda o: L.PolynomialLR(o, 30, 2.0),
        lambda o: L.LinearDecayLR(o, 30),
    ],
)
def test_warmup_in_front_of_any(factory):
    """After W steps of warmup the schedule runs exactly as it does alone."""
    W = 7
    alone_opt = gf_optimizer(momentum=0.9)
    alone = trace(alone_opt, factory(alone_opt), 50)
    opt = gf_optimizer(momentum=0.9)
    sched = L.warmup(factory(opt), W, start_factor=0.2)
    warm = trace(opt, sched, W + 50)
    start = alone[0][0]
    for t in range(W):
        np.testing.assert_allclose(warm[t][0], [lr * (0.2 + 0.8 * t / W) for lr in start], rtol=RTOL)
    assert_traces_equal(warm[W:], alone)


def test_warmup_of_a_constant_lr_and_state():
    opt = gf_optimizer()
    sched = L.warmup(opt, 4, start_factor=0.0)
    got = lr_sequence(sched, 10)
    np.testing.assert_allclose(got, expected(lambda a0, t: a0 * min(t, 4) / 4, 10), rtol=RTOL)
    opt.param_groups[0]["lr"] = 0.5  # after the warmup nothing rewrites the lr
    sched.step()
    assert opt.param_groups[0]["lr"] == 0.5
    with pytest.raises(TypeError):
        sched.step(1.0)  # no metric without ReduceLROnPlateau


def test_warmup_plateau():
    """The metrics of the warmup steps are ignored; then ReduceLROnPlateau runs from the full lr."""
    W = 5
    metrics = [5, 4, 3, 2, 1] + [1.0] * 12 + [0.5] + [0.6] * 10
    opt = gf_optimizer()
    sched = L.warmup(L.ReduceLROnPlateau(opt, patience=2, factor=0.5), W, start_factor=0.1)
    assert sched.takes_metrics
    got = trace(opt, sched, len(metrics), metrics=metrics)
    alone_opt = gf_optimizer()
    alone = trace(
        alone_opt, L.ReduceLROnPlateau(alone_opt, patience=2, factor=0.5), len(metrics) - W, metrics=metrics[W:]
    )
    assert_traces_equal(got[W:], alone)
    np.testing.assert_allclose(got[0][0], [0.1 * a for a in LRS])
    with pytest.raises(TypeError):
        sched.step()  # the metric is needed
    sd = json.loads(json.dumps(sched.state_dict()))
    assert is_plain(sd) and sd["scheduler"]["num_bad_epochs"] == sched.scheduler.num_bad_epochs


# ---- ReduceLROnPlateau ---------------------------------------------------------------------------------------
PLATEAU_METRICS = [
    1.0,
    0.9,
    0.95,
    0.95,
    0.95,
    0.89,
    0.8999,
    0.95,
    0.7,
    0.7,
    0.7,
    0.7,
    0.7,
    0.69995,
    0.6,
    0.6,
    float("nan"),
    0.6,
    0.6,
    0.6,
    0.5,
    0.5,
    0.5,
    0.5,
    0.5,
    0.5,
    0.5,
    0.4,
    0.4,
    0.4,
    0.4,
    0.4,
    0.4,
    0.4,
    0.4,
    0.4,
    0.4,
    0.4,
    0.4,
    0.4,
]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(patience=2, factor=0.5),
        dict(patience=1, factor=0.3, cooldown=2, min_lr=[1e-3, 1e-5]),
        dict(patience=0, factor=0.5, threshold=0.05, threshold_mode="abs", min_lr=0.004),
        dict(mode="max", patience=2, factor=0.5, eps=1e-3),
        dict(mode="max", patience=1, threshold_mode="abs", threshold=0.0, cooldown=1),
    ],
)
def test_plateau_as_torch(torch, kwargs):
    metrics = PLATEAU_METRICS if kwargs.get("mode") != "max" else [-m for m in PLATEAU_METRICS]
    metrics = metrics + metrics[::-1]
    opt, t_opt = gf_optimizer(), torch_optimizer(torch)
    sched, t_sched = L.ReduceLROnPlateau(opt, **kwargs), torch.optim.lr_scheduler.ReduceLROnPlateau(t_opt, **kwargs)
    for t, m in enumerate(metrics):
        sched.step(np.array(m) if t % 2 else m)  # a 0-d array is a metric too
        t_sched.step(torch.tensor(m, dtype=torch.float64) if t % 2 else m)
        assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in t_opt.param_groups], t
        assert sched.get_last_lr() == t_sched.get_last_lr()
        for key in ("num_bad_epochs", "cooldown_counter", "last_epoch"):
            assert getattr(sched, key) == getattr(t_sched, key), (key, t)
        assert sched.best == t_sched.best or (math.isnan(sched.best) and math.isnan(t_sched.best))
        assert sched.in_cooldown == t_sched.in_cooldown
    assert sched.default_min_lr == t_sched.default_min_lr


def test_plateau_state_dict_round_trip(torch):
    metrics = PLATEAU_METRICS
    kwargs = dict(patience=1, factor=0.5, cooldown=1, min_lr=[1e-3, 1e-4])
    opt = gf_optimizer()
    sched = L.ReduceLROnPlateau(opt, **kwargs)
    whole = trace(opt, sched, len(metrics), metrics=metrics)
    opt = gf_optimizer()
    sched = L.ReduceLROnPlateau(opt, **kwargs)
    first = trace(opt, sched, 13, metrics=metrics)
    sd = json.loads(json.dumps(sched.state_dict()))
    opt_sd = copy.deepcopy(opt.state_dict())
    opt = gf_optimizer()
    sched = L.ReduceLROnPlateau(opt)  # other settings: the state dict brings them
    opt.load_state_dict(opt_sd)
    sched.load_state_dict(sd)
    rest = trace(opt, sched, len(metrics) - 13, metrics=metrics[13:])
    assert_traces_equal(first + rest[1:], whole)
    # and torch's state dict loads too
    t_opt = torch_optimizer(torch)
    t_sched = torch.optim.lr_scheduler.ReduceLROnPlateau(t_opt, mode="max", patience=3, min_lr=[0.0, 0.0])
    sched = L.ReduceLROnPlateau(gf_optimizer())
    sched.load_state_dict(t_sched.state_dict())
    assert sched.mode == "max" and sched.patience == 3 and sched.default_min_lr is None


# ---- momentum cycling (OneCycleLR / CyclicLR) -----------------------------------------------------------------
@pytest.mark.parametrize(
    "kind, kwargs",
    [
        ("SGD", dict(momentum=0.9)),
        ("SGD", dict(momentum=0.9, nesterov=True)),
        ("Adam", dict(betas=(0.9, 0.99))),
        ("NAdam", {}),
    ],
)
def test_onecycle_momentum_as_torch(torch, kind, kwargs):
    def factory(M, o):
        return M.OneCycleLR(
            o, max_lr=[0.2, 0.05], total_steps=60, pct_start=0.4, base_momentum=0.8, max_momentum=[0.95, 0.9]
        )

    opt, t_opt = gf_optimizer(kind, **kwargs), torch_optimizer(torch, kind, **kwargs)
    ours = trace(opt, factory(L, opt), 60, step_opt=gf_step(opt))
    theirs = trace(t_opt, factory(torch.optim.lr_scheduler, t_opt), 60, step_opt=t_opt.step)
    assert_traces_equal(ours, theirs)
    assert [m for _, _, m in ours] == [m for _, _, m in theirs]
    assert len({m[0] for _, _, m in ours}) > 30  # it really cycles
    if "betas" in opt.param_groups[0]:
        assert [g["betas"][1] for g in opt.param_groups] == [g["betas"][1] for g in t_opt.param_groups]


def test_onecycle_past_total_steps_raises_and_changes_nothing():
    opt = gf_optimizer(momentum=0.9)
    sched = L.OneCycleLR(opt, 0.1, total_steps=5)
    for _ in range(5):
        sched.step()
    before = (sched.last_epoch, sched._step_count, [dict(g) for g in opt.param_groups])
    with pytest.raises(ValueError, match="Tried to step 6 times. The specified number of total steps is 5"):
        sched.step()
    assert before == (sched.last_epoch, sched._step_count, [dict(g) for g in opt.param_groups])


def test_onecycle_short_phases_do_not_divide_by_zero():
    opt = gf_optimizer()
    sched = L.OneCycleLR(opt, max_lr=0.1, total_steps=4, pct_start=0.25, cycle_momentum=False)
    assert sched.get_last_lr() == [0.1, 0.1]  # one step of rise: max_lr at t = 0
    for _ in range(4):
        sched.step()
    assert all(np.isfinite(sched.get_last_lr()))


# ---- the lr drives the optimizer -----------------------------------------------------------------------------
def test_the_lr_changes_what_a_step_does():
    p = np.zeros(4)
    opt = gf.optim.SGD([p], lr=1.0)
    sched = L.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(4):
        opt.step([np.ones(4)])
        sched.step()
    np.testing.assert_array_equal(p, -(1 + 0.5 + 0.25 + 0.125) * np.ones(4))
    assert opt.param_groups[0]["initial_lr"] == 1.0 and sched.get_last_lr() == [0.0625]


def test_per_group_base_lrs_and_initial_lr():
    opt = gf_optimizer()
    sched = L.ExponentialLR(opt, 0.5)
    assert sched.base_lrs == list(LRS) and [g["initial_lr"] for g in opt.param_groups] == list(LRS)
    sched.step()
    assert sched.get_last_lr() == [LRS[0] / 2, LRS[1] / 2]
    # a second scheduler (a resumed run) finds initial_lr, not the decayed lr
    assert L.StepLR(opt, 3).base_lrs == list(LRS)
    # resuming with last_epoch needs initial_lr in the groups, as in torch
    with pytest.raises(KeyError, match="initial_lr"):
        L.StepLR(gf_optimizer(), 3, last_epoch=5)
    resumed = L.StepLR(opt, 3, last_epoch=5)
    assert resumed.last_epoch == 6 and resumed.get_last_lr() == [LRS[0] / 2, LRS[1] / 2]


# ---- invalid arguments ---------------------------------------------------------------------------------------
# (factory(module, optimizer), exception, message): torch's message where torch raises one (checked
# against torch too), our own where torch accepts the argument and fails later or never.
INVALID = [
    (
        lambda M, o: M.ConstantLR(o, factor=1.5),
        ValueError,
        "Constant multiplicative factor expected to be between 0 and 1.",
        True,
    ),
    (
        lambda M, o: M.LinearLR(o, start_factor=0),
        ValueError,
        "Starting multiplicative factor expected to be greater than 0 and less or equal to 1.",
        True,
    ),
    (
        lambda M, o: M.LinearLR(o, end_factor=1.5),
        ValueError,
        "Ending multiplicative factor expected to be between 0 and 1.",
        True,
    ),
    (lambda M, o: M.LambdaLR(o, [lambda t: 1.0]), ValueError, "Expected 2 lr_lambdas, but got 1", True),
    (lambda M, o: M.MultiplicativeLR(o, 0.5), TypeError, "lr_lambda should be a function, but got float", True),
    (
        lambda M, o: M.CosineAnnealingWarmRestarts(o, T_0=0),
        ValueError,
        "Expected positive integer T_0, but got 0",
        True,
    ),
    (
        lambda M, o: M.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=0),
        ValueError,
        "Expected integer T_mult >= 1, but got 0",
        True,
    ),
    (
        lambda M, o: M.CosineAnnealingWarmRestarts(o, T_0=5, eta_min="0"),
        ValueError,
        "Expected float or int eta_min",
        True,
    ),
    (lambda M, o: M.ReduceLROnPlateau(o, factor=1.0), ValueError, "Factor should be < 1.0.", True),
    (lambda M, o: M.ReduceLROnPlateau(o, mode="low"), ValueError, "mode low is unknown!", True),
    (lambda M, o: M.ReduceLROnPlateau(o, threshold_mode="x"), ValueError, "threshold mode x is unknown!", True),
    (lambda M, o: M.ReduceLROnPlateau(o, min_lr=[0.1]), ValueError, "expected 2 min_lrs, got 1", True),
    (lambda M, o: M.CyclicLR(o, 0.01, 0.1, mode="square"), ValueError, "mode is invalid and scale_fn is None", True),
    (
        lambda M, o: M.CyclicLR(o, [0.01], 0.1),
        ValueError,
        "base_lr must have the same length as optimizer.param_groups. base_lr has 1 values, param_groups has 2.",
        True,
    ),
    (
        lambda M, o: M.OneCycleLR(o, 0.1),
        ValueError,
        "You must define either total_steps OR (epochs AND steps_per_epoch)",
        True,
    ),
    (
        lambda M, o: M.OneCycleLR(o, 0.1, total_steps=0),
        ValueError,
        "Expected positive integer total_steps, but got 0",
        True,
    ),
    (
        lambda M, o: M.OneCycleLR(o, 0.1, epochs=0, steps_per_epoch=5),
        ValueError,
        "Expected positive integer epochs, but got 0",
        True,
    ),
    (
        lambda M, o: M.OneCycleLR(o, 0.1, epochs=2, steps_per_epoch=-1),
        ValueError,
        "Expected positive integer steps_per_epoch, but got -1",
        True,
    ),
    (
        lambda M, o: M.OneCycleLR(o, 0.1, 10, pct_start=1.5),
        ValueError,
        "Expected float between 0 and 1 pct_start, but got 1.5",
        True,
    ),
    (
        lambda M, o: M.OneCycleLR(o, 0.1, 10, anneal_strategy="exp"),
        ValueError,
        "anneal_strategy must be one of 'cos' or 'linear', instead got exp",
        True,
    ),
    (
        lambda M, o: M.SequentialLR(o, [], []),
        ValueError,
        "SequentialLR expects at least one scheduler, but got no scheduler.",
        True,
    ),
    (
        lambda M, o: M.SequentialLR(o, [M.StepLR(o, 2), M.StepLR(o, 3)], []),
        ValueError,
        "Sequential Schedulers expects number of schedulers provided to be one more than the number of milestone "
        "points, but got number of schedulers 2 and the number of milestones to be equal to 0",
        True,
    ),
    (
        lambda M, o: M.SequentialLR(o, [M.StepLR(o, 2), M.ReduceLROnPlateau(o)], [3]),
        ValueError,
        "SequentialLR does not support `ReduceLROnPlateau` scheduler",
        True,
    ),
    (
        lambda M, o: M.ChainedScheduler([]),
        ValueError,
        "ChainedScheduler expects at least one scheduler to be chained, but got no scheduler.",
        True,
    ),
    (lambda M, o: M.StepLR(o, step_size=0), ValueError, "Expected positive integer step_size, but got 0", False),
    (lambda M, o: M.CosineAnnealingLR(o, T_max=0), ValueError, "Expected positive T_max, but got 0", False),
    (
        lambda M, o: M.PolynomialLR(o, total_iters=0),
        ValueError,
        "Expected positive integer total_iters, but got 0",
        False,
    ),
    (lambda M, o: M.MultiStepLR(o, [2.5]), ValueError, "Expected integer milestones", False),
    (
        lambda M, o: M.CyclicLR(o, 0.01, 0.1, step_size_up=0),
        ValueError,
        "Expected positive step_size_up, but got 0",
        False,
    ),
    (lambda M, o: M.ExponentialDecayLR(o, k=-1), ValueError, "Expected k >= 0, but got -1", False),
    (lambda M, o: M.InverseTimeDecayLR(o, k=float("nan")), ValueError, "Expected a number for k", False),
    (lambda M, o: M.InverseSqrtLR(o, timescale=0), ValueError, "Expected positive timescale, but got 0", False),
    (lambda M, o: M.LinearDecayLR(o, tau=0), ValueError, "Expected positive integer tau, but got 0", False),
    (
        lambda M, o: M.LinearDecayLR(o, tau=5, final_lr=[0.1]),
        ValueError,
        "final_lr must have the same length as optimizer.param_groups",
        False,
    ),
    (lambda M, o: M.LinearDecayLR(o, tau=5, final_lr=-0.1), ValueError, "Expected final_lr >= 0, but got -0.1", False),
    (lambda M, o: M.LinearWarmup(o, -1), ValueError, "Expected integer warmup_steps >= 0, but got -1", False),
    (
        lambda M, o: M.LinearWarmup(o, 5, start_factor=1.5),
        ValueError,
        "Starting multiplicative factor expected to be between 0 and 1.",
        False,
    ),
    (lambda M, o: M.LinearWarmup("sgd", 5), TypeError, "neither a scheduler nor an Optimizer", False),
    (lambda M, o: M.StepLR(o.param_groups, 5), TypeError, "list is not an Optimizer", True),
]


@pytest.mark.parametrize("factory, exc, message, torch_too", INVALID, ids=[f"{i}" for i in range(len(INVALID))])
def test_invalid_arguments(torch, factory, exc, message, torch_too):
    with pytest.raises(exc, match=re.escape(message)):
        factory(L, gf_optimizer())
    if torch_too:
        with pytest.raises(exc, match=re.escape(message)):
            factory(torch.optim.lr_scheduler, torch_optimizer(torch))


def test_cycle_momentum_needs_momentum(torch):
    msg = "optimizer must support momentum or beta1 with `cycle_momentum` option enabled"
    for M, opt in ((L, gf_optimizer("Adagrad")), (torch.optim.lr_scheduler, torch_optimizer(torch, "Adagrad"))):
        with pytest.raises(ValueError, match=re.escape(msg)):
            M.OneCycleLR(opt, 0.1, total_steps=10)
        with pytest.raises(ValueError, match=re.escape(msg)):
            M.CyclicLR(opt, 0.01, 0.1)


def test_schedules_of_another_optimizer_are_refused():
    a, b = gf_optimizer(), gf_optimizer()
    with pytest.raises(ValueError, match="expects all schedulers to belong to the same optimizer"):
        L.SequentialLR(a, [L.StepLR(a, 2), L.StepLR(b, 2)], [3])
    with pytest.raises(ValueError, match="expects all schedulers to belong to the same optimizer"):
        L.ChainedScheduler([L.StepLR(a, 2), L.StepLR(b, 2)])
