"""bench torch: gradfuse.torch's Adam stepping torch models, against torch's fused and foreach Adam
(and DeepSpeedCPUAdam when deepspeed is installed).

    python -m gradfuse bench torch [--quick] [--repeats N] [--out DIR] [--threads N] [--no-deepspeed]

Workloads (optimizer step only; the gradients are set once, so no backward is timed):
- encoder: a torch.nn.TransformerEncoder with many small tensors (d_model 64, 4 heads, feed-forward
  256, 20 layers: 1.0M parameters in 242 tensors). gradfuse.torch.Adam per tensor, and over the
  arena of gradfuse.torch.flatten_parameters (one segment), against torch.optim.Adam(fused=True)
  and (foreach=True). Target (issue 13): the arena >= 3x torch fused.
- large: one tensor of 16M parameters (--quick: 4M). Target: >= 1.05x torch fused.
Every implementation runs in this process, interleaved, medians (see _harness.py); GB/s counts
Adam's 28 bytes per fp32 parameter (read p, g, m, v; write p, m, v).
"""

from __future__ import annotations

import argparse

from . import _harness as H

HELP = "gradfuse.torch Adam on torch models (arena, per tensor) vs torch fused/foreach Adam, DeepSpeedCPUAdam"

LR = 1e-3
SIZES = {"full": (20, 16 << 20), "quick": (6, 4 << 20)}  # (encoder layers, the large tensor's parameters)


def encoder(torch, layers: int):
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=256, dropout=0.0, batch_first=True)
    return torch.nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)


def _with_grads(torch, model):
    gen = torch.Generator().manual_seed(1)
    for p in model.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        p.grad.copy_(torch.randn(p.shape, generator=gen) * 1e-2)
    return model


def _deepspeed(torch):
    """DeepSpeedCPUAdam's class, or the reason it is absent."""
    try:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        probe = torch.nn.Parameter(torch.zeros(8))
        probe.grad = torch.zeros(8)
        DeepSpeedCPUAdam([probe], lr=LR, adamw_mode=False).step()
    except Exception as exc:  # noqa: BLE001 - an absent or unbuildable peer is a note, not a crash
        return None, H._describe(exc)
    return DeepSpeedCPUAdam, None


def impls(torch, workload: str, quick: bool, deepspeed: bool = True) -> tuple[dict, int, int, dict]:
    """{name: step callable}, parameters, tensors, {name: why absent}."""
    import gradfuse.torch as gft

    layers, n = SIZES["quick" if quick else "full"]

    def build():
        if workload == "encoder":
            return _with_grads(torch, encoder(torch, layers))
        model = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(n) * 1e-2)])
        return _with_grads(torch, model)

    out, missing = {}, {}
    model = build()
    out["torch-fused"] = torch.optim.Adam(model.parameters(), lr=LR, fused=True).step
    out["torch-foreach"] = torch.optim.Adam(build().parameters(), lr=LR, foreach=True).step
    out["gradfuse"] = gft.Adam(build().parameters(), lr=LR).step
    if workload == "encoder":
        arena_model = build()
        gft.flatten_parameters(arena_model)  # its hooks keep it alive with the parameters
        out["gradfuse-arena"] = gft.Adam(arena_model.parameters(), lr=LR).step
    ds, why = _deepspeed(torch) if deepspeed else (None, "disabled (--no-deepspeed)")
    if ds is None:
        missing["deepspeed-cpu-adam"] = why
    else:
        out["deepspeed-cpu-adam"] = ds(build().parameters(), lr=LR, adamw_mode=False).step
    params = sum(p.numel() for p in model.parameters())
    return out, params, len(list(model.parameters())), missing


def run(args) -> dict:
    torch, why = H.import_torch()
    if torch is None:
        raise SystemExit(f"bench torch needs torch: {why}")
    H.set_threads(args.threads or 2, torch)
    repeats = args.repeats or (3 if args.quick else 15)
    rows = []
    for workload in ("encoder", "large"):
        fns, params, tensors, missing = impls(torch, workload, args.quick, not getattr(args, "no_deepspeed", False))
        m = H.measure_interleaved(fns, repeats=repeats, warmup=3, min_sample_s=0.05, sleep_s=args.sleep_ms / 1e3)
        for name, t in m.timings.items():
            gbs = 28.0 * params / t.median / 1e9
            rows.append(dict(workload=workload, params=params, tensors=tensors, impl=name, gb_s=gbs, **t.as_ms()))
        for name, err in {**missing, **m.errors}.items():
            rows.append(dict(workload=workload, params=params, tensors=tensors, impl=name, error=err))
    return {"suite": "torch", "machine": H.machine_info(torch), "rows": rows}


def report(result: dict) -> str:
    lines, table = [], []
    by = {}
    for r in result["rows"]:
        by.setdefault(r["workload"], {})[r["impl"]] = r
    for workload, impls_ in by.items():
        fused = impls_.get("torch-fused", {}).get("ms")
        for name, r in impls_.items():
            if "error" in r:
                table.append([workload, name, "-", "-", "-", r["error"][:70]])
                continue
            speedup = f"{fused / r['ms']:.2f}x" if fused else "-"
            what = f"{r['params'] / 1e6:.1f}M in {r['tensors']}"
            table.append([workload, name, what, f"{r['ms']:.3f}", f"{r['gb_s']:.1f}", speedup])
    lines.append(H.format_table(["workload", "impl", "params", "ms", "GB/s", "vs torch-fused"], table, {3, 4, 5}))
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n", 2)[2]
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--quick", action="store_true", help="6 encoder layers and 4M parameters: a smoke test")
    parser.add_argument("--repeats", type=int, default=None, metavar="N", help="timed repeats (default 15; quick 3)")
    parser.add_argument("--out", metavar="DIR", help="write DIR/torch.json (the table is always printed)")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="threads for gradfuse and torch (2)")
    parser.add_argument("--no-deepspeed", action="store_true", help="leave out DeepSpeedCPUAdam")
    parser.add_argument("--sleep-ms", type=float, default=2.0, metavar="MS", help="pause before each timed sample")
    parser.set_defaults(func=main)


def main(args) -> int:
    return H.run_suite("torch", args, run, report)
