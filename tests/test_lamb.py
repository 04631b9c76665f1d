"""LAMB: step-for-step against a NumPy transcription of timm's Lamb (always) and timm 1.0's own Lamb
(when timm is installed), per-tensor trust ratios inside an arena, timm's global gradient clip
with a loss scale, the 1-D exclusion groups, and the options it refuses.

The kernel's own generated tests (both backends bitwise, bad inputs, determinism over thread
counts, ISA paths) come from its kernel-table row (lamb)."""

import importlib
import importlib.util
import math
import sys
import types

import numpy as np
import pytest

import gradfuse as gf

SHAPES = [(0,), (1,), (17,), (5, 7), (40000,), (3,)]  # 40000: a tensor over two reduction blocks
SETTINGS = [
    dict(lr=0.01),
    dict(lr=0.02, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.1, max_grad_norm=None, trust_clip=True),
    dict(lr=0.01, weight_decay=0.0, always_adapt=True, max_grad_norm=0.5),
    dict(lr=0.01, weight_decay=0.0),  # no adaptation: one pass
    dict(lr=0.01, bias_correction=False, grad_averaging=False, max_grad_norm=2.0),
]
DEFAULTS = dict(
    lr=1e-3,
    bias_correction=True,
    betas=(0.9, 0.999),
    eps=1e-6,
    weight_decay=0.01,
    grad_averaging=True,
    max_grad_norm=1.0,
    trust_clip=False,
    always_adapt=False,
)


class ReferenceLamb:
    """timm's _single_tensor_lamb, line by line, in float64 NumPy (one group)."""

    def __init__(self, params, **kw):
        self.p, self.h = params, {**DEFAULTS, **kw}
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.step_count = 0

    def step(self, grads):
        h = self.h
        self.step_count += 1
        b1, b2 = h["betas"]
        clip = 1.0
        if h["max_grad_norm"] is not None:
            norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads))
            clip = max(norm / h["max_grad_norm"], 1.0)
        bc1 = 1 - b1**self.step_count if h["bias_correction"] else 1.0
        bc2 = 1 - b2**self.step_count if h["bias_correction"] else 1.0
        for p, g, m, v in zip(self.p, grads, self.m, self.v):
            g = g / clip
            m[...] = m * b1 + g * ((1 - b1) if h["grad_averaging"] else 1.0)
            v[...] = v * b2 + (1 - b2) * g * g
            u = (m / bc1) / (np.sqrt(v) / math.sqrt(bc2) + h["eps"])
            if h["weight_decay"] != 0:
                u = u + h["weight_decay"] * p
            trust = 1.0
            if h["weight_decay"] != 0 or h["always_adapt"]:
                w_norm, u_norm = np.linalg.norm(p), np.linalg.norm(u)
                trust = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
                if h["trust_clip"]:
                    trust = min(trust, 1.0)
            p -= h["lr"] * trust * u


def _problem(dtype, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[(rng.standard_normal(s) * 0.3).astype(dtype) for s in SHAPES] for _ in range(4)]
    return params, grads


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", SETTINGS, ids=range(len(SETTINGS)))
def test_steps_match_reference(kwargs, dtype):
    params, grads = _problem(dtype)
    ref = ReferenceLamb([p.astype(np.float64) for p in params], **kwargs)
    opt = gf.optim.Lamb(params, **kwargs)
    for gs in grads:
        opt.step([g.copy() for g in gs])
        ref.step([g.astype(np.float64) for g in gs])
    rtol = 2e-5 if dtype == np.float32 else 1e-11
    for i, (p, r, m) in enumerate(zip(params, ref.p, ref.m)):
        np.testing.assert_allclose(p, r, rtol=rtol, atol=rtol * 0.1, err_msg=f"params[{i}]")
        np.testing.assert_allclose(opt.state[params[i]]["exp_avg"], m, rtol=rtol, atol=rtol * 0.1)
    assert opt.param_groups[0]["step"] == len(grads)
    assert set(opt.state[params[0]]) == {"exp_avg", "exp_avg_sq"}  # timm's keys; the step is the group's


def _timm_lamb():
    """timm.optim.lamb without timm/__init__ (which needs torchvision): bare parent packages."""
    pytest.importorskip("torch")
    spec = importlib.util.find_spec("timm")
    if spec is None:
        pytest.skip("timm is not installed (the NumPy reference above covers the formulas)")
    saved = {k: sys.modules.get(k) for k in ("timm", "timm.optim")}
    try:
        for name, sub in (("timm", ""), ("timm.optim", "/optim")):
            module = types.ModuleType(name)
            module.__path__ = [spec.submodule_search_locations[0] + sub]
            sys.modules[name] = module
        return importlib.import_module("timm.optim.lamb").Lamb
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", SETTINGS, ids=range(len(SETTINGS)))
def test_steps_match_timm(kwargs, dtype):
    import torch

    TimmLamb = _timm_lamb()
    params, grads = _problem(dtype, seed=1)
    tparams = [torch.tensor(p.copy()) for p in params]
    split = 3  # two groups, the second with its own lr and weight decay
    groups = lambda ps: [{"params": ps[:split]}, {"params": ps[split:], "lr": 0.005, "weight_decay": 0.05}]  # noqa: E731
    ours, theirs = gf.optim.Lamb(groups(params), **kwargs), TimmLamb(groups(tparams), foreach=False, **kwargs)
    for gs in grads:
        for t, g in zip(tparams, gs):
            t.grad = torch.tensor(g.copy())
        theirs.step()
        ours.step([g.copy() for g in gs])
    rtol = 5e-5 if dtype == np.float32 else 1e-11
    for i, (p, t) in enumerate(zip(params, tparams)):
        np.testing.assert_allclose(p, t.numpy(), rtol=rtol, atol=rtol * 0.1, err_msg=f"params[{i}]")
        for key in ("exp_avg", "exp_avg_sq"):
            theirs_state = theirs.state[tparams[i]][key].numpy()  # atol: m near 0 after cancellation
            np.testing.assert_allclose(ours.state[params[i]][key], theirs_state, rtol=rtol, atol=rtol * 2e-3)
    assert [g["step"] for g in ours.param_groups] == [int(g["step"]) for g in theirs.param_groups]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_arena_neighbours_keep_their_own_trust_ratio(dtype):
    """Parameters adjacent in one arena step bitwise as the same values in separate arrays: each
    tensor's norms are its own (the kernel does not merge them), on both backends."""
    shapes = [(300, 200), (200,), (200, 77), (77,)]
    arena = gf.nn.ParameterArena(shapes, dtype=dtype)
    rng = np.random.default_rng(3)
    for p, scale in zip(arena, (1.0, 0.01, 3.0, 0.1)):  # different sizes: different trust ratios
        p.data[...] = rng.standard_normal(p.shape) * scale
    loose = [p.data.copy() for p in arena]
    a, b = gf.optim.Lamb(list(arena), lr=0.05), gf.optim.Lamb(loose, lr=0.05)
    for _ in range(3):
        gs = [rng.standard_normal(s).astype(dtype) for s in shapes]
        for p, g in zip(arena, gs):
            p.grad[...] = g
        a.step()
        b.step([g.copy() for g in gs])
    for p, q in zip(arena, loose):
        assert np.array_equal(p.data, q)
    # the trust ratios really differ per tensor: one ratio for all would move them alike
    ratios = [np.linalg.norm(q) / np.linalg.norm(a.state[p]["exp_avg"]) for p, q in zip(arena, loose)]
    assert max(ratios) > 2 * min(ratios)


def test_twin_matches_kernel_on_an_arena():
    """The NumPy twin (per tensor) and the C++ kernel (one segment per tensor) agree bitwise when
    the tensors are views of one buffer."""
    rng = np.random.default_rng(4)
    sizes = [40000, 5, 33000]
    cuts = np.cumsum([0, *sizes])
    start = [rng.standard_normal(cuts[-1]).astype(np.float32) for _ in range(3)]
    start.append(np.abs(rng.standard_normal(cuts[-1])).astype(np.float32))  # exp_avg_sq >= 0
    out = {}
    for backend in ("cpp", "numpy"):
        flat = [x.copy() for x in start]
        views = [[f[a:b] for a, b in zip(cuts[:-1], cuts[1:])] for f in flat]
        with gf.use_backend(backend):
            gf.ops.lamb(*views, step=3, lr=0.01, weight_decay=0.1)
        out[backend] = flat
    for x, y in zip(out["cpp"], out["numpy"]):
        assert np.array_equal(x, y)


def test_clip_with_loss_scale_equals_unscaled():
    """timm's global clip is taken on the true gradients: a grad_scale gives the same step."""
    params, grads = _problem(np.float64, seed=5)
    twin = [p.copy() for p in params]
    a, b = gf.optim.Lamb(params, lr=0.01, max_grad_norm=0.5), gf.optim.Lamb(twin, lr=0.01, max_grad_norm=0.5)
    for gs in grads:
        a.step([g * 1024.0 for g in gs], grad_scale=1024.0)
        b.step([g.copy() for g in gs])
    for p, q in zip(params, twin):
        np.testing.assert_allclose(p, q, rtol=1e-13)


def test_param_groups_leave_1d_out_of_adaptation():
    model = gf.nn.Sequential([gf.nn.Dense(6, 4), gf.nn.BatchNorm(4), gf.nn.Dense(4, 2)], seed=0)
    groups = gf.optim.lamb_param_groups(model.named_parameters(), weight_decay=0.02)
    assert groups[0]["weight_decay"] == 0.0 and groups[1]["weight_decay"] == 0.02
    assert all(np.ndim(p) <= 1 for p in groups[0]["params"]) and len(groups[0]["params"]) == 4
    assert all(np.ndim(p) == 2 for p in groups[1]["params"]) and len(groups[1]["params"]) == 2
    opt = gf.optim.Lamb(groups, lr=0.01)
    assert [len(g["params"]) for g in opt.param_groups] == [4, 2]


@pytest.mark.parametrize("option", ["caution", "decoupled_decay", "corrected_weight_decay"])
def test_unimplemented_options_raise(option):
    with pytest.raises(NotImplementedError, match=option):
        gf.optim.Lamb([np.zeros(3)], **{option: True})


@pytest.mark.parametrize("bad, exc", [(0.0, ValueError), (-1.0, ValueError), ("1", TypeError), (True, TypeError)])
def test_bad_max_grad_norm(bad, exc):
    with pytest.raises(exc, match="max_grad_norm"):
        gf.optim.Lamb([np.zeros(3)], max_grad_norm=bad)


def test_group_max_grad_norm_must_be_the_global_one():
    with pytest.raises(ValueError, match="global over all groups"):
        gf.optim.Lamb([{"params": [np.zeros(3)], "max_grad_norm": 2.0}], max_grad_norm=1.0)


def test_bad_hyperparameters_say_what():
    with pytest.raises(ValueError, match="Invalid learning rate"):
        gf.optim.Lamb([np.zeros(3)], lr=-1.0)
    with pytest.raises(ValueError, match="Invalid weight_decay"):
        gf.optim.Lamb([np.zeros(3)], weight_decay=-0.1)


def test_nonfinite_gradient_skipped_with_skip_nonfinite():
    p = np.ones(5)
    opt = gf.optim.Lamb([p], lr=0.1, skip_nonfinite=True)
    assert opt.step([np.array([1.0, np.nan, 0, 0, 0])]) is False
    assert np.array_equal(p, np.ones(5)) and opt.param_groups[0]["step"] == 0
    assert opt.step([np.full(5, 0.5)]) is True and opt.param_groups[0]["step"] == 1


def test_state_dict_round_trip():
    params, grads = _problem(np.float32, seed=6)
    opt = gf.optim.Lamb(params, lr=0.01)
    opt.step(grads[0])
    copy = [p.copy() for p in params]
    other = gf.optim.Lamb(copy, lr=0.01)
    other.load_state_dict(opt.state_dict())
    opt.step(grads[1])
    other.step([g.copy() for g in grads[1]])
    for p, q in zip(params, copy):
        assert np.array_equal(p, q)


# ---- LARS ---------------------------------------------------------------------------------------
LARS_SETTINGS = [
    dict(lr=0.1),
    dict(lr=0.5, momentum=0.9, weight_decay=1e-4),
    dict(lr=0.2, momentum=0.9, nesterov=True, weight_decay=0.01, trust_clip=True),
    dict(lr=0.1, momentum=0.8, dampening=0.1, always_adapt=True, trust_coeff=0.02),
]
LARS_DEFAULTS = dict(
    lr=1.0, momentum=0, dampening=0, weight_decay=0, nesterov=False, trust_coeff=0.001, eps=1e-8, trust_clip=False
)


class ReferenceLars:
    """timm's _single_tensor_lars, line by line, in float64 NumPy."""

    def __init__(self, params, **kw):
        self.p, self.h = params, {**LARS_DEFAULTS, "always_adapt": False, **kw}
        self.buf = [None] * len(params)

    def step(self, grads):
        h = self.h
        for i, (p, g) in enumerate(zip(self.p, grads)):
            if h["weight_decay"] != 0 or h["always_adapt"]:
                w, gn = np.linalg.norm(p), np.linalg.norm(g)
                trust = h["trust_coeff"] * w / (gn + w * h["weight_decay"] + h["eps"]) if w > 0 and gn > 0 else 1.0
                if h["trust_clip"]:
                    trust = min(trust / h["lr"], 1.0)
                g = (g + h["weight_decay"] * p) * trust
            if h["momentum"] != 0:
                if self.buf[i] is None:
                    self.buf[i] = g.copy()
                else:
                    self.buf[i] = self.buf[i] * h["momentum"] + (1 - h["dampening"]) * g
                g = g + h["momentum"] * self.buf[i] if h["nesterov"] else self.buf[i]
            p -= h["lr"] * g


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", LARS_SETTINGS, ids=range(len(LARS_SETTINGS)))
def test_lars_matches_reference(kwargs, dtype):
    params, grads = _problem(dtype, seed=7)
    ref = ReferenceLars([p.astype(np.float64) for p in params], **kwargs)
    opt = gf.optim.Lars(params, **kwargs)
    for gs in grads:
        opt.step([g.copy() for g in gs])
        ref.step([g.astype(np.float64) for g in gs])
    rtol = 2e-5 if dtype == np.float32 else 1e-11
    for i, (p, r) in enumerate(zip(params, ref.p)):
        np.testing.assert_allclose(p, r, rtol=rtol, atol=rtol * 0.1, err_msg=f"params[{i}]")


@pytest.mark.parametrize("kwargs", LARS_SETTINGS, ids=range(len(LARS_SETTINGS)))
def test_lars_matches_timm(kwargs):
    import torch

    _timm_lamb()  # skips without timm
    spec = importlib.util.find_spec("timm")
    saved = {k: sys.modules.get(k) for k in ("timm", "timm.optim")}
    try:
        for name, sub in (("timm", ""), ("timm.optim", "/optim")):
            module = types.ModuleType(name)
            module.__path__ = [spec.submodule_search_locations[0] + sub]
            sys.modules[name] = module
        TimmLars = importlib.import_module("timm.optim.lars").Lars
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    params, grads = _problem(np.float64, seed=8)
    tparams = [torch.tensor(p.copy()) for p in params]
    ours, theirs = gf.optim.Lars(params, **kwargs), TimmLars(tparams, foreach=False, **kwargs)
    for gs in grads:
        for t, g in zip(tparams, gs):
            t.grad = torch.tensor(g.copy())
        theirs.step()
        ours.step([g.copy() for g in gs])
    for i, (p, t) in enumerate(zip(params, tparams)):
        np.testing.assert_allclose(p, t.numpy(), rtol=1e-11, atol=1e-13, err_msg=f"params[{i}]")
        if kwargs.get("momentum"):
            buf = theirs.state[tparams[i]]["momentum_buffer"].numpy()
            np.testing.assert_allclose(ours.state[params[i]]["momentum_buffer"], buf, rtol=1e-11, atol=1e-13)


def test_lars_arena_neighbours_keep_their_own_trust_ratio():
    shapes = [(300, 200), (200,), (200, 77)]
    arena = gf.nn.ParameterArena(shapes, dtype=np.float32)
    rng = np.random.default_rng(9)
    for p, scale in zip(arena, (1.0, 0.01, 3.0)):
        p.data[...] = rng.standard_normal(p.shape) * scale
    loose = [p.data.copy() for p in arena]
    kw = dict(lr=0.5, momentum=0.9, weight_decay=1e-4)
    a, b = gf.optim.Lars(list(arena), **kw), gf.optim.Lars(loose, **kw)
    for _ in range(3):
        gs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        for p, g in zip(arena, gs):
            p.grad[...] = g
        a.step()
        b.step([g.copy() for g in gs])
    for p, q in zip(arena, loose):
        assert np.array_equal(p.data, q)


def test_lars_grad_scale_takes_the_norm_of_the_true_gradient():
    params, grads = _problem(np.float64, seed=10)
    twin = [p.copy() for p in params]
    a, b = gf.optim.Lars(params, lr=0.5, weight_decay=0.01), gf.optim.Lars(twin, lr=0.5, weight_decay=0.01)
    for gs in grads:
        a.step([g * 1024.0 for g in gs], grad_scale=1024.0)
        b.step([g.copy() for g in gs])
    for p, q in zip(params, twin):
        np.testing.assert_allclose(p, q, rtol=1e-13)
