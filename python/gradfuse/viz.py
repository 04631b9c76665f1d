"""Pictures of the optimizers and of training runs (matplotlib, headless).

    import gradfuse as gf
    paths = gf.viz.optimizer_paths("rosenbrock", ["SGD", "Adam"], steps=500)   # name -> (501, 2) array
    gf.viz.plot_paths("rosenbrock", "rosenbrock.png")          # a panel per optimizer + the losses
    gf.viz.plot_schedules("schedules.png")                     # lr against step, real schedulers
    gf.viz.plot_history(history, "fit.png")                    # loss / accuracy / lr / gradient norm
    python -m gradfuse viz --out gallery/                      # all of them

The paths are those of the real optimizers: each step is a gf.optim optimizer stepping a 2-element
float32 parameter with the surface's analytic gradient, through the same fused kernels as training.
The surfaces: from the seeds (the lecture notes), a quadratic with condition number 5 and the
"long canyon" it describes (here stretched to condition number 100) and a saddle x^2 - y^2; and
Rosenbrock's banana valley, the classic test of first-order methods (not in the seeds). Each has
per-optimizer learning rates chosen so that its picture shows the optimizers' characters (the lr is
in each panel's title), not a contest won by tuning.

This module is imported on first use of gf.viz and imports matplotlib only when it draws, so the
paths and the curves are available without it. pip install "gradfuse[plot]" for the pictures.
"""

from __future__ import annotations

import io
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import losses, nn, optim, train
from .data import load_digits_split
from .optim import lr_scheduler

__all__ = [
    "Surface",
    "SURFACES",
    "OPTIMIZERS",
    "get_surface",
    "optimizer_path",
    "optimizer_paths",
    "plot_paths",
    "default_schedules",
    "schedule_curves",
    "plot_schedules",
    "plot_history",
    "plot_grad_norms",
    "gallery",
]

INSTALL_HINT = 'matplotlib is needed for gradfuse\'s pictures: pip install "gradfuse[plot]"'


def _pyplot():
    """matplotlib.pyplot on the headless Agg backend, or an ImportError that says what to install."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---- the surfaces -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Surface:
    """A 2-D loss surface: f(x, y) and grad(x, y) -> (df/dx, df/dy) take NumPy arrays (broadcasting),
    a default start, the plotted range, the minimum (None for the saddle), the default number of
    steps and each optimizer's learning rate on this surface."""

    name: str
    title: str
    f: Callable
    grad: Callable
    start: tuple
    xlim: tuple
    ylim: tuple
    minimum: tuple | None
    steps: int
    lrs: dict = field(repr=False)
    log_contours: bool = False

    def value(self, point) -> float:
        return float(self.f(float(point[0]), float(point[1])))


def _quadratic(eigenvalues, angle):
    """f = p^T A p / 2 with A's eigenvalues along the axes rotated by `angle`."""
    c, s = math.cos(angle), math.sin(angle)
    rotation = np.array([[c, -s], [s, c]])
    a = rotation @ np.diag(eigenvalues) @ rotation.T

    def f(x, y):
        return 0.5 * (a[0, 0] * x * x + 2 * a[0, 1] * x * y + a[1, 1] * y * y)

    def grad(x, y):
        return a[0, 0] * x + a[0, 1] * y, a[1, 0] * x + a[1, 1] * y

    return f, grad


def _rosenbrock(x, y):
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2


def _rosenbrock_grad(x, y):
    return -2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)


def _saddle(x, y):
    return x * x - y * y


def _saddle_grad(x, y):
    return 2 * x, -2 * y


# Learning rates: SGD near the stability limit 2 / (largest curvature) so that it zigzags where the
# surface is ill-conditioned; momentum methods at a tenth of it (momentum 0.9 multiplies the step
# by up to ten); the adaptive methods at a step length that fits the picture's scale.
SURFACES: dict[str, Surface] = {
    s.name: s
    for s in (
        Surface(
            "quadratic",
            "quadratic, condition number 5 (the seeds' ill-conditioned Hessian)",
            *_quadratic([1.0, 5.0], math.pi / 4),
            start=(-2.0, -1.2),
            xlim=(-2.5, 2.5),
            ylim=(-2.0, 2.0),
            minimum=(0.0, 0.0),
            steps=60,
            lrs=dict(
                SGD=0.35,
                Momentum=0.04,
                Nesterov=0.04,
                Adagrad=0.8,
                RMSprop=0.04,
                Adadelta=10.0,
                Adam=0.15,
                AdamW=0.15,
                NAdam=0.15,
                RAdam=0.3,
                Adamax=0.2,
                Lion=0.05,
                Rprop=0.01,
            ),
        ),
        Surface(
            "canyon",
            "long canyon, condition number 100 (0.02 x^2 + 2 y^2)",
            *_quadratic([0.04, 4.0], 0.0),
            start=(-4.5, 0.8),
            xlim=(-5.0, 1.5),
            ylim=(-1.2, 1.2),
            minimum=(0.0, 0.0),
            steps=80,
            lrs=dict(
                SGD=0.45,
                Momentum=0.1,
                Nesterov=0.1,
                Adagrad=1.0,
                RMSprop=0.03,
                Adadelta=10.0,
                Adam=0.15,
                AdamW=0.15,
                NAdam=0.15,
                RAdam=0.3,
                Adamax=0.2,
                Lion=0.06,
                Rprop=0.01,
            ),
        ),
        Surface(
            "saddle",
            "saddle x^2 - y^2 (start just off the ridge)",
            _saddle,
            _saddle_grad,
            start=(1.5, 1e-3),
            xlim=(-1.6, 1.6),
            ylim=(-1.6, 1.6),
            minimum=None,
            steps=60,
            lrs=dict(
                SGD=0.05,
                Momentum=0.01,
                Nesterov=0.01,
                Adagrad=0.3,
                RMSprop=0.01,
                Adadelta=10.0,
                Adam=0.05,
                AdamW=0.05,
                NAdam=0.05,
                RAdam=0.1,
                Adamax=0.05,
                Lion=0.03,
                Rprop=0.01,
            ),
        ),
        Surface(
            "rosenbrock",
            "Rosenbrock (1 - x)^2 + 100 (y - x^2)^2",
            _rosenbrock,
            _rosenbrock_grad,
            start=(-1.5, 2.0),
            xlim=(-2.0, 2.0),
            ylim=(-1.0, 3.0),
            minimum=(1.0, 1.0),
            steps=500,
            log_contours=True,
            lrs=dict(
                SGD=1e-3,
                Momentum=1e-3,
                Nesterov=1e-3,
                Adagrad=0.5,
                RMSprop=0.01,
                Adadelta=10.0,
                Adam=0.1,
                AdamW=0.1,
                NAdam=0.05,
                RAdam=0.005,
                Adamax=0.5,
                Lion=0.01,
                Rprop=0.01,
                ASGD=1e-3,
                **{"SGD-SF": 1e-3},
            ),
        ),
    )
}


def get_surface(surface) -> Surface:
    if isinstance(surface, Surface):
        return surface
    try:
        return SURFACES[surface]
    except KeyError:
        raise ValueError(f"unknown surface {surface!r}; known: {', '.join(SURFACES)}") from None


# ---- the optimizers on a surface --------------------------------------------------------------------------
# name -> (gf.optim class name, keyword arguments besides lr); the lecture's SGD variants are SGD flags.
OPTIMIZERS: dict[str, tuple[str, dict]] = {
    "SGD": ("SGD", {}),
    "Momentum": ("SGD", {"momentum": 0.9}),
    "Nesterov": ("SGD", {"momentum": 0.9, "nesterov": True}),
    "Adagrad": ("Adagrad", {}),
    "RMSprop": ("RMSprop", {}),
    "Adadelta": ("Adadelta", {}),
    "Adam": ("Adam", {}),
    "AdamW": ("AdamW", {}),
    "NAdam": ("NAdam", {}),
    "RAdam": ("RAdam", {}),
    "Adamax": ("Adamax", {}),
    "Lion": ("Lion", {}),
    "Rprop": ("Rprop", {}),
}


# The optimizers added beside torch.optim's classics: drawn by name (not in the default picture, which
# stays the lecture's set); lr here unless a surface names its own.
NEWER: dict[str, tuple[str, dict]] = {
    "ASGD": ("ASGD", {"lr": 0.1}),
    "SGD-SF": ("SGDScheduleFree", {"lr": 0.2}),  # the path of y, where the gradients are taken
    "AdamW-SF": ("AdamWScheduleFree", {"lr": 0.1}),
    "Adafactor": ("Adafactor", {"lr": 0.05}),
    "LAMB": ("Lamb", {"lr": 0.05, "max_grad_norm": None, "weight_decay": 0.0, "always_adapt": True}),
    "LARS": ("Lars", {"lr": 0.5, "momentum": 0.9, "trust_coeff": 0.1, "always_adapt": True}),
}


# The seeds' second-order methods (closure-driven, float64; their step lengths come from a line search
# or from the curvature, so lr is 1): not in the default set of a surface's picture, which compares
# the learning-rate-driven optimizers, but drawn by name and in curvature.png.
SECOND_ORDER: dict[str, tuple[str, dict]] = {
    "CG": ("ConjugateGradient", {}),
    "CG (FR)": ("ConjugateGradient", {"variant": "FR"}),
    "Newton": ("Newton", {}),
    "Newton (Armijo)": ("Newton", {"line_search": "armijo"}),
}


def _resolve(surface: Surface, optimizers) -> dict:
    """{label: (factory(params) -> Optimizer, lr or None)} from names (each with this surface's lr),
    a {name: lr} dict, or a {label: factory} dict."""
    if optimizers is None:
        optimizers = list(OPTIMIZERS)
    if not isinstance(optimizers, dict):
        optimizers = dict.fromkeys(optimizers)
    out = {}
    for name, spec in optimizers.items():
        if callable(spec):
            out[name] = (spec, None)
            continue
        if name in SECOND_ORDER:
            cls_name, kwargs = SECOND_ORDER[name]
            out[name] = (lambda params, cls=getattr(optim, cls_name), kw=kwargs: cls(params, **kw)), None
            continue
        if name not in OPTIMIZERS and name not in NEWER:
            known = ", ".join([*OPTIMIZERS, *NEWER, *SECOND_ORDER])
            raise ValueError(f"unknown optimizer {name!r}: give a factory, or one of {known}")
        cls_name, kwargs = OPTIMIZERS[name] if name in OPTIMIZERS else NEWER[name]
        lr = surface.lrs.get(name, kwargs.get("lr")) if spec is None else float(spec)
        if lr is not None:  # else the class's default
            kwargs = dict(kwargs, lr=lr)
        out[name] = (lambda params, cls=getattr(optim, cls_name), kw=kwargs: cls(params, **kw)), lr
    return out


def optimizer_path(surface, factory, steps: int | None = None, start=None) -> np.ndarray:
    """The (steps + 1, 2) path of one optimizer, factory([param]) -> Optimizer, from `start`."""
    surface = get_surface(surface)
    steps = surface.steps if steps is None else int(steps)
    param = np.array(surface.start if start is None else start, dtype=np.float32)
    grad = np.empty_like(param)
    try:
        opt = factory([param])
    except TypeError:  # a closure-driven optimizer takes gf.nn.Parameter objects
        opt = factory([nn.Parameter(param.astype(np.float64))])
    path = np.empty((steps + 1, 2), dtype=np.float32)
    path[0] = param
    if getattr(opt, "needs_closure", False):
        return _closure_path(surface, opt, path)
    for t in range(steps):
        gx, gy = surface.grad(float(param[0]), float(param[1]))
        grad[:] = (gx, gy)  # float32, as a network's gradient would be
        opt.step([grad])
        path[t + 1] = param
    return path


def _closure_path(surface: Surface, opt, path) -> np.ndarray:
    """Step a closure-driven optimizer (float64) on the surface; a converged one stays put."""
    (p,) = opt.param_groups[0]["params"]

    def closure():
        gx, gy = surface.grad(float(p.data[0]), float(p.data[1]))
        p.grad = np.array([gx, gy], dtype=np.float64)
        return surface.value(p.data)

    for t in range(1, len(path)):
        if opt.status != "converged":
            opt.step(closure)
        path[t] = p.data
    return path


def optimizer_paths(surface, optimizers=None, steps: int | None = None, start=None) -> dict:
    """{name: (steps + 1, 2) float32 array}: each optimizer's path on `surface` (a Surface or a name
    in SURFACES) from `start` (default surface.start), steps defaulting to surface.steps.

    optimizers: names in OPTIMIZERS (default: all, each with the surface's lr), a dict
    {name: lr} to choose the learning rates, or {label: factory} with factory([param]) -> a
    gf.optim optimizer. Row 0 is the start, row t the parameter after t optimizer steps."""
    surface = get_surface(surface)
    return {
        name: optimizer_path(surface, factory, steps, start)
        for name, (factory, _) in _resolve(surface, optimizers).items()
    }


def _save(fig, path, dpi) -> str:
    """Save as a PNG with a 256-colour palette: a third of the bytes, no visible difference."""
    from PIL import Image  # matplotlib depends on Pillow

    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    buffer.seek(0)
    path = os.fspath(path)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)
    return path


def _colors(n):
    plt = _pyplot()
    cmap = plt.get_cmap("tab20" if n > 10 else "tab10")
    return [cmap(i % cmap.N) for i in range(n)]


def _draw_contours(ax, surface: Surface, grid) -> None:
    from matplotlib.colors import LogNorm

    gx, gy, z = grid
    if surface.log_contours:  # Rosenbrock spans four decades: equally spaced levels would hide the valley
        levels = np.logspace(-1, np.log10(z.max()), 14)
        ax.contourf(gx, gy, z, levels=levels, norm=LogNorm(), cmap="Greys", alpha=0.3)
        ax.contour(gx, gy, z, levels=levels, norm=LogNorm(), colors="grey", linewidths=0.4)
    elif z.min() >= 0:  # a bowl: levels spaced like the distance to the bottom, not like the height
        levels = np.linspace(0, np.sqrt(z.max()), 15)[1:] ** 2
        ax.contourf(gx, gy, z, levels=np.r_[0, levels], cmap="Greys", alpha=0.3)
        ax.contour(gx, gy, z, levels=levels, colors="grey", linewidths=0.4)
    else:
        ax.contourf(gx, gy, z, levels=14, cmap="Greys", alpha=0.3)
        ax.contour(gx, gy, z, levels=14, colors="grey", linewidths=0.4)
    if surface.minimum is not None:
        ax.plot(*surface.minimum, "*", color="black", markersize=11)
    ax.set(xlim=surface.xlim, ylim=surface.ylim)
    ax.tick_params(labelsize=7)


def plot_paths(
    surface,
    path,
    optimizers=None,
    steps: int | None = None,
    start=None,
    paths=None,
    title: str | None = None,
    dpi: int = 90,
) -> str:
    """Write a PNG: one panel per optimizer with its path on the surface's contours (log-spaced for
    Rosenbrock; a dot per step, the end circled, the minimum a star), and one panel with the loss
    along every path. `paths` ({name: array}) skips computing them (the legend then names the lr
    only where `optimizers` says it)."""
    plt = _pyplot()
    surface = get_surface(surface)
    lrs = {}
    if paths is None or optimizers is not None:
        lrs = {name: lr for name, (_, lr) in _resolve(surface, optimizers).items()}
    if paths is None:
        paths = optimizer_paths(surface, optimizers, steps, start)
    gx, gy = np.meshgrid(np.linspace(*surface.xlim, 250), np.linspace(*surface.ylim, 250))
    grid = (gx, gy, surface.f(gx, gy))

    n = len(paths)
    cols = min(5, n + 1)
    rows = -(-(n + 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.0 * rows + 0.6), squeeze=False)
    cells = list(axes.flat)
    ax_loss = cells[n]
    f_min = surface.value(surface.minimum) if surface.minimum is not None else None
    for ax, color, (name, p) in zip(cells, _colors(n), paths.items()):
        label = name if lrs.get(name) is None else f"{name} (lr {lrs[name]:g})"
        _draw_contours(ax, surface, grid)
        ax.plot(p[:, 0], p[:, 1], "-o", color=color, linewidth=1.5, markersize=2)
        ax.plot(p[0, 0], p[0, 1], "o", color="black", markersize=5)
        ax.plot(p[-1, 0], p[-1, 1], "o", color=color, markersize=8, markeredgecolor="black")
        ax.set_title(label, fontsize=10)
        values = surface.f(p[:, 0].astype(np.float64), p[:, 1].astype(np.float64))
        if f_min is not None:
            values = np.maximum(values - f_min, 1e-12)
        ax_loss.plot(np.arange(len(p)), values, color=color, linewidth=1.3, label=label)
    if f_min is not None:
        ax_loss.set(yscale="log", title="f - f(minimum) per step")
    else:
        ax_loss.set(yscale="symlog", title="f per step (symlog)")
        ax_loss.set_ylim(bottom=-100)  # the escapes run off to -infinity
    ax_loss.set_xlabel("step", fontsize=8)
    ax_loss.tick_params(labelsize=7)
    ax_loss.grid(alpha=0.3)
    handles, labels = ax_loss.get_legend_handles_labels()
    if len(cells) > n + 1:  # a spare cell holds the legend
        cells[n + 1].legend(handles, labels, loc="center", fontsize=8, frameon=False)
    else:
        ax_loss.legend(fontsize=7)
    for ax in cells[n + 1 :]:
        ax.axis("off")
    steps_run = len(next(iter(paths.values()))) - 1 if paths else 0
    x0, y0 = surface.start if start is None else start
    fig.suptitle(f"{title or surface.title}: {steps_run} steps of gf.optim from ({x0:g}, {y0:g})", fontsize=12)
    fig.tight_layout()
    return _save(fig, path, dpi)


# ---- the second-order methods: curvature and line searches ------------------------------------------------
def plot_curvature(path, surface="canyon", steps: int = 30, dpi: int = 90) -> str:
    """The seeds' point on a quadratic (the canyon: condition number 100): gradient descent and
    momentum follow the gradient and zigzag across the ill-conditioned bowl; nonlinear CG with
    exact line searches is linear CG there and reaches the minimum in n = 2 steps, and Newton,
    which rescales the gradient by the inverse Hessian, in one."""
    return plot_paths(
        surface,
        path,
        {
            "SGD": None,
            "Momentum": None,
            # a near-exact line search (c2 tiny) makes nonlinear CG linear CG on a quadratic
            "CG (exact line search)": lambda ps: optim.ConjugateGradient(ps, c2=1e-6, max_evaluations=50),
            "Newton": None,
        },
        steps=steps,
        title="why curvature matters: first-order steps against CG and Newton",
        dpi=dpi,
    )


def line_search_steps(surface="rosenbrock", optimizers=("CG", "CG (FR)", "Newton (Armijo)"), steps: int = 60) -> dict:
    """{name: (accepted step lengths, closure evaluations per step)} of closure-driven optimizers
    (names in SECOND_ORDER) on a surface, from its start: what their line searches chose."""
    surface = get_surface(surface)
    out = {}
    for name in optimizers:
        cls_name, kwargs = SECOND_ORDER[name]
        opt = getattr(optim, cls_name)([nn.Parameter(np.array(surface.start, dtype=np.float64))], **kwargs)
        _closure_path(surface, opt, np.empty((steps + 1, 2), dtype=np.float32))
        moved = []
        for h in opt.history:  # up to convergence (or a failed search): the steps that moved
            if not h.get("step"):
                break
            moved.append(h)
        out[name] = (np.array([h["step"] for h in moved]), np.array([h["evaluations"] for h in moved]))
    return out


def plot_line_search_steps(
    path, surface="rosenbrock", optimizers=("CG", "CG (FR)", "Newton (Armijo)"), steps=60, dpi=90
):
    """Two panels: the step length each optimizer's line search accepted per iteration (log scale;
    CG's is a length along an unnormalized direction, Newton's a fraction of the Newton step), and
    the closure evaluations it spent on it."""
    plt = _pyplot()
    data = line_search_steps(surface, optimizers, steps)
    fig, (ax_step, ax_evals) = plt.subplots(1, 2, figsize=(10, 3.6))
    for color, (name, (lengths, evaluations)) in zip(_colors(len(data)), data.items()):
        it = np.arange(1, len(lengths) + 1)
        ax_step.plot(it, np.maximum(lengths, 1e-12), "-o", color=color, markersize=3, label=name)
        ax_evals.plot(it, evaluations, "-o", color=color, markersize=3, label=name)
    ax_step.set(yscale="log", xlabel="iteration", title="step length the line search accepted")
    ax_evals.set(xlabel="iteration", title="closure evaluations per iteration")
    for ax in (ax_step, ax_evals):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"line searches on {get_surface(surface).title}", fontsize=11)
    fig.tight_layout()
    return _save(fig, path, dpi)


# ---- learning-rate schedules ------------------------------------------------------------------------------
def _plateau_loss(t: int) -> float:
    """A made-up validation loss for ReduceLROnPlateau's picture: falls for 20 steps, then flat."""
    return max(1.0 - t / 25, 0.2)


def default_schedules(steps: int = 100) -> dict:
    """{name: factory(optimizer) -> scheduler}: the gf.optim.lr_scheduler schedules, sized for `steps`."""
    s = lr_scheduler
    quarter, warm = max(steps // 4, 1), max(steps // 10, 1)
    return {
        f"StepLR(step_size={quarter}, gamma=0.5)": lambda o: s.StepLR(o, step_size=quarter, gamma=0.5),
        f"MultiStepLR([{2 * quarter}, {3 * quarter}], gamma=0.1)": lambda o: s.MultiStepLR(
            o, [2 * quarter, 3 * quarter], gamma=0.1
        ),
        "ExponentialLR(gamma=0.97)": lambda o: s.ExponentialLR(o, gamma=0.97),
        "InverseTimeDecayLR(k=0.1)": lambda o: s.InverseTimeDecayLR(o, k=0.1),
        "PolynomialLR(power=2)": lambda o: s.PolynomialLR(o, total_iters=steps, power=2.0),
        "CosineAnnealingLR": lambda o: s.CosineAnnealingLR(o, T_max=steps),
        "CosineAnnealingWarmRestarts(T_0=10, T_mult=2)": lambda o: s.CosineAnnealingWarmRestarts(o, T_0=10, T_mult=2),
        f"warmup({warm}) + cosine": lambda o: s.warmup(
            s.CosineAnnealingLR(o, T_max=max(steps - warm, 1)), warm, start_factor=0.0
        ),
        "OneCycleLR": lambda o: s.OneCycleLR(o, max_lr=o.param_groups[0]["lr"], total_steps=steps),
        "CyclicLR(triangular2)": lambda o: s.CyclicLR(
            o, base_lr=o.param_groups[0]["lr"] / 10, max_lr=o.param_groups[0]["lr"], step_size_up=10, mode="triangular2"
        ),
        "ReduceLROnPlateau(patience=5)": lambda o: s.ReduceLROnPlateau(o, factor=0.5, patience=5),
        "InverseSqrtLR(timescale=10)": lambda o: s.InverseSqrtLR(o, timescale=10),
    }


def schedule_curves(schedules=None, steps: int = 100, lr: float = 0.1, metric=_plateau_loss) -> dict:
    """{name: (steps,) array}: the lr each real scheduler gives the optimizer at steps 0 .. steps-1,
    on a dummy SGD optimizer (momentum 0.9, which OneCycleLR and CyclicLR cycle). schedules:
    {name: factory(optimizer) -> scheduler}, default default_schedules(steps); a scheduler that takes
    metrics (ReduceLROnPlateau) is stepped with metric(t)."""
    schedules = default_schedules(steps) if schedules is None else schedules
    curves = {}
    for name, factory in schedules.items():
        opt = optim.SGD([np.zeros(1, dtype=np.float32)], lr=lr, momentum=0.9)
        scheduler = factory(opt)
        lrs = np.empty(steps)
        for t in range(steps):
            lrs[t] = opt.param_groups[0]["lr"]
            if getattr(scheduler, "takes_metrics", False):
                scheduler.step(metric(t))
            else:
                scheduler.step()
        curves[name] = lrs
    return curves


def plot_schedules(path, schedules=None, steps: int = 100, lr: float = 0.1, dpi: int = 100) -> str:
    """Write a PNG: one small panel per schedule, lr against step (see schedule_curves)."""
    plt = _pyplot()
    curves = schedule_curves(schedules, steps, lr)
    cols = 4
    rows = -(-len(curves) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), sharex=True, squeeze=False)
    for ax, color, (name, lrs) in zip(axes.flat, _colors(len(curves)), curves.items()):
        ax.plot(np.arange(steps), lrs, color=color, linewidth=1.8)
        ax.set_title(name, fontsize=9)
        ax.set_ylim(0, max(lrs.max(), lr) * 1.08)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(curves) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("step")
    for ax in axes[:, 0]:
        ax.set_ylabel("lr")
    fig.suptitle(f"gf.optim.lr_scheduler: the learning rate of each step (base lr {lr:g}, {steps} steps)")
    fig.tight_layout()
    return _save(fig, path, dpi)


# ---- training curves --------------------------------------------------------------------------------------
def plot_history(history, path, title: str = "", batch_logger=None, dpi: int = 100) -> str:
    """Write a PNG of a gf.train History: loss, accuracy, learning rate and the global gradient norm
    (fit's per-epoch mean, before clipping) per epoch; with a gf.train.BatchLogger also the lr and
    the gradient norm of every batch. Panels for quantities the history lacks are left out. The
    learning rate is drawn on a log scale when its values span a decade or more (warmup, decay)."""
    if not history.epoch:
        raise ValueError("plot_history: the History holds no epochs (fit ran 0 epochs): there is nothing to draw")
    plt = _pyplot()
    epochs = np.asarray(history.epoch) + 1
    per_batch = batch_logger is not None and len(batch_logger.epochs) > 0
    panels = [
        ("loss", (("loss", "train"), ("val_loss", "validation"))),
        ("accuracy", (("accuracy", "train"), ("val_accuracy", "validation"))),
        ("learning rate", (("lr", "end of epoch"),)),
        ("gradient norm (before clipping)", (("grad_norm", "epoch mean"),)),
    ]
    panels = [(name, [(k, label) for k, label in keys if k in history]) for name, keys in panels]
    panels = [(name, keys) for name, keys in panels if keys]
    cols = 2 if len(panels) == 4 else len(panels)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.6 * rows + 0.4), squeeze=False)
    for ax, (name, keys) in zip(axes.flat, panels):
        batch_key = {"learning rate": "lr", "gradient norm (before clipping)": "grad_norm"}.get(name)
        if per_batch and batch_key in batch_logger:
            ax.plot(
                batch_logger.epoch_position(),
                batch_logger[batch_key],
                color="tab:grey",
                alpha=0.6,
                linewidth=0.8,
                label="every batch",
            )
        for key, label in keys:
            ax.plot(epochs, history[key], "-", marker="." if len(epochs) < 40 else None, label=label)
        ax.set(title=name, xlabel="epoch")
        if name in ("loss", "gradient norm (before clipping)"):
            ax.set_yscale("log")
        if name == "learning rate" and _spans_decades([y for line in ax.get_lines() for y in line.get_ydata()]):
            ax.set_yscale("log")
        if len(ax.get_lines()) > 1:
            ax.legend()
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path, dpi)


def _spans_decades(values) -> bool:
    """Positive values whose largest is at least 10 times the smallest (a linear axis would flatten
    all but the largest)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    return v.size > 1 and v.max() >= 10 * v.min()


def plot_grad_norms(
    norms,
    path,
    clip_norm: float | None = None,
    xlabel: str | None = None,
    title: str = "global gradient norm",
    dpi: int = 100,
) -> str:
    """Write a PNG of gradient norms: a sequence (e.g. the values gf.optim.clip_grad_norm_ returned),
    a gf.train.BatchLogger (every batch's norm) or a History (history["grad_norm"], per epoch);
    clip_norm draws the clipping threshold."""
    plt = _pyplot()
    if hasattr(norms, "epoch_position"):  # a BatchLogger
        x, values, xlabel = norms.epoch_position(), np.asarray(norms["grad_norm"]), xlabel or "epoch"
    elif hasattr(norms, "epoch") and hasattr(norms, "history"):  # a History
        x, values, xlabel = np.asarray(norms.epoch) + 1, np.asarray(norms["grad_norm"]), xlabel or "epoch"
    else:
        values = np.asarray(norms, dtype=np.float64)
        x, xlabel = np.arange(1, len(values) + 1), xlabel or "step"
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(x, values, linewidth=1.0, label="gradient norm")
    if clip_norm is not None:
        ax.axhline(clip_norm, color="tab:red", linestyle="--", label=f"clip_norm {clip_norm:g}")
    ax.set(xlabel=xlabel, ylabel="L2 norm", yscale="log", title=title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path, dpi)


# ---- the gallery ------------------------------------------------------------------------------------------
def _digits_fit(out_dir, epochs: int = 20, seed: int = 0) -> str:
    """A short fit on the digits (a small MLP, Adam, warmup + cosine per batch), drawn by plot_history."""
    x_train, y_train, x_val, y_val, _, _ = load_digits_split(seed)
    model = nn.Sequential(
        [
            nn.Standardize("zscore").adapt(x_train),
            nn.Dense(64, 128, init="he_normal", seed=seed),
            nn.BatchNorm(128),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Dense(128, 10, init="glorot_uniform", seed=seed + 1),
        ],
        seed=seed,
    )
    opt = optim.Adam(model.parameter_groups(weight_decay=5e-4), lr=3e-3)
    steps_per_epoch = -(-len(x_train) // 64)
    schedule = lr_scheduler.warmup(
        lr_scheduler.CosineAnnealingLR(opt, T_max=(epochs - 2) * steps_per_epoch),
        2 * steps_per_epoch,
        start_factor=0.05,
    )
    logger = train.BatchLogger()
    history = train.fit(
        model,
        losses.CrossEntropyLoss(label_smoothing=0.1),
        opt,
        x_train,
        y_train,
        epochs=epochs,
        batch_size=64,
        validation_data=(x_val, y_val),
        schedule=schedule,
        schedule_per="batch",
        callbacks=[logger],
        seed=seed,
        verbose=0,
    )
    return plot_history(
        history,
        os.path.join(out_dir, "digits_fit.png"),
        batch_logger=logger,
        title=f"digits, MLP 64-128-10, Adam with 2 epochs of warmup and a cosine decay: "
        f"validation accuracy {history['val_accuracy'][-1]:.1%}",
    )


def gallery(out_dir, log=print) -> list:
    """Write every picture into out_dir: one per surface, the schedules and (with scikit-learn) a
    short digits fit; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    written = [plot_paths(surface, os.path.join(out_dir, f"paths_{name}.png")) for name, surface in SURFACES.items()]
    written.append(plot_curvature(os.path.join(out_dir, "curvature.png")))
    written.append(plot_line_search_steps(os.path.join(out_dir, "line_search_steps.png")))
    written.append(plot_schedules(os.path.join(out_dir, "schedules.png")))
    try:
        import sklearn  # noqa: F401
    except ImportError:
        log('skipped digits_fit.png: it needs scikit-learn (pip install "gradfuse[demo]")')
    else:
        written.append(_digits_fit(out_dir))
    return written


# ---- python -m gradfuse viz -------------------------------------------------------------------------------
HELP = "draw the gallery: optimizer paths on 2-D surfaces, lr schedules, a short fit's curves (PNGs)"


def add_arguments(parser) -> None:
    parser.description = (
        "Write the pictures: one PNG per surface (quadratic, canyon, saddle, Rosenbrock) "
        "with the paths of every gf.optim optimizer, one of the lr schedules, and (with "
        "scikit-learn) the curves of a 20-epoch digits fit. Needs matplotlib: "
        'pip install "gradfuse[plot]".'
    )
    parser.add_argument("--out", default="gradfuse-viz", help="directory to write into (default gradfuse-viz)")
    parser.set_defaults(func=main)


def main(args) -> int:
    try:
        _pyplot()
    except ImportError as exc:
        print(exc, file=sys.stderr)
        return 2
    for path in gallery(args.out):
        print(f"wrote {path}")
    return 0
