"""Build and runtime configuration: gf.config(), gf.show_config(), threads."""

from __future__ import annotations

import os
import platform

import numpy as np

from . import _ext, memory
from ._backend import get_backend
from ._ext import IMPORT_ERROR, _core
from ._version import __version__


def get_num_threads() -> int:
    """Threads a kernel called now (from this thread) uses.

    Follows OMP_NUM_THREADS and OpenMP's runtime setting (so threadpoolctl can limit it), capped by
    set_num_threads.
    """
    if _core is None:
        return 1
    return _core.get_num_threads()


def set_num_threads(n: int) -> None:
    """Cap the kernels' threads at n (n >= 1); 0 returns to OpenMP's setting.

    OpenMP's own limit (OMP_NUM_THREADS, else the number of cores; threadpoolctl changes it at run
    time) still applies: the kernels use min(n, that limit)."""
    n = int(n)
    if n < 0:
        raise ValueError(f"set_num_threads: n must be >= 1 (or 0 to follow OpenMP), got {n}")
    if _core is not None:
        _core.set_num_threads(n)


def config() -> dict:
    """What gradfuse runs with: version, ISA paths, threads, OpenMP, compiler, Eigen, GEMM, backend.

    gemm names the float32 GEMM library in use and gemm_backend says which one ("onednn",
    "openblas" or "eigen"); gemm_error is why OpenBLAS (the scipy-openblas32 wheel) did not load,
    so GEMMs fell back to Eigen, or None when it loaded (GRADFUSE_GEMM=eigen still loads it, and
    selects Eigen). gemm_bf16 names the bf16 GEMM path: "onednn (<the ISA oneDNN uses>)" or
    "fp32 fallback (<float32 library>)"; onednn_error is why oneDNN (the onednn-cpu-gomp wheel) did
    not load; cpu_features says whether the CPU (and, for AMX, the OS) offers the bf16 units.
    allocator says what allocates NumPy arrays inside gradfuse's calls: "caching (gradfuse, ...)"
    when the caching allocator is on (gf.memory), else "system (numpy, why)"."""
    cfg = {
        "version": __version__,
        "backend": get_backend(),
        "extension": "loaded" if _core is not None else f"unavailable ({IMPORT_ERROR})",
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "allocator": memory.describe(),
    }
    if _core is None:
        cfg.update(
            isa=None,
            isas=[],
            cpu_isas=[],
            threads=1,
            openmp=None,
            compiler=None,
            eigen=None,
            gemm=None,
            gemm_error=None,
            gemm_bf16=None,
            onednn_error=None,
            cpu_features={},
        )
        return cfg
    info = _core._build_info()
    cfg.update(
        isa=_core._get_isa(),
        isas=list(info["isas"]),
        cpu_isas=list(info["cpu_isas"]),
        threads=_core.get_num_threads(),
        openmp=info["openmp"],
        compiler=info["compiler"],
        eigen=info["eigen"],
        gemm=info["gemm"],
        gemm_backend=_core._get_gemm(),
        gemm_error=_ext.BLAS_ERROR,
        gemm_bf16=info["gemm_bf16"],
        gemm_bf16_backend=_core._get_gemm_bf16(),
        onednn=info["onednn"] or None,
        onednn_error=_ext.ONEDNN_ERROR,
        cpu_features=dict(info["cpu_features"]),
        gradfuse_amx=os.environ.get("GRADFUSE_AMX") or None,
        gradfuse_cpu=os.environ.get("GRADFUSE_CPU") or None,
        omp_num_threads=os.environ.get("OMP_NUM_THREADS") or None,
    )
    return cfg


def show_config() -> None:
    """Print config(), one key per line."""
    cfg = config()
    width = max(map(len, cfg))
    for key, value in cfg.items():
        if isinstance(value, list):
            value = ", ".join(value) or "-"
        print(f"{key:<{width}}  {value}")
