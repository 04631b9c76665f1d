"""Schedule-free SGD / AdamW: step-for-step parity with the schedulefree package 1.4.1 (parameters,
z, exp_avg_sq, the group entries, the train/eval swap), and the swap wired into fit, checkpoints and
early stopping so that an evaluation or a save sees the averaged weights x.

The kernels' own generated tests (both backends bitwise, bad inputs, determinism, ISA paths,
checkpoints of the optimizer state) come from their kernel-table rows."""

import numpy as np
import pytest

import gradfuse as gf

SF_CLASSES = [gf.optim.SGDScheduleFree, gf.optim.AdamWScheduleFree]

SETTINGS = {
    "SGDScheduleFree": [
        dict(lr=0.5),
        dict(lr=0.2, momentum=0.8, weight_decay=0.05, warmup_steps=3),
        dict(lr=0.3, r=0.5, weight_lr_power=1.0, warmup_steps=4),
    ],
    "AdamWScheduleFree": [
        dict(lr=0.01),
        dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, warmup_steps=3),
        dict(lr=0.01, r=1.0, weight_lr_power=0.0, warmup_steps=5),
    ],
}

SHAPES = [(0,), (1,), (15,), (16,), (17,), (5, 7), (300,)]
# steps at which a parameter has no gradient (schedulefree skips it; k advances all the same)
NO_GRAD = {2: {1}, 5: {3, 4}}
GROUP_ENTRIES = ("k", "lr_max", "weight_sum", "scheduled_lr", "train_mode")


def _case_list():
    return [
        pytest.param(cls, kw, id=f"{cls.__name__}-{i}")
        for cls in SF_CLASSES
        for i, kw in enumerate(SETTINGS[cls.__name__])
    ]


def _compare(ours, theirs, dtype, where):
    rtol, atol = (2e-5, 2e-6) if dtype == np.float32 else (1e-12, 1e-13)
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=rtol, atol=atol, err_msg=where)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls, kwargs", _case_list())
def test_steps_and_swap_match_schedulefree(cls, kwargs, dtype):
    torch = pytest.importorskip("torch")
    sf = pytest.importorskip("schedulefree")
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    # two groups: the second with its own lr
    split = 4
    lr2 = kwargs["lr"] * 0.5
    ours = cls([{"params": params[:split]}, {"params": params[split:], "lr": lr2}], **kwargs)
    theirs = getattr(sf, cls.__name__)(
        [{"params": tparams[:split]}, {"params": tparams[split:], "lr": lr2}], foreach=False, **kwargs
    )
    ours.train()
    theirs.train()

    def run(steps, start):
        for t in range(start, start + steps):
            grads = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
            for i in NO_GRAD.get(t, ()):
                grads[i] = None
            for tp, g in zip(tparams, grads):
                tp.grad = None if g is None else torch.tensor(g.copy())  # schedulefree edits p.grad
            ours.step(grads)
            theirs.step()
            check(f"step {t}")

    def check(where):
        for i, (p, tp) in enumerate(zip(params, tparams)):
            _compare(p, tp.detach(), dtype, f"{where}: params[{i}]")
            tstate = theirs.state[tp]
            assert set(ours.state[p]) == set(tstate), where
            for key, value in tstate.items():
                _compare(ours.state[p][key], value, dtype, f"{where}: params[{i}] {key}")
        for g, tg in zip(ours.param_groups, theirs.param_groups):
            for key in GROUP_ENTRIES:
                assert g[key] == pytest.approx(tg[key], rel=1e-15), f"{where}: {key}"

    run(7, 0)
    ours.eval()
    theirs.eval()
    check("after eval()")  # parameters hold x
    ours.train()
    theirs.train()
    check("after train()")
    run(3, 7)


def test_loads_a_schedulefree_state_dict_and_continues_alike():
    torch = pytest.importorskip("torch")
    sf = pytest.importorskip("schedulefree")
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal(33).astype(np.float32)
    tp = torch.tensor(p0.copy(), requires_grad=True)
    theirs = sf.AdamWScheduleFree([tp], lr=0.01, warmup_steps=2, foreach=False)
    theirs.train()
    for _ in range(4):
        tp.grad = torch.tensor(rng.standard_normal(33).astype(np.float32))
        theirs.step()
    p = tp.detach().numpy().copy()
    ours = gf.optim.AdamWScheduleFree([p], lr=0.01, warmup_steps=2)
    ours.load_state_dict(theirs.state_dict())
    assert ours.param_groups[0]["k"] == 4 and ours.param_groups[0]["train_mode"] is True
    g = rng.standard_normal(33).astype(np.float32)
    tp.grad = torch.tensor(g.copy())
    theirs.step()
    ours.step([g])
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("cls", SF_CLASSES, ids=lambda c: c.__name__)
def test_both_backends_bitwise_with_the_swap(cls):
    rng = np.random.default_rng(2)
    start = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    results = []
    for backend in ("cpp", "numpy"):
        params = [p.copy() for p in start]
        grng = np.random.default_rng(3)
        with gf.use_backend(backend):
            opt = cls(params, lr=0.05, weight_decay=0.01, warmup_steps=2)
            for t in range(6):
                opt.step([grng.standard_normal(s).astype(np.float32) for s in SHAPES])
                if t == 3:
                    opt.eval()
                    opt.train()
            opt.eval()
        results.append((params, [opt.state[p]["z"].copy() for p in params]))
    for a, b in zip(results[0][0] + results[0][1], results[1][0] + results[1][1]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cls", SF_CLASSES, ids=lambda c: c.__name__)
def test_step_in_eval_mode_fails_loudly_and_a_fresh_optimizer_enters_train_mode(cls):
    p = np.ones(8, np.float32)
    opt = cls([p], lr=0.1)
    assert opt.param_groups[0]["train_mode"] is False  # schedulefree's start
    opt.step([np.full(8, 0.5, np.float32)])  # nothing stepped yet: x = y = z, so it simply trains
    assert opt.param_groups[0]["train_mode"] is True
    opt.eval()
    before = p.copy()
    with pytest.raises(RuntimeError, match=r"eval mode.*optimizer\.train\(\)"):
        opt.step([np.full(8, 0.5, np.float32)])
    np.testing.assert_array_equal(p, before)
    assert opt.param_groups[0]["k"] == 1
    opt.train()
    opt.step([np.full(8, 0.5, np.float32)])
    assert opt.param_groups[0]["k"] == 2


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(momentum=0.0), ValueError, "Momentum must be between 0 and 1 exclusive: 0.0"),
        (dict(momentum=1.0), ValueError, "Momentum must be between 0 and 1 exclusive: 1.0"),
        (dict(lr=-1.0), ValueError, "Invalid learning rate: -1.0"),
        (dict(warmup_steps=-1), ValueError, "Invalid warmup_steps value: -1"),
        (dict(r="1"), TypeError, "Invalid r value"),
    ],
)
def test_sgd_schedulefree_refuses_bad_hyperparameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        gf.optim.SGDScheduleFree([np.zeros(3, np.float32)], **kwargs)


def test_adamw_schedulefree_refuses_beta1_zero():
    # eval() divides by beta1: schedulefree would fail there with ZeroDivisionError
    with pytest.raises(ValueError, match="Invalid beta parameter at index 0: 0.0"):
        gf.optim.AdamWScheduleFree([np.zeros(3, np.float32)], betas=(0.0, 0.999))


# ---- fit, checkpoints, early stopping ----------------------------------------------------------------------
def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    return x, y


def _model():
    return gf.nn.Sequential([gf.nn.Dense(6, 8, activation="relu"), gf.nn.Dense(8, 2)], seed=3)


def _reference(epochs, x, y, xv, yv):
    """fit's contract written out: one full batch per epoch, train() before the step, eval() for
    the validation loss; returns the x weights and the validation loss after each epoch."""
    model = _model()
    opt = gf.optim.AdamWScheduleFree(model.parameters(), lr=0.05)
    weights, val = [], []
    for _ in range(epochs):
        opt.train()
        pred = model.forward(x, training=True)
        _, dpred = gf.losses.cross_entropy(pred, y)
        model.backward(dpred)
        opt.step()
        opt.eval()
        val.append(gf.train.evaluate(model, "cross_entropy", xv, yv)["loss"])
        weights.append({k: v.copy() for k, v in model.state_dict().items()})
    return weights, val


def _fit(model, opt, x, y, xv, yv, epochs, **kw):
    return gf.train.fit(
        model, "cross_entropy", opt, x, y, epochs=epochs, batch_size=len(x), shuffle=False,
        validation_data=(xv, yv), verbose=0, **kw,
    )  # fmt: skip


def _assert_weights(model, expected):
    state = model.state_dict()
    for key, value in expected.items():
        np.testing.assert_array_equal(state[key], value, err_msg=key)


def test_fit_validates_and_returns_the_eval_weights():
    x, y = _data()
    xv, yv = _data(40, seed=1)
    weights, val = _reference(5, x, y, xv, yv)
    model = _model()
    opt = gf.optim.AdamWScheduleFree(model.parameters(), lr=0.05)
    history = _fit(model, opt, x, y, xv, yv, 5)
    assert history["val_loss"] == val  # bitwise: validation saw x after every epoch
    _assert_weights(model, weights[-1])  # the model fit returns holds x
    assert opt.param_groups[0]["train_mode"] is False
    # a second fit call goes back to y and trains on
    assert np.isfinite(_fit(model, opt, x, y, xv, yv, 1)["loss"][0])
    assert opt.param_groups[0]["k"] == 6


def test_checkpoints_hold_the_eval_weights_and_resume_the_same_trajectory(tmp_path):
    x, y = _data()
    xv, yv = _data(40, seed=1)
    weights, _ = _reference(5, x, y, xv, yv)
    path = str(tmp_path / "sf-{epoch}.gfz")
    model = _model()
    opt = gf.optim.AdamWScheduleFree(model.parameters(), lr=0.05)
    straight = _fit(model, opt, x, y, xv, yv, 5, callbacks=[gf.train.ModelCheckpoint(path)])
    for epoch in (1, 3, 5):
        state = gf.load(path.format(epoch=epoch))
        saved = {k: np.asarray(v) for k, v in state["model"].items()}
        for key, value in weights[epoch - 1].items():
            np.testing.assert_array_equal(saved[key], value, err_msg=f"epoch {epoch}: {key}")
        assert state["optimizer"]["param_groups"][0]["train_mode"] is False
    resumed_model = gf.nn.Sequential([gf.nn.Dense(6, 8, activation="relu"), gf.nn.Dense(8, 2)], seed=11)
    resumed_opt = gf.optim.AdamWScheduleFree(resumed_model.parameters(), lr=0.05)
    resumed = _fit(resumed_model, resumed_opt, x, y, xv, yv, 5, resume=gf.load(path.format(epoch=2)))
    assert resumed["val_loss"] == straight["val_loss"]
    _assert_weights(resumed_model, weights[-1])


def test_checkpoint_written_mid_training_holds_x_and_training_goes_on_at_y():
    x, y = _data()
    model = _model()
    opt = gf.optim.SGDScheduleFree(model.parameters(), lr=0.1)
    opt.train()
    for _ in range(3):
        pred = model.forward(x, training=True)
        model.backward(gf.losses.cross_entropy(pred, y)[1])
        opt.step()
    y_weights = {k: v.copy() for k, v in model.state_dict().items()}
    trainer = gf.train._Trainer(model, gf.losses.get_loss("cross_entropy"), opt, [])
    state = gf.train.resume_state(trainer, 3)
    opt.eval()
    x_weights = {k: v.copy() for k, v in model.state_dict().items()}
    opt.train()
    for key in x_weights:
        np.testing.assert_array_equal(np.asarray(state["model"][key]), x_weights[key])
        np.testing.assert_allclose(model.state_dict()[key], y_weights[key], rtol=1e-6, atol=1e-7)
    assert not all(np.array_equal(x_weights[k], y_weights[k]) for k in x_weights)


def test_early_stopping_restores_the_best_eval_weights():
    x, y = _data()
    xv, yv = _data(40, seed=1)
    weights, val = _reference(8, x, y, xv, yv)
    model = _model()
    opt = gf.optim.AdamWScheduleFree(model.parameters(), lr=0.05)
    stop = gf.train.EarlyStopping(patience=8, restore_best_weights=True, min_delta=1e9)  # best: epoch 1
    _fit(model, opt, x, y, xv, yv, 8, callbacks=[stop])
    assert stop.best_epoch == 0
    _assert_weights(model, weights[0])
    stop = gf.train.EarlyStopping(patience=20, restore_best_weights=True)
    model = _model()
    opt = gf.optim.AdamWScheduleFree(model.parameters(), lr=0.05)
    _fit(model, opt, x, y, xv, yv, 8, callbacks=[stop])
    assert stop.best_epoch == int(np.argmin(val))
    _assert_weights(model, weights[stop.best_epoch])


@pytest.mark.parametrize("cls", SF_CLASSES, ids=lambda c: c.__name__)
def test_swap_rewrites_the_bf16_compute_copies(cls):
    pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(4)
    params = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    opt = cls(params, lr=0.1)
    copies = opt.make_compute_copies()
    for _ in range(3):
        opt.step([rng.standard_normal(s).astype(np.float32) for s in SHAPES])
    for mode in ("eval", "train"):
        getattr(opt, mode)()
        for p, c in zip(params, copies):
            np.testing.assert_array_equal(c, p.astype(c.dtype), err_msg=mode)
