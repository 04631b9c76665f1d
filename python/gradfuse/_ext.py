"""Loads the C++ extension and applies GRADFUSE_CPU.

If the extension cannot be imported, gradfuse still works on the NumPy backend and says why.
"""

from __future__ import annotations

import os
import warnings

ISA_ORDER = ("scalar", "avx2", "avx512")

try:
    from . import _core
except ImportError as exc:  # a broken or missing build: fall back to the NumPy twins
    _core = None
    IMPORT_ERROR: str | None = f"{type(exc).__name__}: {exc}"
    warnings.warn(
        f"gradfuse: the C++ extension could not be imported ({IMPORT_ERROR}); "
        "running on the NumPy backend (same results, much slower)",
        RuntimeWarning,
        stacklevel=2,
    )
else:
    IMPORT_ERROR = None


def choose_isa(requested: str | None, supported: list[str]) -> tuple[str, str | None]:
    """The ISA to use for a GRADFUSE_CPU value, and a warning to give (or None).

    An empty or absent request takes the best supported path. A request for a path the CPU lacks,
    or an unknown name, gives a warning and the best supported path.
    """
    best = max(supported, key=ISA_ORDER.index)
    if not requested:
        return best, None
    name = requested.strip().lower()
    if name not in ISA_ORDER:
        return best, (f"GRADFUSE_CPU={requested!r} is not one of {', '.join(ISA_ORDER)}; using {best}")
    if name not in supported:
        return best, (
            f"GRADFUSE_CPU={requested!r}: this CPU does not support {name}; using the best available path, {best}"
        )
    return name, None


def _apply_env() -> None:
    info = _core._build_info()
    isa, warning = choose_isa(os.environ.get("GRADFUSE_CPU"), list(info["cpu_isas"]))
    if warning:
        warnings.warn(f"gradfuse: {warning}", RuntimeWarning, stacklevel=3)
    _core._set_isa(isa)
    requested = os.environ.get("GRADFUSE_GEMM", "").strip().lower()
    if requested not in ("", "onednn", "openblas", "eigen"):
        warnings.warn(
            f"gradfuse: GRADFUSE_GEMM={requested!r} is not onednn, openblas or eigen; ignored",
            RuntimeWarning,
            stacklevel=3,
        )
        requested = ""
    _load_blas(requested)
    _load_onednn(requested, amx_off(os.environ.get("GRADFUSE_AMX")))


BLAS_ERROR: str | None = None
ONEDNN_ERROR: str | None = None
# float32 GEMMs default to OpenBLAS: oneDNN's float32 matmul, tiled as gradfuse must for
# determinism, was slower on the reference machine (README, "GEMM"); GRADFUSE_GEMM=onednn selects it.
DEFAULT_F32_GEMM = "openblas"


def amx_off(value: str | None) -> bool:
    """GRADFUSE_AMX=0 (or off, false, no) keeps bf16 GEMMs off the AMX tiles."""
    return (value or "").strip().lower() in ("0", "off", "false", "no")


def find_onednn() -> str:
    """The path of libdnnl.so.3 from the onednn-cpu-gomp wheel (it installs into sys.prefix/lib)."""
    import importlib.metadata
    import sys

    try:
        files = importlib.metadata.files("onednn-cpu-gomp") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name == "libdnnl.so.3":
            return str(f.locate().resolve())
    path = os.path.join(sys.prefix, "lib", "libdnnl.so.3")
    if os.path.exists(path):
        return path
    raise FileNotFoundError("libdnnl.so.3 not found (pip install onednn-cpu-gomp)")


def _load_onednn(requested: str, amx_disabled: bool) -> None:
    """bf16 GEMMs run on oneDNN (the onednn-cpu-gomp wheel) when it loads and the CPU has bf16
    instructions (AMX or AVX512-BF16); else on the fp32 fallback. GRADFUSE_AMX=0 caps oneDNN at
    avx512_core_bf16 through dnnl_set_max_cpu_isa, called before any other oneDNN function (the
    ONEDNN_MAX_CPU_ISA variable would do the same, but only if set before the library loads).
    Why oneDNN did not load is kept in ONEDNN_ERROR (gf.config()'s onednn_error)."""
    global ONEDNN_ERROR
    try:
        _core._load_onednn(find_onednn(), amx_disabled)
    except (OSError, ValueError) as exc:
        ONEDNN_ERROR = f"{type(exc).__name__}: {exc}"
        if requested == "onednn":
            warnings.warn(
                f"gradfuse: GRADFUSE_GEMM=onednn but oneDNN did not load ({ONEDNN_ERROR}); using {_core._get_gemm()}",
                RuntimeWarning,
                stacklevel=4,
            )
        return
    if _core._build_info()["onednn_native_bf16"]:
        _core._set_gemm_bf16("onednn")
    if requested == "onednn" or (not requested and DEFAULT_F32_GEMM == "onednn"):
        _core._set_gemm("onednn")


def _load_blas(requested: str) -> None:
    """GEMMs run on OpenBLAS from the scipy-openblas32 wheel when it loads, else on Eigen.
    GRADFUSE_GEMM=eigen forces Eigen; GRADFUSE_GEMM=openblas warns if OpenBLAS cannot load.
    Why it did not load is kept in BLAS_ERROR, which gf.config() reports as gemm_error."""
    global BLAS_ERROR
    try:
        import scipy_openblas32

        _core._load_blas(os.path.join(scipy_openblas32.get_lib_dir(), f"lib{scipy_openblas32.get_library()}.so"))
    except (ImportError, ValueError, OSError) as exc:
        BLAS_ERROR = f"{type(exc).__name__}: {exc}"
        if requested == "openblas":
            warnings.warn(
                f"gradfuse: GRADFUSE_GEMM=openblas but OpenBLAS did not load ({BLAS_ERROR}); using Eigen",
                RuntimeWarning,
                stacklevel=4,
            )
    if requested == "eigen":
        _core._set_gemm("eigen")


if _core is not None:
    _apply_env()
