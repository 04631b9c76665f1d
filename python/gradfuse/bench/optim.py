"""bench optim: fused optimizer steps against their NumPy twins, torch.optim, and the memory limit.

    python -m gradfuse bench optim [--quick | --full] [--repeats N] [--out DIR] [--threads N] [--no-torch]

For every workload (parameter layout) and algorithm (Adam, AdamW, SGD momentum 0.9, Adagrad,
RMSprop, SGDScheduleFree, AdamWScheduleFree, Lamb), one group of implementations is timed interleaved in this process:

  gradfuse        gf.optim.<Name> over the arrays, C++ backend (one fused multi-tensor call)
  numpy           the same class under gf.use_backend("numpy"): the NumPy twins
  torch-fused     torch.optim.<Name>(fused=True)     } when torch is importable; a variant torch
  torch-foreach   torch.optim.<Name>(foreach=True)   } cannot build (RMSprop has no fused kernel)
  torch-forloop   torch.optim.<Name>(foreach=False)  } is a skipped cell
                  (schedule-free: the schedulefree package's classes, foreach or not; it has no fused)
                  (Lamb: timm's Lamb, foreach or not, loaded without timm/__init__, which needs
                  torchvision)
  touch           gradfuse._core._touch over the gradfuse optimizer's own arrays: exactly the
                  memory traffic of the step (read p, g, state; write p, state) with no math.
                  This is the ceiling: each cell's GB/s is reported as a fraction of it.

All implementations step the same parameter and gradient arrays (torch through torch.from_numpy,
zero copy) and keep their own state. Learning rates are 1e-6 so values stay finite over many
steps. Bytes per parameter come from the kernel table (gradfuse/table.py: each array the step
reads or writes, once): in float32 Adam/AdamW 28, SGD momentum 20, Adagrad 20, RMSprop 20,
SGDScheduleFree 20 (p, g, z), AdamWScheduleFree 28 (p, g, z, exp_avg_sq), Lamb 40 (two passes:
p, g, m, v read and m, v written, then p, m, v read and p written; its touch is a 24 B touch and a
12 B one, 36 B, so its fraction of the ceiling is understated by up to 10%; timm's global gradient
clip, 4 B more for every implementation, is not counted), Lars 28 (p, g read for the norms, then
SGD with momentum: 20; its touch reads p and g and then touches as SGD); float64 doubles them.
GB/s = bytes * params / median time.

A second, small section measures the fixed cost of one step: 256 tensors of 16 elements, where
time is all per-call and per-tensor overhead (Python in opt.step, the binding, OpenMP fork/join).
"""

from __future__ import annotations

import argparse
import functools
import gc
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

import gradfuse as gf
from .. import _checks
from .._ext import _core
from ..table import KERNELS
from . import _harness as H

LR = 1e-6

IMPLS = ("gradfuse", "numpy", "torch-fused", "torch-foreach", "torch-forloop", "touch")
TORCH_VARIANTS = {
    "torch-fused": {"fused": True},
    "torch-foreach": {"foreach": True},
    "torch-forloop": {"foreach": False},
}
PEERS = ("numpy", "torch-fused", "torch-foreach", "torch-forloop")


@dataclass(frozen=True)
class Algorithm:
    name: str  # gf.optim / torch.optim class name
    kwargs: dict  # constructor arguments, the same for gradfuse and torch
    kernel: str  # its row of the kernel table, for the bytes and the overhead section's direct call
    kernel_kwargs: dict  # the kernel's scalar arguments in steady state (after the first step)
    peer: str = "torch.optim"  # the module of the torch peer class of the same name (schedulefree: the package)

    @property
    def states(self) -> tuple:
        """The state tensors the step reads and writes (torch's names, kernel order)."""
        row = KERNELS[self.kernel]
        scalars = {**row.defaults(), **self.kernel_kwargs}
        return tuple(a.state_key for a in row.states if row.used(a, scalars))


ALGORITHMS = {
    a.name: a
    for a in (
        Algorithm("Adam", {"lr": LR}, "adam", {"step": 10, "lr": LR}),
        Algorithm(
            "AdamW",
            {"lr": LR, "weight_decay": 1e-2},
            "adam",
            {"step": 10, "lr": LR, "weight_decay": 1e-2, "decoupled_weight_decay": True},
        ),
        Algorithm("SGD", {"lr": LR, "momentum": 0.9}, "sgd", {"step": 2, "lr": LR, "momentum": 0.9}),
        Algorithm("Adagrad", {"lr": LR}, "adagrad", {"step": 10, "lr": LR}),
        Algorithm("RMSprop", {"lr": LR}, "rmsprop", {"lr": LR}),
        # schedule-free: the peer is the schedulefree package's torch implementation (foreach or not)
        Algorithm(
            "SGDScheduleFree",
            {"lr": LR},
            "sgd_schedulefree",
            {"lr": LR, "average_weight": 0.1},
            peer="schedulefree",
        ),
        Algorithm(
            "AdamWScheduleFree",
            {"lr": LR, "weight_decay": 1e-2},
            "adamw_schedulefree",
            {"step": 10, "lr": LR, "average_weight": 0.1, "weight_decay": 1e-2},
            peer="schedulefree",
        ),
        # LAMB: the peer is timm's Lamb (foreach or not), max_grad_norm=1.0 (timm's default) for both
        Algorithm("Lamb", {"lr": LR}, "lamb", {"step": 10, "lr": LR}, peer="timm"),
        # LARS: timm's Lars with momentum and weight decay (the adapting path)
        Algorithm(
            "Lars",
            {"lr": LR, "momentum": 0.9, "weight_decay": 1e-4},
            "lars",
            {"step": 2, "lr": LR, "momentum": 0.9, "weight_decay": 1e-4},
            peer="timm",
        ),
    )
}


def bytes_per_param(algo: Algorithm, dtype) -> int:
    """The kernel table's bytes per parameter: read p, g and every state once, write p and every
    state once."""
    return int(KERNELS[algo.kernel].bytes_per_element(np.dtype(dtype).itemsize, algo.kernel_kwargs))


# ---- workloads ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Workload:
    id: str
    kind: str  # "single" (one tensor), "list" (separate arrays), "arena" (ParameterArena)
    shapes: tuple
    dtype: str = "float32"

    @property
    def params(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    @property
    def label(self) -> str:
        return f"{self.id} {'fp32' if self.dtype == 'float32' else 'fp64'}"

    def with_dtype(self, dtype: str) -> Workload:
        return Workload(self.id, self.kind, self.shapes, dtype)


def _mlp(*widths) -> tuple:
    shapes = []
    for a, b in zip(widths, widths[1:]):
        shapes += [(a, b), (b,)]
    return tuple(shapes)


def _size(n: int) -> str:
    return f"{n >> 20}M" if n % 2**20 == 0 else f"{n >> 10}K" if n % 2**10 == 0 else str(n)


def _workloads(big: int, huge: int, n_tensors: int, per_tensor: int, mlp: tuple) -> list[Workload]:
    many = ((per_tensor,),) * n_tensors
    return [
        Workload(f"1x{_size(big)}", "single", ((big,),)),
        Workload(f"1x{_size(huge)}", "single", ((huge,),)),
        Workload(f"list {n_tensors}x{_size(per_tensor)}", "list", many),
        Workload(f"arena {n_tensors}x{_size(per_tensor)}", "arena", many),
        Workload("mlp " + "-".join(map(str, mlp)), "list", _mlp(*mlp)),
    ]


@dataclass(frozen=True)
class Mode:
    repeats: int
    warmup: int
    min_sample_s: float  # back-to-back calls per sample until a sample lasts this long
    workloads: tuple
    float64: bool  # also run the float64 version of each workload (except the largest)
    overhead_min_sample_s: float


MODES = {
    "quick": Mode(3, 1, 0.0, tuple(_workloads(2**18, 2**20, 256, 1024, (784, 128, 128, 10))), False, 0.002),
    "default": Mode(
        9, 3, 0.02, tuple(_workloads(16 * 2**20, 64 * 2**20, 256, 4096, (784, 1024, 1024, 10))), False, 0.02
    ),
    # tiny arrays, one repeat: only for `bench --smoke` (the tests), which checks that everything runs
    "smoke": Mode(1, 1, 0.0, tuple(_workloads(2**12, 2**14, 8, 1024, (16, 8, 4))), False, 0.0),
    "full": Mode(15, 5, 0.05, tuple(_workloads(16 * 2**20, 64 * 2**20, 256, 4096, (784, 1024, 1024, 10))), True, 0.05),
}

OVERHEAD_TENSORS, OVERHEAD_SIZE = 256, 16


# ---- building the arrays --------------------------------------------------------------------------------
@dataclass
class Built:
    gf_params: list  # what the gradfuse optimizers get: arrays, or the arena's Parameters
    arrays: list  # the parameter arrays
    grads: list  # their gradients
    arena: object = None
    torch_params: list = field(default_factory=list)


def build(w: Workload, rng: np.random.Generator, torch=None) -> Built:
    dtype = np.dtype(w.dtype)
    if w.kind == "arena":
        arena = gf.nn.ParameterArena(list(w.shapes), dtype=dtype)
        arena.data[...] = rng.standard_normal(arena.size, dtype=dtype)
        arena.grad[...] = rng.standard_normal(arena.size, dtype=dtype)
        params = arena.parameters
        built = Built(params, [p.data for p in params], [p.grad for p in params], arena)
    else:
        arrays, grads = [], []
        for shape in w.shapes:  # separate allocations, interleaved: never adjacent in memory
            arrays.append(rng.standard_normal(shape, dtype=dtype))
            grads.append(rng.standard_normal(shape, dtype=dtype))
        built = Built(arrays, arrays, grads)
    if torch is not None:
        for a, g in zip(built.arrays, built.grads):
            t = torch.from_numpy(a)
            t.grad = torch.from_numpy(g)
            built.torch_params.append(t)
    return built


def _gf_step(opt, built: Built, backend: str):
    grads = None if built.arena is not None else built.grads

    if backend == "cpp":

        def step():
            opt.step(grads)
    else:

        def step():
            with gf.use_backend(backend):
                opt.step(grads)

    return step


def _state_lists(opt, built: Built, algo: Algorithm) -> list[list[np.ndarray]]:
    return [[opt.state[p][key] for p in built.gf_params] for key in algo.states]


@functools.cache
def _timm_class(name: str):
    """timm.optim.<module>.<name> without timm/__init__ (it imports torchvision): bare parents."""
    import importlib
    import importlib.util
    import types

    if "timm" not in sys.modules:  # else: timm itself, or the bare parents of an earlier call
        spec = importlib.util.find_spec("timm")
        if spec is None:
            raise ImportError("timm is not installed")
        for package, sub in (("timm", ""), ("timm.optim", "/optim")):
            module = types.ModuleType(package)
            module.__path__ = [spec.submodule_search_locations[0] + sub]
            sys.modules[package] = module
    return getattr(importlib.import_module(f"timm.optim.{name.lower()}"), name)


def _torch_optimizer(torch, algo: Algorithm, params: list, variant: dict):
    if algo.peer == "timm":
        if "fused" in variant:
            raise TypeError(f"timm's {algo.name} has no fused step")
        return _timm_class(algo.name)(params, **algo.kwargs, **variant)
    if algo.peer == "schedulefree":
        import schedulefree  # optional: its cells are skipped where it is not installed

        if "fused" in variant:
            raise TypeError("schedulefree has no fused step")
        opt = getattr(schedulefree, algo.name)(params, **algo.kwargs, **variant)
        opt.train()  # schedulefree refuses to step in eval mode
        return opt
    opt = getattr(torch.optim, algo.name)(params, **algo.kwargs, **variant)
    return opt


def _impls_for(algo: Algorithm, built: Built, torch, errors: dict) -> tuple[dict, list]:
    """The callables of one group, and the objects that keep their state alive."""

    keep = []
    cls = getattr(gf.optim, algo.name)
    gf_opt = cls(built.gf_params, **algo.kwargs)
    np_opt = cls(built.gf_params, **algo.kwargs)
    keep += [gf_opt, np_opt]
    impls = {"gradfuse": _gf_step(gf_opt, built, "cpp"), "numpy": _gf_step(np_opt, built, "numpy")}
    if torch is not None:
        torch_params, restore = built.torch_params, None
        if algo.peer == "schedulefree" and algo.name.startswith("AdamW"):
            # schedulefree's AdamW divides p.grad in place each step: repeated steps on the shared
            # gradients would shrink them into denormals for every implementation. Its cells step
            # private copies and restore their gradients first (one copy pass, 8 B/param, timed).
            torch_params = [t.detach().clone() for t in built.torch_params]
            shared = [t.grad for t in built.torch_params]
            for t, g in zip(torch_params, shared):
                t.grad = g.clone()
            private = [t.grad for t in torch_params]

            def restore():
                torch._foreach_copy_(private, shared)

            keep.append(torch_params)
        for name, variant in TORCH_VARIANTS.items():
            try:
                topt = _torch_optimizer(torch, algo, torch_params, variant)
            except Exception as exc:  # noqa: BLE001 - a variant torch does not offer is a skipped cell
                errors[name] = H._describe(exc)
                continue
            keep.append(topt)
            impls[name] = topt.step if restore is None else lambda topt=topt: (restore(), topt.step())
    impls["gradfuse"]()  # the state exists from here on: the touch steps the same arrays
    states = _state_lists(gf_opt, built, algo)
    impls["touch"] = lambda: _core._touch(built.arrays, built.grads, *states)
    if algo.kernel == "lamb":  # two passes: 24 B, then 12 B (of the 16 the second pass moves)

        def touch_twice():
            _core._touch(built.arrays, built.grads, *states)
            _core._touch(built.arrays, states[0])

        impls["touch"] = touch_twice
    if algo.kernel == "lars":  # the norms' read of p and g (8 B), then SGD's 20 B

        def touch_lars():
            gf.ops.all_finite(built.arrays)
            gf.ops.all_finite(built.grads)
            _core._touch(built.arrays, built.grads, *states)

        impls["touch"] = touch_lars
    return impls, keep


# ---- running --------------------------------------------------------------------------------------------
def _cell_row(w: Workload, algo: Algorithm, impl: str, timing: H.Timing | None, bpp: int) -> dict:
    row = {
        "workload": w.id,
        "kind": w.kind,
        "dtype": w.dtype,
        "tensors": len(w.shapes),
        "params": w.params,
        "algorithm": algo.name,
        "impl": impl,
        "bytes_per_param": bpp,
    }
    if timing is None:
        row.update(ms=None)
        return row
    row.update(timing.as_ms())
    t = timing.median
    row["gparams_per_s"] = w.params / t / 1e9
    row["gb_per_s"] = w.params * bpp / t / 1e9
    return row


def run_group(
    w: Workload, algo: Algorithm, built: Built, torch, mode: Mode, repeats: int, sleep_s: float, remote=None
) -> list[dict]:
    """One row group. remote (suite.RemotePeers or None): peers in another process that step arrays
    of the same shapes, timed interleaved with the rest."""
    errors: dict[str, str] = {}
    impls, keep = _impls_for(algo, built, torch, errors)
    remote_names: list[str] = []
    if remote is not None:
        remote_impls, remote_errors = remote.impls_for(algo.name, algo.kwargs, w.shapes, w.dtype)
        remote_names = [*remote_impls, *remote_errors]
        impls.update(remote_impls)
        errors.update(remote_errors)
        keep.append(remote_impls)
    m = H.measure_interleaved(
        impls,
        repeats=repeats,
        warmup=mode.warmup,
        min_sample_s=mode.min_sample_s,
        sleep_s=sleep_s,
        required=("gradfuse", "numpy", "touch"),
    )
    errors.update(m.errors)
    if remote is not None:
        remote.release(keep[-1])
    del keep, impls
    bpp = bytes_per_param(algo, w.dtype)
    touch = m.timings["touch"]
    gf_t = m.timings["gradfuse"].median
    rows = []
    for impl in (*IMPLS, *remote_names):
        if impl.startswith("torch") and torch is None:
            continue
        timing = m.timings.get(impl)
        row = _cell_row(w, algo, impl, timing, bpp)
        if impl in remote_names:
            row["process"] = "peer"
        if timing is None:
            row["skipped"] = errors.get(impl, "not run")
        else:
            row["ceiling_gb_per_s"] = w.params * bpp / touch.median / 1e9
            row["frac_of_ceiling"] = touch.median / timing.median
            row["frac_of_ceiling_best"] = touch.min / timing.min  # least disturbed samples
            if impl in PEERS or impl in remote_names:
                row["gradfuse_speedup"] = timing.median / gf_t
        rows.append(row)
    gf_row = next(r for r in rows if r["impl"] == "gradfuse")
    gf_row["speedup_vs"] = {r["impl"]: r["gradfuse_speedup"] for r in rows if "gradfuse_speedup" in r}
    return rows


def run_overhead(torch, mode: Mode, repeats: int, sleep_s: float, algorithms, progress) -> list[dict]:
    """µs per step on 256 tensors of 16 elements: opt.step against the bare kernel call."""
    w = Workload(f"list {OVERHEAD_TENSORS}x{OVERHEAD_SIZE}", "list", ((OVERHEAD_SIZE,),) * OVERHEAD_TENSORS)
    rng = np.random.default_rng(1)
    built = build(w, rng, torch)
    rows = []
    for algo in algorithms:
        progress.begin(f"overhead {algo.name}")
        opt = getattr(gf.optim, algo.name)(built.gf_params, **algo.kwargs)
        opt.step(built.grads)
        row = KERNELS[algo.kernel]
        # The bare C++ call: scalars checked once beforehand, as an optimizer checks them.
        scalars = _checks.scalars(row, {**row.defaults(), **algo.kernel_kwargs})
        native = {k: v for k, v in scalars.items() if v is not None and k != "skip_nonfinite"}
        names = tuple(a.name for a in row.arrays)
        states = {
            a.state_key: [opt.state[p][a.state_key] for p in built.gf_params]
            for a in row.states
            if a.state_key in algo.states
        }
        arrays = (built.arrays, built.grads, *(states.get(a.state_key) for a in row.states), None)  # no copies
        impls = {
            "gradfuse step": lambda opt=opt: opt.step(built.grads),
            "kernel only": lambda: _core.optim_step(row.name, names, arrays, native, False),
        }
        keep = []
        if torch is not None:
            for name, variant in TORCH_VARIANTS.items():
                try:
                    topt = _torch_optimizer(torch, algo, built.torch_params, variant)
                except Exception:  # noqa: BLE001
                    continue
                keep.append(topt)
                impls[name] = topt.step
        m = H.measure_interleaved(
            impls,
            repeats=repeats,
            warmup=max(3, mode.warmup),
            min_sample_s=max(mode.overhead_min_sample_s, 0.002),
            sleep_s=sleep_s,
            required=("gradfuse step", "kernel only"),
        )
        row = {
            "workload": w.id,
            "tensors": OVERHEAD_TENSORS,
            "params": w.params,
            "algorithm": algo.name,
            "us": {name: t.median * 1e6 for name, t in m.timings.items()},
            "us_iqr": {name: t.iqr * 1e6 for name, t in m.timings.items()},
            "calls_per_sample": {name: t.number for name, t in m.timings.items()},
        }
        us = row["us"]
        row["python_overhead_us"] = us["gradfuse step"] - us["kernel only"]
        row["python_overhead_us_per_tensor"] = row["python_overhead_us"] / OVERHEAD_TENSORS
        rows.append(row)
        del opt, keep, impls
    return rows


# Mixed precision: Adam writing bf16 compute copies in its pass (30 B/param) against the plain step
# (28 B), a step followed by a separate cast pass, and torch's fused Adam + a cast into bf16.
COPIES_SIZES = {"smoke": (2**14,), "quick": (2**20,), "default": (2**20, 16 * 2**20), "full": (2**20, 16 * 2**20)}


def run_copies(torch, mode: Mode, mode_name: str, repeats: int, sleep_s: float) -> list[dict]:
    """ms per Adam step over one float32 tensor of n params, with and without bf16 copies."""
    import ml_dtypes

    bf16 = np.dtype(ml_dtypes.bfloat16)
    rows = []
    for n in COPIES_SIZES[mode_name]:
        rng = np.random.default_rng(5)
        p0, g = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)
        plain, mixed, cast = p0.copy(), p0.copy(), p0.copy()
        opt_plain, opt_mixed, opt_cast = (gf.optim.Adam([a], lr=LR) for a in (plain, mixed, cast))
        opt_mixed.make_compute_copies()
        cast_copy, touch_copy = np.empty(n, bf16), np.empty(n, bf16)
        m, v = np.zeros_like(p0), np.zeros_like(p0)

        def step_then_cast():
            opt_cast.step([g])
            cast_copy[...] = cast.astype(bf16)  # ml_dtypes' cast: NumPy, one thread

        impls = {
            "adam": lambda: opt_plain.step([g]),
            "adam+copies": lambda: opt_mixed.step([g]),
            "adam, then cast": step_then_cast,
            "touch": lambda: _core._touch(p0, g, m, v),
            "touch+copies": lambda: _core._touch(p0, g, m, v, copies=touch_copy),
        }
        keep = []
        if torch is not None:
            tp = torch.from_numpy(p0.copy())
            tp.grad = torch.from_numpy(g)
            topt = torch.optim.Adam([tp], lr=LR, fused=True)
            tcopy = torch.empty(n, dtype=torch.bfloat16)
            keep += [tp, topt, tcopy]

            def torch_step_then_cast():
                topt.step()
                tcopy.copy_(tp)  # as tp.to(torch.bfloat16), into a kept buffer

            impls["torch fused"] = topt.step
            impls["torch fused, then cast"] = torch_step_then_cast
        measured = H.measure_interleaved(
            impls, repeats=repeats, warmup=mode.warmup, min_sample_s=mode.min_sample_s, sleep_s=sleep_s
        )
        ms = {k: t.median * 1e3 for k, t in measured.timings.items()}
        base = ms.get("adam")
        rows.append(
            {
                "params": n,
                "ms": ms,
                "bytes_per_param": {"adam": 28, "adam+copies": 30, "touch": 28, "touch+copies": 30},
                "vs_adam": {k: (x / base if base else None) for k, x in ms.items()},
                "errors": measured.errors,
            }
        )
        del keep
    return rows


def run(args, remote=None) -> dict:
    """remote: peers in another process (suite.RemotePeers), timed in the same groups."""
    if _core is None:
        raise SystemExit(
            "bench optim: the gradfuse C++ extension is not available "
            f"({gf.config()['extension']}); nothing to benchmark"
        )
    mode_name = (
        "smoke" if getattr(args, "smoke", False) else "quick" if args.quick else "full" if args.full else "default"
    )
    mode = MODES[mode_name]
    repeats = args.repeats if args.repeats is not None else mode.repeats
    if repeats < 1:
        raise SystemExit("bench optim: --repeats must be >= 1")
    torch, torch_missing = H.import_torch(args.no_torch)
    H.set_threads(args.threads, torch)
    algorithms = [ALGORITHMS[a] for a in args.algorithms] if args.algorithms else list(ALGORITHMS.values())
    workloads = list(mode.workloads)
    if mode.float64:
        largest = max(w.params for w in workloads if w.kind == "single")
        workloads += [w.with_dtype("float64") for w in mode.workloads if w.params != largest]
    sleep_s = args.sleep_ms / 1e3
    settings = {
        "mode": mode_name,
        "repeats": repeats,
        "warmup": mode.warmup,
        "warmup_budget_s": 1.0,
        "min_sample_s": mode.min_sample_s,
        "sleep_s": sleep_s,
        "lr": LR,
        "threads_requested": args.threads,
        "algorithms": [a.name for a in algorithms],
        "workloads": [
            {"id": w.id, "kind": w.kind, "dtype": w.dtype, "tensors": len(w.shapes), "params": w.params}
            for w in workloads
        ],
        "impls": [i for i in IMPLS if torch is not None or not i.startswith("torch")],
        "timing": "median over repeats; each repeat runs every implementation of a group once, "
        "in a rotating order; a sample is calls_per_sample back-to-back steps",
    }
    result = {
        "suite": "optim",
        "machine": H.machine_info(torch, torch_missing),
        "settings": settings,
        "rows": [],
        "overhead": [],
        "notes": [],
    }
    t_start = time.perf_counter()
    progress = H.Progress(len(workloads) * len(algorithms) + len(algorithms), "bench optim")
    rng = np.random.default_rng(0)
    try:
        for w in workloads:
            built = build(w, rng, torch)
            for algo in algorithms:
                progress.begin(f"{w.label} {algo.name}")
                result["rows"] += run_group(w, algo, built, torch, mode, repeats, sleep_s, remote)
                if w.params >= 2**22:  # torch optimizers sit in reference cycles: free their state now
                    gc.collect()
            if not all(np.isfinite(a).all() for a in built.arrays):
                result["notes"].append(f"{w.label}: parameters are not finite after the benchmark")
            del built
            gc.collect()
        result["overhead"] = run_overhead(torch, mode, repeats, sleep_s, algorithms, progress)
        if any(a.name == "Adam" for a in algorithms):
            progress.begin("Adam with bf16 copies")
            result["copies"] = run_copies(torch, mode, mode_name, repeats, sleep_s)
    finally:
        progress.close()
    result["elapsed_s"] = time.perf_counter() - t_start
    try:
        result["loadavg_end"] = list(os.getloadavg())
    except OSError:
        result["loadavg_end"] = None
    result["cpu_busy_at_end"] = H.cpu_busy_fraction()
    busy = [b for b in (result["machine"]["cpu_busy_at_start"], result["cpu_busy_at_end"]) if b is not None]
    if busy and max(busy) >= 0.15:
        result["notes"].append(
            f"other processes kept {max(busy):.0%} of the {os.cpu_count()} cpus busy (sampled "
            "at the start and the end): expect disturbed timings; OpenMP steps stall for "
            "scheduler slices when one of their threads is preempted"
        )
    singles = [
        r
        for r in result["rows"]
        if r["impl"] == "touch" and r["kind"] == "single" and r["dtype"] == "float32" and r["bytes_per_param"] == 28
    ]
    if singles:
        head = max(singles, key=lambda r: r["params"])
        result["rmw_bandwidth"] = {
            "gb_per_s": head["gb_per_s"],
            "workload": head["workload"],
            "arrays": "p, g, m, v (28 B/param)",
            "ms": head["ms"],
        }
    return result


# ---- reporting ------------------------------------------------------------------------------------------
def _ms(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}" if x >= 1 else f"{x:.3f}"


def _x(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}x" if x >= 10 else f"{x:.2f}x"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def _label(r: dict) -> str:
    return f"{r['workload']} {'fp32' if r['dtype'] == 'float32' else 'fp64'}"


def report(result: dict, long: bool = False) -> str:
    m, s = result["machine"], result["settings"]
    cfg = m["gradfuse"]
    th = m["threads"]
    torch_desc = f"torch {m['torch']} ({th['torch']} threads)" if m["torch"] else f"torch: {m['torch_missing']}"
    lines = [
        f"gradfuse {cfg['version']} ({cfg['isa']}, {th['gradfuse']} threads) | {torch_desc} | numpy {m['numpy']}",
        f"CPU: {m['cpu_model']}, {m['cpu_count']} cpus, {m['mem_total_gib']} GiB | busy with other work: "
        f"{_pct(m['cpu_busy_at_start'])} at the start, {_pct(result.get('cpu_busy_at_end'))} at the end",
    ]
    rmw = result.get("rmw_bandwidth")
    if rmw:
        lines.append(f"RMW bandwidth (touch p,g,m,v on {rmw['workload']} fp32): {rmw['gb_per_s']:.1f} GB/s")
    lines.append(
        f"mode {s['mode']}: median of {s['repeats']} interleaved repeats after {s['warmup']} warm-up "
        f"steps; ms per step; (x) = that time / gradfuse's; ceiling = touch (same arrays, no math)"
    )
    if s["repeats"] < 7:
        lines.append("note: fewer than 7 repeats, the medians are rough")
    lines.append("")
    rows = result["rows"]
    groups: dict = {}
    for r in rows:
        groups.setdefault((_label(r), r["algorithm"]), {})[r["impl"]] = r
    peers = [p for p in PEERS if any(r["impl"] == p for r in rows)]
    if long:
        headers = ["workload", "algorithm", "impl", "ms", "min", "IQR", "Gparam/s", "GB/s", "ceil", "gf x"]
        table = []
        for (label, algo), cells in groups.items():
            for impl in IMPLS:
                r = cells.get(impl)
                if r is None:
                    continue
                if r["ms"] is None:
                    table.append([label, algo, impl, "skipped", "", "", "", "", "", r.get("skipped", "")[:40]])
                    continue
                table.append(
                    [
                        label,
                        algo,
                        impl,
                        _ms(r["ms"]),
                        _ms(r["ms_min"]),
                        _ms(r["ms_iqr"]),
                        f"{r['gparams_per_s']:.2f}",
                        f"{r['gb_per_s']:.1f}",
                        f"{r['frac_of_ceiling']:.0%}",
                        _x(r.get("gradfuse_speedup")) if impl in PEERS else "",
                    ]
                )
        lines.append(H.format_table(headers, table, right=set(range(3, 9))))
    else:
        headers = ["workload", "algorithm", "B/p", "ceil GB/s", "gradfuse ms", "GB/s", "ceil"]
        headers += [f"{p} ms (x)" for p in peers]
        table = []
        for (label, algo), cells in groups.items():
            g, t = cells["gradfuse"], cells["touch"]
            row = [
                label,
                algo,
                str(g["bytes_per_param"]),
                f"{t['gb_per_s']:.1f}",
                _ms(g["ms"]),
                f"{g['gb_per_s']:.1f}",
                f"{g['frac_of_ceiling']:.0%}",
            ]
            for p in peers:
                r = cells.get(p)
                row.append("-" if r is None or r["ms"] is None else f"{_ms(r['ms'])} ({_x(r['gradfuse_speedup'])})")
            table.append(row)
        lines.append(H.format_table(headers, table))
    if result.get("overhead"):
        lines.append("")
        o0 = result["overhead"][0]
        lines.append(
            f"fixed cost of one step: {o0['workload']} fp32 (us per step, median); "
            "overhead = opt.step - the bare kernel call"
        )
        names = [
            n
            for n in ("gradfuse step", "kernel only", *TORCH_VARIANTS)
            if any(n in o["us"] for o in result["overhead"])
        ]
        headers = ["algorithm", *names, "overhead", "per tensor"]
        table = []
        for o in result["overhead"]:
            table.append(
                [
                    o["algorithm"],
                    *(f"{o['us'][n]:.1f}" if n in o["us"] else "-" for n in names),
                    f"{o['python_overhead_us']:.1f}",
                    f"{o['python_overhead_us_per_tensor']:.2f}",
                ]
            )
        lines.append(H.format_table(headers, table, right=set(range(1, len(headers)))))
    if result.get("copies"):
        lines.append("")
        lines.append(
            "Adam with bf16 compute copies (fp32, one tensor; ms per step, median; x: time / the plain step): "
            "written in the pass (30 B/param) vs a separate cast pass"
        )
        order = (
            "adam",
            "adam+copies",
            "adam, then cast",
            "torch fused",
            "torch fused, then cast",
            "touch",
            "touch+copies",
        )
        names = [n for n in order if any(n in r["ms"] for r in result["copies"])]
        table = [
            [
                _size(r["params"]),
                *(f"{r['ms'][n]:.2f} ({r['vs_adam'][n]:.2f}x)" if n in r["ms"] else "-" for n in names),
            ]
            for r in result["copies"]
        ]
        lines.append(H.format_table(["params", *names], table, right=set(range(1, len(names) + 1))))
    for note in result.get("notes", []):
        lines.append(f"note: {note}")
    lines.append(f"\nbench optim took {result['elapsed_s']:.1f} s")
    return "\n".join(lines)


# ---- command line ---------------------------------------------------------------------------------------
HELP = "fused optimizer steps vs the NumPy twins, torch.optim and the memory limit"

DESCRIPTION = __doc__.split("\n", 2)[2]

EPILOG = """modes:
  default  workloads 1x16M, 1x64M, 256 tensors x 4K (separate arrays), the same as one ParameterArena,
           and an MLP's list (784-1024-1024-10); 9 repeats; a few minutes on 2 cores.
  --quick  1x256K, 1x1M, 256 x 1K (list and arena), MLP 784-128-128-10; 3 repeats, 1 warm-up step, one call
           per sample: a smoke test of seconds, not a measurement.
  --full   the default workloads plus their float64 versions (except 1x64M), 15 repeats, longer samples.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--quick", action="store_true", help="small workloads, few repeats (smoke test, seconds)")
    which.add_argument("--full", action="store_true", help="adds float64 rows and more repeats")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        metavar="N",
        help="timed repeats per cell (default: 9; --quick 3; --full 15)",
    )
    parser.add_argument("--out", metavar="DIR", help="write DIR/optim.json (the table is always printed)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="threads for gradfuse and torch (default: as configured, see `python -m gradfuse config`)",
    )
    parser.add_argument("--no-torch", action="store_true", help="leave out the torch.optim rows")
    parser.add_argument(
        "--algorithms",
        type=lambda s: [a.strip() for a in s.split(",") if a.strip()],
        default=None,
        metavar="A,B",
        help=f"only these algorithms (of {', '.join(ALGORITHMS)})",
    )
    parser.add_argument(
        "--sleep-ms",
        type=float,
        default=2.0,
        metavar="MS",
        help="pause before each timed sample, so spinning OpenMP threads of the previous "
        "implementation go idle (default 2)",
    )
    parser.add_argument("--long", action="store_true", help="one table row per implementation")
    parser.set_defaults(func=main)


def main(args) -> int:
    if args.algorithms:
        unknown = [a for a in args.algorithms if a not in ALGORITHMS]
        if unknown:
            print(
                f"bench optim: unknown algorithm(s) {', '.join(unknown)}; choose from {', '.join(ALGORITHMS)}",
                file=sys.stderr,
            )
            return 2
    if args.threads is not None and args.threads < 1:
        print("bench optim: --threads must be >= 1", file=sys.stderr)
        return 2
    result = run(args)
    print(report(result, long=args.long))
    if args.out:
        path = os.path.join(args.out, "optim.json")
        H.write_json(path, result)
        print(f"wrote {path}")
    return 0
