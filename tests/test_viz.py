"""gf.viz: optimizer paths on the 2-D surfaces (the real optimizers), schedule curves, training
curves, the pictures (written, read back, not blank), the `viz` command, and the lazy import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gradfuse as gf
from gradfuse.__main__ import main
from gradfuse.viz import OPTIMIZERS, SURFACES


@pytest.fixture
def mpl():
    return pytest.importorskip("matplotlib")


def check_png(path, min_colours: int = 12, min_bytes: int = 10_000) -> np.ndarray:
    """The file is a PNG of a sensible size with a picture in it (not one flat colour)."""
    import matplotlib.image

    path = Path(path)
    assert path.is_file(), path
    assert min_bytes < path.stat().st_size < 300_000, (path, path.stat().st_size)
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    rgb = image[..., :3]
    assert rgb.std() > 0.05, f"{path} is nearly blank"
    colours = np.unique((rgb.reshape(-1, 3) * 255).round().astype(np.uint8), axis=0)
    assert len(colours) >= min_colours, f"{path} has only {len(colours)} colours"
    return rgb


def step_independently(surface, name, steps):
    """The same optimizer, built and stepped here without gf.viz: where it ends."""
    cls_name, kwargs = OPTIMIZERS[name]
    p = np.array(surface.start, dtype=np.float32)
    opt = getattr(gf.optim, cls_name)([p], lr=surface.lrs[name], **kwargs)
    for _ in range(steps):
        opt.step([np.array(surface.grad(float(p[0]), float(p[1])), dtype=np.float32)])
    return p


# ---- paths ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("surface", list(SURFACES))
def test_each_path_starts_at_the_start_and_ends_where_the_optimizer_ended(surface):
    s = SURFACES[surface]
    paths = gf.viz.optimizer_paths(surface)
    assert list(paths) == list(OPTIMIZERS)
    for name, path in paths.items():
        assert path.shape == (s.steps + 1, 2) and path.dtype == np.float32
        np.testing.assert_array_equal(path[0], np.float32(s.start))
        np.testing.assert_array_equal(path[-1], step_independently(s, name, s.steps), err_msg=name)
        assert np.isfinite(path).all(), name
        assert (np.abs(np.diff(path, axis=0)).sum(axis=1) > 0).any(), f"{name} never moved"


def test_the_surfaces_gradients_are_their_functions_derivatives():
    rng = np.random.default_rng(0)
    h = 1e-6
    for name, s in SURFACES.items():
        for x, y in rng.uniform(-1.5, 1.5, size=(5, 2)):
            numeric = ((s.f(x + h, y) - s.f(x - h, y)) / (2 * h), (s.f(x, y + h) - s.f(x, y - h)) / (2 * h))
            np.testing.assert_allclose(s.grad(x, y), numeric, rtol=1e-5, atol=1e-5, err_msg=name)
        if s.minimum is not None:
            np.testing.assert_allclose(s.grad(*s.minimum), (0.0, 0.0), atol=1e-12, err_msg=name)


def test_the_pictures_show_what_the_docs_say():
    canyon = gf.viz.optimizer_paths("canyon", ["SGD", "Momentum", "Adam"])
    assert np.linalg.norm(canyon["Adam"][-1]) < 0.05  # Adam ends near the canyon's minimum
    assert np.linalg.norm(canyon["Momentum"][-1]) < np.linalg.norm(canyon["SGD"][-1]) / 5
    assert canyon["SGD"][-1, 0] < -0.5  # SGD zigzags across the walls and crawls along the floor
    rosenbrock = gf.viz.optimizer_paths("rosenbrock", ["Adam", "SGD"])
    assert np.linalg.norm(rosenbrock["Adam"][-1] - (1.0, 1.0)) < 0.25
    assert np.linalg.norm(rosenbrock["SGD"][-1] - (1.0, 1.0)) > 1.0
    saddle = gf.viz.optimizer_paths("saddle", ["SGD", "Adam"])
    assert abs(saddle["SGD"][-1, 1]) < 0.5 and abs(saddle["SGD"][-1, 0]) < 0.1  # stalls at the saddle
    assert abs(saddle["Adam"][-1, 1]) > 1.0  # the normalised step escapes along y


def test_paths_take_learning_rates_factories_steps_and_a_start():
    s = SURFACES["quadratic"]
    paths = gf.viz.optimizer_paths(
        s, {"Adam": 0.01, "mine": lambda ps: gf.optim.SGD(ps, lr=0.1)}, steps=7, start=(1.0, 2.0)
    )
    assert set(paths) == {"Adam", "mine"}
    p = np.array([1.0, 2.0], dtype=np.float32)
    opt = gf.optim.SGD([p], lr=0.1)
    for t in range(7):
        opt.step([np.array(s.grad(float(p[0]), float(p[1])), dtype=np.float32)])
        np.testing.assert_array_equal(paths["mine"][t + 1], p)
    slow = gf.viz.optimizer_paths(s, ["Adam"], steps=7, start=(1.0, 2.0))["Adam"]
    assert not np.array_equal(slow, paths["Adam"])  # lr 0.01 is not the surface's lr
    with pytest.raises(ValueError, match="unknown optimizer"):
        gf.viz.optimizer_paths(s, ["Shampoo"])
    with pytest.raises(ValueError, match="unknown surface"):
        gf.viz.optimizer_paths("himmelblau")


@pytest.mark.parametrize("name", list(gf.viz.NEWER))
def test_the_newer_optimizers_draw_their_paths_by_name(name):
    """ASGD, schedule-free, Adafactor, LAMB, LARS on the surfaces with a minimum: finite paths that
    end near it (the class, its kwargs and the lr are the ones NEWER names), the same as a hand loop."""
    for surface in ("quadratic", "canyon", "rosenbrock"):
        s = SURFACES[surface]
        path = gf.viz.optimizer_paths(s, [name])[name]
        assert np.isfinite(path).all(), (name, surface)
        start, end = (np.linalg.norm(path[i] - np.array(s.minimum)) for i in (0, -1))
        assert end < start, (name, surface)
    cls_name, kwargs = gf.viz.NEWER[name]
    p = np.array(SURFACES["quadratic"].start, dtype=np.float32)
    opt = getattr(gf.optim, cls_name)([p], **kwargs)
    for _ in range(3):
        opt.step([np.array(SURFACES["quadratic"].grad(float(p[0]), float(p[1])), dtype=np.float32)])
    np.testing.assert_array_equal(gf.viz.optimizer_paths("quadratic", [name], steps=3)[name][-1], p)


# ---- schedules and training curves ------------------------------------------------------------------------
def test_schedule_curves_are_the_real_schedulers():
    curves = gf.viz.schedule_curves(steps=100, lr=0.1)
    assert len(curves) >= 10
    t = np.arange(100)
    np.testing.assert_allclose(curves["StepLR(step_size=25, gamma=0.5)"], 0.1 * 0.5 ** (t // 25), rtol=1e-12)
    np.testing.assert_allclose(curves["CosineAnnealingLR"], 0.05 * (1 + np.cos(np.pi * t / 100)), atol=1e-12)
    plateau = curves["ReduceLROnPlateau(patience=5)"]
    assert plateau[0] == 0.1 and plateau[-1] < 0.01 and (np.diff(plateau) <= 0).all()
    warm = curves["warmup(10) + cosine"]
    assert warm[0] == 0.0 and warm[10] == pytest.approx(0.1) and warm.argmax() == 10


def small_fit(epochs=3, clip_norm=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 8)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)
    model = gf.nn.Sequential([gf.nn.Dense(8, 16, seed=0), gf.nn.ReLU(), gf.nn.Dense(16, 3, seed=1)])
    logger = gf.train.BatchLogger()
    history = gf.train.fit(
        model,
        "cross_entropy",
        gf.optim.Adam(model.parameters(), lr=1e-2),
        x,
        y,
        epochs=epochs,
        batch_size=32,
        validation_split=0.25,
        callbacks=[logger],
        clip_norm=clip_norm,
        verbose=0,
    )
    return history, logger


def test_batch_logger_keeps_every_batchs_gradient_norm():
    history, logger = small_fit(epochs=3)
    batches = -(-180 // 32)
    assert len(logger["grad_norm"]) == len(logger["loss"]) == len(logger["lr"]) == 3 * batches
    norms = np.asarray(logger["grad_norm"]).reshape(3, batches)
    np.testing.assert_allclose(norms.mean(axis=1), history["grad_norm"], rtol=1e-12)  # fit's epoch mean
    position = logger.epoch_position()
    np.testing.assert_allclose(position[batches - 1 :: batches], [1.0, 2.0, 3.0])
    assert (np.diff(position) > 0).all()


def test_history_and_grad_norm_pictures(mpl, tmp_path):
    history, logger = small_fit(epochs=4, clip_norm=0.5)
    check_png(gf.viz.plot_history(history, tmp_path / "history.png", title="a fit", batch_logger=logger))
    check_png(gf.viz.plot_history(history, tmp_path / "epochs_only.png"))
    check_png(gf.viz.plot_grad_norms(logger, tmp_path / "batches.png", clip_norm=0.5))
    check_png(gf.viz.plot_grad_norms(history, tmp_path / "epochs.png"), min_colours=8, min_bytes=3_000)
    params = [gf.nn.Parameter(np.ones(10, dtype=np.float32))]
    norms = []
    for scale in np.geomspace(0.1, 10.0, 30):
        params[0].grad = np.full(10, scale, dtype=np.float32)
        norms.append(gf.optim.clip_grad_norm_(params, 1.0))
    check_png(gf.viz.plot_grad_norms(norms, tmp_path / "clip.png", clip_norm=1.0), min_colours=8, min_bytes=3_000)


def test_plot_history_of_an_empty_history_says_so(mpl, tmp_path):
    with pytest.raises(ValueError, match="no epochs"):
        gf.viz.plot_history(gf.train.History(), tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()


@pytest.mark.parametrize(
    "lrs,scale", [([1e-3, 1e-2, 1e-1, 3e-2], "log"), ([1e-2, 5e-3, 2e-3], "linear"), ([1e-2] * 3, "linear")]
)
def test_the_lr_panel_is_logarithmic_when_the_rates_span_decades(mpl, tmp_path, monkeypatch, lrs, scale):
    figures = []
    monkeypatch.setattr(gf.viz, "_save", lambda fig, path, dpi: figures.append(fig) or str(path))
    history = gf.train.History()
    for epoch, lr in enumerate(lrs):
        history.append(epoch, {"loss": 1.0 / (epoch + 1), "lr": lr})
    gf.viz.plot_history(history, tmp_path / "h.png")
    (ax,) = [ax for ax in figures[0].axes if ax.get_title() == "learning rate"]
    assert ax.get_yscale() == scale


# ---- pictures ---------------------------------------------------------------------------------------------
def test_plot_paths_draws_the_paths(mpl, tmp_path):
    out = gf.viz.plot_paths("canyon", tmp_path / "canyon.png", optimizers=["SGD", "Adam", "Lion"])
    assert out == str(tmp_path / "canyon.png")
    rgb = check_png(out)
    from matplotlib.colors import to_rgb

    for colour in ("tab:blue", "tab:orange", "tab:green"):  # the three paths (and their loss curves)
        close = (np.abs(rgb - np.array(to_rgb(colour))) < 0.06).all(axis=-1)
        assert close.sum() > 300, colour


def test_plot_paths_of_given_paths_on_a_users_surface(mpl, tmp_path):
    himmelblau = gf.viz.Surface(
        "himmelblau",
        "Himmelblau",
        lambda x, y: (x * x + y - 11) ** 2 + (x + y * y - 7) ** 2,
        lambda x, y: (4 * x * (x * x + y - 11) + 2 * (x + y * y - 7), 2 * (x * x + y - 11) + 4 * y * (x + y * y - 7)),
        start=(0.0, 0.0),
        xlim=(-5, 5),
        ylim=(-5, 5),
        minimum=(3.0, 2.0),
        steps=100,
        lrs={"SGD": 0.01},
        log_contours=True,
    )
    paths = gf.viz.optimizer_paths(himmelblau, ["SGD", "Adam"])  # Adam: the class's default lr
    np.testing.assert_allclose(paths["SGD"][-1], (3.0, 2.0), atol=1e-3)
    assert np.linalg.norm(paths["Adam"][-1]) < 0.2  # lr 1e-3: 100 steps of at most 1e-3 each
    check_png(gf.viz.plot_paths(himmelblau, tmp_path / "h.png", paths=paths, title="Himmelblau"))


def test_plot_schedules(mpl, tmp_path):
    check_png(gf.viz.plot_schedules(tmp_path / "schedules.png", steps=60, lr=1.0))


def test_the_viz_command_writes_the_gallery(mpl, tmp_path, capsys):
    pytest.importorskip("sklearn")
    out = tmp_path / "gallery"
    assert main(["viz", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    names = [f"paths_{s}.png" for s in SURFACES] + ["schedules.png", "digits_fit.png"]
    names += ["curvature.png", "line_search_steps.png"]
    assert sorted(os.listdir(out)) == sorted(names)
    for name in names:
        assert f"wrote {out / name}" in printed
        check_png(out / name)


def test_without_matplotlib_the_message_says_what_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "gradfuse\[plot\]"'):
        gf.viz.plot_schedules(tmp_path / "s.png")
    assert main(["viz", "--out", str(tmp_path / "g")]) == 2
    assert 'pip install "gradfuse[plot]"' in capsys.readouterr().err
    assert gf.viz.optimizer_paths("saddle", ["Adam"], steps=3)["Adam"].shape == (4, 2)  # no matplotlib needed


def test_import_gradfuse_does_not_import_matplotlib():
    import gradfuse

    env = dict(os.environ)
    package_parent = str(Path(gradfuse.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    code = (
        "import sys, gradfuse\n"
        "assert 'matplotlib' not in sys.modules and 'gradfuse.viz' not in sys.modules\n"
        "import gradfuse.__main__\n"
        "gradfuse.viz.optimizer_paths('canyon', ['Adam'], steps=2)\n"
        "assert 'matplotlib' not in sys.modules, 'gf.viz imported matplotlib before drawing'\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
