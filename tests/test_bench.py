"""The command line and the optimizer benchmark: it runs, writes its JSON, and has every row.

Timings and speedups are never asserted (shared, noisy machines); only that the suite works.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gradfuse._ext import _core

PYTHON_DIR = Path(__file__).resolve().parents[1] / "python"
HAS_TORCH = importlib.util.find_spec("torch") is not None
ALGORITHMS = {"Adam", "AdamW", "SGD", "Adagrad", "RMSprop"}
TORCH_IMPLS = {"torch-fused", "torch-foreach", "torch-forloop"}

needs_core = pytest.mark.skipif(_core is None, reason="the C++ extension is not available")


def _run(*args: str, timeout: float = 120, path_first: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # the same gradfuse as this test session, whether installed or run from the source tree
    import gradfuse
    package_parent = str(Path(gradfuse.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (path_first, package_parent, env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "gradfuse", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def _check_rows(result: dict, with_torch: bool) -> None:
    rows = result["rows"]
    workloads = [w["id"] for w in result["settings"]["workloads"]]
    assert len(workloads) == 5 and len(set(workloads)) == 5
    kinds = {w["kind"] for w in result["settings"]["workloads"]}
    assert kinds == {"single", "list", "arena"}
    assert set(result["settings"]["algorithms"]) == ALGORITHMS
    cells = {(r["workload"], r["algorithm"], r["impl"]): r for r in rows}
    for w in workloads:
        for algo in ALGORITHMS:
            for impl in ("gradfuse", "numpy", "touch"):
                row = cells.get((w, algo, impl))
                assert row is not None, (w, algo, impl)
                assert row["ms"] > 0 and row["gb_per_s"] > 0 and row["ceiling_gb_per_s"] > 0
                assert len(row["samples_ms"]) == result["settings"]["repeats"]
            assert cells[(w, algo, "numpy")]["gradfuse_speedup"] > 0
            assert cells[(w, algo, "gradfuse")]["bytes_per_param"] == (28 if algo.startswith("Adam") else 20)
            torch_rows = [cells.get((w, algo, impl)) for impl in TORCH_IMPLS]
            if with_torch:
                assert all(r is not None for r in torch_rows), (w, algo)
                # every torch variant either ran or says why not (RMSprop has no fused kernel)
                assert all(r["ms"] is None and r["skipped"] or r["ms"] > 0 for r in torch_rows)
                assert any(r["ms"] is not None for r in torch_rows)
            else:
                assert torch_rows == [None, None, None]
    assert not any(r["impl"] in TORCH_IMPLS for r in rows) or with_torch
    assert result["rmw_bandwidth"]["gb_per_s"] > 0
    assert len(result["overhead"]) == len(ALGORITHMS)
    machine = result["machine"]
    assert machine["gradfuse"]["isa"] and machine["threads"]["gradfuse"] >= 1
    assert (machine["torch"] is not None) == with_torch


def test_config_prints_isa():
    proc = _run("config")
    assert proc.returncode == 0, proc.stderr
    assert "isa" in proc.stdout


def test_no_command_is_a_usage_error():
    proc = _run()
    assert proc.returncode == 2
    assert "usage" in proc.stderr


@needs_core
@pytest.mark.slow
def test_bench_optim_quick(tmp_path):
    proc = _run("bench", "optim", "--quick", "--repeats", "3", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    path = tmp_path / "optim.json"
    assert path.exists()
    result = json.loads(path.read_text())
    assert result["settings"]["mode"] == "quick" and result["settings"]["repeats"] == 3
    _check_rows(result, with_torch=HAS_TORCH)
    assert "RMW bandwidth" in proc.stdout and "gradfuse ms" in proc.stdout
    if HAS_TORCH:
        assert "torch-fused" in proc.stdout


@needs_core
@pytest.mark.slow
def test_bench_optim_no_torch(tmp_path):
    proc = _run("bench", "optim", "--quick", "--repeats", "3", "--no-torch", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    result = json.loads((tmp_path / "optim.json").read_text())
    _check_rows(result, with_torch=False)
    assert result["machine"]["torch_missing"].startswith("disabled")
    assert "torch-fused" not in proc.stdout


@needs_core
def test_bench_optim_without_torch_installed(tmp_path):
    """A torch that cannot be imported is a missing peer: no torch rows, exit code 0."""
    shadow = tmp_path / "shadow" / "torch"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('torch is not installed here')\n")
    out = tmp_path / "out"
    proc = _run("bench", "optim", "--quick", "--repeats", "1", "--algorithms", "SGD", "--out", str(out),
                path_first=str(tmp_path / "shadow"))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    result = json.loads((out / "optim.json").read_text())
    assert result["machine"]["torch"] is None and "not importable" in result["machine"]["torch_missing"]
    assert result["rows"] and not any(r["impl"] in TORCH_IMPLS for r in result["rows"])
    assert {r["impl"] for r in result["rows"]} == {"gradfuse", "numpy", "touch"}


def test_bench_optim_rejects_bad_arguments():
    proc = _run("bench", "optim", "--quick", "--algorithms", "Adam,Nope")
    assert proc.returncode == 2 and "Nope" in proc.stderr
    proc = _run("bench", "optim", "--quick", "--full")
    assert proc.returncode == 2  # argparse: mutually exclusive


@needs_core
@pytest.mark.slow
@pytest.mark.parametrize("no_torch", [False, True])
def test_bench_layers_quick_writes_every_row(tmp_path, no_torch):
    args = ["bench", "layers", "--quick", "--repeats", "2", "--out", str(tmp_path)] + (["--no-torch"] if no_torch else [])
    proc = _run(*args)
    assert proc.returncode == 0, proc.stderr
    assert "read-modify-write" in proc.stdout and "FMA peak" in proc.stdout
    result = json.loads((tmp_path / "layers.json").read_text())
    assert result["settings"]["OPENBLAS_THREAD_TIMEOUT"] == "4"  # the run re-executed itself with it
    limits = result["limits"]
    assert limits["rmw_gb_per_s"] > 0 and limits["fma_gflops_all"] > 0
    kinds = {}
    for row in result["rows"]:
        kinds.setdefault(row["kind"], set()).add(row["pass"])
        assert row["cells"]["gradfuse"]["ms"] > 0 and row["cells"]["gradfuse"]["rate"] > 0
        assert row["cells"]["numpy"]["ms"] > 0
        assert ("torch" in row["cells"]) == (HAS_TORCH and not no_torch)
    assert kinds == {"batchnorm": {"forward", "forward+backward"}, "dropout": {"forward", "forward+backward"},
                     "dense": {"forward", "forward+backward"}, "gemm": {"C = A @ B"}}


@needs_core
@pytest.mark.slow
def test_bench_train_quick_reports_every_implementation_and_the_breakdown(tmp_path):
    proc = _run("bench", "train", "--quick", "--repeats", "2", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "train.json").read_text())
    assert {"gradfuse", "numpy"} <= set(result["cells"])
    assert ("torch" in result["cells"]) == HAS_TORCH
    parts = result["breakdown_ms"]
    assert {"GEMM (dense layers)", "batch norm", "dropout", "optimizer (Adam)", "Python and the rest"} <= set(parts)
    assert parts["total"] > 0 and "where a gradfuse step goes" in proc.stdout
