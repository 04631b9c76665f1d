"""The seeds' second-order methods: line search, linear and nonlinear CG, Newton, Hessian-free,
and the forward-mode derivatives (Module.jvp) and Gauss-Newton products they use, against finite
differences in float64."""

import math
import os

import numpy as np
import pytest

import gradfuse as gf
from gradfuse.optim import ConjugateGradient, HessianFree, ModelClosure, Newton, line_search, linear_cg


def quadratic(a, b=None):
    """f(x) = x^T A x / 2 - b^T x and its gradient."""
    b = np.zeros(len(a)) if b is None else b
    return lambda x: (0.5 * x @ a @ x - b @ x, a @ x - b)


def rosenbrock(x):
    f = (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
    g = np.array([-2 * (1 - x[0]) - 400 * x[0] * (x[1] - x[0] ** 2), 200 * (x[1] - x[0] ** 2)])
    return f, g


def spd(n, eigenvalues, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return q @ np.diag(eigenvalues) @ q.T


# ---- line search ------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["armijo", "strong_wolfe"])
@pytest.mark.parametrize("problem", ["quadratic", "rosenbrock"])
def test_line_search_satisfies_the_conditions_it_claims(method, problem):
    f = quadratic(spd(5, np.logspace(0, 2, 5))) if problem == "quadratic" else rosenbrock
    rng = np.random.default_rng(1)
    c1, c2 = 1e-4, 0.9
    for trial in range(20):
        x = rng.standard_normal(5 if problem == "quadratic" else 2)
        loss, grad = f(x)
        d = -grad * rng.uniform(0.01, 100)  # badly scaled: the first trial step is far off
        r = line_search(f, x, d, method=method, c1=c1, c2=c2)
        assert r.status == "converged", (trial, r)
        f_new, g_new = f(x + r.step * d)
        assert r.loss == pytest.approx(f_new) and np.allclose(r.grad, g_new)
        assert r.armijo and f_new <= loss + c1 * r.step * (grad @ d)
        strong = abs(g_new @ d) <= c2 * abs(grad @ d)
        assert r.curvature == strong
        if method == "strong_wolfe":
            assert strong
        assert r.evaluations == len(r.steps) + 1 <= 25  # the first evaluates f(x)


def test_line_search_refuses_an_ascent_direction_and_does_not_evaluate():
    calls = []

    def f(x):
        calls.append(x)
        return quadratic(np.eye(2))(x)

    x = np.array([1.0, 2.0])
    loss, grad = f(x)
    for method in ("armijo", "strong_wolfe"):
        r = line_search(f, x, grad, loss=loss, grad=grad, method=method)
        assert r.status == "not_descent" and r.step == 0.0 and not r.success and r.evaluations == 0
        r = line_search(f, x, np.zeros(2), loss=loss, grad=grad, method=method)
        assert r.status == "not_descent"
    assert len(calls) == 1


@pytest.mark.parametrize("method", ["armijo", "strong_wolfe"])
def test_line_search_nan_and_never_decreasing_end_with_a_status(method):
    x = np.array([1.0])
    r = line_search(lambda z: (math.nan, np.array([1.0])), x, np.array([-1.0]), method=method)
    assert r.status == "nonfinite" and r.step == 0.0
    # a function NaN everywhere but x: every trial fails, within the budget
    f = lambda z: (1.0, np.array([1.0])) if z[0] == 1.0 else (math.nan, np.array([math.nan]))  # noqa: E731
    r = line_search(f, x, np.array([-1.0]), method=method, max_evaluations=7)
    assert r.status == "max_evaluations" and r.step == 0.0 and r.evaluations == 7
    # a claimed descent direction along which the loss only grows (a wrong gradient)
    f = lambda z: (float(z[0] ** 2 + 10 * abs(z[0] - 1)), np.array([1.0]))  # noqa: E731
    r = line_search(f, x, np.array([-1.0]), method=method, max_evaluations=9)
    assert r.status == "max_evaluations" and r.step == 0.0 and r.evaluations <= 9


def test_line_search_bad_inputs():
    f = quadratic(np.eye(2))
    x = np.ones(2)
    with pytest.raises(ValueError, match="method"):
        line_search(f, x, -x, method="wolfe")
    with pytest.raises(ValueError, match="c1"):
        line_search(f, x, -x, method="strong_wolfe", c1=0.5, c2=0.1)
    with pytest.raises(ValueError, match="direction has 3"):
        line_search(f, x, -np.ones(3))
    with pytest.raises(ValueError, match="step"):
        line_search(f, x, -x, step=-1.0)
    with pytest.raises(ValueError, match="max_evaluations"):
        line_search(f, x, -x, max_evaluations=0)
    x0 = x.copy()
    line_search(f, x, -x)
    assert np.array_equal(x, x0)  # x is not changed


# ---- linear CG ----------------------------------------------------------------------------------------
def test_linear_cg_solves_spd_in_at_most_n_and_k_distinct_eigenvalues_in_k():
    n = 30  # condition number 10: with 100, rounding loses conjugacy and CG needs ~n + 9 products
    a = spd(n, np.logspace(0, 1, n))
    b = np.random.default_rng(2).standard_normal(n)
    r = linear_cg(lambda v: a @ v, b, tol=1e-10)
    assert r.status == "converged" and r.iterations <= n
    assert np.linalg.norm(a @ r.x - b) <= 1e-9 * np.linalg.norm(b)
    for k in (1, 3, 5):
        a = spd(n, np.repeat(np.linspace(1, 9, k), n // k + 1)[:n], seed=k)
        r = linear_cg(lambda v, a=a: a @ v, b, tol=1e-9)
        assert r.status == "converged" and r.iterations <= k
        assert np.allclose(a @ r.x, b, atol=1e-7)


def test_linear_cg_preconditioned_and_indefinite():
    d = np.logspace(0, 4, 40)
    b = np.ones(40)
    plain = linear_cg(lambda v: d * v, b, tol=1e-10)
    jacobi = linear_cg(lambda v: d * v, b, tol=1e-10, preconditioner=d)
    assert jacobi.iterations == 1 and np.allclose(jacobi.x, 1 / d) and plain.iterations > 1
    r = linear_cg(lambda v: np.array([1.0, -1.0]) * v, np.ones(2))
    assert r.status == "not_positive_definite" and np.all(np.isfinite(r.x))
    r = linear_cg(lambda v: v * math.nan, np.ones(2))
    assert r.status == "nonfinite"


# ---- the optimizers on plain closures ---------------------------------------------------------------
def closure_for(f, p):
    def closure():
        loss, g = f(p.data.astype(np.float64))
        p.grad = np.asarray(g, dtype=p.data.dtype)
        return loss

    return closure


def test_newton_reaches_a_quadratics_minimum_in_one_step():
    a = spd(6, [1, 2, 5, 10, 100, 1000])
    b = np.arange(6.0)
    p = gf.nn.Parameter(np.ones(6))
    opt = Newton([p])
    opt.step(closure_for(quadratic(a, b), p))
    assert opt.status == "ok"
    np.testing.assert_allclose(p.data, np.linalg.solve(a, b), rtol=1e-7)


def test_newton_damps_an_indefinite_hessian_and_refuses_big_models():
    p = gf.nn.Parameter(np.array([0.5, 0.1]))
    opt = Newton([p], line_search="armijo")
    f = lambda x: (x[0] ** 2 - x[1] ** 2 + x[1] ** 4, np.array([2 * x[0], -2 * x[1] + 4 * x[1] ** 3]))  # noqa: E731
    before = f(p.data)[0]
    opt.step(closure_for(f, p))
    assert opt.status == "damping_increased" and f(p.data)[0] < before
    with pytest.raises(ValueError, match="HessianFree"):
        Newton([gf.nn.Parameter(np.zeros(5000))])


@pytest.mark.parametrize("variant", ["PR+", "FR"])
def test_nonlinear_cg_on_a_quadratic_takes_n_steps_with_an_exact_line_search(variant):
    # on a quadratic, exact line searches make nonlinear CG linear CG: n distinct eigenvalues, n steps
    a = spd(4, [1, 3, 10, 30])
    b = np.ones(4)
    p = gf.nn.Parameter(np.zeros(4))
    opt = ConjugateGradient([p], variant=variant, c2=1e-6, max_evaluations=60)
    closure = closure_for(quadratic(a, b), p)
    for _ in range(4):
        opt.step(closure)
    np.testing.assert_allclose(p.data, np.linalg.solve(a, b), rtol=1e-4)


def test_nonlinear_cg_minimizes_rosenbrock_and_beats_gradient_descent():
    p = gf.nn.Parameter(np.array([-1.2, 1.0]))
    opt = ConjugateGradient([p])
    closure = closure_for(rosenbrock, p)
    for _ in range(200):
        opt.step(closure)
        if opt.status == "converged":
            break
    np.testing.assert_allclose(p.data, [1.0, 1.0], atol=1e-4)
    assert all(h["status"] in ("ok", "converged") for h in opt.history)


def test_closure_nan_or_never_decreasing_ends_with_a_clear_status():
    p = gf.nn.Parameter(np.ones(3))

    def nan_closure():
        p.grad = np.full(3, math.nan)
        return math.nan

    for opt in (ConjugateGradient([p]), Newton([p])):
        assert opt.step(nan_closure) != 0  # the loss (NaN) comes back
        assert opt.status == "nonfinite" and np.array_equal(p.data, np.ones(3))

    def liar():  # a gradient that does not descend the loss: every trial step is worse
        p.grad = np.ones(3)
        return float(10 * np.abs(p.data - 1).sum())

    opt = ConjugateGradient([p], max_evaluations=10)
    for _ in range(3):
        opt.step(liar)
        assert opt.status == "line_search_failed" and np.array_equal(p.data, np.ones(3))
    assert opt.history[-1]["evaluations"] <= 10


def test_closure_optimizers_bad_inputs():
    p = gf.nn.Parameter(np.ones(2))
    for cls in (ConjugateGradient, Newton, HessianFree):
        with pytest.raises(TypeError, match="Parameter"):
            cls([np.ones(2)])
        with pytest.raises(TypeError, match="iterable"):
            cls(p)
        with pytest.raises(ValueError, match="empty"):
            cls([])
        with pytest.raises(ValueError, match="learning rate"):
            cls([p], lr=-1.0)
        with pytest.raises(TypeError, match="closure"):
            cls([p]).step()
    with pytest.raises(ValueError, match="variant"):
        ConjugateGradient([p], variant="HS")
    with pytest.raises(TypeError, match="gauss_newton_product"):
        HessianFree([p]).step(closure_for(rosenbrock, p))

    def no_grad():
        p.grad = None
        return 1.0

    with pytest.raises(RuntimeError, match="without a gradient"):
        ConjugateGradient([p]).step(no_grad)


# ---- forward-mode derivatives and Gauss-Newton products (float64, against finite differences) ----------


def small_model(kind, seed=0):
    d = np.float64
    layers = {
        "dense": [gf.nn.Dense(4, 5, dtype=d)],
        "dense_tanh": [gf.nn.Dense(4, 5, activation="tanh", dtype=d)],
        "dense_gelu": [gf.nn.Dense(4, 5, activation="gelu", dtype=d)],
        "dense_sigmoid": [gf.nn.Dense(4, 5, activation="sigmoid", dtype=d)],
        "dropconnect": [gf.nn.DropConnect(4, 5, activation="tanh", p=0.3, seed=3, dtype=d)],
        "activations": [gf.nn.Dense(4, 5, dtype=d), gf.nn.Tanh(), gf.nn.Sigmoid(), gf.nn.LeakyReLU(), gf.nn.GELU()],
        "batchnorm": [gf.nn.Dense(4, 5, dtype=d), gf.nn.BatchNorm(5, dtype=d)],
        "dropout": [gf.nn.Dense(4, 5, dtype=d), gf.nn.Dropout(0.4, seed=1)],
        "softmax": [gf.nn.Dense(4, 5, dtype=d), gf.nn.Softmax()],
        "mlp": [
            gf.nn.Dense(4, 6, activation="tanh", dtype=d),
            gf.nn.BatchNorm(6, dtype=d),
            gf.nn.Dropout(0.25, seed=2),
            gf.nn.Dense(6, 6, activation="relu", dtype=d),
            gf.nn.Dense(6, 3, dtype=d),
        ],
    }[kind]
    model = gf.nn.Sequential(layers, seed=seed)
    for layer in layers:  # BatchNorm away from the identity, so that its parameters matter
        if isinstance(layer, gf.nn.BatchNorm):
            rng = np.random.default_rng(seed)
            layer.weight.data[...] = rng.uniform(0.5, 1.5, layer.num_features)
            layer.bias.data[...] = rng.standard_normal(layer.num_features)
            layer.running_mean[...] = rng.standard_normal(layer.num_features)
            layer.running_var[...] = rng.uniform(0.5, 2, layer.num_features)
    return model


def forward_at(model, x, shift, v, training):
    """The model's forward at parameters + shift * v, with the same dropout masks every time."""
    counters = [(m._masks, m._masks.counter) for m in model.modules() if hasattr(m, "_masks")]
    for p, vi in zip(model.parameters(), v):
        p.data += shift * vi
    y = model.forward(x, training=training)
    for p, vi in zip(model.parameters(), v):
        p.data -= shift * vi
    for masks, counter in counters:
        masks.counter = counter
    return y


KINDS = [
    "dense",
    "dense_tanh",
    "dense_gelu",
    "dense_sigmoid",
    "dropconnect",
    "activations",
    "batchnorm",
    "dropout",
    "softmax",
    "mlp",
]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_jvp_matches_finite_differences(kind, training):
    model = small_model(kind)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((7, 4))
    dx = rng.standard_normal((7, 4))
    v = [rng.standard_normal(p.data.shape) for p in model.parameters()]
    eps = 1e-6
    plus = forward_at(model, x + eps * dx, eps, v, training)
    minus = forward_at(model, x - eps * dx, -eps, v, training)
    forward_at(model, x, 0.0, v, training)
    state = [b.copy() for b in model.buffers()]
    jv = model.jvp(dx, dict(zip(model.parameters(), v)))
    np.testing.assert_allclose(jv, (plus - minus) / (2 * eps), rtol=1e-6, atol=1e-7)
    assert all(np.array_equal(a, b) for a, b in zip(state, model.buffers()))  # jvp changes no state
    # only the input moves / only the parameters move
    only_x = model.jvp(dx)
    only_p = model.jvp(None, dict(zip(model.parameters(), v)))
    np.testing.assert_allclose(only_x + only_p, jv, atol=1e-12)


def test_jvp_bad_inputs():
    model = small_model("dense")
    with pytest.raises(RuntimeError, match="forward"):
        model.jvp(np.ones((2, 4)))
    model.forward(np.ones((2, 4)))
    with pytest.raises(ValueError, match="shape"):
        model.jvp(None, {model[0].weight: np.ones(3)})

    class Custom(gf.nn.Module):
        def forward(self, x, training=None):
            return x

    with pytest.raises(NotImplementedError, match="Custom has no jvp"):
        Custom().jvp(np.ones(2))


def explicit_gauss_newton(model, loss, x, y, eps=1e-6):
    """J^T H J from finite differences: J column by column, H from differences of the loss gradient."""
    params = model.parameters()
    n = sum(p.data.size for p in params)
    out = forward_at(model, x, 0.0, [np.zeros_like(p.data) for p in params], True)
    columns = []
    for j in range(n):
        e = np.zeros(n)
        e[j] = 1.0
        v = np.split(e, np.cumsum([p.data.size for p in params])[:-1])
        v = [vi.reshape(p.data.shape) for vi, p in zip(v, params)]
        columns.append(((forward_at(model, x, eps, v, True) - forward_at(model, x, -eps, v, True)) / (2 * eps)).ravel())
    jac = np.stack(columns, axis=1)
    m = out.size
    hess = np.empty((m, m))
    for i in range(m):
        u = np.zeros(m)
        u[i] = eps
        hess[:, i] = (
            (loss(out + u.reshape(out.shape), y)[1] - loss(out - u.reshape(out.shape), y)[1]) / (2 * eps)
        ).ravel()
    return jac.T @ (0.5 * (hess + hess.T)) @ jac


@pytest.mark.parametrize("loss_name", ["cross_entropy", "mse"])
@pytest.mark.parametrize("kind", ["dense_tanh", "mlp"])
def test_gauss_newton_product_matches_finite_differences(kind, loss_name):
    model = small_model(kind)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((6, 4))
    out_dim = model.forward(x).shape[1]
    y = rng.integers(0, out_dim, 6) if loss_name == "cross_entropy" else rng.standard_normal((6, out_dim))
    loss = gf.losses.get_loss(loss_name)
    g = explicit_gauss_newton(model, loss, x, y)
    closure = ModelClosure(model, loss, x, y)
    counters = [(m._masks, m._masks.counter) for m in model.modules() if hasattr(m, "_masks")]
    closure()
    grads = [p.grad.copy() for p in model.parameters()]
    for masks, counter in counters:
        masks.counter = counter
    v = rng.standard_normal(g.shape[0])
    sizes = np.cumsum([p.data.size for p in model.parameters()])[:-1]
    gv = np.concatenate([u.ravel() for u in closure.gauss_newton_product(np.split(v, sizes))])
    np.testing.assert_allclose(gv, g @ v, rtol=1e-5, atol=1e-8)
    assert all(np.array_equal(a, p.grad) for a, p in zip(grads, model.parameters()))  # grads kept
    assert np.all(np.linalg.eigvalsh(g) > -1e-8)  # Gauss-Newton: positive semi-definite


def test_loss_hessian_products():
    rng = np.random.default_rng(7)
    z, v = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    labels = np.array([0, 1, -100, 3, 2])
    ce = gf.losses.CrossEntropyLoss()
    eps = 1e-6
    fd = (ce(z + eps * v, labels)[1] - ce(z - eps * v, labels)[1]) / (2 * eps)
    np.testing.assert_allclose(ce.hessian_product(z, labels, v), fd, atol=1e-8)
    mse = gf.losses.get_loss("mse")
    fd = (mse(z + eps * v, z)[1] - mse(z - eps * v, z)[1]) / (2 * eps)
    np.testing.assert_allclose(mse.hessian_product(z, z, v), fd, atol=1e-8)


# ---- full-batch training: fit and the documented loop --------------------------------------------------
def two_moons(n=128, seed=0):
    rng = np.random.default_rng(seed)
    t, labels = rng.uniform(0, np.pi, n), rng.integers(0, 2, n)
    x = np.stack([np.cos(t) + labels, np.sin(t) * (1 - 2 * labels) + 0.5 * labels], 1)
    return x + 0.1 * rng.standard_normal((n, 2)), labels


def moons_model(hidden=8):
    d = np.float64
    return gf.nn.Sequential(
        [gf.nn.Dense(2, hidden, activation="tanh", dtype=d), gf.nn.Dense(hidden, 2, dtype=d)], seed=0
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda m: HessianFree(m.parameters()),
        lambda m: HessianFree(m.parameters(), preconditioner="jacobi"),
        lambda m: ConjugateGradient(m.parameters(), max_iter=3),
        lambda m: Newton(m.parameters(), hessian="gauss_newton", damping=1e-3, line_search="armijo"),
        lambda m: gf.optim.LBFGS(m.parameters(), max_iter=3, line_search_fn="strong_wolfe"),
    ],
    ids=["hf", "hf_jacobi", "cg", "newton_gn", "lbfgs"],
)
def test_fit_trains_full_batch_with_a_closure_driven_optimizer(make):
    x, y = two_moons()
    model = moons_model()
    opt = make(model)
    history = gf.train.fit(model, "cross_entropy", opt, x, y, epochs=20, batch_size=len(x), shuffle=False, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.3 * losses[0] and all(b <= a + 1e-12 for a, b in zip(losses, losses[1:]))
    assert history.history["accuracy"][-1] > 0.9
    if not isinstance(opt, gf.optim.LBFGS):
        assert {h["status"] for h in opt.history} <= {"ok", "converged", "damping_increased"}
        assert opt.last_status == opt.status
    # fit's loss is the loss before each step, the closure's first evaluation
    closure = ModelClosure(model, "cross_entropy", x, y)
    assert closure() < losses[-1]


def test_the_documented_loop_and_fit_refusals():
    x, y = two_moons()
    model = moons_model()
    opt = HessianFree(model.parameters(), damping=1.0)
    closure = ModelClosure(model, "cross_entropy", x.astype(np.float32), y)  # converted like fit converts
    first = closure()
    for _ in range(5):
        opt.step(closure)
    assert closure() < 0.5 * first and opt.status == "ok"
    with pytest.raises(ValueError, match="clip_norm"):
        gf.train.fit(model, "cross_entropy", opt, x, y, clip_norm=1.0, verbose=0)
    with pytest.raises(TypeError, match="hessian_product"):
        ModelClosure(model, "hinge", x, y)
        HessianFree(model.parameters()).step(ModelClosure(model, "hinge", x, y))


# ---- the pictures (gf.viz) --------------------------------------------------------------------------
def test_viz_paths_show_why_curvature_matters():
    canyon = gf.viz.SURFACES["canyon"]
    paths = gf.viz.optimizer_paths(
        canyon,
        {"SGD": None, "Newton": None, "CG": lambda ps: ConjugateGradient(ps, c2=1e-6, max_evaluations=50)},
        steps=5,
    )
    assert np.abs(paths["Newton"][1]).max() < 1e-6  # the minimum in one step
    assert np.abs(paths["CG"][1]).max() > 0.1 and np.abs(paths["CG"][2]).max() < 1e-6  # in n = 2
    assert np.abs(paths["SGD"][-1]).max() > 1.0  # still far along the canyon
    rosenbrock = gf.viz.optimizer_paths("rosenbrock", ["CG", "CG (FR)", "Newton (Armijo)"], steps=80)
    for name, path in rosenbrock.items():
        np.testing.assert_allclose(path[-1], [1, 1], atol=1e-4, err_msg=name)


def test_viz_line_search_steps_are_what_the_searches_accepted(tmp_path):
    data = gf.viz.line_search_steps("rosenbrock", ["CG", "Newton (Armijo)"], steps=40)
    lengths, evaluations = data["Newton (Armijo)"]
    assert lengths[0] == 1.0 and set(lengths) <= {1.0 * 0.5**k for k in range(25)}  # backtracking from 1
    assert np.all(evaluations >= 1) and np.all(data["CG"][0] > 0)
    pytest.importorskip("matplotlib")
    for written in (
        gf.viz.plot_curvature(tmp_path / "curvature.png", steps=5),
        gf.viz.plot_line_search_steps(tmp_path / "steps.png", steps=20),
    ):
        assert os.path.getsize(written) > 10_000


def test_hessian_free_nan_and_never_decreasing_end_with_a_status():
    x, y = two_moons(32)
    model = moons_model()
    opt = HessianFree(model.parameters(), max_evaluations=6)

    class Worse(ModelClosure):  # every evaluation after the first reports a higher loss
        def __call__(self):
            return super().__call__() + 10.0 * self.calls

    before = [p.data.copy() for p in model.parameters()]
    closure = Worse(model, "cross_entropy", x, y)
    opt.step(closure)
    assert opt.status == "rejected" and opt.param_groups[0]["damping"] > 1.0
    assert all(np.array_equal(a, p.data) for a, p in zip(before, model.parameters()))
    assert closure.calls < 30  # bounded: backtracking over the saved iterates, then <= 6 line-search calls
    model[0].weight.data[0, 0] = math.nan
    opt.step(ModelClosure(model, "cross_entropy", x, y))
    assert opt.status == "nonfinite" and np.isnan(model[0].weight.data[0, 0])
    assert np.array_equal(model[0].bias.data, before[1])


@pytest.mark.parametrize("cls", [HessianFree, ConjugateGradient])
def test_fit_resumed_from_a_checkpoint_is_the_uninterrupted_run(cls, tmp_path):
    x, y = two_moons(64)
    path = tmp_path / "run.gf"
    model = moons_model()
    fit = dict(epochs=3, batch_size=len(x), verbose=0)
    gf.train.fit(
        model, "cross_entropy", cls(model.parameters()), x, y, callbacks=[gf.train.ModelCheckpoint(path)], **fit
    )
    resumed = moons_model()
    fit["epochs"] = 5
    gf.train.fit(resumed, "cross_entropy", cls(resumed.parameters()), x, y, resume=gf.load(path), **fit)
    straight = moons_model()
    gf.train.fit(straight, "cross_entropy", cls(straight.parameters()), x, y, **fit)
    assert all(np.array_equal(a.data, b.data) for a, b in zip(resumed.parameters(), straight.parameters()))
