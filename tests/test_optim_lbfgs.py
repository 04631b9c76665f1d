"""gf.optim.LBFGS against torch.optim.LBFGS: the iterates step for step (Rosenbrock, a small MLP
whose parameters live in a ParameterArena), both line_search_fn settings; closures that return
NaN or never decrease the loss end with a clear status."""

import numpy as np
import pytest

import gradfuse as gf

torch = pytest.importorskip("torch")


def _rosenbrock(x):
    a, b = x[0], x[1]
    f = (1 - a) ** 2 + 100 * (b - a * a) ** 2
    return f, np.array([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)], x.dtype)


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
@pytest.mark.parametrize("dtype, steps, tol", [(np.float64, 8, 1e-8), (np.float32, 2, 1e-3)])
def test_rosenbrock_follows_torch(line_search_fn, dtype, steps, tol):
    # float32 Rosenbrock is ill-conditioned: rounding differences (the compact form's sums vs
    # torch's two-loop recursion) grow after a few line searches, so float32 is held for 2 steps
    x = np.array([-1.5, 2.0], dtype)
    xt = torch.nn.Parameter(torch.tensor(x.copy()))
    kw = dict(lr=1 if line_search_fn else 0.05, max_iter=5, history_size=4, line_search_fn=line_search_fn)
    ours, theirs = gf.optim.LBFGS([x], **kw), torch.optim.LBFGS([xt], **kw)

    def closure_torch():
        theirs.zero_grad()
        f = (1 - xt[0]) ** 2 + 100 * (xt[1] - xt[0] ** 2) ** 2
        f.backward()
        return f

    for _ in range(steps):
        loss_t = theirs.step(closure_torch)
        loss_g = ours.step(lambda: (lambda f, g: (f, [g]))(*_rosenbrock(x)))
        np.testing.assert_allclose(loss_g, loss_t.item(), rtol=tol)
        np.testing.assert_allclose(x, xt.detach().numpy(), rtol=tol, atol=tol)
        st, sg = theirs.state[xt], ours.state[x]
        assert (st["n_iter"], st["func_evals"]) == (sg["n_iter"], sg["func_evals"])
        assert len(st["old_dirs"]) == len(sg["old_dirs"])
        for key in ("old_dirs", "old_stps"):
            for a, b in zip(st[key], sg[key]):
                np.testing.assert_allclose(b, a.numpy(), rtol=tol * 10, atol=tol)
        for key in ("d", "prev_flat_grad"):
            np.testing.assert_allclose(sg[key], st[key].numpy(), rtol=tol * 10, atol=tol)
        np.testing.assert_allclose(float(sg["H_diag"]), float(st["H_diag"]), rtol=tol * 10)
    if dtype == np.float64 and line_search_fn:
        assert ours.last_status in ("max_iter", "tolerance_change", "tolerance_grad")


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_mlp_in_an_arena_follows_torch(line_search_fn):
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((32, 6)), rng.integers(0, 3, 32)
    shapes = [(6, 8), (8,), (8, 3), (3,)]
    init = [rng.standard_normal(s) * 0.5 for s in shapes]
    arena = gf.nn.ParameterArena(init, dtype=np.float64)
    w1, b1, w2, b2 = arena.parameters
    tp = [torch.nn.Parameter(torch.tensor(a)) for a in init]
    kw = dict(lr=0.5, max_iter=6, history_size=5, line_search_fn=line_search_fn)
    ours, theirs = gf.optim.LBFGS(arena.parameters, **kw), torch.optim.LBFGS(tp, **kw)
    onehot = np.eye(3)[labels]

    def closure():  # the gradfuse contract: writes each p.grad (here: into the arena) and returns the loss
        h = np.tanh(x @ w1.data + b1.data)
        z = h @ w2.data + b2.data
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        loss = -np.log(p[np.arange(32), labels]).mean()
        dz = (p - onehot) / 32
        dh = dz @ w2.data.T * (1 - h * h)
        w2.grad[...], b2.grad[...] = h.T @ dz, dz.sum(0)
        w1.grad[...], b1.grad[...] = x.T @ dh, dh.sum(0)
        return loss

    def closure_torch():
        theirs.zero_grad()
        z = torch.tanh(torch.tensor(x) @ tp[0] + tp[1]) @ tp[2] + tp[3]
        loss = torch.nn.functional.cross_entropy(z, torch.tensor(labels))
        loss.backward()
        return loss

    for _ in range(5):
        np.testing.assert_allclose(ours.step(closure), theirs.step(closure_torch).item(), rtol=1e-9)
        for p, t in zip(arena.parameters, tp):
            np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-7, atol=1e-9)
    assert ours._flat_params() is not None  # the arena run was the flat vector: no gather


def test_state_dict_round_trip_and_torch_state_loads():
    x = np.array([-1.5, 2.0])
    opt = gf.optim.LBFGS([x], history_size=3, line_search_fn="strong_wolfe")
    closure = lambda: (lambda f, g: (f, [g]))(*_rosenbrock(x))  # noqa: E731
    opt.step(closure)
    sd = opt.state_dict()
    saved = [a.copy() for a in sd["state"][0]["old_dirs"]]
    x2 = x.copy()
    clone = gf.optim.LBFGS([x2], history_size=3, line_search_fn="strong_wolfe")
    clone.load_state_dict(sd)
    opt.step(closure)
    clone.step(lambda: (lambda f, g: (f, [g]))(*_rosenbrock(x2)))
    np.testing.assert_allclose(x2, x, rtol=1e-12)
    for a, b in zip(sd["state"][0]["old_dirs"], saved):  # a snapshot: later steps left it alone
        np.testing.assert_array_equal(a, b)
    # torch's state dict (tensors) loads as well
    xt = torch.nn.Parameter(torch.tensor([-1.5, 2.0], dtype=torch.float64))
    topt = torch.optim.LBFGS([xt], history_size=3, line_search_fn="strong_wolfe")

    def ct():
        topt.zero_grad()
        f = (1 - xt[0]) ** 2 + 100 * (xt[1] - xt[0] ** 2) ** 2
        f.backward()
        return f

    topt.step(ct)
    x3 = xt.detach().numpy().copy()
    mine = gf.optim.LBFGS([x3], history_size=3, line_search_fn="strong_wolfe")
    mine.load_state_dict(topt.state_dict())
    topt.step(ct)
    mine.step(lambda: (lambda f, g: (f, [g]))(*_rosenbrock(x3)))
    np.testing.assert_allclose(x3, xt.detach().numpy(), rtol=1e-8)


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_nan_closure_stops_with_a_status(line_search_fn):
    x = np.array([1.0, -2.0, 3.0])
    calls = []

    def closure():
        calls.append(1)
        if len(calls) > 2:
            return float("nan"), [np.full(3, np.nan)]
        return float(x @ x), [2 * x]

    opt = gf.optim.LBFGS([x], max_iter=50, line_search_fn=line_search_fn)
    opt.step(closure)
    assert opt.last_status == "nonfinite"
    assert np.isfinite(x).all()
    assert len(calls) <= 4  # stopped at the first NaN, not at max_eval
    before = x.copy()
    opt.step(closure)  # NaN at once: nothing changes
    assert opt.last_status == "nonfinite" and np.array_equal(x, before)


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_never_decreasing_closure_ends(line_search_fn):
    x = np.array([1.0, 2.0])
    calls = []

    def closure():  # the loss grows whatever the step: a wrong gradient sign
        calls.append(1)
        return float(len(calls)), [np.array([1.0, 1.0])]

    opt = gf.optim.LBFGS([x], max_iter=10, max_eval=12, line_search_fn=line_search_fn)
    opt.step(closure)
    assert len(calls) <= 12 + 1
    assert opt.last_status in ("max_iter", "max_eval", "tolerance_change")


def test_bad_inputs():
    x = np.zeros(3)
    with pytest.raises(ValueError, match="Invalid learning rate"):
        gf.optim.LBFGS([x], lr=-1)
    with pytest.raises(ValueError, match="strong_wolfe"):
        gf.optim.LBFGS([x], line_search_fn="armijo")
    with pytest.raises(ValueError, match="parameter groups"):
        gf.optim.LBFGS([{"params": [x]}, {"params": [np.zeros(2)]}])
    opt = gf.optim.LBFGS([x])
    with pytest.raises(TypeError, match="closure"):
        opt.step(None)
    with pytest.raises(TypeError, match=r"\(loss, grads\)"):
        opt.step(lambda: 1.0)  # plain arrays have no .grad
    gf.optim.LBFGS([x], lr=np.array(0.5))  # a 0-d array lr, as torch takes a tensor


def test_parameters_outside_an_arena_step_like_plain_arrays():
    """Separate gf.nn.Parameter objects (gradients gathered, written back per parameter) take the
    same steps as the same numbers as plain arrays with a (loss, grads) closure."""
    rng = np.random.default_rng(2)
    a = rng.uniform(1, 10, 7)
    start = [rng.standard_normal(3), rng.standard_normal(4)]
    params = [gf.nn.Parameter(s.copy()) for s in start]
    arrays = [s.copy() for s in start]

    def grads_of(xs):
        flat = np.concatenate([x.ravel() for x in xs])
        return 0.5 * flat @ (a * flat), np.split(a * flat, [3])

    def closure_params():
        loss, grads = grads_of([p.data for p in params])
        for p, g in zip(params, grads):
            p.grad = g
        return loss

    ours = gf.optim.LBFGS(params, history_size=3, line_search_fn="strong_wolfe")
    plain = gf.optim.LBFGS(arrays, history_size=3, line_search_fn="strong_wolfe")
    for _ in range(3):
        ours.step(closure_params)
        plain.step(lambda: grads_of(arrays))
        for p, x in zip(params, arrays):
            np.testing.assert_array_equal(p.data, x)
    assert ours._flat_params() is None
