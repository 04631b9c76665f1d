"""Issue 14 item 4: hyperparameters given as 0-d arrays or 0-d torch tensors (constructors, and
torch state dicts whose lr / betas / ... are tensors) work like the same floats, for every optimizer
(the kernel-table rows and the classes beside them); Adagrad's per-group initial accumulator value
is ignored as torch ignores it (every group's sum starts from the constructor's value)."""

import numpy as np
import pytest

import gradfuse as gf
import kernel_cases as kc

torch = pytest.importorskip("torch")

CLASSES = kc.optimizer_classes()
VARIED = {cls.__name__: kc.varied(cls) for cls in CLASSES}
# the optimizers beside the table (steps that are not element-wise), with numbers off their defaults
OTHERS = {
    "Adafactor": (gf.optim.Adafactor, dict(lr=0.02, beta2_decay=-0.7, eps=(1e-6, 2e-3), d=1.5, weight_decay=0.1)),
    "Muon": (gf.optim.Muon, dict(lr=0.02, weight_decay=0.05, momentum=0.9, eps=1e-6)),
}
ALL = {**{cls.__name__: (cls, VARIED[cls.__name__]) for cls in CLASSES}, **OTHERS}


def _as(kind, value):
    """value with its numbers (in pairs too) as 0-d arrays or 0-d torch tensors."""
    if isinstance(value, (tuple, list)):
        return type(value)(_as(kind, v) for v in value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    return np.array(value) if kind == "ndarray" else torch.tensor(float(value), dtype=torch.float64)


def _shapes(name):
    return [(3, 5), (4, 6)] if name == "Muon" else [(3, 5), (7,), (2, 2, 3)]


def _params(name, dtype=np.float32):
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s).astype(dtype) for s in _shapes(name)]


def _steps(opt, params, n=3):
    for step in range(n):
        rng = np.random.default_rng(100 + step)
        opt.step([rng.standard_normal(p.shape).astype(p.dtype) for p in params])


@pytest.mark.parametrize("kind", ["ndarray", "tensor"])
@pytest.mark.parametrize("name", list(ALL))
def test_constructor_takes_0d_hyperparameters(name, kind):
    cls, kw = ALL[name]
    plain, zero_d = _params(name), _params(name)
    _steps(cls(plain, **kw), plain)
    _steps(cls(zero_d, **{k: _as(kind, v) for k, v in kw.items()}), zero_d)
    for a, b in zip(plain, zero_d):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", list(ALL))
def test_state_dict_with_tensor_hyperparameters_loads(name):
    """A torch-made state dict holds 0-d tensors where the numbers were tensors: it loads, and the
    steps after it are those of the same floats."""
    cls, kw = ALL[name]
    reference, loaded = _params(name), _params(name)
    ref_opt = cls(reference, **kw)
    _steps(ref_opt, reference, 1)
    sd = ref_opt.state_dict()
    for group in sd["param_groups"]:
        for key, value in list(group.items()):
            if key not in ("params", "param_names"):
                group[key] = _as("tensor", value)
    for entry in sd["state"].values():
        for key, value in list(entry.items()):
            entry[key] = torch.tensor(value) if isinstance(value, (np.ndarray, int, float)) else value
    opt = cls(loaded, **kw)
    for a, b in zip(loaded, reference):
        a[...] = b
    opt.load_state_dict(sd)
    _steps(ref_opt, reference, 2)
    _steps(opt, loaded, 2)
    for a, b in zip(loaded, reference):
        np.testing.assert_array_equal(a, b)


def test_torch_sgd_state_dict_with_a_tensor_lr():
    # the case of the issue: torch's own state dict, lr a tensor
    t = torch.nn.Parameter(torch.ones(3))
    sgd = torch.optim.SGD([t], lr=torch.tensor(0.001), momentum=0.9)
    t.grad = torch.ones(3)
    sgd.step()
    p = np.ones(3, np.float32) - 0.001
    ours = gf.optim.SGD([p], lr=0.5, momentum=0.9)
    ours.load_state_dict(sgd.state_dict())
    t.grad = torch.full((3,), 2.0)
    sgd.step()
    ours.step([np.full(3, 2.0, np.float32)])
    np.testing.assert_allclose(p, t.detach().numpy(), rtol=1e-6)


def test_adagrad_initial_accumulator_value_per_group_is_torchs():
    """torch starts every group's `sum` from the constructor's initial_accumulator_value (its
    per-group value is kept in param_groups but not used), eagerly at construction."""
    shapes = [(4,), (2, 3)]
    rng = np.random.default_rng(0)
    init = [rng.standard_normal(s) for s in shapes]
    ours = [a.copy() for a in init]
    theirs = [torch.nn.Parameter(torch.tensor(a)) for a in init]

    def groups(ps):
        return [{"params": [ps[0]]}, {"params": [ps[1]], "initial_accumulator_value": 5.0}]

    opt_g = gf.optim.Adagrad(groups(ours), lr=0.1, initial_accumulator_value=0.5)
    opt_t = torch.optim.Adagrad(groups(theirs), lr=0.1, initial_accumulator_value=0.5)
    for p, t in zip(ours, theirs):
        np.testing.assert_array_equal(opt_g.state[p]["sum"], opt_t.state[t]["sum"].numpy())
    extra = np.zeros(2)  # a group added later: torch creates its sum at its first step, from the same value
    opt_g.add_param_group({"params": [extra], "initial_accumulator_value": 3.0})
    t_new = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt_t.add_param_group({"params": [t_new], "initial_accumulator_value": 3.0})
    ours.append(extra)
    theirs.append(t_new)
    for step in range(3):
        grads = [rng.standard_normal(p.shape) for p in ours]
        for t, g in zip(theirs, grads):
            t.grad = torch.tensor(g)
        opt_t.step()
        opt_g.step(grads)
        for p, t in zip(ours, theirs):
            np.testing.assert_allclose(p, t.detach().numpy(), rtol=1e-14)
            np.testing.assert_allclose(opt_g.state[p]["sum"], opt_t.state[t]["sum"].numpy(), rtol=1e-14)
