"""bench shaped: the optimizers beside the kernel table against torch 2.13, in one process.

    python -m gradfuse bench shaped [--quick | --smoke] [--repeats N] [--history N] [--out DIR] [--threads N]

Rows:
- muon: one Muon step on the 2-D weights of the MLP 784-1024-1024-10 (torch's Muon takes no
  others): gf.optim.Muon vs torch.optim.Muon (both Newton-Schulz in bf16, 5 steps).
- adafactor: one Adafactor step on every parameter of that MLP.
- lbfgs: one L-BFGS iteration (step with max_iter=1: one closure and one direction) on a
  1M-parameter float32 problem, a separable quadratic with curvatures from 1 to 1e4, its history
  full (--history pairs, torch's default 100); the closure is the same few array operations in both.
Interleaved, medians (the harness's rules); torch runs when it is installed.
"""

from __future__ import annotations

import argparse

import numpy as np

import gradfuse as gf
from . import _harness as H

HELP = "Muon, Adafactor and LBFGS (the optimizers beside the kernel table) against torch"


def _mlp(rng, widths: tuple, matrices_only: bool) -> list:
    shapes = [s for a, b in zip(widths, widths[1:]) for s in ((a, b), (b,))]
    return [rng.standard_normal(s).astype(np.float32) * 0.05 for s in shapes if len(s) == 2 or not matrices_only]


def _optimizer_rows(torch, repeats: int, widths: tuple) -> list:
    rows = []
    for name, matrices_only in (("muon", True), ("adafactor", False)):
        rng = np.random.default_rng(0)
        params = _mlp(rng, widths, matrices_only)
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
        ours = gf.optim.Muon(params, lr=0.02) if name == "muon" else gf.optim.Adafactor(params)
        impls = {"gradfuse": lambda o=ours, g=grads: o.step(g)}
        if torch is not None:
            tp = [torch.nn.Parameter(torch.tensor(p.copy())) for p in params]
            for t, g in zip(tp, grads):
                t.grad = torch.tensor(g)
            theirs = torch.optim.Muon(tp, lr=0.02) if name == "muon" else torch.optim.Adafactor(tp)
            impls["torch"] = theirs.step
        m = H.measure_interleaved(impls, repeats=repeats, warmup=2, required=("gradfuse",))
        what = f"MLP {'-'.join(map(str, widths))}: {sum(p.size for p in params)} params in {len(params)} tensors"
        rows.append(_row(name, what, m))
    return rows


def _lbfgs_row(torch, repeats: int, history: int, n: int) -> dict:
    rng = np.random.default_rng(0)
    curvature = np.exp(rng.uniform(0, np.log(1e4), n)).astype(np.float32)
    linear = rng.standard_normal(n).astype(np.float32)
    x0 = rng.standard_normal(n).astype(np.float32)
    (p,) = gf.nn.ParameterArena([x0.copy()]).parameters
    kw = dict(max_iter=1, history_size=history, tolerance_grad=0.0, tolerance_change=0.0)

    def closure():  # writes p.grad (the arena's gradient) in place, returns the loss
        np.multiply(curvature, p.data, out=p.grad)
        p.grad -= linear
        return 0.5 * p.data.dot(p.grad) - 0.5 * linear.dot(p.data)

    ours = gf.optim.LBFGS([p], **kw)
    impls = {"gradfuse": lambda: ours.step(closure)}
    fills = [lambda: [ours.step(closure) for _ in range(history + 1)]]
    if torch is not None:
        xt = torch.nn.Parameter(torch.tensor(x0.copy()))
        ct, lt, gt = torch.tensor(curvature), torch.tensor(linear), torch.empty(n)

        def torch_closure():
            with torch.no_grad():
                torch.mul(ct, xt, out=gt)
                gt.sub_(lt)
                xt.grad = gt
                return 0.5 * xt.dot(gt) - 0.5 * lt.dot(xt)

        theirs = torch.optim.LBFGS([xt], **kw)
        impls["torch"] = lambda: theirs.step(torch_closure)
        fills.append(lambda: [theirs.step(torch_closure) for _ in range(history + 1)])
    for fill in fills:  # the history full before timing
        fill()
    m = H.measure_interleaved(impls, repeats=repeats, warmup=2, required=("gradfuse",))
    return _row("lbfgs", f"{n} float32 params, history {history}", m)


def _row(name: str, what: str, m) -> dict:
    row = {"row": name, "what": what, "timings": {k: t.as_ms() for k, t in m.timings.items()}, "errors": m.errors}
    if "torch" in m.timings:
        row["speedup_vs_torch"] = m.timings["torch"].median / m.timings["gradfuse"].median
    return row


def run(args) -> dict:
    torch, torch_missing = H.import_torch(args.no_torch)
    H.set_threads(args.threads or 2, torch)
    repeats = args.repeats or (1 if args.smoke else 3 if args.quick else 7)
    history = args.history or (3 if args.smoke else 5 if args.quick else 100)
    n = 1000 if args.smoke else 100_000 if args.quick else 1_000_000
    widths = (32, 64, 64, 10) if args.smoke else (784, 1024, 1024, 10)
    rows = _optimizer_rows(torch, repeats, widths) + [_lbfgs_row(torch, repeats, history, n)]
    version = torch.__version__ if torch is not None else f"absent: {torch_missing}"
    return {"suite": "shaped", "threads": gf.get_num_threads(), "torch": version, "rows": rows}


def report(result) -> str:
    lines = [f"bench shaped, {result['threads']} threads, torch {result['torch']}"]
    for row in result["rows"]:
        cells = ", ".join(f"{k} {v['ms']:.1f} ms" for k, v in row["timings"].items())
        speedup = f", {row['speedup_vs_torch']:.2f}x torch" if "speedup_vs_torch" in row else ""
        lines.append(f"{row['row']:10s} {row['what']}: {cells}{speedup}")
        for impl, why in row["errors"].items():
            lines.append(f"{'':10s} {impl}: not run ({why})")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n", 2)[2]
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--quick", action="store_true", help="3 repeats, LBFGS on 100k params with 5 pairs")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 repeat: checks that it runs")
    parser.add_argument("--repeats", type=int, default=None, metavar="N", help="timed rounds (default 7)")
    parser.add_argument("--history", type=int, default=None, metavar="N", help="LBFGS history_size (default 100)")
    parser.add_argument("--out", metavar="DIR", help="write DIR/shaped.json (the table is always printed)")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="threads for gradfuse and torch")
    parser.add_argument("--no-torch", action="store_true", help="leave out torch")
    parser.set_defaults(func=main)


def main(args) -> int:
    return H.run_suite("shaped", args, run, report, counts=("threads", "repeats"))
