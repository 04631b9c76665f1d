"""gf.optim.Adafactor and gf.optim.Muon against torch 2.13, step for step (parameters and every
state tensor, float32 and float64, 1-D/2-D/3-D), their torch state dicts, and bad inputs."""

import numpy as np
import pytest

import gradfuse as gf

torch = pytest.importorskip("torch")


def _run(torch_cls, gf_cls, shapes, dtype, steps=7, tol=None, **kw):
    rng = np.random.default_rng(0)
    ours = [rng.standard_normal(s).astype(dtype) for s in shapes]
    theirs = [torch.nn.Parameter(torch.tensor(p.copy())) for p in ours]
    opt_t, opt_g = torch_cls(theirs, **kw), gf_cls(ours, **kw)
    tol = tol or (2e-6 if dtype == np.float32 else 1e-13)
    for _ in range(steps):
        grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
        for t, g in zip(theirs, grads):
            t.grad = torch.tensor(g)
        opt_t.step()
        opt_g.step(grads)
        for t, p in zip(theirs, ours):
            np.testing.assert_allclose(p, t.detach().numpy(), rtol=tol, atol=tol)
            state_t, state_g = opt_t.state[t], opt_g.state[p]
            assert set(state_t) == set(state_g)
            for key, value in state_t.items():
                if key == "step":
                    assert state_g[key] == value.item()
                else:
                    assert state_g[key].shape == tuple(value.shape) and state_g[key].dtype == dtype
                    np.testing.assert_allclose(state_g[key], value.numpy(), rtol=tol, atol=tol)
    return opt_g, opt_t


ADAFACTOR_SETTINGS = [
    dict(),
    dict(lr=0.05, weight_decay=0.1, maximize=True),
    dict(eps=(1e-6, 1e-2), d=1.5, beta2_decay=-0.5),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", ADAFACTOR_SETTINGS)
def test_adafactor_follows_torch(dtype, kw):
    _run(torch.optim.Adafactor, gf.optim.Adafactor, [(), (7,), (5, 6), (3, 4, 5), (1, 9)], dtype, **kw)


MUON_SETTINGS = [
    dict(lr=0.02),
    dict(lr=0.05, nesterov=False, weight_decay=0.0, adjust_lr_fn="match_rms_adamw"),
    dict(momentum=0.5, ns_steps=3, ns_coefficients=(2.0, -1.5, 0.5), adjust_lr_fn="original"),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", MUON_SETTINGS)
def test_muon_follows_torch(dtype, kw):
    # Newton-Schulz runs in bf16 in both (torch on the CPU too): on these sizes the float32 sums
    # of every GEMM mostly round to the same bf16 values (bitwise: the test below); where one
    # rounding flips (a sum in another order), the step differs by a bf16 ulp of the update
    # (2**-8 relative) times the adjusted lr, which the tolerance allows.
    _run(torch.optim.Muon, gf.optim.Muon, [(8, 5), (5, 9), (16, 16)], dtype, tol=2e-3, **kw)


def test_newton_schulz_matches_torch_bitwise_on_small_matrices():
    from torch.optim._muon import _zeropower_via_newtonschulz

    rng = np.random.default_rng(3)
    for shape in [(8, 5), (5, 9), (32, 32), (48, 16)]:
        g = rng.standard_normal(shape).astype(np.float32)
        theirs = _zeropower_via_newtonschulz(torch.tensor(g), (3.4445, -4.7750, 2.0315), 5, 1e-7)
        ours = gf.optim.newton_schulz(g)
        assert ours.dtype.name == "bfloat16" and ours.shape == shape
        np.testing.assert_array_equal(ours.astype(np.float32), theirs.float().numpy())
    g = rng.standard_normal((200, 300)).astype(np.float32)  # longer sums: some roundings flip
    theirs = _zeropower_via_newtonschulz(torch.tensor(g), (3.4445, -4.7750, 2.0315), 5, 1e-7).float().numpy()
    ours = gf.optim.newton_schulz(g).astype(np.float32)
    assert np.linalg.norm(ours - theirs) <= 1e-2 * np.linalg.norm(theirs)


def test_torch_state_dicts_load():
    for torch_cls, gf_cls, shapes in [
        (torch.optim.Adafactor, gf.optim.Adafactor, [(3, 4), (4,)]),
        (torch.optim.Muon, gf.optim.Muon, [(3, 4)]),
    ]:
        opt_g, opt_t = _run(torch_cls, gf_cls, shapes, np.float64, steps=2, tol=1e-4)
        params = [p.detach().numpy().copy() for p in opt_t.param_groups[0]["params"]]
        fresh = gf_cls(params)
        fresh.load_state_dict(opt_t.state_dict())
        for p, t in zip(params, opt_t.param_groups[0]["params"]):
            for key, value in opt_t.state[t].items():
                got = fresh.state[p][key]
                assert got == value.item() if key == "step" else np.array_equal(got, value.numpy())
        assert fresh.state_dict()["param_groups"][0]["lr"] == opt_t.param_groups[0]["lr"]


def test_muon_takes_matrices_only_and_muon_with_adamw_splits():
    with pytest.raises(ValueError, match="Muon only supports 2D parameters"):
        gf.optim.Muon([np.zeros((3, 4), np.float32), np.zeros(4, np.float32)])
    model = gf.nn.Sequential([gf.nn.Dense(6, 5, activation="relu"), gf.nn.Dense(5, 2)], seed=0)
    both = gf.optim.muon_with_adamw(model.parameters(), lr=0.02, adamw_lr=1e-3)
    muon, adamw = both.muon, both.adamw
    assert [p.data.ndim for p in muon.param_groups[0]["params"]] == [2, 2]
    assert [p.data.ndim for p in adamw.param_groups[0]["params"]] == [1, 1]
    assert adamw.param_groups[0]["lr"] == 1e-3 and muon.param_groups[0]["lr"] == 0.02
    x, y = np.random.default_rng(0).standard_normal((16, 6)).astype(np.float32), np.arange(16) % 2
    hist = gf.train.fit(model, "cross_entropy", both, x, y, epochs=3, batch_size=8, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    # one gradient per parameter, in the model's order
    before = [p.data.copy() for p in model.parameters()]
    both.step([np.ones_like(p.data) for p in model.parameters()])
    assert all(not np.array_equal(b, p.data) for b, p in zip(before, model.parameters()))
    clone = gf.optim.muon_with_adamw(model.parameters(), lr=0.02, adamw_lr=1e-3)
    clone.load_state_dict(both.state_dict())
    assert clone.adamw.state_dict()["state"][0]["step"] == both.adamw.state_dict()["state"][0]["step"]


@pytest.mark.parametrize(
    "cls, kw, error",
    [
        (gf.optim.Adafactor, dict(lr=-1.0), "Learning rate should be >= 0"),
        (gf.optim.Adafactor, dict(beta2_decay=0.5), "beta2_decay should be <= 0"),
        (gf.optim.Adafactor, dict(eps=(-1.0, 1e-3)), "epsilon1 should be >= 0"),
        (gf.optim.Adafactor, dict(d=0.5), "Clipping threshold d should be >= 1"),
        (gf.optim.Adafactor, dict(weight_decay=-0.1), "weight_decay should be >= 0"),
        (gf.optim.Muon, dict(momentum=-0.1), "momentum should be >= 0"),
        (gf.optim.Muon, dict(adjust_lr_fn="x"), "Adjust learning rate function x is not supported"),
        (gf.optim.Muon, dict(ns_steps=100), "Number of steps must be less than 100"),
    ],
)
def test_bad_hyperparameters_say_what_torch_says(cls, kw, error):
    with pytest.raises(ValueError, match=error):
        cls([np.zeros((2, 3))], **kw)


def test_hyperparameter_arrays_must_be_0d():
    with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
        gf.optim.Adafactor([np.zeros((2, 3))], lr=np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
        gf.optim.Muon([np.zeros((2, 3))], lr=torch.tensor([0.1, 0.2]))
    gf.optim.Muon([np.zeros((2, 3))], lr=torch.tensor([0.1]))  # torch takes a 1-element tensor
    with pytest.raises(TypeError, match="expected a number, got str"):
        gf.optim.Muon([np.zeros((2, 3))], momentum="0.9")


def test_bad_gradient_leaves_nothing_changed():
    p, q = np.ones((2, 3)), np.ones(4)
    opt = gf.optim.Adafactor([p, q])
    with pytest.raises(ValueError, match="shape"):
        opt.step([np.ones((2, 3)), np.ones(3)])  # the second is wrong: the first is not stepped either
    assert np.array_equal(p, np.ones((2, 3))) and not opt.state[p] and not opt.state[q]


@pytest.mark.parametrize("name", ["adafactor", "muon_with_adamw"])
def test_fit_resumed_from_a_checkpoint_is_bitwise_the_uninterrupted_run(name, tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((48, 6)).astype(np.float32), np.arange(48) % 3

    def run(epochs, resume=None, callbacks=()):
        model = gf.nn.Sequential([gf.nn.Dense(6, 16, activation="relu"), gf.nn.Dense(16, 3)], seed=0)
        if name == "adafactor":
            opt = gf.optim.Adafactor(model.parameters(), lr=0.05)
        else:
            opt = gf.optim.muon_with_adamw(model.parameters(), lr=0.02, adamw_lr=0.01)
        gf.train.fit(
            model, "cross_entropy", opt, x, y, epochs=epochs, batch_size=16, verbose=0,
            callbacks=callbacks, resume=resume, shuffle=False,
        )  # fmt: skip
        return model

    path = str(tmp_path / "run.gfck")
    full = run(3)
    run(1, callbacks=[gf.train.ModelCheckpoint(path)])
    resumed = run(3, resume=gf.checkpoint.load(path), callbacks=[gf.train.ModelCheckpoint(path)])
    for a, b in zip(full.parameters(), resumed.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
