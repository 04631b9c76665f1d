"""The suite's PNG charts (matplotlib, Agg backend; optional: without it the charts are skipped).

speedup.png  per kernel row, each peer's time / gradfuse's time (log scale; right of 1: gradfuse
             is faster)
sizes.png    step time against parameter count (log-log), Adam and SGD, with the bandwidth line
             (bytes per parameter / measured read-modify-write bandwidth) and the cache sizes
threads.png  time and speedup on 1 .. N threads
"""

from __future__ import annotations

import os

COLORS = {
    "gradfuse": "#d62728",
    "numpy": "#7f7f7f",
    "torch-fused": "#1f77b4",
    "torch-foreach": "#6baed6",
    "torch-forloop": "#c6dbef",
    "torch": "#08519c",
    "torch-fused-adam": "#9ecae1",
    "torch-process": "#17becf",
    "torch.mm": "#1f77b4",
    "deepspeed": "#2ca02c",
    "bnb": "#ff7f0e",
    "bnb-8bit": "#fdae6b",
    "touch": "#000000",
}


def draw_all(result: dict, out_dir: str) -> tuple[list[str], str | None]:
    """Write the charts; returns (file names written, why charts were skipped or None)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return [], f"matplotlib is not installed ({exc})"
    written = []
    for name, draw in (("speedup.png", speedup_chart), ("sizes.png", sizes_chart), ("threads.png", threads_chart)):
        fig = draw(plt, result)
        if fig is None:
            continue
        fig.savefig(os.path.join(out_dir, name), dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(name)
    return written, None


# The peers drawn as bars (every peer's number is in suite.md / suite.json): the NumPy twin, torch's
# fastest optimizer variants and its layers, DeepSpeed and bitsandbytes' 32-bit optimizers.
CHART_PEERS = ("numpy", "torch-fused", "torch-foreach", "torch", "torch-fused-adam", "deepspeed", "bnb")


def speedup_chart(plt, result: dict):
    """One panel per part (optimizers; layers and the training step), one group of bars per row."""
    rows = [r for r in result["rows"] if "fp64" not in r["workload"]]
    parts = [
        ("optimizer steps", [r for r in rows if r["part"] == "optim"]),
        ("layers and the training step", [r for r in rows if r["part"] != "optim"]),
    ]
    panels = []
    for title, part_rows in parts:
        peers = [p for p in CHART_PEERS if any("speedup" in r["cells"].get(p, {}) for r in part_rows)]
        if part_rows and peers:
            panels.append((title, part_rows, peers))
    if not panels:
        return None
    bars = max(len(part_rows) * len(peers) for _, part_rows, peers in panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 1.5 + 0.055 * bars), squeeze=False)
    for ax, (title, part_rows, peers) in zip(axes[0], panels):
        height = 0.8 / len(peers)
        for i, r in enumerate(part_rows):
            for j, p in enumerate(peers):
                cell = r["cells"].get(p, {})
                if "speedup" in cell:
                    ax.barh(
                        i + (j - (len(peers) - 1) / 2) * height,
                        cell["speedup"],
                        height=height,
                        color=COLORS.get(p, f"C{j}"),
                        label=p,
                    )
        ax.set_yticks(range(len(part_rows)))
        ax.set_yticklabels([f"{r['kernel']}  {r['workload']}" for r in part_rows], fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xlabel("peer time / gradfuse time (log; right of 1: gradfuse is faster)", fontsize=8)
        ax.set_title(f"{title} (fp32)", fontsize=10)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))  # one entry per peer, in the order drawn
        ax.legend(unique.values(), unique.keys(), fontsize=7, loc="best")
        ax.grid(axis="x", which="both", alpha=0.3)
    fig.suptitle("gradfuse against each peer (every peer's figure: suite.md)", fontsize=11)
    fig.tight_layout()
    return fig


def _cache_marks(result: dict) -> list[tuple[str, int]]:
    """(label, bytes) for L2 (all cores) and L3."""
    marks = []
    for c in result["machine"].get("caches", []):
        if c["level"] >= 2 and c["type"] in ("Unified", "Data"):
            marks.append((f"L{c['level']}", c["total_bytes"]))
    return marks


def sizes_chart(plt, result: dict):
    rows = [r for r in result.get("sizes", []) if r.get("ms")]
    algorithms = sorted({r["algorithm"] for r in rows}, key=["Adam", "SGD"].index)
    if not rows:
        return None
    bandwidth = result["limits"]["rmw_gb_per_s"]
    fig, axes = plt.subplots(1, len(algorithms), figsize=(6 * len(algorithms), 4.5), squeeze=False)
    for ax, algo in zip(axes[0], algorithms):
        mine = [r for r in rows if r["algorithm"] == algo]
        impls = list(dict.fromkeys(r["impl"] for r in mine))
        for impl in impls:
            pts = sorted((r["params"], r["ms"]) for r in mine if r["impl"] == impl)
            style = dict(color=COLORS.get(impl), marker="o", markersize=3)
            if impl == "touch":
                style.update(linestyle=":", marker=None)
            ax.plot([p for p, _ in pts], [t for _, t in pts], label=impl, **style)
        sizes = sorted({r["params"] for r in mine})
        bpp = mine[0]["bytes_per_param"]
        ax.plot(
            sizes,
            [n * bpp / bandwidth / 1e6 for n in sizes],
            color="black",
            linestyle="--",
            linewidth=1,
            label=f"{bpp} B/param at {bandwidth:.0f} GB/s",
        )
        # where the working set (p, g and the states: bpp = 4 * (3 + 2 * states)) fills each cache
        arrays = 2 + (bpp // 4 - 3) // 2
        top = max(r["ms"] for r in mine)
        for label, size in _cache_marks(result):
            n = size / (4 * arrays)
            if sizes[0] <= n <= sizes[-1]:
                ax.axvline(n, color="grey", linewidth=0.8, alpha=0.7)
                ax.text(n, top, f" {label} ({size >> 20} MiB) full", fontsize=7, rotation=90, va="top", color="grey")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters (one fp32 tensor)")
        ax.set_ylabel("ms per step")
        ax.set_title(f"{algo}: step time against size")
        ax.grid(which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def threads_chart(plt, result: dict):
    rows = result.get("scaling", [])
    if not rows:
        return None
    cases = list(dict.fromkeys(r["case"] for r in rows))
    fig, axes = plt.subplots(2, len(cases), figsize=(5 * len(cases), 7), squeeze=False)
    for col, case in enumerate(cases):
        mine = [r for r in rows if r["case"] == case]
        counts = sorted({r["threads"] for r in mine})
        for impl in dict.fromkeys(r["impl"] for r in mine):
            pts = sorted((r["threads"], r["ms"], r["speedup"]) for r in mine if r["impl"] == impl)
            color = COLORS.get(impl)
            axes[0][col].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=color, label=impl)
            axes[1][col].plot([p[0] for p in pts], [p[2] for p in pts], marker="o", color=color, label=impl)
        axes[1][col].plot(counts, counts, color="black", linestyle="--", linewidth=0.8, label="ideal")
        axes[0][col].set_title(case)
        axes[0][col].set_ylabel("ms per call")
        axes[1][col].set_ylabel("speedup over 1 thread")
        axes[1][col].set_xlabel("threads")
        for ax in (axes[0][col], axes[1][col]):
            ax.set_xticks(counts)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        axes[0][col].set_ylim(bottom=0)
    fig.tight_layout()
    return fig
