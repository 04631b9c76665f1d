"""bf16 compute copies written by the optimizers (mixed precision: fp32 masters, bf16 weights).

After every step of every optimizer, on both backends, through the arena path (one kernel call, a
bf16 arena beside the fp32 one) and the multi-tensor path (plain arrays, Parameters): each copy is
bitwise its master rounded by ml_dtypes (nearest even), and the masters and state are bitwise
those of the same optimizer without copies. A skipped step leaves the copies alone. The copies are
derived: never in a state_dict, rewritten by Module.load_state_dict, refresh_compute_copies and
refresh_bf16; a checkpoint round trip restores them through the masters. The kernel rows
themselves (bad inputs, C++ vs twin, ISA paths, threads) are covered by the generated tests.
"""

from __future__ import annotations

import numpy as np
import pytest

import gradfuse as gf
import kernel_cases as kc
from gradfuse.nn.parameter import ParameterArena
from gradfuse.optim import optimizer as optimizer_module

BF16 = kc.BF16
SHAPES = [(17,), (3, 5), (1,), (40,), (0,), (2, 8)]
CLASSES = kc.optimizer_classes()


def same_bits(a, b) -> bool:
    bits = {2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a.view(bits), b.view(bits))


def assert_copies_follow(params, copies, what=""):
    for i, (p, c) in enumerate(zip(params, copies)):
        data = p.data if isinstance(p, gf.nn.Parameter) else p
        assert same_bits(c, data.astype(BF16)), f"{what} copies[{i}] is not params[{i}].astype(bfloat16)"


def grads_for(step: int):
    rng = np.random.default_rng(100 + step)
    return [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


def initial():
    rng = np.random.default_rng(7)
    return [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


def make(path: str):
    """Parameters for one path: 'arena' (a ParameterArena), 'parameters' (separate Parameters) or
    'arrays' (plain ndarrays)."""
    if path == "arena":
        return ParameterArena([gf.nn.Parameter(a) for a in initial()]).parameters
    if path == "parameters":
        return [gf.nn.Parameter(a) for a in initial()]
    return initial()


def data_of(params):
    return [p.data if isinstance(p, gf.nn.Parameter) else p for p in params]


def step(opt, params, k):
    grads = grads_for(k)
    if isinstance(params[0], gf.nn.Parameter):
        for p, g in zip(params, grads):
            if p.grad is None:
                p.grad = g
            else:
                p.grad[...] = g
        return opt.step()
    return opt.step(grads)


@pytest.mark.parametrize("path", ["arena", "parameters", "arrays"])
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_copies_follow_every_step_and_change_nothing_else(cls, path, backend):
    kwargs = kc.all_states(cls)
    plain, mixed = make(path), make(path)
    opt_plain, opt_mixed = cls(plain, **kwargs), cls(mixed, **kwargs)
    copies = opt_mixed.make_compute_copies()
    assert all(c is not None and c.dtype == BF16 for c in copies)
    assert_copies_follow(mixed, copies, "fresh")
    for k in range(4):
        assert step(opt_plain, plain, k) is True
        assert step(opt_mixed, mixed, k) is True
        assert_copies_follow(mixed, copies, f"step {k}")
        for a, b in zip(data_of(plain), data_of(mixed)):
            assert same_bits(a, b)
    sd_plain, sd_mixed = opt_plain.state_dict(), opt_mixed.state_dict()
    for i, entry in sd_mixed["state"].items():
        for key, value in entry.items():
            if isinstance(value, np.ndarray):
                assert value.dtype != BF16
                assert same_bits(value, sd_plain["state"][i][key]), (i, key)


def record_calls(monkeypatch):
    calls = []
    real = optimizer_module.run_optim

    def spy(row, arrays, scalars, skip):
        calls.append(arrays)
        return real(row, arrays, scalars, skip)

    monkeypatch.setattr(optimizer_module, "run_optim", spy)
    return calls


def test_arena_steps_in_one_call_with_one_flat_copy(monkeypatch, backend):
    arena = ParameterArena([gf.nn.Parameter(a) for a in initial()])
    params = arena.parameters
    opt = gf.optim.Adam(params, lr=0.01)
    step(opt, params, 0)  # the fast path is set up before the copies exist
    copies = arena.make_bf16_copies()
    assert copies.dtype == BF16 and copies.shape == arena.data.shape
    assert all(p.bf16.base is not None for p in params)
    calls = record_calls(monkeypatch)
    for k in range(1, 3):
        step(opt, params, k)
        assert_copies_follow(params, [p.bf16 for p in params])
    assert len(calls) == 2
    for arrays in calls:
        assert len(arrays[0]) == 1 and len(arrays[-1]) == 1  # one flat view of the params, one of the copies
        assert np.shares_memory(arrays[-1][0], copies)


def test_some_parameters_with_copies_some_without(backend):
    params = make("parameters")
    opt = gf.optim.AdamW(params, lr=0.01, weight_decay=0.1)
    step(opt, params, 0)
    with_copy = params[::2]
    for p in with_copy:
        p.make_bf16_copy()
    for k in range(1, 3):
        step(opt, params, k)
        assert_copies_follow(with_copy, [p.bf16 for p in with_copy])
    assert all(p.bf16 is None for p in params[1::2])
    params[0].drop_bf16_copy()
    step(opt, params, 3)
    assert params[0].bf16 is None
    assert_copies_follow(with_copy[1:], [p.bf16 for p in with_copy[1:]])


def test_copy_made_in_an_arena_after_the_fast_path_and_gradient_none(backend):
    """A parameter without a gradient is not stepped: its master and copy stay as they were."""
    params = make("arena")
    opt = gf.optim.SGD(params, lr=0.1, momentum=0.9)
    step(opt, params, 0)
    params[1].make_bf16_copy()  # in an arena: the whole arena gets copies
    assert all(p.bf16 is not None for p in params)
    for p, g in zip(params, grads_for(1)):
        p.grad = g
    params[3].grad = None
    frozen = params[3].bf16.copy()
    opt.step()
    assert_copies_follow(params, [p.bf16 for p in params])
    assert same_bits(frozen, params[3].bf16)


def test_skipped_step_leaves_the_copies(backend):
    params = make("arrays")
    opt = gf.optim.Adam(params, lr=0.01, skip_nonfinite=True)
    copies = opt.make_compute_copies()
    step(opt, params, 0)
    before = [c.copy() for c in copies]
    grads = grads_for(1)
    grads[3][5] = np.nan
    assert opt.step(grads) is False
    assert all(same_bits(a, b) for a, b in zip(before, copies))


def test_two_groups_with_and_without_copies(backend):
    a, b = make("arrays"), make("arrays")
    opt = gf.optim.Adam([{"params": a}, {"params": b, "lr": 0.1}], lr=0.01)
    copies = [None] * len(a) + [np.zeros(x.shape, BF16) for x in b]
    opt.set_compute_copies(copies)
    assert_copies_follow(b, copies[len(a) :], "registered")
    opt.step(grads_for(0) + grads_for(1))
    assert_copies_follow(b, copies[len(a) :], "stepped")
    assert opt.compute_copies()[: len(a)] == [None] * len(a)


def test_set_compute_copies_refuses_and_changes_nothing():
    params = make("arrays") + [np.zeros(3)]
    opt = gf.optim.SGD(params, lr=0.1)
    good = [np.zeros(p.shape, BF16) for p in params]
    with pytest.raises(ValueError, match="got 1 copies"):
        opt.set_compute_copies(good[:1])
    with pytest.raises(TypeError, match="float32 masters"):
        opt.set_compute_copies(good)  # the float64 parameter
    cases = [
        (TypeError, "bfloat16", np.zeros(SHAPES[0], np.float32)),
        (ValueError, "shape", np.zeros((18,), BF16)),
        (ValueError, "C-contiguous", np.zeros((34,), BF16)[::2]),
    ]
    for exc, match, bad in cases:
        with pytest.raises(exc, match=match):
            opt.set_compute_copies([bad] + good[1:-1] + [None])
    assert opt.compute_copies() == [None] * len(params)
    with pytest.raises(TypeError, match="float32"):
        gf.nn.Parameter(np.zeros(3)).make_bf16_copy()


def test_refresh_after_the_masters_change(backend):
    params = make("arena") + make("parameters")[:2]
    arrays = make("arrays")
    opt = gf.optim.Adam([{"params": params}, {"params": arrays}], lr=0.01)
    copies = opt.make_compute_copies()
    for p in params:
        p.data[...] = 3.0
    for a in arrays:
        a[...] = -2.0
    opt.refresh_compute_copies()
    assert_copies_follow(params + arrays, copies)
    params[0].data[...] = 5.0
    params[0].refresh_bf16()
    assert_copies_follow(params[:1], copies[:1])


def model():
    return gf.nn.Sequential([gf.nn.Dense(6, 5, activation="relu"), gf.nn.Dense(5, 3)], seed=0)


def train(net, opt, steps=3):
    rng = np.random.default_rng(3)
    for _ in range(steps):
        x = rng.standard_normal((8, 6)).astype(np.float32)
        y = rng.integers(0, 3, 8)
        net.zero_grad()
        loss, dlogits = gf.losses.cross_entropy(net.forward(x), y)
        net.backward(dlogits)
        opt.step()


def test_state_dicts_never_hold_copies_and_loading_refreshes_them(tmp_path, backend):
    net = model()
    for p in net.parameters():
        p.make_bf16_copy()
    opt = gf.optim.Adam(net.parameters(), lr=0.01)
    train(net, opt)
    assert_copies_follow(net.parameters(), [p.bf16 for p in net.parameters()])
    state = {"model": net.state_dict(), "optimizer": opt.state_dict()}
    for value in state["model"].values():
        assert value.dtype != BF16
    path = tmp_path / "ckpt.gfc"
    gf.save(state, path)  # the checkpoint format has no bfloat16: it would refuse a copy

    fresh = model()
    for p in fresh.parameters():
        p.make_bf16_copy()
    fresh_opt = gf.optim.Adam(fresh.parameters(), lr=0.01)
    loaded = gf.load(path)
    fresh.load_state_dict(loaded["model"])
    fresh_opt.load_state_dict(loaded["optimizer"])
    for a, b in zip(net.parameters(), fresh.parameters()):
        assert same_bits(a.data, b.data) and same_bits(a.bf16, b.bf16)
    train(net, opt)
    train(fresh, fresh_opt)
    for a, b in zip(net.parameters(), fresh.parameters()):
        assert same_bits(a.data, b.data) and same_bits(a.bf16, b.bf16)


def test_copies_attached_and_dropped_between_steps_are_seen(backend):
    """The optimizer rereads its copies only when one was attached or dropped: every way counts."""
    arrays = make("arrays")
    opt = gf.optim.Adam(arrays, lr=0.01)
    step(opt, arrays, 0)
    copies = opt.make_compute_copies()
    step(opt, arrays, 1)
    assert_copies_follow(arrays, copies)
    opt.set_compute_copies([None] * len(arrays))
    frozen = [c.copy() for c in copies]
    step(opt, arrays, 2)
    assert all(same_bits(a, b) for a, b in zip(frozen, copies))
    params = make("parameters")
    opt = gf.optim.Adam(params, lr=0.01)
    step(opt, params, 0)
    params[1].bf16 = np.zeros(params[1].shape, BF16)  # assigned directly
    step(opt, params, 1)
    assert_copies_follow(params[1:2], [params[1].bf16])
