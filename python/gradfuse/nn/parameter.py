"""Parameters and the parameter arena.

A Parameter holds `.data` (a float32/float64 C-contiguous ndarray) and `.grad` (an ndarray of the
same shape, or None). A ParameterArena keeps many parameters in ONE contiguous buffer, and their
gradients in a twin buffer: each `.data` and `.grad` is a view into it. An optimizer over arena
parameters then steps the whole arena in one kernel call over contiguous memory (the bindings
coalesce adjacent arrays), instead of one call per tensor.

Mixed precision: a float32 Parameter may carry a bf16 compute copy, `.bf16` (an ml_dtypes.bfloat16
array of its shape, made by `make_bf16_copy()`), which a bf16 forward pass reads. The optimizer
writes it in the same fused pass as the update (28 -> 30 bytes per parameter for Adam), so no
cast pass runs before each forward. In an arena the copies form a bf16 arena beside the fp32 one
(`arena.bf16`), and a step of the whole arena stays one kernel call.
"""

from __future__ import annotations

import sys

import numpy as np

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_ALIGN_BYTES = 64  # a cache line; also AVX-512's vector width


class Parameter:
    """A trainable array: `.data`, `.grad` (None until a gradient is set), `.name`, `.trainable`,
    `.regularize` (whether penalties and weight decay apply: layers set it False for biases and
    batch-norm parameters), `.bf16` (the bf16 compute copy, or None: see make_bf16_copy).

    No silent copies: an array (or a torch tensor, or anything else with memory of its own) is
    trained IN PLACE, so whoever holds it sees every update. It must therefore already be what the
    kernels take: float32 or float64, native byte order, C-contiguous, writeable; anything else
    (float16, int, a transposed or strided view, read-only) raises TypeError / ValueError naming the
    parameter, because a converted copy would be trained instead and the caller's array would never
    change. copy=True trains a fresh copy on purpose (float64 stays float64, the rest becomes
    float32). A torch tensor is shared through tensor.detach().numpy() (a CPU tensor only).
    Python lists and scalars have no memory to share: they are converted (float64 from Python
    floats, float32 from ints).
    """

    __slots__ = (
        "data",
        "grad",
        "name",
        "trainable",
        "regularize",
        "_bf16",
        "_arena",
        "_offset",
        "_arena_data",
        "_arena_grad",
        "_arena_bf16",
    )

    def __init__(
        self, data, name: str | None = None, trainable: bool = True, regularize: bool = True, *, copy: bool = False
    ):
        self.data: np.ndarray = _parameter_data(data, name, bool(copy))
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
        # The bf16 compute copy (make_bf16_copy), and in an arena its view into arena.bf16.
        self._bf16: np.ndarray | None = None
        self._arena_bf16: np.ndarray | None = None

    @property
    def bf16(self) -> np.ndarray | None:
        """The bf16 compute copy (ml_dtypes.bfloat16, the shape of .data), or None."""
        return self._bf16

    @bf16.setter
    def bf16(self, value) -> None:
        self._bf16 = value
        copies_changed()

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

    def make_bf16_copy(self) -> np.ndarray:
        """Give this float32 parameter a bf16 compute copy (`.bf16`, ml_dtypes.bfloat16, rounded to
        nearest even from `.data`) and return it; an existing copy is refreshed and returned. In a
        ParameterArena, every parameter of the arena gets one, as views into one bf16 arena.

        Every gf.optim optimizer writes `.bf16` in its fused step. When `.data` changes otherwise
        (an assignment p.data[...] = ..., an initializer, a torch-side update), call
        refresh_bf16() (or opt.refresh_compute_copies()); Module.load_state_dict does it itself."""
        if self.data.dtype != np.float32:
            raise TypeError(f"{self!r}: a bf16 compute copy needs float32 data (an fp32 master), got {self.data.dtype}")
        if self.bf16 is None:
            if self._arena is not None:
                self._arena.make_bf16_copies()
            else:
                self.bf16 = self.data.astype(_bfloat16())
                return self.bf16
        self.refresh_bf16()
        return self.bf16

    def refresh_bf16(self) -> None:
        """Rewrite the bf16 copy from `.data` (nothing when there is none): after `.data` changed
        outside an optimizer step."""
        if self.bf16 is not None:
            self.bf16[...] = self.data.astype(self.bf16.dtype)

    def drop_bf16_copy(self) -> None:
        """Forget the bf16 copy: optimizers stop writing one."""
        self.bf16 = None

    def __array__(self, dtype=None, copy=None):
        if copy:
            return np.array(self.data, dtype=dtype, copy=True)
        return self.data if dtype is None else self.data.astype(dtype, copy=False)

    def __repr__(self) -> str:
        name = f"{self.name!r}, " if self.name else ""
        frozen = "" if self.trainable else ", trainable=False"
        return f"Parameter({name}shape={self.shape}, dtype={self.dtype}{frozen})"


_copies_epoch = [0]


def copies_changed() -> None:
    """A compute copy was attached or dropped somewhere: optimizers read their copies again at
    their next step (until then they reuse the lists of the last one, at no cost per parameter)."""
    _copies_epoch[0] += 1


def copies_epoch() -> int:
    return _copies_epoch[0]


def _bfloat16() -> np.dtype:
    import ml_dtypes  # only when a bf16 copy is asked for

    return np.dtype(ml_dtypes.bfloat16)


def _float_dtype(dtype: np.dtype) -> np.dtype:
    """What a converted copy gets: float64 stays float64, the rest becomes float32."""
    return np.dtype(np.float64 if dtype.kind == "f" and dtype.itemsize == 8 else np.float32)


def _torch_tensor(data) -> bool:
    torch = sys.modules.get("torch")  # a torch tensor exists only once torch was imported
    return torch is not None and isinstance(data, torch.Tensor)


def _parameter_data(data, name, copy: bool) -> np.ndarray:
    """data as a Parameter's .data: shared when it has memory of its own (see Parameter)."""
    who = f"Parameter {name!r}" if name else "Parameter"
    if isinstance(data, (list, tuple, int, float, bool, np.generic)):  # no memory to share
        arr = np.asarray(data)
        return np.array(arr, dtype=_float_dtype(arr.dtype), order="C", copy=True)
    what = "the array"
    if _torch_tensor(data):
        what = f"the torch tensor (torch.{str(data.dtype).removeprefix('torch.')})"
        try:
            arr = data.detach().numpy()  # a view of the tensor's memory
        except (TypeError, RuntimeError) as exc:  # bfloat16, not on the CPU, a lazy conjugate...
            if not copy:
                raise TypeError(
                    f"{who}: {what} cannot be shared with NumPy ({exc}); pass copy=True to train a "
                    "float32 copy (torch will not see its updates)"
                ) from None
            return np.ascontiguousarray(data.detach().cpu().float().numpy()).copy()
    else:
        arr = np.asarray(data)
    if copy:
        return np.array(arr, dtype=_float_dtype(arr.dtype), order="C", copy=True)
    fix = (
        (
            "pass copy=True to train a copy on purpose (torch will not see its updates), or share a tensor that "
            "fits: t.float().contiguous(), trained in torch too"
        )
        if what != "the array"
        else "pass copy=True to train a copy on purpose, or give an array that fits, e.g. np.ascontiguousarray(a, "
        "dtype=np.float32), and keep using that one"
    )
    if arr.dtype not in _FLOATS or not arr.dtype.isnative:
        raise TypeError(
            f"{who}: {what} has dtype {arr.dtype}; a parameter is float32 or float64 (native byte order) "
            f"and is trained in place, so a converted copy would be trained and the given data would "
            f"never change: {fix}"
        )
    if not arr.flags.c_contiguous:
        raise ValueError(
            f"{who}: {what} is not C-contiguous (transposed or strided); it is trained in place, so a "
            f"contiguous copy would be trained and the given data would never change: {fix}"
        )
    if not arr.flags.writeable:
        raise ValueError(f"{who}: {what} is read-only, and a parameter is trained in place: {fix}")
    return arr


def _aligned_zeros(n: int, dtype: np.dtype) -> np.ndarray:
    """A zero-filled 1-D array of n elements whose data starts on a 64-byte boundary."""
    itemsize = dtype.itemsize
    raw = np.zeros(n + _ALIGN_BYTES // itemsize, dtype=dtype)
    offset = (-raw.ctypes.data % _ALIGN_BYTES) // itemsize
    return raw[offset : offset + n]


class ParameterArena:
    """Many parameters in one contiguous buffer, their gradients in a twin buffer.

    `ParameterArena(items, dtype=np.float32)`: items are Parameters (adopted: their values are
    copied into the arena and `.data` / `.grad` rebound to views), ndarrays (wrapped into new
    Parameters), or shapes (new zero Parameters). Parameters are laid out in the given order with
    no gaps, so adjacent parameters are adjacent in memory.

    `.data` / `.grad`: the flat buffers; `.parameters`: the Parameters, in order; `len(arena)`;
    `.bf16`: the flat buffer of the bf16 compute copies (float32 arenas, after make_bf16_copies()),
    each Parameter's `.bf16` a view into it.
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
                raise TypeError(
                    f"ParameterArena: items[{i}] must be a Parameter, an ndarray or a shape, got {type(item).__name__}"
                )
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
            view = self.data[offset : offset + p.size].reshape(p.shape)
            view[...] = p.data
            grad = self.grad[offset : offset + p.size].reshape(p.shape)
            p.data, p.grad = view, grad
            p._arena, p._offset, p._arena_data, p._arena_grad = self, offset, view, grad
            offset += p.size
        self.parameters = params
        self.bf16: np.ndarray | None = None

    def make_bf16_copies(self) -> np.ndarray:
        """Give every parameter a bf16 compute copy, as views into one bf16 buffer laid out like
        the arena (`.bf16`, returned), so that a step of the arena writes them in the same single
        call. Parameters that already had a copy of their own get a view instead (refreshed)."""
        if self.dtype != np.float32:
            raise TypeError(f"ParameterArena: bf16 compute copies need a float32 arena, got {self.dtype}")
        if self.bf16 is None:
            self.bf16 = _aligned_zeros(self.size, _bfloat16())
            for p in self.parameters:
                p._arena_bf16 = self.bf16[p._offset : p._offset + p.size].reshape(p.shape)
        for p in self.parameters:
            p.bf16 = p._arena_bf16
        self.refresh_bf16()
        return self.bf16

    def drop_bf16_copies(self) -> None:
        """Forget every parameter's bf16 copy and free the bf16 buffer (optimizers stop writing them)."""
        for p in self.parameters:
            p._arena_bf16 = None
            p.bf16 = None
        self.bf16 = None

    def refresh_bf16(self) -> None:
        """Rewrite every bf16 copy from the fp32 data in one pass (after the data changed outside a
        step); parameters whose copy is no longer their arena view are refreshed one by one."""
        if self.bf16 is None:
            return
        self.bf16[...] = self.data.astype(self.bf16.dtype)
        for p in self.parameters:
            if p.bf16 is not p._arena_bf16:
                p.refresh_bf16()

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
