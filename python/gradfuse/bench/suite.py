"""bench (no suite name): every part of the benchmark in one run, one report, charts.

    python -m gradfuse bench [--quick | --full | --smoke] [--out DIR] [--threads N] [--no-torch]
                             [--peers deepspeed,bnb,bnb-8bit] [--peer-python PYTHON] [--no-charts]

Parts, in this order, in this process (gradfuse, its NumPy twins and torch), the peers that bring
their own native code and OpenMP runtime (DeepSpeed's CPU optimizers, bitsandbytes') in a second
process (_peer.py) whose samples interleave with the rows they belong to:

  limits   the machine's limits, measured here: read-modify-write bandwidth (_core._touch), FMA
           throughput on 1 thread and on all (_core._fma_peak)
  optim    `bench optim` (its quick mode for --quick, its default mode for --full), with the peers
  layers   `bench layers`: batch norm, dropout, dense + ReLU, GEMM
  train    `bench train`: one MLP training step
  sizes    Adam and SGD step time on one tensor of 1K .. 64M parameters (gradfuse, torch fused,
           NumPy, DeepSpeed, and the touch of the same arrays): linear growth, and where caches end
  threads  Adam on 16M parameters and a 1024^3 GEMM on 1 .. N threads (gradfuse and torch)

Every row of the report names its kernel, gradfuse's time and rate, the fraction of the relevant
limit it reaches (bandwidth for optimizer and elementwise rows: for an optimizer, the touch of the
same arrays; FMA peak for GEMM rows) and each peer's time as a multiple of gradfuse's; a peer that is
not installed, or has no such kernel, is a skipped cell with its reason, never an error.
Output: the table on the terminal; with --out DIR: DIR/suite.json (machine, limits, every row,
every sample), DIR/suite.md and PNG charts (matplotlib; without it the charts are skipped).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

import gradfuse as gf
from .._ext import _core
from . import _harness as H
from . import charts
from . import layers as layers_suite
from . import optim as optim_suite
from . import train as train_suite
from ._peer import PEERS as REMOTE_PEERS
from ._peer import PeerProcess, peer_algorithms

HELP = "every part (optim, layers, train, sizes, threads) against every installed peer: one report, charts"


@dataclass(frozen=True)
class SuiteMode:
    part_mode: str  # the parts' own mode: "smoke" (optim only; quick for the others), "quick",
    # "default"
    part_repeats: int | None  # None: the parts' own default
    optim_algorithms: tuple | None
    sweep_sizes: tuple
    sweep_repeats: int
    scaling_adam: int
    scaling_gemm: int
    scaling_repeats: int
    min_sample_s: float


MODES = {
    "smoke": SuiteMode("smoke", 1, ("Adam", "SGD"), (2**10, 2**14), 1, 2**16, 64, 1, 0.0),
    "quick": SuiteMode("quick", None, None, tuple(4**k * 2**10 for k in range(7)), 3, 4 * 2**20, 512, 3, 0.005),
    "full": SuiteMode("default", None, None, tuple(4**k * 2**10 for k in range(9)), 5, 16 * 2**20, 1024, 7, 0.02),
}
SWEEP_ALGORITHMS = ("Adam", "SGD")
# bitsandbytes' CPU optimizers are torch-op loops (~0.1 s per step for 1M Adam parameters on 2 cores):
# left out of the larger rows to keep --full within its time budget
REMOTE_MAX_PARAMS = {"bnb": 4 * 2**20, "bnb-8bit": 4 * 2**20}
SWEEP_REMOTE = ("deepspeed",)  # bitsandbytes' CPU path takes seconds per step at 64M; torch is here


# ---- peers in another process ---------------------------------------------------------------------------
class RemotePeers:
    """The peers of _peer.py, all in one process; what optim.run_group asks for its groups."""

    def __init__(self, names, python: str | None, threads: int | None):
        self.names = list(names)
        self.threads = threads
        self.process = PeerProcess(python)
        self.status = self.process.probe(self.names) if self.names else {}

    def impls_for(self, algorithm: str, kwargs: dict, shapes, dtype: str, only=None) -> tuple[dict, dict]:
        impls, skipped = {}, {}
        for name in self.names:
            if only is not None and name not in only:
                continue
            if name not in REMOTE_PEERS:
                skipped[name] = f"unknown peer {name!r}"
                continue
            if algorithm not in peer_algorithms(name):
                continue  # a kernel the peer does not have: no cell at all
            status = self.status.get(name, {})
            if not status.get("available"):
                skipped[name] = status.get("reason", "not available")
                continue
            params = sum(math.prod(s) for s in shapes)
            if params > REMOTE_MAX_PARAMS.get(name, params):
                skipped[name] = (
                    f"left out above {optim_suite._size(REMOTE_MAX_PARAMS[name])} parameters "
                    "(too slow for the time budget)"
                )
                continue
            try:
                impls[name] = self.process.step(name, algorithm, kwargs, shapes, dtype, self.threads)
            except RuntimeError as exc:
                skipped[name] = str(exc)
        return impls, skipped

    @staticmethod
    def release(impls: dict) -> None:
        for step in impls.values():
            step.drop()

    def close(self):
        self.process.close()


# ---- the parts ------------------------------------------------------------------------------------------
def _part_args(mode: SuiteMode, args, **extra) -> argparse.Namespace:
    return argparse.Namespace(
        quick=mode.part_mode in ("quick", "smoke"),
        smoke=mode.part_mode == "smoke",
        full=False,
        repeats=mode.part_repeats,
        threads=args.threads,
        no_torch=args.no_torch,
        sleep_ms=args.sleep_ms,
        out=None,
        long=False,
        **extra,
    )


def run_sweep(mode: SuiteMode, torch, remote: RemotePeers | None, sleep_s: float, progress) -> list[dict]:
    """Step time against parameter count: one tensor of each size, Adam and SGD."""
    rows = []
    rng = np.random.default_rng(2)
    for n in mode.sweep_sizes:
        w = optim_suite.Workload(f"1x{optim_suite._size(n)}", "single", ((n,),))
        built = optim_suite.build(w, rng, torch)
        for name in SWEEP_ALGORITHMS:
            progress.begin(f"sizes {w.id} {name}")
            algo = optim_suite.ALGORITHMS[name]
            gf_opt = getattr(gf.optim, name)(built.gf_params, **algo.kwargs)
            np_opt = getattr(gf.optim, name)(built.gf_params, **algo.kwargs)
            impls = {
                "gradfuse": optim_suite._gf_step(gf_opt, built, "cpp"),
                "numpy": optim_suite._gf_step(np_opt, built, "numpy"),
            }
            errors = {}
            if torch is not None:
                topt = getattr(torch.optim, name)(built.torch_params, **algo.kwargs, fused=True)
                impls["torch-fused"] = topt.step
            remote_impls = {}
            if remote is not None:
                remote_impls, errors = remote.impls_for(name, algo.kwargs, w.shapes, w.dtype, only=SWEEP_REMOTE)
                impls.update(remote_impls)
            impls["gradfuse"]()
            states = optim_suite._state_lists(gf_opt, built, algo)
            impls["touch"] = lambda b=built, states=states: _core._touch(b.arrays, b.grads, *states)
            m = H.measure_interleaved(
                impls,
                repeats=mode.sweep_repeats,
                warmup=2,
                min_sample_s=mode.min_sample_s,
                sleep_s=sleep_s,
                required=("gradfuse", "numpy", "touch"),
                warmup_budget_s=0.5,
            )
            errors.update(m.errors)
            if remote is not None:
                remote.release(remote_impls)
            bpp = optim_suite.bytes_per_param(algo, w.dtype)
            for impl, t in m.timings.items():
                rows.append(
                    {
                        "algorithm": name,
                        "params": n,
                        "bytes_per_param": bpp,
                        "impl": impl,
                        "ms": t.median * 1e3,
                        "gb_per_s": n * bpp / t.median / 1e9,
                        "samples_ms": [s * 1e3 for s in t.samples],
                    }
                )
            for impl, why in errors.items():
                rows.append(
                    {"algorithm": name, "params": n, "bytes_per_param": bpp, "impl": impl, "ms": None, "skipped": why}
                )
            del impls, gf_opt, np_opt
            gc.collect()
        del built
        gc.collect()
    return rows


def thread_counts(n: int) -> list[int]:
    """1, 2, 4, ... and n itself."""
    counts, t = [], 1
    while t < n:
        counts.append(t)
        t *= 2
    return counts + [n]


def run_scaling(mode: SuiteMode, torch, sleep_s: float, progress) -> list[dict]:
    """Adam (one tensor) and a square GEMM on 1 .. N threads, every thread count interleaved."""
    n_threads = os.cpu_count() or 1
    counts = thread_counts(n_threads)
    saved_threads = gf.get_num_threads()
    saved_torch = torch.get_num_threads() if torch is not None else None
    rng = np.random.default_rng(3)
    n = mode.scaling_adam
    p, g = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)
    k = mode.scaling_gemm
    a, b = rng.standard_normal((k, k), dtype=np.float32), rng.standard_normal((k, k), dtype=np.float32)
    c = np.empty((k, k), np.float32)
    adam = gf.optim.Adam([p], lr=optim_suite.LR)
    cases = {
        f"Adam 1x{optim_suite._size(n)}": ("GB/s", 28.0 * n, {"gradfuse": lambda: adam.step([g])}),
        f"GEMM {k}x{k}x{k}": ("GFLOP/s", 2.0 * k**3, {"gradfuse": lambda: gf.ops.matmul(a, b, c)}),
    }
    if torch is not None:
        tp = torch.from_numpy(p.copy())
        tp.grad = torch.from_numpy(g)
        topt = torch.optim.Adam([tp], lr=optim_suite.LR, fused=True)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        cases[f"Adam 1x{optim_suite._size(n)}"][2]["torch-fused"] = topt.step
        cases[f"GEMM {k}x{k}x{k}"][2]["torch.mm"] = lambda: torch.mm(ta, tb)

    def on(threads, fn):
        def run():
            gf.set_num_threads(threads)
            if torch is not None:
                torch.set_num_threads(threads)
            fn()

        return run

    rows = []
    try:
        for case, (unit, work, impls) in cases.items():
            progress.begin(f"threads {case}")
            timed = {f"{impl}@{t}": on(t, fn) for impl, fn in impls.items() for t in counts}
            m = H.measure_interleaved(
                timed,
                repeats=mode.scaling_repeats,
                warmup=2,
                min_sample_s=mode.min_sample_s,
                sleep_s=sleep_s,
                required=tuple(x for x in timed if x.startswith("gradfuse")),
            )
            for impl in impls:
                one = m.timings.get(f"{impl}@1")
                for t in counts:
                    timing = m.timings.get(f"{impl}@{t}")
                    if timing is None:
                        continue
                    rows.append(
                        {
                            "case": case,
                            "impl": impl,
                            "threads": t,
                            "unit": unit,
                            "ms": timing.median * 1e3,
                            "rate": work / timing.median / 1e9,
                            "speedup": one.median / timing.median if one else None,
                            "samples_ms": [s * 1e3 for s in timing.samples],
                        }
                    )
    finally:
        gf.set_num_threads(saved_threads)
        if torch is not None:
            torch.set_num_threads(saved_torch)
    return rows


# ---- one table for every part ---------------------------------------------------------------------------
TORCH_OPTIM = ("torch-fused", "torch-foreach", "torch-forloop")


def _cell(ms: float, rate: float, limit: float, gf_ms: float) -> dict:
    return {"ms": ms, "rate": rate, "frac_of_limit": rate / limit if limit else None, "speedup": ms / gf_ms}


def unify(result: dict) -> list[dict]:
    """The parts' rows as one list: kernel, workload, unit, limit, and a cell per implementation
    (gradfuse, numpy, each peer: times, rate, fraction of the limit, peer time / gradfuse time, or
    skipped with the reason)."""
    rows = []
    torch_missing = result["machine"]["torch_missing"]
    remote = result.get("peers", {})
    optim = result["parts"].get("optim")
    if optim:
        groups: dict = {}
        for r in optim["rows"]:
            groups.setdefault((r["workload"], r["dtype"], r["algorithm"]), []).append(r)
        for (workload, dtype, algorithm), cells in groups.items():
            by = {r["impl"]: r for r in cells}
            g, touch = by["gradfuse"], by["touch"]
            limit = touch["gb_per_s"]
            row = {
                "part": "optim",
                "kernel": algorithm,
                "workload": f"{workload} {'fp32' if dtype == 'float32' else 'fp64'}",
                "pass": "step",
                "unit": "GB/s",
                "work": g["params"] * g["bytes_per_param"],
                "limit": {"name": "touch of the same arrays (read-modify-write)", "value": limit, "unit": "GB/s"},
                "cells": {},
            }
            for impl, r in by.items():
                if impl == "touch":
                    continue
                if r["ms"] is None:
                    row["cells"][impl] = {"skipped": r.get("skipped", "not run")}
                else:
                    row["cells"][impl] = _cell(r["ms"], r["gb_per_s"], limit, g["ms"])
            if torch_missing:
                for impl in TORCH_OPTIM:
                    row["cells"][impl] = {"skipped": f"torch {torch_missing}"}
            for peer, status in remote.items():
                if peer in REMOTE_PEERS and algorithm in peer_algorithms(peer) and peer not in row["cells"]:
                    row["cells"][peer] = {"skipped": status.get("reason", "not run")}
            rows.append(row)
    limits = result["limits"]
    layers = result["parts"].get("layers")
    if layers:
        for r in layers["rows"]:
            bandwidth = r["unit"] == "GB/s"
            limit = limits["rmw_gb_per_s"] if bandwidth else limits["fma_gflops_all"]
            limit_name = "read-modify-write bandwidth" if bandwidth else "FMA peak, all threads"
            limit, limit_name = r.get("limit", limit), r.get("limit_name", limit_name)  # bf16 rows: the bf16 peak
            row = {
                "part": "layers",
                "kernel": f"{r['kind']} {r['pass']}",
                "workload": r["workload"].split(" ", 1)[-1] if r["kind"] != "dropout" else r["workload"],
                "pass": r["pass"],
                "unit": r["unit"],
                "work": r["work"],
                "limit": {
                    "name": limit_name,
                    "value": limit,
                    "unit": r["unit"],
                },
                "cells": {},
            }
            g_ms = r["cells"]["gradfuse"]["ms"]
            for impl, c in r["cells"].items():
                row["cells"][impl] = _cell(c["ms"], c["rate"], limit, g_ms)
            for impl, why in r.get("errors", {}).items():
                row["cells"][impl] = {"skipped": why}
            if torch_missing:
                row["cells"]["torch"] = {"skipped": f"torch {torch_missing}"}
            rows.append(row)
    train = result["parts"].get("train")
    if train:
        s = train["settings"]
        flops = train["gemm_gflops_per_step"] * 1e9
        limit = limits["fma_gflops_all"]
        row = {
            "part": "train",
            "kernel": "MLP train step",
            "workload": f"{'-'.join(map(str, s['sizes']))} batch {s['batch']}",
            "pass": "forward+backward+Adam",
            "unit": "GFLOP/s",
            "work": flops,
            "limit": {"name": "FMA peak, all threads (GEMM flops only)", "value": limit, "unit": "GFLOP/s"},
            "cells": {},
        }
        g_ms = train["cells"]["gradfuse"]["ms"]
        for impl, c in train["cells"].items():
            row["cells"][impl] = _cell(c["ms"], flops / c["ms"] / 1e6, limit, g_ms)
        for impl, why in train.get("errors", {}).items():
            row["cells"][impl] = {"skipped": why}
        if torch_missing:
            row["cells"]["torch"] = {"skipped": f"torch {torch_missing}"}
        rows.append(row)
    return rows


def peer_columns(rows: list[dict]) -> list[str]:
    order = ["numpy", *TORCH_OPTIM, "torch", "torch-fused-adam", *REMOTE_PEERS]
    seen = {impl for r in rows for impl in r["cells"] if impl != "gradfuse"}
    return [p for p in order if p in seen] + sorted(seen - set(order))


# ---- running --------------------------------------------------------------------------------------------
def run(args) -> dict:
    if _core is None:
        raise SystemExit(
            f"bench: the gradfuse C++ extension is not available ({gf.config()['extension']}); nothing to benchmark"
        )
    mode_name = "smoke" if args.smoke else "full" if args.full else "quick"
    mode = MODES[mode_name]
    sleep_s = args.sleep_ms / 1e3
    t_start = time.perf_counter()
    torch, torch_missing = H.import_torch(args.no_torch)
    H.set_threads(args.threads, torch)
    if torch is not None and args.threads is None:
        torch.set_num_threads(gf.get_num_threads())
    result = {
        "suite": "all",
        "mode": mode_name,
        "machine": H.machine_info(torch, torch_missing),
        "settings": {
            "mode": mode_name,
            "parts_mode": mode.part_mode,
            "part_repeats": mode.part_repeats,
            "sweep_sizes": list(mode.sweep_sizes),
            "sweep_repeats": mode.sweep_repeats,
            "scaling_threads": thread_counts(os.cpu_count() or 1),
            "sleep_s": sleep_s,
            "threads_requested": args.threads,
            "peers_requested": list(args.peers),
            "peer_python": args.peer_python or sys.executable,
            "OPENBLAS_THREAD_TIMEOUT": os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
            "timing": "median over interleaved repeats (see each part); peers in another process "
            "time their own samples, interleaved with the in-process ones",
        },
        "parts": {},
        "timings_s": {},
    }
    progress = H.Progress(5 + len(mode.sweep_sizes) * len(SWEEP_ALGORITHMS) + 2, "bench")
    remote = None

    def part(name, fn):
        progress.begin(name)
        t0 = time.perf_counter()
        value = fn()
        result["timings_s"][name] = time.perf_counter() - t0
        gc.collect()
        return value

    try:
        peers = [p for p in args.peers if not (args.no_torch and p == "torch-process")]
        if peers:
            remote = part("peers", lambda: RemotePeers(peers, args.peer_python, gf.get_num_threads()))
            result["peers"] = remote.status
        else:
            result["peers"] = {}
        result["limits"] = part("limits", lambda: layers_suite.machine_limits(mode_name != "full"))
        optim_args = _part_args(mode, args, algorithms=list(mode.optim_algorithms) if mode.optim_algorithms else None)
        result["parts"]["optim"] = part("optim", lambda: optim_suite.run(optim_args, remote))
        result["parts"]["layers"] = part("layers", lambda: layers_suite.run(_part_args(mode, args), result["limits"]))
        result["parts"]["train"] = part("train", lambda: train_suite.run(_part_args(mode, args)))
        for r in result["parts"].values():
            r.pop("machine", None)  # one machine description, at the top
        result["sizes"] = part("sizes", lambda: run_sweep(mode, torch, remote, sleep_s, progress))
        result["scaling"] = part("threads", lambda: run_scaling(mode, torch, sleep_s, progress))
    finally:
        progress.close()
        if remote is not None:
            remote.close()
    result["rows"] = unify(result)
    result["elapsed_s"] = time.perf_counter() - t_start
    result["cpu_busy_at_end"] = H.cpu_busy_fraction()
    return result


# ---- reporting ------------------------------------------------------------------------------------------
def _fmt_rate(x: float) -> str:
    return f"{x:.3g}"


def _speedup_cell(cell: dict | None) -> str:
    if cell is None:
        return ""
    if "skipped" in cell:
        return "skip"
    return optim_suite._x(cell["speedup"])


def table_rows(rows: list[dict], peers: list[str]) -> tuple[list[str], list[list[str]]]:
    headers = ["part", "kernel", "workload", "gradfuse ms", "rate", "of limit", *(f"{p} x" for p in peers)]
    table = []
    for r in rows:
        g = r["cells"]["gradfuse"]
        frac = g.get("frac_of_limit")
        table.append(
            [
                r["part"],
                r["kernel"],
                r["workload"],
                optim_suite._ms(g["ms"]),
                f"{_fmt_rate(g['rate'])} {r['unit']}",
                "-" if frac is None else f"{frac:.0%}",
                *(_speedup_cell(r["cells"].get(p)) for p in peers),
            ]
        )
    return headers, table


def skipped_reasons(rows: list[dict]) -> dict[str, list[str]]:
    reasons: dict[str, list[str]] = {}
    for r in rows:
        for impl, cell in r["cells"].items():
            if "skipped" in cell and cell["skipped"] not in reasons.setdefault(impl, []):
                reasons[impl].append(cell["skipped"])
    return {k: v for k, v in reasons.items() if v}


def machine_lines(result: dict) -> list[str]:
    m, lim = result["machine"], result["limits"]
    cfg = m["gradfuse"]
    caches = ", ".join(
        f"L{c['level']}{'d' if c['type'] == 'Data' else 'i' if c['type'] == 'Instruction' else ''} "
        f"{_bytes(c['bytes'])}" + (f" x{c['total_bytes'] // c['bytes']}" if c["total_bytes"] != c["bytes"] else "")
        for c in m.get("caches", [])
    )
    peers = (
        "; ".join(
            f"{name} {s['version']}" if s.get("available") else f"{name}: {s.get('reason')}"
            for name, s in result.get("peers", {}).items()
        )
        or "none requested"
    )
    return [
        f"CPU: {m['cpu_model']}, {m['cpu_count']} cpus, {m['mem_total_gib']} GiB; caches: {caches or 'unknown'}",
        f"ISA: {', '.join(m.get('cpu_flags', [])) or 'unknown'}; gradfuse {cfg['version']} runs {cfg['isa']} on "
        f"{m['threads']['gradfuse']} threads ({cfg['compiler']}, {cfg['gemm']}, {cfg['openmp']})",
        f"python {m['python']}, numpy {m['numpy']}, torch {m['torch'] or m['torch_missing']}; peers: {peers}",
        f"limits measured here: read-modify-write {lim['rmw_gb_per_s']:.1f} GB/s ({lim['threads']} threads); FMA "
        f"{lim['fma_gflops_1_thread']:.0f} GFLOP/s on 1 thread, {lim['fma_gflops_all']:.0f} on {lim['threads']}; "
        + (
            f"bf16 peak {lim['bf16_peak_gflops']:.0f} GFLOP/s ({lim['bf16_peak']})"
            if lim.get("bf16_peak_gflops")
            else f"bf16 peak {lim.get('bf16_peak', 'not measured')}"
        ),
        f"gemm_bf16: {cfg.get('gemm_bf16')}",
        f"busy with other work: {optim_suite._pct(m['cpu_busy_at_start'])} at the start, "
        f"{optim_suite._pct(result.get('cpu_busy_at_end'))} at the end",
    ]


def _bytes(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 2**20 and n % 2**20 == 0 else f"{n >> 10} KiB"


def sweep_table(result: dict) -> tuple[list[str], list[list[str]]]:
    impls = []
    for r in result["sizes"]:
        if r["impl"] not in impls:
            impls.append(r["impl"])
    cells = {(r["algorithm"], r["params"], r["impl"]): r for r in result["sizes"]}
    keys = sorted(
        {(r["algorithm"], r["params"]) for r in result["sizes"]}, key=lambda k: (SWEEP_ALGORITHMS.index(k[0]), k[1])
    )
    headers = ["algorithm", "params", *(f"{i} ms" for i in impls), "gradfuse GB/s"]
    table = []
    for algo, n in keys:
        row = [algo, optim_suite._size(n)]
        for impl in impls:
            c = cells.get((algo, n, impl))
            row.append("-" if c is None or c["ms"] is None else optim_suite._ms(c["ms"]))
        row.append(f"{cells[(algo, n, 'gradfuse')]['gb_per_s']:.1f}")
        table.append(row)
    return headers, table


def scaling_table(result: dict) -> tuple[list[str], list[list[str]]]:
    headers = ["case", "impl", "threads", "ms", "rate", "speedup vs 1"]
    table = [
        [
            r["case"],
            r["impl"],
            str(r["threads"]),
            optim_suite._ms(r["ms"]),
            f"{_fmt_rate(r['rate'])} {r['unit']}",
            "-" if r["speedup"] is None else f"{r['speedup']:.2f}x",
        ]
        for r in result["scaling"]
    ]
    return headers, table


def report(result: dict) -> str:
    rows = result["rows"]
    peers = peer_columns(rows)
    lines = machine_lines(result)
    lines += [
        f"mode {result['mode']}: medians of interleaved repeats; 'x' = peer time / gradfuse time (above 1: "
        "gradfuse is faster); 'of limit' = gradfuse's rate / the limit of that row",
        "",
    ]
    lines.append(H.format_table(*table_rows(rows, peers), right=set(range(3, 6 + len(peers)))))
    for impl, why in skipped_reasons(rows).items():
        lines.append(f"skipped {impl}: {'; '.join(why)}")
    lines += ["", "step time against parameter count (one tensor, fp32):"]
    lines.append(H.format_table(*sweep_table(result), right=set(range(1, 20))))
    lines += ["", "thread scaling:"]
    lines.append(H.format_table(*scaling_table(result), right={2, 3, 4, 5}))
    if result.get("charts"):
        lines.append(f"\ncharts: {', '.join(result['charts'])}")
    elif result.get("charts_skipped"):
        lines.append(f"\ncharts skipped: {result['charts_skipped']}")
    lines.append(
        f"bench took {result['elapsed_s']:.0f} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in result["timings_s"].items())
        + ")"
    )
    return "\n".join(lines)


def _md_table(headers, table) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in table]
    return "\n".join(out)


def markdown(result: dict, command: str) -> str:
    rows = result["rows"]
    peers = peer_columns(rows)
    lines = [
        "# gradfuse benchmark: every part",
        "",
        f"`{command}`, {result['machine']['time']}, {result['elapsed_s']:.0f} s. "
        "Every sample and the machine's full description are in [suite.json](suite.json).",
        "",
    ]
    lines += [f"- {line}" for line in machine_lines(result)]
    lines += [
        "",
        "Medians of interleaved repeats. **x** = the peer's time / gradfuse's time (above 1: gradfuse is "
        "faster). **of limit** = gradfuse's rate as a fraction of the row's limit: for optimizer rows the "
        "touch of the same arrays (read p, g, state; write p, state; no math), for batch norm and dropout "
        "the read-modify-write bandwidth, for dense layers, GEMM and the training step the FMA peak on all "
        "threads. DeepSpeed, bitsandbytes and torch-process (torch.optim fused, without gradfuse's "
        "OpenMP runtime in the process) run in a second process, their samples interleaved with the rest. "
        "An empty cell: that peer has no such kernel; skip: see the reasons below the table.",
        "",
    ]
    lines.append(_md_table(*table_rows(rows, peers)))
    reasons = skipped_reasons(rows)
    if reasons:
        lines += ["", "Skipped cells:", ""]
        lines += [f"- {impl}: {'; '.join(why)}" for impl, why in reasons.items()]
    charts = result.get("charts") or []
    if "speedup.png" in charts:
        lines += ["", "![speedup of gradfuse over each peer](speedup.png)"]
    lines += ["", "## Step time against parameter count", ""]
    if "sizes.png" in charts:
        lines += ["![step time against parameter count](sizes.png)", ""]
    lines.append(_md_table(*sweep_table(result)))
    lines += ["", "## Thread scaling", ""]
    if "threads.png" in charts:
        lines += ["![thread scaling](threads.png)", ""]
    lines.append(_md_table(*scaling_table(result)))
    if result.get("charts_skipped"):
        lines += ["", f"Charts skipped: {result['charts_skipped']}."]
    return "\n".join(lines) + "\n"


# ---- command line ---------------------------------------------------------------------------------------
def _peer_list(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--quick", action="store_true", help="the default: every part small (a few minutes)")
    which.add_argument("--full", action="store_true", help="the parts' default sizes, sizes to 64M (~15 min)")
    which.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat: checks that it all runs")
    parser.add_argument("--out", metavar="DIR", help="write DIR/suite.json, DIR/suite.md and the PNG charts")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="threads for gradfuse and torch")
    parser.add_argument("--no-torch", action="store_true", help="leave out torch")
    parser.add_argument(
        "--peers",
        type=_peer_list,
        default=list(REMOTE_PEERS),
        metavar="A,B",
        help=f"peers run in their own process (default: {','.join(REMOTE_PEERS)}; '' for none)",
    )
    parser.add_argument(
        "--peer-python",
        metavar="PYTHON",
        default=os.environ.get("GRADFUSE_PEER_PYTHON"),
        help="the interpreter of the peer process (default: $GRADFUSE_PEER_PYTHON, else this one)",
    )
    parser.add_argument("--no-charts", action="store_true", help="do not draw the PNG charts")
    parser.add_argument("--sleep-ms", type=float, default=2.0, metavar="MS", help="pause before each timed sample")
    parser.set_defaults(func=main)


def main(args) -> int:
    if args.threads is not None and args.threads < 1:
        print("bench: --threads must be >= 1", file=sys.stderr)
        return 2
    result = run(args)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        if args.no_charts:
            result["charts_skipped"] = "--no-charts"
        else:
            result["charts"], result["charts_skipped"] = charts.draw_all(result, args.out)
    print(report(result))
    if args.out:
        mode = {"smoke": " --smoke", "full": " --full"}.get(result["mode"], "")
        command = f"python -m gradfuse bench{mode} --out {args.out}"
        H.write_json(os.path.join(args.out, "suite.json"), result)
        with open(os.path.join(args.out, "suite.md"), "w", encoding="utf-8") as f:
            f.write(markdown(result, command))
        print(f"wrote {os.path.join(args.out, 'suite.json')}, suite.md")
    return 0
