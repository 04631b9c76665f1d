"""Checkpoints without pickle: gf.save(state, path) and gf.load(path).

    gf.save({"model": params, "optimizer": opt.state_dict(), "data": batches.state_dict(),
             "epoch": 7}, "run/ckpt.gfc")
    state = gf.load("run/ckpt.gfc")
    opt.load_state_dict(state["optimizer"])

What round-trips exactly
------------------------
``state`` is a tree of:

- ``dict`` with ``str`` or ``int`` keys (key types and order kept; dict subclasses such as
  OrderedDict load as plain dicts), ``list`` and ``tuple`` (kept apart), ``None``, ``bool``,
  ``str``, ``int`` of any size, ``float`` (bit for bit: -0.0, inf, every NaN payload);
- NumPy arrays of dtype bool, int8..int64, uint8..uint64, float16/32/64, complex64/128:
  values bit for bit, dtype and shape kept. They load as fresh, writeable, C-contiguous arrays in
  the machine's native byte order (a big-endian array loads as its native-order twin with the same
  values; a Fortran-ordered or strided array loads C-ordered). Subclasses (np.memmap, np.matrix)
  load as plain ndarrays; masked arrays are refused. Two references to one array load as two
  arrays;
- NumPy scalars of those dtypes (np.float32(1.5) loads as np.float32(1.5), type kept).

Anything else (objects, object/string/datetime/structured arrays, int/float/str subclasses such as
np.str_ or enums, torch tensors: convert them with .numpy() first, sets, non-str/int dict keys,
circular references) is refused with a TypeError naming the key path, e.g.
``state['model']['w']: object of type Foo is not supported``, before any file is created.

File format (version 1); integers little-endian
-----------------------------------------------
====== ====== ==============================================================================
offset size   field
====== ====== ==============================================================================
0      8      magic ``b"\\x89GFCKPT\\n"``
8      4      format version (uint32), 1
12     4      flags (uint32), 0
16     8      J: length of the JSON document (uint64)
24     8      D: length of the data section (uint64)
32     4      CRC-32 of bytes [0, 32) followed by the JSON document (uint32)
36     4      reserved, 0
40     J      the JSON document (ASCII)
40+J          zero padding up to P, the next multiple of 64
P      D      the data: every array's raw bytes, C order, little-endian, each starting at a
              multiple of 64 from P (zero padding between)
P+D    32     SHA-256 of every byte before it
====== ====== ==============================================================================

The file is exactly P + D + 32 bytes. The JSON document is
``{"format": "gradfuse.checkpoint", "version": 1, "arrays": [...], "root": NODE}``, where
``arrays`` lists ``{"dtype": "<f4", "shape": [3, 4], "offset": 0, "nbytes": 48}`` (offset from P)
in file order, and a NODE is one of: null, true, false, a JSON string, a JSON integer (|x| < 2**63),
a finite float as a JSON number (always with "." or "e"), a JSON array of NODEs (a list), or an
object tagged by "$":

- ``{"$": "int", "hex": "-0x1f..."}``             an int with |x| >= 2**63
- ``{"$": "float", "bits": "7ff8000000000000"}``  a non-finite float: its IEEE-754 bits
- ``{"$": "tuple", "items": [NODE, ...]}``
- ``{"$": "dict", "items": [[KEY, NODE], ...]}``  KEY: a JSON string, integer or int tag
- ``{"$": "array", "index": i}``                  the i-th entry of ``arrays`` (each used once)
- ``{"$": "scalar", "dtype": "<f4", "hex": "0000c03f"}``  a NumPy scalar's little-endian bytes

Writing and reading
-------------------
save() encodes and checks the whole tree first, then writes a temporary file in the destination's
folder (``.<name>.<random>.gfckpt-tmp``), flushes and fsyncs it, gives it the mode the old file had
(or the umask's default), renames it over ``path`` with os.replace (atomic on POSIX and Windows),
then fsyncs the folder where the platform allows (a symlink at ``path`` is replaced by the file,
not followed). Readers therefore see either the old or the new
file, never a partial one; a crash at any point leaves the previous checkpoint intact. On an
exception (KeyboardInterrupt included) the temporary file is removed; only a process killed
outright (SIGKILL, power loss) can leave one behind: clean_temp_files(path) removes them (call it
when no other process is saving to that path). Arrays are written straight from their memory in
16 MiB pieces (strided or byte-swapped ones converted piece by piece): no copy of the state is
made. Do not modify the arrays while save() runs.

load() checks, before returning anything: the magic, the version, the file length against the
header's lengths (truncation), the header CRC, the JSON syntax and schema, the dtype whitelist, the
array table (sizes, alignment, no overlap, within the data section), then reads each array into its
own fresh buffer (one copy in memory, hashed as it is read), and compares the SHA-256. Any problem
raises CheckpointError (a ValueError) naming the file and what is wrong; OSErrors of opening and
reading (no such file, permissions) pass through unchanged.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import math
import os
import re
import struct
import sys
import tempfile
import zlib

import numpy as np

__all__ = ["save", "load", "CheckpointError", "clean_temp_files", "FORMAT_VERSION"]

FORMAT_VERSION = 1
MAGIC = b"\x89GFCKPT\n"
_FORMAT_NAME = "gradfuse.checkpoint"
_PREAMBLE = struct.Struct("<8sIIQQ")  # magic, version, flags, J, D
_HEADER_SIZE = 40  # preamble (32) + CRC-32 (4) + reserved (4)
_ALIGN = 64
_DIGEST_SIZE = 32
_CHUNK = 16 << 20  # bytes per write / read / hash piece
_TEMP_SUFFIX = ".gfckpt-tmp"
_MAX_NDIM = 64
_PLAIN_INT = 1 << 63

# dtype strings (little-endian, as written in the file) -> NumPy dtype
_DTYPES = {
    np.dtype(c).newbyteorder("<").str: np.dtype(c).newbyteorder("<")
    for c in ("?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16")
}


class CheckpointError(ValueError):
    """A file is not a valid gradfuse checkpoint (wrong magic or version, truncated, corrupt)."""


def _align(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _file_dtype(dtype: np.dtype) -> np.dtype | None:
    """The little-endian dtype an array of `dtype` is stored as, or None if it is not supported."""
    if dtype.fields is not None or dtype.subdtype is not None:
        return None
    return _DTYPES.get(dtype.newbyteorder("<").str)


# ---- encoding -------------------------------------------------------------------------------------
def _key_path(where: str, key) -> str:
    return f"{where}[{key!r}]"


def _encode_int(value: int):
    return value if -_PLAIN_INT < value < _PLAIN_INT else {"$": "int", "hex": hex(value)}


def _encode(obj, where: str, arrays: list, active: set):
    kind = type(obj)
    if obj is None or kind is bool or kind is str:
        return obj
    if kind is int:
        return _encode_int(obj)
    if kind is float:
        if math.isfinite(obj):
            return obj
        return {"$": "float", "bits": format(struct.unpack("<Q", struct.pack("<d", obj))[0], "016x")}
    if isinstance(obj, np.ndarray):
        if isinstance(obj, np.ma.MaskedArray):
            raise TypeError(f"{where}: masked arrays are not supported (save .data and .mask separately)")
        if _file_dtype(obj.dtype) is None:
            raise TypeError(
                f"{where}: arrays of dtype {obj.dtype} are not supported (bool, int8-64, uint8-64, "
                "float16/32/64, complex64/128 are)"
            )
        arrays.append(obj)
        return {"$": "array", "index": len(arrays) - 1}
    if isinstance(obj, np.generic):
        file_dtype = _file_dtype(obj.dtype)
        if file_dtype is None or kind is not obj.dtype.type:
            raise TypeError(f"{where}: NumPy scalars of type {kind.__name__} are not supported")
        return {"$": "scalar", "dtype": file_dtype.str, "hex": np.asarray(obj).astype(file_dtype).tobytes().hex()}
    if kind is list or kind is tuple or isinstance(obj, dict):
        if id(obj) in active:
            raise TypeError(f"{where}: circular reference")
        active.add(id(obj))
        try:
            if kind is list:
                return [_encode(v, f"{where}[{i}]", arrays, active) for i, v in enumerate(obj)]
            if kind is tuple:
                return {"$": "tuple", "items": [_encode(v, f"{where}[{i}]", arrays, active) for i, v in enumerate(obj)]}
            items = []
            for key, value in obj.items():
                if type(key) is str:
                    encoded_key = key
                elif type(key) is int:
                    encoded_key = _encode_int(key)
                else:
                    raise TypeError(
                        f"{where}: dict key {key!r} of type {type(key).__name__} is not supported "
                        "(keys must be str or int)"
                    )
                items.append([encoded_key, _encode(value, _key_path(where, key), arrays, active)])
            return {"$": "dict", "items": items}
        finally:
            active.discard(id(obj))
    raise TypeError(
        f"{where}: object of type {kind.__qualname__} is not supported (checkpoints hold dicts, "
        "lists, tuples, None, bool, int, float, str, NumPy arrays and NumPy scalars)"
    )


def _array_pieces(arr: np.ndarray, file_dtype: np.dtype):
    """arr's bytes in C order and file byte order, in pieces of about _CHUNK bytes, without copying
    the whole array: a contiguous native array is not copied at all, any other goes through one
    reused buffer (each piece must be consumed before the next is asked for)."""
    if arr.size == 0:
        return
    if arr.dtype.str == file_dtype.str and arr.flags.c_contiguous:
        flat = arr.reshape(-1).view(np.uint8)
        for start in range(0, flat.size, _CHUNK):
            yield flat[start : start + _CHUNK]
        return
    if arr.ndim == 0:
        yield np.array(arr, dtype=file_dtype).reshape(-1).view(np.uint8)
        return
    row = arr[0].size  # elements per index of the first axis
    rows = max(1, _CHUNK // max(1, row * arr.itemsize))
    buffer = np.empty(min(rows, arr.shape[0]) * row, file_dtype)
    for start in range(0, arr.shape[0], rows):
        block = arr[start : start + rows]
        out = buffer[: block.size].reshape(block.shape)
        np.copyto(out, block)
        yield out.reshape(-1).view(np.uint8)


def _encode_file(state) -> tuple[bytes, list]:
    """(header + JSON + padding, [(array, file dtype, offset from P)]). Raises TypeError."""
    arrays: list = []
    root = _encode(state, "state", arrays, set())
    table, layout, offset = [], [], 0
    for arr in arrays:
        file_dtype = _file_dtype(arr.dtype)
        offset = _align(offset)
        table.append({"dtype": file_dtype.str, "shape": list(arr.shape), "offset": offset, "nbytes": arr.nbytes})
        layout.append((arr, file_dtype, offset))
        offset += arr.nbytes
    doc = json.dumps(
        {"format": _FORMAT_NAME, "version": FORMAT_VERSION, "arrays": table, "root": root},
        ensure_ascii=True,
        allow_nan=False,
        separators=(",", ":"),
    ).encode("ascii")
    preamble = _PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0, len(doc), offset)
    header = preamble + struct.pack("<II", zlib.crc32(doc, zlib.crc32(preamble)), 0)
    head = header + doc
    return head + bytes(_align(len(head)) - len(head)), layout


# ---- atomic writing ---------------------------------------------------------------------------------
def _temp_prefix(name: str) -> str:
    return f".{name[:180]}."


def _default_mode() -> int:
    """0o666 less the process umask (what open() would give a new file)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)  # no other way to read it; restored at once
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_folder(folder: str) -> None:
    """Make the rename durable: fsync the folder where the platform allows it (POSIX)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder
        pass
    finally:
        os.close(fd)


def save(state, path) -> None:
    """Write `state` (a tree of dicts, lists, tuples, scalars, strings and NumPy arrays) to `path`,
    atomically: a temporary file in the same folder, flushed and fsynced, then os.replace.

    Raises TypeError (naming the key path) for anything that cannot be saved, before creating any
    file. See the module docstring for the supported types and the file format."""
    path = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"gradfuse.save: {path} is a folder")
    head, layout = _encode_file(state)
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        mode = _default_mode()
    fd, temp = tempfile.mkstemp(prefix=_temp_prefix(name), suffix=_TEMP_SUFFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            digest = hashlib.sha256(head)
            f.write(head)
            position = 0
            for arr, file_dtype, offset in layout:
                if offset > position:
                    pad = bytes(offset - position)
                    digest.update(pad)
                    f.write(pad)
                for piece in _array_pieces(arr, file_dtype):
                    digest.update(piece)
                    f.write(piece)
                position = offset + arr.nbytes
            f.write(digest.digest())
            f.flush()
            if hasattr(os, "fchmod"):
                with contextlib.suppress(OSError):  # best effort: some file systems refuse modes
                    os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_folder(folder)


def clean_temp_files(path) -> list[str]:
    """Remove the temporary files that saves of `path` killed mid-way (SIGKILL, power loss) left in
    its folder; return their paths. Only call it while no other process is saving to `path`: a
    save in progress would lose its temporary file (and fail)."""
    path = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(path)
    removed = []
    for temp in glob.glob(os.path.join(glob.escape(folder), glob.escape(_temp_prefix(name)) + "*" + _TEMP_SUFFIX)):
        rest = os.path.basename(temp)[len(_temp_prefix(name)) : -len(_TEMP_SUFFIX)]
        if "." in rest:  # mkstemp's random part has no dot: this belongs to a longer name
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
            removed.append(temp)
    return removed


# ---- loading --------------------------------------------------------------------------------------
class _Reader:
    """Reads a checkpoint from an open binary file, checking everything on the way."""

    def __init__(self, f, path: str):
        self.f = f
        self.path = path

    def fail(self, what: str):
        raise CheckpointError(f"{self.path}: {what}")

    def read_exact(self, n: int, what: str) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            self.fail(f"truncated (file ended inside {what})")
        return data

    def read_into(self, buf: np.ndarray, digest, what: str) -> None:
        view = memoryview(buf)
        done = 0
        while done < buf.size:
            got = self.f.readinto(view[done : done + _CHUNK])
            if not got:
                self.fail(f"truncated (file ended inside {what})")
            digest.update(view[done : done + got])
            done += got

    def load(self):
        f = self.f
        size = os.fstat(f.fileno()).st_size
        header = f.read(_HEADER_SIZE)
        if len(header) < len(MAGIC):
            if header and MAGIC.startswith(header):
                self.fail(f"truncated ({size} bytes, shorter than the header)")
            self.fail("not a gradfuse checkpoint (the file is too short to hold the magic number)")
        if header[: len(MAGIC)] != MAGIC:
            self.fail(f"not a gradfuse checkpoint (magic number {header[: len(MAGIC)]!r}, expected {MAGIC!r})")
        if len(header) < _HEADER_SIZE:
            self.fail(f"truncated ({size} bytes, shorter than the {_HEADER_SIZE}-byte header)")
        _, version, flags, json_len, data_len = _PREAMBLE.unpack(header[: _PREAMBLE.size])
        crc, reserved = struct.unpack("<II", header[_PREAMBLE.size :])
        if version != FORMAT_VERSION:
            newer = " (written by a newer gradfuse?)" if version > FORMAT_VERSION else ""
            self.fail(f"format version {version} is not supported{newer}; this gradfuse reads version {FORMAT_VERSION}")
        if flags or reserved:
            self.fail(f"corrupt header (reserved fields are {flags:#x}, {reserved:#x}; expected 0)")
        data_start = _align(_HEADER_SIZE + json_len)
        expected = data_start + data_len + _DIGEST_SIZE
        if size < expected:
            self.fail(f"truncated: {size} bytes, the header announces {expected}")
        if size > expected:
            self.fail(f"corrupt: {size} bytes, the header announces {expected} ({size - expected} trailing bytes)")
        doc_bytes = self.read_exact(json_len, "the JSON document")
        if zlib.crc32(doc_bytes, zlib.crc32(header[: _PREAMBLE.size])) != crc:
            self.fail("corrupt: the header/JSON checksum (CRC-32) does not match")
        try:
            doc = json.loads(doc_bytes.decode("ascii"), parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            self.fail(f"corrupt: the JSON document does not parse ({exc})")
        table = self.check_document(doc, data_len)

        digest = hashlib.sha256(header)
        digest.update(doc_bytes)
        digest.update(self.read_exact(data_start - _HEADER_SIZE - json_len, "the padding"))
        arrays, position = [], 0
        for i, (file_dtype, shape, offset, nbytes) in enumerate(table):
            if offset > position:
                digest.update(self.read_exact(offset - position, f"the padding before array {i}"))
            try:
                arr = np.empty(shape, file_dtype)
            except (ValueError, MemoryError) as exc:
                self.fail(f"array {i} of shape {tuple(shape)} cannot be allocated ({exc})")
            if nbytes:
                self.read_into(arr.reshape(-1).view(np.uint8), digest, f"array {i}")
            arrays.append(arr)
            position = offset + nbytes
        if position < data_len:
            digest.update(self.read_exact(data_len - position, "the end of the data section"))
        stored = self.read_exact(_DIGEST_SIZE, "the SHA-256 checksum")
        if f.read(1):
            self.fail("corrupt: the file grew while it was read")
        if digest.digest() != stored:
            self.fail("corrupt: the SHA-256 checksum does not match (the file was damaged or modified)")
        if sys.byteorder != "little":
            arrays = [a.astype(a.dtype.newbyteorder("=")) for a in arrays]
        used = [False] * len(arrays)
        try:
            root = self.decode(doc["root"], arrays, used, "state")
        except RecursionError:
            self.fail("corrupt: the structure is nested too deeply")
        if not all(used):
            self.fail(f"corrupt: array {used.index(False)} is listed but not used")
        return root

    def check_document(self, doc, data_len: int) -> list:
        """Check the JSON document's top level and array table; return the table as
        (dtype, shape, offset, nbytes) tuples."""
        if type(doc) is not dict or set(doc) != {"format", "version", "arrays", "root"}:
            self.fail("corrupt: the JSON document is not a checkpoint description")
        if doc["format"] != _FORMAT_NAME or type(doc["version"]) is not int or doc["version"] != FORMAT_VERSION:
            self.fail(f"corrupt: the JSON document names format {doc['format']!r} version {doc['version']!r}")
        if type(doc["arrays"]) is not list:
            self.fail("corrupt: the array table is not a list")
        table, end = [], 0
        for i, entry in enumerate(doc["arrays"]):
            if type(entry) is not dict or set(entry) != {"dtype", "shape", "offset", "nbytes"}:
                self.fail(f"corrupt: array {i}'s entry is malformed")
            dtype_str, shape, offset, nbytes = entry["dtype"], entry["shape"], entry["offset"], entry["nbytes"]
            if type(dtype_str) is not str or dtype_str not in _DTYPES:
                self.fail(
                    f"array {i} has dtype {dtype_str!r}, which checkpoints never hold (allowed: "
                    f"{', '.join(sorted(_DTYPES))})"
                )
            if (
                type(shape) is not list
                or len(shape) > _MAX_NDIM
                or any(type(d) is not int or not 0 <= d < _PLAIN_INT for d in shape)
            ):
                self.fail(f"corrupt: array {i} has shape {shape!r}")
            if type(offset) is not int or type(nbytes) is not int:
                self.fail(f"corrupt: array {i} has offset {offset!r} and size {nbytes!r}")
            file_dtype = _DTYPES[dtype_str]
            if nbytes != math.prod(shape) * file_dtype.itemsize:
                self.fail(f"corrupt: array {i} of shape {tuple(shape)} and dtype {dtype_str} claims {nbytes} bytes")
            if offset % _ALIGN or offset < end or offset + nbytes > data_len:
                self.fail(
                    f"corrupt: array {i} lies at bytes [{offset}, {offset + nbytes}) of a {data_len}-byte data "
                    f"section (the previous array ends at {end})"
                )
            end = offset + nbytes
            table.append((file_dtype, shape, offset, nbytes))
        if end != data_len:
            self.fail(f"corrupt: the arrays end at byte {end} of a {data_len}-byte data section")
        return table

    def decode(self, node, arrays: list, used: list, where: str):
        kind = type(node)
        if node is None or kind is bool or kind is str or kind is int:
            return node
        if kind is float:
            if not math.isfinite(node):
                self.fail(f"corrupt: {where} is a non-finite JSON number")
            return node
        if kind is list:
            return [self.decode(v, arrays, used, f"{where}[{i}]") for i, v in enumerate(node)]
        if kind is not dict:
            self.fail(f"corrupt: {where} is a JSON {kind.__name__}")
        tag = node.get("$")
        if tag == "tuple" and set(node) == {"$", "items"} and type(node["items"]) is list:
            return tuple(self.decode(v, arrays, used, f"{where}[{i}]") for i, v in enumerate(node["items"]))
        if tag == "dict" and set(node) == {"$", "items"} and type(node["items"]) is list:
            out = {}
            for item in node["items"]:
                if type(item) is not list or len(item) != 2:
                    self.fail(f"corrupt: {where} has a malformed dict item")
                key = item[0]
                if type(key) is dict:
                    key = self.decode_int(key, where)
                elif type(key) not in (str, int):
                    self.fail(f"corrupt: {where} has a dict key of JSON type {type(key).__name__}")
                if key in out:
                    self.fail(f"corrupt: {where} has the key {key!r} twice")
                out[key] = self.decode(item[1], arrays, used, _key_path(where, key))
            return out
        if tag == "array" and set(node) == {"$", "index"}:
            index = node["index"]
            if type(index) is not int or not 0 <= index < len(arrays):
                self.fail(f"corrupt: {where} refers to array {index!r} of {len(arrays)}")
            if used[index]:
                self.fail(f"corrupt: {where} refers to array {index}, used twice")
            used[index] = True
            return arrays[index]
        if tag == "scalar" and set(node) == {"$", "dtype", "hex"}:
            dtype_str, text = node["dtype"], node["hex"]
            if type(dtype_str) is not str or dtype_str not in _DTYPES:
                self.fail(f"{where}: a NumPy scalar of dtype {dtype_str!r}, which checkpoints never hold")
            file_dtype = _DTYPES[dtype_str]
            raw = self.decode_hex(text, where)
            if len(raw) != file_dtype.itemsize:
                self.fail(f"corrupt: {where} is a {dtype_str} scalar of {len(raw)} bytes")
            return np.frombuffer(raw, file_dtype).astype(file_dtype.newbyteorder("="))[0]
        if tag == "float" and set(node) == {"$", "bits"}:
            bits = node["bits"]
            if type(bits) is not str or not re.fullmatch(r"[0-9a-f]{16}", bits):
                self.fail(f"corrupt: {where} is a malformed float")
            return struct.unpack("<d", struct.pack("<Q", int(bits, 16)))[0]
        if tag == "int":
            return self.decode_int(node, where)
        self.fail(f"corrupt: {where} is an unknown JSON object")

    def decode_int(self, node: dict, where: str) -> int:
        text = node.get("hex")
        if (
            set(node) != {"$", "hex"}
            or node["$"] != "int"
            or type(text) is not str
            or not re.fullmatch(r"-?0x[0-9a-f]+", text)
        ):
            self.fail(f"corrupt: {where} holds a malformed integer")
        return int(text, 16)

    def decode_hex(self, text, where: str) -> bytes:
        if type(text) is not str or not re.fullmatch(r"(?:[0-9a-f]{2})*", text):
            self.fail(f"corrupt: {where} holds malformed hex bytes")
        return bytes.fromhex(text)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def load(path):
    """Read a checkpoint written by gf.save. Everything is checked before anything is returned;
    a file that is not a checkpoint, truncated, corrupt or of another format version raises
    CheckpointError (a ValueError) naming the file and the problem."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        return _Reader(f, str(path)).load()
