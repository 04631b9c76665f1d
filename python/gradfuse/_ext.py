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
    _load_blas(os.environ.get("GRADFUSE_GEMM", "").strip().lower())


BLAS_ERROR: str | None = None


def _load_blas(requested: str) -> None:
    """GEMMs run on OpenBLAS from the scipy-openblas32 wheel when it loads, else on Eigen.
    GRADFUSE_GEMM=eigen forces Eigen; GRADFUSE_GEMM=openblas warns if OpenBLAS cannot load.
    Why it did not load is kept in BLAS_ERROR, which gf.config() reports as gemm_error."""
    global BLAS_ERROR
    if requested not in ("", "openblas", "eigen"):
        warnings.warn(
            f"gradfuse: GRADFUSE_GEMM={requested!r} is not openblas or eigen; ignored", RuntimeWarning, stacklevel=4
        )
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
