"""Parameters and the parameter arena.

A Parameter holds `.data` (a float32/float64 C-contiguous ndarray) and `.grad` (an ndarray of the
same shape, or None). A ParameterArena keeps many parameters in ONE contiguous buffer, and their
gradients in a twin buffer: each `.data` and `.grad` is a view into it. An optimizer over arena
parameters then steps the whole arena in one kernel call over contiguous memory (the bindings
coalesce adjacent arrays), instead of one call per tensor.
"""
from __future__ import annotations

import numpy as np

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_ALIGN_BYTES = 64  # a cache line; also AVX-512's vector width


class Parameter:
    """A trainable array: `.data`, `.grad` (None until a gradient is set), `.name`, `.trainable`,
    `.regularize` (whether penalties and weight decay apply: layers set it False for biases and
    batch-norm parameters).

    `data` is used as is when it is a C-contiguous float32/float64 ndarray (no copy); anything else
    is converted to a new float32 array (float64 input stays float64).
    """

    __slots__ = ("data", "grad", "name", "trainable", "regularize", "_arena", "_offset", "_arena_data", "_arena_grad")

    def __init__(self, data, name: str | None = None, trainable: bool = True, regularize: bool = True):
        arr = data if isinstance(data, np.ndarray) else np.asarray(data)
        dtype = np.dtype(np.float64 if arr.dtype.kind == "f" and arr.dtype.itemsize == 8 else np.float32)
        if arr.dtype != dtype or not arr.flags.c_contiguous or not arr.flags.writeable:
            arr = np.array(arr, dtype=dtype, order="C", copy=True)
        self.data: np.ndarray = arr
        self.grad: np.ndarray | None = None
        self.name = name
        self.trainable = bool(trainable)
        self.regularize = bool(regularize)
        # Set by a ParameterArena: the arena, this parameter's element offset in it, and its views
        # into the arena's data and gradient buffers.
        self._arena: ParameterArena | None = None
        self._offset = 0
        self._arena_data: np.ndarray | None = None
        self._arena_grad: np.ndarray | None = None

    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    size = property(lambda self: self.data.size)
    ndim = property(lambda self: self.data.ndim)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradient. An arena gradient is zeroed in place (the arena owns it); otherwise
        set_to_none=True drops it and False fills it with zeros."""
        if self._arena_grad is not None:
            self._arena_grad.fill(0)
            self.grad = self._arena_grad
        elif set_to_none:
            self.grad = None
        elif self.grad is not None:
            self.grad.fill(0)

    def __array__(self, dtype=None, copy=None):
        if copy:
            return np.array(self.data, dtype=dtype, copy=True)
        return self.data if dtype is None else self.data.astype(dtype, copy=False)

    def __repr__(self) -> str:
        name = f"{self.name!r}, " if self.name else ""
        frozen = "" if self.trainable else ", trainable=False"
        return f"Parameter({name}shape={self.shape}, dtype={self.dtype}{frozen})"


def _aligned_zeros(n: int, dtype: np.dtype) -> np.ndarray:
    """A zero-filled 1-D array of n elements whose data starts on a 64-byte boundary."""
    itemsize = dtype.itemsize
    raw = np.zeros(n + _ALIGN_BYTES // itemsize, dtype=dtype)
    offset = (-raw.ctypes.data % _ALIGN_BYTES) // itemsize
    return raw[offset:offset + n]


class ParameterArena:
    """Many parameters in one contiguous buffer, their gradients in a twin buffer.

    `ParameterArena(items, dtype=np.float32)`: items are Parameters (adopted: their values are
    copied into the arena and `.data` / `.grad` rebound to views), ndarrays (wrapped into new
    Parameters), or shapes (new zero Parameters). Parameters are laid out in the given order with
    no gaps, so adjacent parameters are adjacent in memory.

    `.data` / `.grad`: the flat buffers; `.parameters`: the Parameters, in order; `len(arena)`.
    """

    def __init__(self, items, dtype=np.float32):
        self.dtype = np.dtype(dtype)
        if self.dtype not in _FLOATS:
            raise TypeError(f"ParameterArena: dtype must be float32 or float64, got {self.dtype}")
        params: list[Parameter] = []
        for i, item in enumerate(items):
            if isinstance(item, Parameter):
                params.append(item)
            elif isinstance(item, np.ndarray):
                params.append(Parameter(item.astype(self.dtype)))
            elif isinstance(item, (tuple, list, int, np.integer)):
                params.append(Parameter(np.zeros(item, self.dtype)))
            else:
                raise TypeError(f"ParameterArena: items[{i}] must be a Parameter, an ndarray or a shape, "
                                f"got {type(item).__name__}")
        if len({id(p) for p in params}) != len(params):
            raise ValueError("ParameterArena: the same Parameter appears more than once")
        for i, p in enumerate(params):
            if p._arena is not None:
                raise ValueError(f"ParameterArena: items[{i}] already belongs to another arena")
        total = sum(p.size for p in params)
        self.data = _aligned_zeros(total, self.dtype)
        self.grad = _aligned_zeros(total, self.dtype)
        offset = 0
        for p in params:
            view = self.data[offset:offset + p.size].reshape(p.shape)
            view[...] = p.data
            grad = self.grad[offset:offset + p.size].reshape(p.shape)
            p.data, p.grad = view, grad
            p._arena, p._offset, p._arena_data, p._arena_grad = self, offset, view, grad
            offset += p.size
        self.parameters = params

    def __len__(self) -> int:
        return len(self.parameters)

    def __iter__(self):
        return iter(self.parameters)

    @property
    def size(self) -> int:
        """Elements in the arena."""
        return self.data.size

    def zero_grad(self) -> None:
        """Zero every gradient in one pass."""
        self.grad.fill(0)
        for p in self.parameters:
            p.grad = p._arena_grad

    def __repr__(self) -> str:
        return f"ParameterArena({len(self)} parameters, {self.size} elements, {self.dtype})"
