"""Configuration and runtime selection: gf.config()/show_config(), threads (set_num_threads,
OMP_NUM_THREADS, threadpoolctl), backends (set_backend/use_backend, gf.ops dispatch), ISA selection
(choose_isa, GRADFUSE_CPU) and the NumPy fallback when the extension fails to import.

Environment-dependent behaviour (GRADFUSE_CPU, OMP_NUM_THREADS, a failing import) is checked in a
fresh interpreter: sys.executable, this environment, and the same gradfuse package on PYTHONPATH.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import gradfuse as gf
import kernel_cases as kc
from gradfuse import ops
from gradfuse._ext import ISA_ORDER, _core, choose_isa

HAS_CORE = _core is not None
CPU_ISAS = list(_core._build_info()["cpu_isas"]) if HAS_CORE else []
BEST_ISA = max(CPU_ISAS, key=ISA_ORDER.index) if CPU_ISAS else None
needs_core = pytest.mark.skipif(not HAS_CORE, reason="the C++ extension is not available")

# The directory holding the gradfuse package this process imported (the source tree or site-packages).
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(gf.__file__)))


def run_python(code: str, **env) -> dict:
    """Run code in a fresh interpreter (this environment, GRADFUSE_CPU unset unless given; an env
    value of None removes the variable); return the JSON object it prints on its last line."""
    environ = dict(os.environ)
    environ.pop("GRADFUSE_CPU", None)
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_ROOT, environ.get("PYTHONPATH")]))
    for key, value in env.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=environ, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"subprocess failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


IMPORT_AND_REPORT = """
    import json, warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import gradfuse as gf
    import numpy as np
    p = np.ones(1000, np.float32)
    gf.optim.Adam([p], lr=0.1).step([np.full(1000, 0.5, np.float32)])  # the kernels run on this path
    cfg = gf.config()
    print(json.dumps({
        "isa": cfg["isa"], "cpu_isas": cfg["cpu_isas"], "threads": gf.get_num_threads(),
        "config_threads": cfg["threads"], "omp_num_threads": cfg.get("omp_num_threads"),
        "gradfuse_cpu": cfg.get("gradfuse_cpu"), "stepped": bool((p < 1).all()),
        "warnings": [[w.category.__name__, str(w.message)] for w in caught],
    }))
"""


def gradfuse_warnings(report):
    return [(cat, msg) for cat, msg in report["warnings"] if "gradfuse" in msg]


# ------------------------------------------------------------------------------------------------
# config() / show_config()
# ------------------------------------------------------------------------------------------------

REQUIRED_KEYS = ["version", "isa", "isas", "threads", "openmp", "compiler", "eigen", "gemm"]


def test_config_has_required_keys():
    cfg = gf.config()
    assert set(REQUIRED_KEYS) <= set(cfg), set(REQUIRED_KEYS) - set(cfg)
    assert cfg["version"] == gf.__version__
    assert cfg["backend"] == gf.get_backend()
    assert cfg["threads"] == gf.get_num_threads()


@needs_core
def test_config_isa_fields():
    cfg = gf.config()
    assert cfg["isa"] in cfg["isas"]
    assert cfg["isa"] in cfg["cpu_isas"]
    assert set(cfg["cpu_isas"]) <= set(cfg["isas"]) <= set(ISA_ORDER)
    assert "scalar" in cfg["cpu_isas"]  # the portable path runs everywhere
    assert cfg["isa"] == _core._get_isa()
    for key in ("openmp", "compiler", "eigen", "gemm"):
        assert isinstance(cfg[key], str) and cfg[key], key
    assert cfg["threads"] >= 1


def test_config_follows_the_backend():
    with gf.use_backend("numpy"):
        assert gf.config()["backend"] == "numpy"


def test_show_config_prints_every_key(capsys):
    gf.show_config()
    out = capsys.readouterr().out
    lines = out.splitlines()
    cfg = gf.config()
    assert len(lines) == len(cfg)
    printed = {line.split()[0]: line for line in lines}
    for key in REQUIRED_KEYS:
        assert key in printed, key
    assert printed["version"].split()[1] == gf.__version__
    if HAS_CORE:
        assert printed["isa"].split()[1] == cfg["isa"]
        assert printed["isas"].split(None, 1)[1] == ", ".join(cfg["isas"])


# ------------------------------------------------------------------------------------------------
# The GEMM backend: gemm_error in config(), switching it while kernels run
# ------------------------------------------------------------------------------------------------

HAS_OPENBLAS = HAS_CORE and _core._get_gemm() == "openblas"


def test_config_gemm_error_is_none_when_openblas_loaded():
    if not HAS_OPENBLAS:
        pytest.skip("OpenBLAS did not load here")
    assert gf.config()["gemm_error"] is None


def test_config_and_show_config_report_the_gemm_error(monkeypatch, capsys):
    monkeypatch.setattr(gf._ext, "BLAS_ERROR", "ImportError: no scipy_openblas32 (test)")
    if HAS_CORE:
        assert gf.config()["gemm_error"] == "ImportError: no scipy_openblas32 (test)"
    gf.show_config()
    line = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()}["gemm_error"]
    assert line.split(None, 1)[1] == ("ImportError: no scipy_openblas32 (test)" if HAS_CORE else "None")


# Two ways OpenBLAS fails to load at import: the wheel is missing, or its library will not dlopen.
BLAS_FAILS = {
    "missing": """
        class BlockOpenblas:
            def find_spec(self, fullname, path=None, target=None):
                if fullname == "scipy_openblas32":
                    raise ImportError("scipy_openblas32 blocked by test_config")
        sys.meta_path.insert(0, BlockOpenblas())
    """,
    "no_library": """
        fake = types.ModuleType("scipy_openblas32")
        fake.get_lib_dir = lambda: "/nonexistent/test_config"
        fake.get_library = lambda: "scipy_openblas"
        sys.modules["scipy_openblas32"] = fake
    """,
}
BLAS_FAILS_REPORT = """
    import contextlib, io, json, warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import gradfuse as gf
    import numpy as np
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    c = np.empty((3, 3), np.float32)
    gf.ops.matmul(a, a.T.copy(), c)  # GEMMs still run (on Eigen)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        gf.show_config()
    cfg = gf.config()
    print(json.dumps({"gemm_error": cfg["gemm_error"], "gemm_backend": cfg["gemm_backend"], "gemm": cfg["gemm"],
                      "matmul_ok": bool(np.allclose(c, a @ a.T)), "show_config": buf.getvalue(),
                      "warnings": [[w.category.__name__, str(w.message)] for w in caught]}))
"""


@needs_core
@pytest.mark.parametrize("how", sorted(BLAS_FAILS))
@pytest.mark.parametrize("gemm_env", [None, "openblas"])
def test_config_says_why_openblas_did_not_load(how, gemm_env):
    code = "import sys, types\n" + textwrap.dedent(BLAS_FAILS[how]) + textwrap.dedent(BLAS_FAILS_REPORT)
    report = run_python(code, GRADFUSE_GEMM=gemm_env)
    expected = {
        "missing": "ImportError: scipy_openblas32 blocked by test_config",
        "no_library": "ValueError: cannot load OpenBLAS from /nonexistent/test_config/libscipy_openblas.so",
    }[how]
    assert report["gemm_error"].startswith(expected), report["gemm_error"]
    assert report["gemm_backend"] == "eigen" and report["gemm"].startswith("Eigen ")
    assert report["matmul_ok"]
    assert any(ln.split()[0] == "gemm_error" and expected in ln for ln in report["show_config"].splitlines())
    warned = gradfuse_warnings(report)
    if gemm_env == "openblas":  # asked for OpenBLAS: the warning carries the same reason
        assert len(warned) == 1 and expected in warned[0][1], warned
    else:
        assert warned == []


@pytest.mark.skipif(not HAS_OPENBLAS, reason="needs both GEMM backends (OpenBLAS did not load)")
def test_switching_the_gemm_backend_while_kernels_run():
    """One thread flips the GEMM backend in a loop while another runs matmul / dense layers (GIL
    released): every call must run on ONE backend from start to end, so each result is bitwise what
    openblas or eigen alone gives (a backward pass: both its GEMMs from the same one), and close to
    NumPy's; nothing may crash."""
    rng = np.random.default_rng(7)
    # Several Eigen tiles (256 x 256), small enough to loop fast; at these shapes the two backends
    # differ in every output (dx and dw too), so a call that mixed them would match neither.
    a = rng.standard_normal((300, 130)).astype(np.float32)
    b = rng.standard_normal((130, 270)).astype(np.float32)
    bias = rng.standard_normal(270).astype(np.float32)
    dy = rng.standard_normal((300, 270)).astype(np.float32)

    def run_all():
        c, y = np.empty((300, 270), np.float32), np.empty((300, 270), np.float32)
        dx, dw, db = np.empty_like(a), np.empty_like(b), np.empty_like(bias)
        gf.ops.matmul(a, b, c)
        gf.ops.dense_forward(a, b, bias, y, activation="relu")
        gf.ops.dense_backward(dy, a, b, dx, dw, db, activation="relu", y=y)
        return {"matmul": (c,), "forward": (y,), "backward": (dx, dw)}

    before = _core._get_gemm()
    refs = {}
    try:
        with gf.use_backend("cpp"):
            for name in ("openblas", "eigen"):
                _core._set_gemm(name)
                refs[name] = run_all()
    finally:
        _core._set_gemm(before)
    y_ref = np.maximum(a.astype(np.float64) @ b + bias, 0)
    truth = {
        "matmul": (a.astype(np.float64) @ b,),
        "forward": (y_ref,),
        "backward": ((dy * (y_ref > 0)) @ b.T.astype(np.float64), a.T.astype(np.float64) @ (dy * (y_ref > 0))),
    }

    stop, flipping = threading.Event(), threading.Event()
    errors, flips = [], [0]

    def flipper():
        try:
            while not stop.is_set():
                _core._set_gemm(("openblas", "eigen")[flips[0] % 2])
                flips[0] += 1
                flipping.set()
                time.sleep(0)  # let the worker take the GIL back
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def worker():
        try:
            flipping.wait(10)
            with gf.use_backend("cpp"):
                for _ in range(150):
                    for kernel, outs in run_all().items():
                        match = [
                            name for name in refs if all(np.array_equal(o, r) for o, r in zip(outs, refs[name][kernel]))
                        ]
                        assert match, f"{kernel}: the result is not that of one GEMM backend"
                        for o, t in zip(outs, truth[kernel]):
                            np.testing.assert_allclose(o, t, rtol=1e-4, atol=1e-3)
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            stop.set()

    threads_ = [threading.Thread(target=flipper), threading.Thread(target=worker)]
    try:
        for t in threads_:
            t.start()
        for t in threads_:
            t.join(120)
    finally:
        stop.set()
        _core._set_gemm(before)
    assert not any(t.is_alive() for t in threads_)
    assert not errors, errors
    assert flips[0] > 1


# ------------------------------------------------------------------------------------------------
# Threads
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def restore_threads(threads):
    """The `threads` fixture, plus: put the starting thread count back explicitly."""
    n0 = gf.get_num_threads()
    yield threads
    gf.set_num_threads(n0)  # the `threads` fixture then returns the cap to 0


@needs_core
def test_set_and_get_num_threads(restore_threads, backend):
    restore_threads(1)
    assert gf.get_num_threads() == 1 and gf.config()["threads"] == 1
    p = np.ones(100_000, np.float32)  # and kernels still run correctly
    gf.optim.SGD([p], lr=0.5).step([np.ones_like(p)])
    np.testing.assert_array_equal(p, 0.5)


@pytest.mark.parametrize("n", [-1, -8])
def test_set_num_threads_negative_is_a_value_error(threads, n):
    before = gf.get_num_threads()
    with pytest.raises(ValueError, match=f"got {n}"):
        gf.set_num_threads(n)
    assert gf.get_num_threads() == before


@needs_core
@pytest.mark.parametrize("omp", ["1", "3"])
def test_omp_num_threads_is_honoured(omp):
    report = run_python(IMPORT_AND_REPORT, OMP_NUM_THREADS=omp)
    assert report["threads"] == report["config_threads"] == int(omp)
    assert report["omp_num_threads"] == omp
    assert report["stepped"]


THREADS_AFTER_SET = """
    import json
    import gradfuse as gf
    out = {"initial": gf.get_num_threads()}
    gf.set_num_threads(1)
    out["capped_at_1"] = gf.get_num_threads()
    gf.set_num_threads(0)
    out["after_0"] = gf.get_num_threads()
    gf.set_num_threads(8)
    out["asked_8"] = gf.get_num_threads()
    print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def threads_with_omp3():
    if not HAS_CORE:
        pytest.skip("the C++ extension is not available")
    return run_python(THREADS_AFTER_SET, OMP_NUM_THREADS="3")


def test_set_num_threads_caps(threads_with_omp3):
    assert threads_with_omp3["initial"] == 3
    assert threads_with_omp3["capped_at_1"] == 1


def test_set_num_threads_zero_returns_to_openmp_setting(threads_with_omp3):
    assert threads_with_omp3["after_0"] == 3


def test_set_num_threads_does_not_exceed_openmp_setting(threads_with_omp3):
    assert threads_with_omp3["asked_8"] == 3


@needs_core
def test_threadpoolctl_limits_gradfuse(backend):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = gf.get_num_threads()
    with threadpoolctl.threadpool_limits(limits=1):
        assert gf.get_num_threads() == 1
        p = np.ones(100_000, np.float32)
        gf.optim.SGD([p], lr=0.25).step([np.ones_like(p)])
        np.testing.assert_array_equal(p, 0.75)
    assert gf.get_num_threads() == before


# ------------------------------------------------------------------------------------------------
# Backends
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def default_backend():
    """Restores the process-wide backend a test changes."""
    before = gf.get_backend()
    yield before
    gf.set_backend(before)


def test_set_backend(default_backend):
    gf.set_backend("numpy")
    assert gf.get_backend() == "numpy"
    if HAS_CORE:
        gf.set_backend("cpp")
        assert gf.get_backend() == "cpp"


def test_use_backend_restores_and_nests(default_backend):
    with gf.use_backend("numpy") as name:
        assert name == "numpy" and gf.get_backend() == "numpy"
        if HAS_CORE:
            with gf.use_backend("cpp"):
                assert gf.get_backend() == "cpp"
        with gf.use_backend("numpy"):
            assert gf.get_backend() == "numpy"
        assert gf.get_backend() == "numpy"
    assert gf.get_backend() == default_backend
    with pytest.raises(KeyError):
        with gf.use_backend("numpy"):
            raise KeyError("boom")  # restored on the way out of an exception too
    assert gf.get_backend() == default_backend


def test_use_backend_overrides_set_backend_inside_the_block(default_backend):
    with gf.use_backend("numpy"):
        if HAS_CORE:
            gf.set_backend("cpp")
            assert gf.get_backend() == "numpy"  # the block's override wins...
    if HAS_CORE:
        assert gf.get_backend() == "cpp"  # ...and the process-wide default applies after it


def test_use_backend_is_local_to_the_thread():
    seen = []
    with gf.use_backend("numpy"):
        t = threading.Thread(target=lambda: seen.append(gf.get_backend()))
        t.start()
        t.join()
        assert gf.get_backend() == "numpy"
    assert seen == [gf.get_backend()]  # the other thread sees the process-wide default


@pytest.mark.parametrize("name", ["torch", "CPP", "", None])
def test_unknown_backend_is_a_value_error(default_backend, name):
    with pytest.raises(ValueError, match="unknown backend"):
        gf.set_backend(name)
    with pytest.raises(ValueError, match="unknown backend"):
        with gf.use_backend(name):
            pass  # pragma: no cover
    assert gf.get_backend() == default_backend


def _twin_function(row):
    """The NumPy function that holds a kernel's math: gradfuse._numpy.<family>.<name>, or for an
    optimizer its per-tensor update (gradfuse._numpy.optim.UPDATES, driven by step())."""
    family = importlib.import_module(f"gradfuse._numpy.{row.family}")
    return family.UPDATES[row.name] if row.entry == "optim_step" else getattr(family, row.name)


def _native(row):
    if not HAS_CORE:
        return None
    return _core.optim_step if row.entry == "optim_step" else getattr(_core, row.name)


@pytest.mark.parametrize("row", kc.ROWS, ids=lambda r: r.name)
def test_ops_kernels_expose_both_implementations(row):
    kernel = getattr(ops, row.name)
    assert kernel.row is row and kernel.__name__ == row.name and kernel.__doc__ == row.doc
    assert kernel.numpy.__name__ == row.name and kernel.numpy.__doc__ == row.doc
    assert callable(_twin_function(row))
    if not HAS_CORE:
        assert kernel.cpp is None
    elif row.entry == "optim_step":  # a Python function over the one entry point
        assert kernel.cpp.__name__ == row.name and kernel.cpp.__doc__ == row.doc
    else:
        assert kernel.cpp is getattr(_core, row.name)


class _CallSpy:
    """Records the NumPy twin and the C++ function of a kernel called while active (sys.setprofile)."""

    def __init__(self, row):
        self.twin_code = _twin_function(row).__code__
        self.native = _native(row)
        self.twin_calls = self.native_calls = 0

    def __call__(self, frame, event, arg):
        if event == "call" and frame.f_code is self.twin_code:
            self.twin_calls += 1
        elif event == "c_call" and self.native is not None and arg is self.native:
            self.native_calls += 1

    def __enter__(self):
        self._previous = sys.getprofile()
        sys.setprofile(self)
        return self

    def __exit__(self, *exc):
        sys.setprofile(self._previous)


def _assert_dispatched(spy, backend):
    if backend == "numpy":
        assert spy.twin_calls >= 1 and spy.native_calls == 0, (spy.twin_calls, spy.native_calls)
    else:
        assert (spy.twin_calls, spy.native_calls) == (0, 1)


@pytest.mark.parametrize("row", kc.ROWS, ids=lambda r: r.name)
def test_ops_dispatch_follows_the_backend(backend, row):
    values = kc.build(row, kc.richest(row), shapes=[(8,)])
    with _CallSpy(row) as spy, np.errstate(all="ignore"):
        getattr(ops, row.name)(**values)
    _assert_dispatched(spy, backend)


@pytest.mark.parametrize("cls", kc.optimizer_classes(), ids=lambda c: c.__name__)
def test_optimizer_dispatch_follows_the_backend(backend, cls):
    p, g = np.ones(8, np.float32), np.full(8, 0.5, np.float32)
    with _CallSpy(cls._row) as spy:
        cls([p], **kc.all_states(cls)).step([g])
    _assert_dispatched(spy, backend)
    assert spy.twin_calls <= 1
    assert (p != 1).any()


# ------------------------------------------------------------------------------------------------
# ISA selection
# ------------------------------------------------------------------------------------------------

ALL3 = ["scalar", "avx2", "avx512"]
CHOOSE_ISA_CASES = [
    # requested, supported, chosen, warning fragments (None: no warning)
    (None, ALL3, "avx512", None),
    ("", ALL3, "avx512", None),
    ("", ["scalar", "avx2"], "avx2", None),
    ("", ["avx2", "scalar"], "avx2", None),  # the order of `supported` does not matter
    ("", ["scalar"], "scalar", None),
    ("scalar", ALL3, "scalar", None),
    ("avx2", ALL3, "avx2", None),
    ("avx512", ALL3, "avx512", None),
    (" AVX2 ", ALL3, "avx2", None),  # case and surrounding spaces do not matter
    ("avx512", ["scalar", "avx2"], "avx2", ["GRADFUSE_CPU='avx512'", "does not support avx512", "avx2"]),
    ("avx2", ["scalar"], "scalar", ["does not support avx2", "scalar"]),
    ("bogus", ["scalar", "avx2"], "avx2", ["GRADFUSE_CPU='bogus'", "scalar, avx2, avx512", "using avx2"]),
    ("sse4", ALL3, "avx512", ["'sse4'", "using avx512"]),
]


@pytest.mark.parametrize(
    "requested, supported, chosen, fragments",
    CHOOSE_ISA_CASES,
    ids=[f"{c[0]!r}-{'+'.join(c[1])}" for c in CHOOSE_ISA_CASES],
)
def test_choose_isa(requested, supported, chosen, fragments):
    isa, warning = choose_isa(requested, list(supported))
    assert isa == chosen
    if fragments is None:
        assert warning is None
    else:
        assert warning is not None
        for fragment in fragments:
            assert fragment in warning, (fragment, warning)


@needs_core
@pytest.mark.parametrize("requested", CPU_ISAS)
def test_gradfuse_cpu_selects_the_isa(requested):
    report = run_python(IMPORT_AND_REPORT, GRADFUSE_CPU=requested)
    assert report["isa"] == requested
    assert report["gradfuse_cpu"] == requested
    assert gradfuse_warnings(report) == []
    assert report["stepped"]


@needs_core
@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_gradfuse_cpu_unset_takes_the_best_isa(value):
    report = run_python(IMPORT_AND_REPORT, GRADFUSE_CPU=value)
    assert report["isa"] == BEST_ISA
    assert gradfuse_warnings(report) == []


@needs_core
def test_gradfuse_cpu_unknown_warns_and_takes_the_best_isa():
    report = run_python(IMPORT_AND_REPORT, GRADFUSE_CPU="bogus")
    assert report["isa"] == BEST_ISA
    warned = gradfuse_warnings(report)
    assert len(warned) == 1
    category, message = warned[0]
    assert category == "RuntimeWarning"
    assert "GRADFUSE_CPU='bogus'" in message and f"using {BEST_ISA}" in message
    assert report["stepped"]


@needs_core
@pytest.mark.skipif("avx512" in CPU_ISAS, reason="this CPU supports every ISA path")
def test_gradfuse_cpu_unsupported_warns_and_takes_the_best_isa():
    report = run_python(IMPORT_AND_REPORT, GRADFUSE_CPU="avx512")
    assert report["isa"] == BEST_ISA
    ((category, message),) = gradfuse_warnings(report)
    assert category == "RuntimeWarning" and "does not support avx512" in message


# ------------------------------------------------------------------------------------------------
# The extension fails to import: NumPy fallback
# ------------------------------------------------------------------------------------------------

BLOCKED_IMPORT = """
    import io, json, sys, warnings, contextlib

    class BlockCore:
        def find_spec(self, fullname, path=None, target=None):
            if fullname == "gradfuse._core":
                raise ImportError("blocked by test_config")
            return None

    sys.meta_path.insert(0, BlockCore())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import gradfuse as gf
    import numpy as np

    out = {"warnings": [[w.category.__name__, str(w.message)] for w in caught],
           "backend": gf.get_backend(), "threads": gf.get_num_threads()}
    cfg = gf.config()
    out["isa"], out["extension"] = cfg["isa"], cfg["extension"]
    p = np.linspace(-1, 1, 50, dtype=np.float32)
    opt = gf.optim.Adam([p], lr=0.1)
    out["step"] = [opt.step([np.linspace(1, 2, 50, dtype=np.float32)]) for _ in range(3)]
    out["p"] = p.tolist()
    for name, call in [("set_cpp", lambda: gf.set_backend("cpp")),
                       ("use_cpp", lambda: gf.use_backend("cpp").__enter__())]:
        try:
            call()
            out[name] = "no error"
        except Exception as exc:
            out[name] = f"{type(exc).__name__}: {exc}"
    gf.set_backend("numpy")  # the one backend there is
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        gf.show_config()
    out["show_config"] = buf.getvalue()
    print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def blocked_import():
    return run_python(BLOCKED_IMPORT)


def test_import_without_extension_warns_with_the_reason(blocked_import):
    warned = gradfuse_warnings(blocked_import)
    assert len(warned) == 1, blocked_import["warnings"]
    category, message = warned[0]
    assert category == "RuntimeWarning"
    assert "blocked by test_config" in message and "NumPy backend" in message


def test_import_without_extension_falls_back_to_numpy(blocked_import):
    assert blocked_import["backend"] == "numpy"
    assert blocked_import["isa"] is None
    assert "unavailable" in blocked_import["extension"] and "blocked by test_config" in blocked_import["extension"]
    assert blocked_import["threads"] == 1
    assert "backend" in blocked_import["show_config"] and "numpy" in blocked_import["show_config"]


def test_import_without_extension_still_steps_with_the_numpy_twin(blocked_import):
    assert blocked_import["step"] == [True, True, True]
    p = np.linspace(-1, 1, 50, dtype=np.float32)
    with gf.use_backend("numpy"):
        opt = gf.optim.Adam([p], lr=0.1)
        for _ in range(3):
            opt.step([np.linspace(1, 2, 50, dtype=np.float32)])
    np.testing.assert_array_equal(np.array(blocked_import["p"], np.float32), p)


def test_import_without_extension_refuses_the_cpp_backend(blocked_import):
    for key in ("set_cpp", "use_cpp"):
        assert blocked_import[key].startswith("RuntimeError: "), blocked_import[key]
        assert "blocked by test_config" in blocked_import[key]
