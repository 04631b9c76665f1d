"""gradfuse.torch: the optimizers as torch.optim.Optimizer subclasses, on real torch models.

Every class is stepped side by side with torch.optim's (Lion: with gf.optim.Lion on NumPy copies)
on a torch MLP and a small torch.nn.TransformerEncoder, each model doing its own forward and
backward; parameters and every state tensor are compared after each step (float64 tight, float32
close). Then what torch users do around an optimizer: schedulers, torch.save checkpoints mid-run,
state_dict swaps with torch.optim both ways, hooks, closures, add_param_group, zero_grad; the flat
arena (flatten_parameters) against the per-tensor path; bf16 parameters with fp32 masters; refusals.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import gradfuse as gf  # noqa: E402
import gradfuse.torch as gft  # noqa: E402

STEPS = 5
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-6), torch.float64: dict(rtol=1e-10, atol=1e-12)}

# Per class: torch's defaults, and a setting that moves the options that change the code path.
SETTINGS = {
    "SGD": [dict(lr=0.05), dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)],
    "Adam": [dict(lr=0.01), dict(lr=0.01, amsgrad=True, weight_decay=0.01, maximize=True)],
    "AdamW": [dict(lr=0.01), dict(lr=0.01, amsgrad=True, weight_decay=0.1)],
    "Adagrad": [dict(lr=0.05), dict(lr=0.05, lr_decay=0.01, initial_accumulator_value=0.1, weight_decay=0.01)],
    "RMSprop": [dict(lr=0.01), dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.01)],
    "Adadelta": [dict(), dict(lr=0.5, rho=0.8, weight_decay=0.01)],
    "Adamax": [dict(lr=0.01), dict(lr=0.01, weight_decay=0.01)],
    "NAdam": [dict(lr=0.01), dict(lr=0.01, decoupled_weight_decay=True, weight_decay=0.01)],
    "RAdam": [dict(lr=0.01), dict(lr=0.01, decoupled_weight_decay=True, weight_decay=0.01)],
    "Rprop": [dict(lr=0.01), dict(lr=0.01, etas=(0.4, 1.1), step_sizes=(1e-5, 1.0))],
    "ASGD": [dict(lr=0.01), dict(lr=0.01, t0=2, lambd=0.01, weight_decay=0.01)],
    "Lion": [dict(lr=1e-3), dict(lr=1e-3, weight_decay=0.1)],
}


def test_every_gf_optimizer_has_a_torch_class():
    names = [cls.__name__ for cls in gft._optimizer_classes()]
    assert set(names) == set(gft.OPTIMIZERS) and set(names) <= set(SETTINGS) | set(SCHEDULE_FREE)
    # every fused (kernel-table) class of gf.optim; the rest are listed as not covered in the README
    fused = {
        name
        for name in gf.optim.__all__
        if isinstance(getattr(gf.optim, name), type)
        and issubclass(getattr(gf.optim, name), gf.optim.Optimizer)
        and getattr(getattr(gf.optim, name), "_kernel", "")
    }
    # but the per-tensor ones (trust ratios over each tensor, Lamb's global clip): not wrapped yet,
    # and never silently wrapped wrong (the flat arena view would give one trust ratio for all)
    per_tensor = {name for name in fused if getattr(gf.optim, name)._per_tensor}
    assert per_tensor == {"Lamb", "Lars"}
    assert fused - per_tensor == set(names)
    assert not hasattr(gft, "Lamb") and not hasattr(gft, "Lars")
    for name in names:
        cls = getattr(gft, name)
        assert issubclass(cls, torch.optim.Optimizer)
        ours, theirs = _signature(cls), getattr(torch.optim, name, None)
        if theirs is not None:  # same argument names and defaults as torch (plus skip_nonfinite)
            expected = {k: v.default for k, v in _signature(theirs).items()}
            assert {k: v.default for k, v in ours.items() if k != "skip_nonfinite"} == expected, name
        if name in SCHEDULE_FREE:  # schedulefree's names and defaults (foreach: None, it steps fused)
            package = pytest.importorskip("schedulefree")
            expected = {k: v.default for k, v in _signature(getattr(package, name)).items() if k != "foreach"}
            assert {k: ours[k].default for k in expected} == expected, name
            assert issubclass(cls, gft.ScheduleFreeOptimizer)


# schedule-free: compared with the schedulefree package (not torch.optim); lr warmup, decay, r moved
SCHEDULE_FREE = {
    "SGDScheduleFree": dict(lr=0.05, momentum=0.8, weight_decay=0.01, warmup_steps=2, r=0.5),
    "AdamWScheduleFree": dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.01, warmup_steps=2, r=0.5),
}


def _signature(cls):
    import inspect

    return inspect.signature(cls).parameters


def mlp(dtype, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
    ).to(dtype)


def encoder(dtype, seed=0):
    torch.manual_seed(seed)
    layer = torch.nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True)
    return torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False).to(dtype)


MODELS = {"mlp": (mlp, (12, 6)), "encoder": (encoder, (4, 5, 8))}


def twins(kind, dtype):
    build, shape = MODELS[kind]
    a, b = build(dtype), build(dtype)
    b.load_state_dict(a.state_dict())
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(shape, generator=gen, dtype=dtype) for _ in range(STEPS)]
    return a, b, batches


def backward(model, x):
    out = model(x)
    (out.sin().sum() + 0.1 * out.pow(2).sum()).backward()


class GfReference:
    """gf.optim's class on NumPy copies, fed the torch model's gradients: the reference for Lion."""

    def __init__(self, name, model, **kwargs):
        self.model = model
        self.arrays = [p.detach().numpy().copy() for p in model.parameters()]
        self.opt = getattr(gf.optim, name)(self.arrays, **kwargs)
        self.state = {p: self.opt.state[a] for p, a in zip(model.parameters(), self.arrays)}

    def zero_grad(self):
        self.model.zero_grad()

    def step(self):
        self.opt.step([p.grad.numpy() for p in self.model.parameters()])
        self.sync()

    def sync(self):
        with torch.no_grad():
            for p, a in zip(self.model.parameters(), self.arrays):
                p.copy_(torch.from_numpy(a))


def reference(name, model, kwargs):
    cls = getattr(torch.optim, name, None)
    return cls(model.parameters(), foreach=False, **kwargs) if cls is not None else GfReference(name, model, **kwargs)


def assert_state(ours, theirs, tol, where):
    assert set(ours) == set(theirs), f"{where}: {sorted(ours)} != {sorted(theirs)}"
    for key, value in theirs.items():
        mine = ours[key]
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        elif not isinstance(value, torch.Tensor):
            value = torch.tensor(float(value))
        assert isinstance(mine, torch.Tensor), f"{where}: {key} is {type(mine)}"
        if value.dim() == 0:
            assert mine.dtype == torch.float32 and mine.item() == pytest.approx(value.item(), rel=1e-7), (where, key)
        else:
            torch.testing.assert_close(mine, value.to(mine.dtype), **tol, msg=lambda m: f"{where} {key}: {m}")


def step_pair(a, b, ours, theirs, x):
    """One step of both: the gradients of a's backward, copied to b. The same gradients on both
    sides: the attention's key bias has a zero gradient up to rounding noise, which Adagrad-like
    rules scale up to O(lr), so two backwards would compare noise, not the optimizers."""
    ours.zero_grad()
    theirs.zero_grad()
    backward(a, x)
    for p, q in zip(a.parameters(), b.parameters()):
        q.grad = p.grad.clone()
    ours.step()
    theirs.step()


def run_side_by_side(name, kwargs, kind, dtype, steps=STEPS):
    a, b, batches = twins(kind, dtype)
    ours, theirs = getattr(gft, name)(a.parameters(), **kwargs), reference(name, b, kwargs)
    tol = TOL[dtype]
    for t, x in enumerate(batches[:steps]):
        step_pair(a, b, ours, theirs, x)
        assert_models(a, b, ours, theirs, tol, f"{name} {kwargs} step {t}")
    return ours, theirs


def assert_models(a, b, ours, theirs, tol, where):
    """Parameters and every state entry, compared as one concatenation per key (fast)."""
    pa, pb = list(a.parameters()), list(b.parameters())
    torch.testing.assert_close(flat(pa), flat(pb), **tol, msg=lambda m: f"{where} params: {m}")
    keys = set(ours.state[pa[0]])
    for p, q in zip(pa, pb):
        assert set(ours.state[p]) == set(theirs.state[q]) == keys, where
    for key in keys:
        mine = [ours.state[p][key] for p in pa]
        theirs_ = [_tensor(theirs.state[q][key]) for q in pb]
        if mine[0].dim() == 0 and pa[0].dim() != 0:
            if isinstance(ours, gft.Optimizer):  # torch's dtype for scalar state
                assert all(m.dtype == torch.float32 for m in mine), (where, key)
            torch.testing.assert_close(
                flat(mine).float(), flat(theirs_).float(), rtol=1e-7, atol=0, msg=lambda m: f"{where} {key}: {m}"
            )
        else:
            torch.testing.assert_close(flat(mine), flat(theirs_), **tol, msg=lambda m: f"{where} {key}: {m}")


def flat(tensors):
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def _tensor(value):
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    return value if isinstance(value, torch.Tensor) else torch.tensor(float(value))


@pytest.mark.parametrize("kind", ["mlp", "encoder"])
@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_step_for_step_against_torch_float64(name, kind):
    for kwargs in SETTINGS[name]:
        run_side_by_side(name, kwargs, kind, torch.float64)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_step_for_step_against_torch_float32(name):
    for kind in MODELS:
        run_side_by_side(name, SETTINGS[name][-1], kind, torch.float32)


def test_torch_schedulers_drive_the_hyperparameters():
    a, b, batches = twins("mlp", torch.float64)
    ours, theirs = gft.Adam(a.parameters(), lr=0.01), torch.optim.Adam(b.parameters(), lr=0.01, foreach=False)
    # OneCycleLR moves lr AND betas[0] every step; StepLR chained on top of nothing else here
    sched = [torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.05, total_steps=STEPS) for o in (ours, theirs)]
    for x in batches:
        step_pair(a, b, ours, theirs, x)
        for s in sched:
            s.step()
        assert ours.param_groups[0]["lr"] == theirs.param_groups[0]["lr"]
        assert ours.param_groups[0]["betas"] == theirs.param_groups[0]["betas"]
        for p, q in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(p, q, **TOL[torch.float64])


def test_checkpoint_round_trip_mid_run_is_exact():
    """torch.save of model + optimizer + scheduler at step 3, loaded into fresh objects, continues
    bitwise like the run that never stopped."""
    model, _, batches = twins("encoder", torch.float32)
    opt = gft.AdamW(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)

    def train(model, opt, sched, xs):
        for x in xs:
            opt.zero_grad()
            backward(model, x)
            opt.step()
            sched.step()

    train(model, opt, sched, batches[:3])
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
    train(model, opt, sched, batches[3:])

    buf.seek(0)
    ckpt = torch.load(buf)
    model2 = encoder(torch.float32, seed=5)
    model2.load_state_dict(ckpt["model"])
    opt2 = gft.AdamW(model2.parameters(), lr=0.01)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=2, gamma=0.5)
    opt2.load_state_dict(ckpt["opt"])
    sched2.load_state_dict(ckpt["sched"])
    assert opt2.state_dict()["state"][0]["step"].item() == 3
    train(model2, opt2, sched2, batches[3:])
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(model.parameters(), model2.parameters()):
        for key in opt.state[p]:
            assert torch.equal(opt.state[p][key], opt2.state[q][key]), key


@pytest.mark.parametrize("name", ["Adam", "SGD", "NAdam", "ASGD", "Adagrad", "RMSprop"])
def test_state_dict_swaps_with_torch_optim_both_ways(name):
    kwargs = SETTINGS[name][-1]
    a, b, batches = twins("mlp", torch.float64)
    torch_cls = getattr(torch.optim, name)
    # torch.optim -> gradfuse.torch, mid-run
    first, second = (
        torch_cls(a.parameters(), foreach=False, **kwargs),
        torch_cls(b.parameters(), foreach=False, **kwargs),
    )
    for x in batches[:3]:
        step_pair(a, b, first, second, x)
    ours = getattr(gft, name)(a.parameters(), **kwargs)
    ours.load_state_dict(first.state_dict())
    step_pair(a, b, ours, second, batches[3])
    assert_models(a, b, ours, second, TOL[torch.float64], f"{name} torch -> gradfuse")
    # gradfuse.torch -> torch.optim, after a torch.save round trip
    buf = io.BytesIO()
    torch.save(ours.state_dict(), buf)
    buf.seek(0)
    back = torch_cls(a.parameters(), foreach=False, **kwargs)
    back.load_state_dict(torch.load(buf))
    second.load_state_dict(second.state_dict())  # torch's load casts NAdam's mu_product to float64: both alike
    step_pair(a, b, back, second, batches[4])
    assert_models(a, b, back, second, TOL[torch.float64], f"{name} gradfuse -> torch")


def test_hooks_closure_add_param_group_and_zero_grad():
    a, b, batches = twins("mlp", torch.float64)
    pa, pb = list(a.parameters()), list(b.parameters())
    ours = gft.Adam(pa[:2], lr=0.01)
    theirs = torch.optim.Adam(pb[:2], lr=0.01, foreach=False)
    calls = []
    ours.register_step_pre_hook(lambda opt, args, kwargs: calls.append("pre"))
    ours.register_step_post_hook(lambda opt, args, kwargs: calls.append("post"))
    for t, x in enumerate(batches):
        if t == 2:  # the rest of the model joins with its own hyperparameters (a fine-tuning habit)
            ours.add_param_group({"params": pa[2:], "lr": 0.003, "weight_decay": 0.1})
            theirs.add_param_group({"params": pb[2:], "lr": 0.003, "weight_decay": 0.1})
        losses = []
        for model, opt in ((a, ours), (b, theirs)):

            def closure(model=model, opt=opt, x=x):
                opt.zero_grad(set_to_none=True)
                out = model(x)
                loss = out.sin().sum() + 0.1 * out.pow(2).sum()
                loss.backward()
                return loss

            losses.append(opt.step(closure))
        torch.testing.assert_close(losses[0], losses[1], **TOL[torch.float64])
        for p, q in zip(pa, pb):
            torch.testing.assert_close(p, q, **TOL[torch.float64])
    assert calls == ["pre", "post"] * STEPS
    ours.zero_grad()
    assert all(p.grad is None for p in pa)
    assert ours.state[pa[-1]]["step"].item() == STEPS - 2
    assert len(ours.state_dict()["param_groups"]) == 2


def _count_calls(monkeypatch):
    """Record, for every kernel call, whether params came as one flat array or a list."""
    seen = []
    real = gft.run_optim

    def spy(row, arrays, scalars, skip):
        seen.append("flat" if isinstance(arrays[0], np.ndarray) else len(arrays[0]))
        return real(row, arrays, scalars, skip)

    monkeypatch.setattr(gft, "run_optim", spy)
    return seen


def test_flat_arena_steps_in_one_segment_and_equals_the_per_tensor_path(monkeypatch):
    a, b, batches = twins("encoder", torch.float32)
    flat = gft.flatten_parameters(a)
    (arena,) = flat.data.values()
    assert arena.numel() == sum(p.numel() for p in a.parameters())
    assert all(arena.data_ptr() <= p.data_ptr() < arena.data_ptr() + arena.nbytes for p in a.parameters())
    torch.testing.assert_close(list(a.parameters()), list(b.parameters()), rtol=0, atol=0)
    ours, per_tensor = gft.Adam(a.parameters(), lr=0.01), gft.Adam(b.parameters(), lr=0.01)
    seen = _count_calls(monkeypatch)
    for t, x in enumerate(batches):
        for model, opt in ((a, ours), (b, per_tensor)):
            opt.zero_grad(set_to_none=True)  # arena grads dropped: the hook puts them back
            backward(model, x)
            opt.step()
        for p, q in zip(a.parameters(), b.parameters()):
            assert torch.equal(p, q)  # element-wise kernels: the layout changes no bit
        assert all(p.grad.data_ptr() == flat._grad_views[p].data_ptr() for p in a.parameters())
    n = len(list(b.parameters()))
    assert seen == ["flat", n] * STEPS
    for p, q in zip(a.parameters(), b.parameters()):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(ours.state[p][key], per_tensor.state[q][key])


def test_flat_arena_falls_back_when_the_user_replaces_a_gradient(monkeypatch):
    a, b, batches = twins("mlp", torch.float64)
    gft.flatten_parameters(a)
    ours, per_tensor = gft.SGD(a.parameters(), lr=0.1, momentum=0.9), gft.SGD(b.parameters(), lr=0.1, momentum=0.9)
    seen = _count_calls(monkeypatch)
    for model, opt in ((a, ours), (b, per_tensor)):
        opt.zero_grad()
        backward(model, batches[0])
        opt.step()
    # a hand-made gradient (gradient surgery, a clipped copy...) is stepped as given
    pa, pb = list(a.parameters()), list(b.parameters())
    for p, q in zip(pa, pb):
        p.grad = torch.full_like(p, 0.5)
        q.grad = torch.full_like(q, 0.5)
    ours.step()
    per_tensor.step()
    for p, q in zip(pa, pb):
        assert torch.equal(p, q)
    # a backward after it accumulates into the user's tensor (torch's rule); the hook re-points it
    for model, opt in ((a, ours), (b, per_tensor)):
        backward(model, batches[1])
        opt.step()
    for p, q in zip(pa, pb):
        assert torch.equal(p, q)
    assert seen[0] == "flat" and seen[2] == len(pa) and seen[4] == "flat"


@pytest.mark.parametrize("name", ["Adam", "SGD"])
def test_bf16_parameters_with_fp32_masters(name, monkeypatch):
    """bf16 torch parameters: fp32 masters and state in the optimizer, the bf16 parameters written
    by the same pass. Reference: torch.optim on fp32 copies fed the same (widened) gradients; our
    bf16 parameters must be bitwise the reference's rounded to bf16 (round to nearest even)."""
    kwargs = SETTINGS[name][-1]
    model = mlp(torch.float32).to(torch.bfloat16)
    flat = gft.flatten_parameters(model)
    masters = [torch.nn.Parameter(p.detach().float()) for p in model.parameters()]
    ours = getattr(gft, name)(model.parameters(), **kwargs)
    theirs = getattr(torch.optim, name)(masters, foreach=False, **kwargs)
    seen = _count_calls(monkeypatch)
    gen = torch.Generator().manual_seed(2)
    for _ in range(STEPS):
        ours.zero_grad()
        backward(model, torch.randn(12, 6, generator=gen).to(torch.bfloat16))
        for m, p in zip(masters, model.parameters()):
            m.grad = p.grad.float()
        ours.step()
        theirs.step()
        for m, p in zip(masters, model.parameters()):
            assert p.dtype == torch.bfloat16 and torch.equal(p, m.detach().to(torch.bfloat16))
            torch.testing.assert_close(ours.state[p]["master"], m.detach(), **TOL[torch.float32])
            assert_state(
                {k: v for k, v in ours.state[p].items() if k != "master"}, theirs.state[m], TOL[torch.float32], name
            )
    assert seen == ["flat"] * STEPS
    assert list(flat.data) == [torch.bfloat16]
    # a checkpoint keeps the masters: a fresh optimizer continues from fp32, not from the bf16 values
    fresh = getattr(gft, name)(model.parameters(), **kwargs)
    fresh.load_state_dict(ours.state_dict())
    for p in model.parameters():
        assert fresh.state[p]["master"].dtype == torch.float32
        assert torch.equal(fresh.state[p]["master"], ours.state[p]["master"])


def test_bf16_without_arena_and_refresh_masters():
    model = mlp(torch.float32).to(torch.bfloat16)
    opt = gft.Adam(model.parameters(), lr=0.01)
    backward(model, torch.randn(12, 6).to(torch.bfloat16))
    opt.step()
    for p in model.parameters():
        assert torch.equal(p, opt.state[p]["master"].to(torch.bfloat16))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.25)
    opt.refresh_masters()
    assert all(
        torch.equal(opt.state[p]["master"], torch.full_like(p, 0.25, dtype=torch.float32)) for p in model.parameters()
    )


def _snapshot(model):
    return [p.detach().clone() for p in model.parameters()]


def test_refusals_name_the_parameter_and_change_nothing():
    leaf = torch.nn.Parameter(torch.randn(4, 3))
    strided = torch.nn.Parameter(torch.randn(3, 4).t())
    with pytest.raises(ValueError, match=r"params\[1\].*not contiguous"):
        gft.Adam([leaf, strided])
    with pytest.raises(ValueError, match=r"params\[0\] \('w'\).*on meta"):
        gft.Adam([("w", torch.nn.Parameter(torch.empty(3, device="meta")))])
    with pytest.raises(TypeError, match=r"params\[0\].*float16"):
        gft.SGD([torch.nn.Parameter(torch.randn(3).half())], lr=0.1)
    with pytest.raises(ValueError, match="Invalid learning rate"):
        gft.Adam([leaf], lr=-1)
    with pytest.raises(ValueError, match="Invalid beta parameter at index 1"):
        gft.Adam([leaf], betas=(0.9, 1.5))

    # at step(): a sparse gradient in the 2nd group; the 1st group's step must not happen either
    emb = torch.nn.Embedding(10, 4, sparse=True)
    lin = torch.nn.Linear(4, 2)
    opt = gft.Adam([{"params": lin.parameters()}, {"params": emb.parameters()}], lr=0.1)
    lin(emb(torch.tensor([1, 2]))).sum().backward()
    before = _snapshot(lin) + _snapshot(emb)
    with pytest.raises(TypeError, match=r"param group 1, params\[0\]\.grad is a sparse tensor"):
        opt.step()
    assert all(torch.equal(x, y) for x, y in zip(before, _snapshot(lin) + _snapshot(emb)))
    assert not opt.state

    # a parameter re-pointed at strided memory after construction, named by named_parameters()
    model = mlp(torch.float32)
    opt = gft.SGD(model.named_parameters(), lr=0.1)
    backward(model, torch.randn(2, 6))
    with torch.no_grad():
        model[2].weight.data = model[2].weight.data.t().contiguous().t()
    before = _snapshot(model)
    with pytest.raises(ValueError, match=r"params\[2\] \('2.weight'\) is not contiguous"):
        opt.step()
    assert all(torch.equal(x, y) for x, y in zip(before, _snapshot(model)))

    # a gradient of another dtype (assigned by hand) is refused
    p = torch.nn.Parameter(torch.randn(3, dtype=torch.float64))
    opt = gft.Adam([p])
    p.grad = torch.randn(3, dtype=torch.float64)
    with torch.no_grad():
        p.grad = p.grad.float().double()  # fine
    opt.step()
    assert opt.state[p]["step"].item() == 1


def test_skip_nonfinite_and_isinstance():
    model = mlp(torch.float32)
    opt = gft.Adam(model.parameters(), lr=0.1, skip_nonfinite=True)
    assert isinstance(opt, torch.optim.Optimizer)
    backward(model, torch.randn(3, 6))
    next(model.parameters()).grad[0, 0] = float("nan")
    before = _snapshot(model)
    opt.step()
    assert opt.last_step_skipped and opt.skipped_steps == 1
    assert all(torch.equal(x, y) for x, y in zip(before, _snapshot(model)))


def test_bench_torch_rows(monkeypatch):
    import argparse

    from gradfuse.bench import torchfront

    monkeypatch.setitem(torchfront.SIZES, "quick", (1, 1000))
    args = argparse.Namespace(quick=True, repeats=1, threads=1, sleep_ms=0.0, out=None, no_deepspeed=True)
    result = torchfront.run(args)
    impls = {(r["workload"], r["impl"]) for r in result["rows"] if "ms" in r}
    assert {("encoder", "gradfuse-arena"), ("encoder", "torch-fused"), ("large", "gradfuse")} <= impls
    assert "gradfuse-arena" in torchfront.report(result)


@pytest.mark.parametrize("name", ["Adam", "NAdam", "SGD", "ASGD"])
def test_missing_gradients_and_mixed_dtypes_in_one_group(name):
    """Parameters whose gradient is None skip the step (their step counters fall behind, as in
    torch), and a group mixing float32 and float64 tensors steps each dtype in its own call."""
    kwargs = SETTINGS[name][-1]
    gen = torch.Generator().manual_seed(3)
    dtypes = [torch.float64, torch.float32, torch.float64, torch.float32, torch.float64, torch.float64]
    shapes = [(3, 4), (5,), (1,), (2, 2), (7,), (0,)]
    init = [torch.randn(s, generator=gen).to(d) for s, d in zip(shapes, dtypes)]
    pa = [torch.nn.Parameter(x.clone()) for x in init]
    pb = [torch.nn.Parameter(x.clone()) for x in init]
    ours, theirs = getattr(gft, name)(pa, **kwargs), getattr(torch.optim, name)(pb, foreach=False, **kwargs)
    skip = {0: {1}, 1: {1, 3}, 3: {0, 5}}
    for t in range(STEPS):
        for i, (p, q) in enumerate(zip(pa, pb)):
            g = None if i in skip.get(t, ()) else torch.randn(p.shape, generator=gen).to(p.dtype)
            p.grad, q.grad = g, None if g is None else g.clone()
        ours.step()
        theirs.step()
        for i, (p, q) in enumerate(zip(pa, pb)):
            tol = TOL[p.dtype]
            torch.testing.assert_close(p, q, **tol, msg=lambda m: f"step {t} param {i}: {m}")
            assert set(ours.state[p]) == set(theirs.state[q]), (t, i)
            for key, value in theirs.state[q].items():
                torch.testing.assert_close(ours.state[p][key].to(value.dtype), value, **tol)


def test_deepcopy_and_pickle_continue_like_the_original():
    import copy
    import pickle

    model, _, batches = twins("mlp", torch.float64)
    opt = gft.NAdam(model.parameters(), lr=0.01)
    backward(model, batches[0])
    opt.step()
    clone_model = copy.deepcopy(model)
    clone = copy.deepcopy({"model": clone_model, "opt": opt})["opt"]
    assert clone.param_groups[0]["params"][0] is not model[0].weight
    unpickled = pickle.loads(pickle.dumps(opt))
    assert unpickled.state_dict()["state"][0]["step"].item() == 1
    # the deep copy steps its own copies of the model and the state, like the original
    model2 = clone.param_groups[0]["params"]
    for p, q in zip(model.parameters(), model2):
        q.grad = torch.ones_like(q)
        p.grad = torch.ones_like(p)
    opt.step()
    clone.step()
    for p, q in zip(model.parameters(), model2):
        assert torch.equal(p, q)
        for key in opt.state[p]:
            assert torch.equal(opt.state[p][key], clone.state[q][key])


# ---- every class against its gf.optim twin ----------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(gft.OPTIMIZERS))
def test_every_torch_class_matches_its_gf_optim_twin(name):
    """Whatever gf.optim class gradfuse.torch picks up (today's and any later one): its defaults,
    a few steps on a torch MLP, equal to the gf.optim class on NumPy copies fed the same gradients;
    a class with train()/eval() (schedule-free) is switched on both sides the same way."""
    a, b, batches = twins("mlp", torch.float64)
    ours, twin = gft.OPTIMIZERS[name](a.parameters()), GfReference(name, b)
    modal = hasattr(twin.opt, "train")
    assert modal == hasattr(ours, "train") == hasattr(ours, "eval"), name
    if modal:
        ours.train()
        twin.opt.train()
    for t, x in enumerate(batches[:3]):
        step_pair(a, b, ours, twin, x)
        assert_models(a, b, ours, twin, TOL[torch.float64], f"{name} step {t}")
    if modal:
        ours.eval()
        twin.opt.eval()
        twin.sync()
        torch.testing.assert_close(flat(a.parameters()), flat(b.parameters()), **TOL[torch.float64])
    assert {k: v for k, v in ours.param_groups[0].items() if k != "params"} == {
        k: v for k, v in twin.opt.param_groups[0].items() if k != "params"
    }


# ---- schedule-free against the schedulefree package ---------------------------------------------------------
def _package(name, params, kwargs):
    schedulefree = pytest.importorskip("schedulefree")
    return getattr(schedulefree, name)(params, foreach=False, **kwargs)


def assert_schedule_free(a, b, ours, theirs, tol, where):
    assert_models(a, b, ours, theirs, tol, where)
    for g, h in zip(ours.param_groups, theirs.param_groups):
        for key in ("k", "train_mode", "warmup_steps", "lr"):
            assert g[key] == h[key], (where, key)
        for key in ("weight_sum", "lr_max", "scheduled_lr"):
            assert g[key] == pytest.approx(h[key], rel=1e-12), (where, key)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", sorted(SCHEDULE_FREE))
def test_schedule_free_step_for_step_against_the_package(name, dtype):
    """A training run as schedulefree's README writes it: train(), steps, eval() to evaluate, a
    torch.save of model + optimizer in eval mode mid-run, loaded into fresh objects, train() and on;
    parameters (y, then x), z / exp_avg_sq and the group entries equal to the package's each step."""
    kwargs, tol = SCHEDULE_FREE[name], TOL[dtype]
    a, b, batches = twins("mlp", dtype)
    ours, theirs = getattr(gft, name)(a.parameters(), **kwargs), _package(name, b.parameters(), kwargs)
    assert ours.param_groups[0]["train_mode"] is False and ours.param_groups[0]["k"] == 0
    for opt in (ours, theirs):
        opt.train()
    for t, x in enumerate(batches[:3]):
        step_pair(a, b, ours, theirs, x)
        assert_schedule_free(a, b, ours, theirs, tol, f"{name} step {t}")
    for opt in (ours, theirs):
        opt.eval()  # the parameters move to x, in place
    assert_schedule_free(a, b, ours, theirs, tol, f"{name} eval")
    with torch.no_grad():
        torch.testing.assert_close(a(batches[0]), b(batches[0]), **tol)
    buf = io.BytesIO()
    torch.save({"model": a.state_dict(), "opt": ours.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf)
    a = mlp(dtype, seed=7)
    a.load_state_dict(ckpt["model"])
    ours = getattr(gft, name)(a.parameters(), **kwargs)
    ours.load_state_dict(ckpt["opt"])
    assert ours.param_groups[0]["k"] == 3 and ours.param_groups[0]["train_mode"] is False
    for opt in (ours, theirs):
        opt.train()  # back to y
    assert_schedule_free(a, b, ours, theirs, tol, f"{name} train after the round trip")
    for t, x in enumerate(batches[3:]):
        step_pair(a, b, ours, theirs, x)
        assert_schedule_free(a, b, ours, theirs, tol, f"{name} step {t + 3}")
    for opt in (ours, theirs):
        opt.eval()
    assert_schedule_free(a, b, ours, theirs, tol, f"{name} final eval")


@pytest.mark.parametrize("name", sorted(SCHEDULE_FREE))
def test_schedule_free_state_dict_swaps_with_the_package_both_ways(name):
    kwargs = SCHEDULE_FREE[name]
    a, b, batches = twins("mlp", torch.float64)
    first, second = _package(name, a.parameters(), kwargs), _package(name, b.parameters(), kwargs)
    for opt in (first, second):
        opt.train()
    for x in batches[:2]:
        step_pair(a, b, first, second, x)
    # schedulefree -> gradfuse.torch, mid-run in train mode
    ours = getattr(gft, name)(a.parameters(), **kwargs)
    ours.load_state_dict(first.state_dict())
    assert ours.param_groups[0]["train_mode"] is True
    step_pair(a, b, ours, second, batches[2])
    assert_schedule_free(a, b, ours, second, TOL[torch.float64], f"{name} package -> gradfuse")
    # gradfuse.torch -> schedulefree, in eval mode, through torch.save
    for opt in (ours, second):
        opt.eval()
    buf = io.BytesIO()
    torch.save(ours.state_dict(), buf)
    buf.seek(0)
    back = _package(name, a.parameters(), kwargs)
    back.load_state_dict(torch.load(buf))
    for opt in (back, second):
        opt.train()
    step_pair(a, b, back, second, batches[3])
    assert_schedule_free(a, b, back, second, TOL[torch.float64], f"{name} gradfuse -> package")


@pytest.mark.parametrize("name", sorted(SCHEDULE_FREE))
def test_schedule_free_flat_arena_and_eval_mode_rules(name, monkeypatch):
    kwargs = SCHEDULE_FREE[name]
    a, b, batches = twins("encoder", torch.float32)
    gft.flatten_parameters(a)
    ours, per_tensor = getattr(gft, name)(a.parameters(), **kwargs), getattr(gft, name)(b.parameters(), **kwargs)
    seen = _count_calls(monkeypatch)
    for opt in (ours, per_tensor):
        opt.train()
    for t, x in enumerate(batches):
        for model, opt in ((a, ours), (b, per_tensor)):
            opt.zero_grad(set_to_none=True)
            backward(model, x)
            opt.step()
        if t == 2:
            for opt in (ours, per_tensor):
                opt.eval()
                opt.train()
        for p, q in zip(a.parameters(), b.parameters()):
            assert torch.equal(p, q)
    n = len(list(b.parameters()))
    assert seen == ["flat", n] * STEPS
    for opt in (ours, per_tensor):
        with opt.eval_weights():
            assert opt.param_groups[0]["train_mode"] is False
            with pytest.raises(RuntimeError, match="eval mode"):
                opt.step()  # gradients belong at y, the parameters hold x
        assert opt.param_groups[0]["train_mode"] is True
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
        for key in ("z", "exp_avg_sq") if "AdamW" in name else ("z",):
            assert torch.equal(ours.state[p][key], per_tensor.state[q][key])


def test_schedule_free_first_step_without_train_enters_train_mode():
    """Before any state x = y = z: a step without train() is taken (as gf.optim's), in train mode."""
    a, b, batches = twins("mlp", torch.float64)
    ours, twin = gft.SGDScheduleFree(a.parameters(), lr=0.1), GfReference("SGDScheduleFree", b, lr=0.1)
    step_pair(a, b, ours, twin, batches[0])
    assert ours.param_groups[0]["train_mode"] is True and ours.param_groups[0]["k"] == 1
    assert_models(a, b, ours, twin, TOL[torch.float64], "first step")


def test_schedule_free_bf16_parameters_swap_their_fp32_masters():
    """bf16 parameters: the fp32 master moves between y and x, the parameter is its rounding; the
    run follows the package's fp32 run within bf16's precision."""
    a, b, batches = twins("mlp", torch.float32)
    a.bfloat16()
    ours = gft.AdamWScheduleFree(a.parameters(), lr=0.01)
    theirs = _package("AdamWScheduleFree", b.parameters(), dict(lr=0.01))
    for opt in (ours, theirs):
        opt.train()
    for x in batches:
        for model, opt in ((a, ours), (b, theirs)):
            opt.zero_grad()
            backward(model, x.to(next(model.parameters()).dtype))
            opt.step()
    for opt in (ours, theirs):
        opt.eval()
    for p, q in zip(a.parameters(), b.parameters()):
        state = ours.state[p]
        assert state["z"].dtype == state["master"].dtype == torch.float32
        assert torch.equal(p, state["master"].to(torch.bfloat16))
        torch.testing.assert_close(state["master"], q, rtol=0.05, atol=0.02)
    ours.train()
    for p in a.parameters():
        assert torch.equal(p, ours.state[p]["master"].to(torch.bfloat16))


def test_schedule_free_deepcopy_continues_like_the_original():
    a, b, batches = twins("mlp", torch.float64)
    opt = gft.AdamWScheduleFree(a.parameters(), lr=0.01)
    opt.train()
    step_pair(a, b, opt, gft.SGD(b.parameters()), batches[0])
    import copy

    model2, opt2 = copy.deepcopy((a, opt))  # the copy's state and groups point at the copied model
    assert opt2.param_groups[0]["k"] == 1 and opt2.param_groups[0]["params"][0] is next(model2.parameters())
    for model, o in ((a, opt), (model2, opt2)):
        o.zero_grad()
        backward(model, batches[1])
        o.step()
        o.eval()
    for p, q in zip(a.parameters(), model2.parameters()):
        assert torch.equal(p, q)
        assert torch.equal(opt.state[p]["z"], opt2.state[q]["z"]) and p.data_ptr() != q.data_ptr()


def test_schedule_free_with_a_torch_scheduler_and_skipped_steps():
    """A torch LR scheduler moves group["lr"] (warmup scales it) as with the package; a step that
    skip_nonfinite skips changes nothing, k included."""
    kwargs = SCHEDULE_FREE["AdamWScheduleFree"]
    a, b, batches = twins("mlp", torch.float64)
    ours = gft.AdamWScheduleFree(a.parameters(), skip_nonfinite=True, **kwargs)
    theirs = _package("AdamWScheduleFree", b.parameters(), kwargs)
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, lambda t: 1.0 / (1 + t)) for o in (ours, theirs)]
    for opt in (ours, theirs):
        opt.train()
    for t, x in enumerate(batches):
        step_pair(a, b, ours, theirs, x)
        for s in scheds:
            s.step()
        assert_schedule_free(a, b, ours, theirs, TOL[torch.float64], f"scheduled step {t}")
    before = [p.clone() for p in a.parameters()]
    entries = dict(ours.param_groups[0])
    backward(a, batches[0])
    next(a.parameters()).grad[0, 0] = float("nan")
    ours.step()
    assert ours.last_step_skipped and ours.param_groups[0]["k"] == entries["k"] == STEPS
    assert ours.param_groups[0]["weight_sum"] == entries["weight_sum"]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), before))
