"""gradfuse: fused SIMD + OpenMP CPU kernels for training neural networks.

    import gradfuse as gf
    gf.show_config()
    opt = gf.optim.Adam(params, lr=1e-3)   # params: ndarrays or gf.nn.Parameter, torch-style groups
    opt.step(grads)                        # one fused, multi-threaded, vectorised pass, in place
    model.save(path); model = gf.load_model(path)   # a gf.nn model: architecture and weights

gf.ops holds the kernels themselves; each has a NumPy twin of the same name and signature
(gf.set_backend("numpy") or `with gf.use_backend("numpy"):` switches to them).
"""

from . import data, datasets, losses, memory, nn, ops, optim, regularizers, train
from ._backend import get_backend, set_backend, use_backend
from ._config import config, get_num_threads, set_num_threads, show_config
from ._version import __version__
from .checkpoint import CheckpointError, load, save
from .memory import get_allocator, memory_stats, release_memory, set_allocator
from .nn.module import load_model

__all__ = [
    "__version__",
    "config",
    "show_config",
    "set_num_threads",
    "get_num_threads",
    "set_backend",
    "get_backend",
    "use_backend",
    "set_allocator",
    "get_allocator",
    "release_memory",
    "memory_stats",
    "memory",
    "ops",
    "optim",
    "nn",
    "losses",
    "regularizers",
    "data",
    "datasets",
    "train",
    "save",
    "load",
    "load_model",
    "CheckpointError",
    "viz",
    "tune",
]


def __getattr__(name):
    # gf.viz is imported on first use: it is the only module that needs matplotlib (an optional extra);
    # gf.tune too: it brings multiprocessing and gf.viz with it.
    import importlib

    if name == "viz":
        return importlib.import_module(".viz", __name__)
    if name == "tune":
        return importlib.import_module(".tune", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
