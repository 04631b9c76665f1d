"""Fuzz gf.load (atheris, coverage-guided).

The files given to gf.load are built from the fuzzer's bytes in one of five ways: the bytes
themselves; a real checkpoint (gf.save of a small model, its Adam state and a tree of every
supported type) truncated; the same with bytes overwritten; its JSON document changed as a tree
(a node replaced by a fuzzed value, a key dropped, deep nesting) or as text, then re-packed with
valid lengths, CRC-32 and SHA-256 so that the schema checks behind the checksums are reached; its
header fields forged, checksums recomputed. gf.load must either return a state (which gf.save
must accept again) or raise CheckpointError, the one exception it documents for a bad file.
Anything else (another exception, a crash, a hang) is a finding.

    python tests/fuzz/fuzz_load.py -max_total_time=60        # see tests/fuzz/README.md
"""

from __future__ import annotations

import atexit
import copy
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile
import zlib

import atheris
import numpy as np

with atheris.instrument_imports(include=["gradfuse"]):
    import gradfuse as gf
    from gradfuse import checkpoint as ckpt

_TEMP = tempfile.mkdtemp(prefix="gf-fuzz-load-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
atexit.register(shutil.rmtree, _TEMP, ignore_errors=True)
FILE = os.path.join(_TEMP, "input.gfc")
RESAVED = os.path.join(_TEMP, "resaved.gfc")
PREAMBLE = struct.Struct("<8sIIQQ")


def real_checkpoint() -> bytes:
    """The bytes of gf.save of a small model, its optimizer after one step, and one value of every
    kind a checkpoint holds."""
    model = gf.nn.Sequential([gf.nn.Dense(4, 3, activation="relu"), gf.nn.BatchNorm(3), gf.nn.Dense(3, 2)])
    params = model.parameters()
    opt = gf.optim.Adam(params, lr=1e-2, amsgrad=True)
    opt.step([np.full_like(p.data, 0.5) for p in params])
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": 3,
        "kinds": (
            1.5,
            float("nan"),
            float("-inf"),
            -0.0,
            2**70,
            -(2**64),
            "text",
            None,
            True,
            np.float32(2.5),
            np.int64(-3),
            np.complex64(1 - 2j),
            {7: [1, 2], "k": ()},
        ),
        "arrays": [np.zeros((0, 3)), np.arange(6, dtype=np.int16).reshape(2, 3), np.array(True)],
    }
    gf.save(state, FILE)
    with open(FILE, "rb") as f:
        return f.read()


SEED = real_checkpoint()
_J, _D = PREAMBLE.unpack(SEED[: PREAMBLE.size])[3:]
SEED_DOC = json.loads(SEED[40 : 40 + _J])
SEED_DATA = SEED[len(SEED) - 32 - _D : len(SEED) - 32]


def pack(doc: bytes, data: bytes, version=1, flags=0, json_len=None, data_len=None, reserved=0) -> bytes:
    """A checkpoint file around `doc` and `data` with valid CRC-32 and SHA-256 (whatever the
    header claims)."""
    preamble = PREAMBLE.pack(
        ckpt.MAGIC,
        version,
        flags,
        len(doc) if json_len is None else json_len,
        len(data) if data_len is None else data_len,
    )
    head = preamble + struct.pack("<II", zlib.crc32(doc, zlib.crc32(preamble)), reserved) + doc
    body = head + bytes(-len(head) % 64) + data
    return body + hashlib.sha256(body).digest()


def json_nodes(node, path=()):
    """(path, node) of every node of a parsed JSON document."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from json_nodes(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from json_nodes(value, path + (i,))


def fuzzed_json_value(fdp: atheris.FuzzedDataProvider, nodes: list):
    choice = fdp.ConsumeIntInRange(0, 11)
    if choice == 0:
        return None
    if choice == 1:
        return fdp.ConsumeBool()
    if choice == 2:
        return [0, -1, 1, 63, 64, 2**31, 2**63 - 1, 2**63, -(2**63), 2**64, 10**40][fdp.ConsumeIntInRange(0, 10)]
    if choice == 3:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 10))
    if choice == 4:
        return fdp.ConsumeFloat()
    if choice == 5:
        return fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 20))
    if choice == 6:
        return ["<f4", "<f8", "|b1", "<i8", ">f4", "<U4", "O", "<c16", "|u1"][fdp.ConsumeIntInRange(0, 8)]
    if choice == 7:
        return []
    if choice == 8:
        tag = ["tuple", "dict", "array", "scalar", "float", "int", "set", None][fdp.ConsumeIntInRange(0, 7)]
        keys = ["items", "index", "dtype", "hex", "bits"]
        out = {"$": tag}
        for _ in range(fdp.ConsumeIntInRange(0, 3)):
            out[keys[fdp.ConsumeIntInRange(0, len(keys) - 1)]] = fuzzed_json_value(fdp, nodes)
        return out
    if choice == 9:
        return {"$": "int", "hex": ["0x", "-0x1f", "0xg", "0x" + "f" * 40, "1"][fdp.ConsumeIntInRange(0, 4)]}
    return copy.deepcopy(nodes[fdp.ConsumeIntInRange(0, len(nodes) - 1)][1])  # another node of the tree


def mutate_tree(fdp: atheris.FuzzedDataProvider) -> bytes:
    doc = copy.deepcopy(SEED_DOC)
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        nodes = list(json_nodes(doc))
        path, node = nodes[fdp.ConsumeIntInRange(0, len(nodes) - 1)]
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = fdp.ConsumeIntInRange(0, 3)
        if action == 0 and isinstance(node, dict) and node:  # drop a key
            del node[list(node)[fdp.ConsumeIntInRange(0, len(node) - 1)]]
        elif action == 1 and isinstance(node, list) and node:  # drop an item
            del node[fdp.ConsumeIntInRange(0, len(node) - 1)]
        elif path:
            parent[path[-1]] = fuzzed_json_value(fdp, nodes)
        else:
            doc = fuzzed_json_value(fdp, nodes)
    text = json.dumps(doc, separators=(",", ":"))  # NaN/Infinity can appear: load must refuse them
    if fdp.ConsumeIntInRange(0, 15) == 0:  # nesting deeper than any recursion limit
        depth = fdp.ConsumeIntInRange(1, 100_000)
        text = text.replace('"root":', '"root":' + "[" * depth, 1)[:-1] + "]" * depth + "}"
    return text.encode("utf-8", "surrogatepass")


def mutate_text(fdp: atheris.FuzzedDataProvider) -> bytes:
    doc = bytearray(SEED[40 : 40 + _J])
    for _ in range(fdp.ConsumeIntInRange(1, 8)):
        at = fdp.ConsumeIntInRange(0, len(doc))
        action = fdp.ConsumeIntInRange(0, 2)
        if action == 0 and at < len(doc):
            doc[at] = fdp.ConsumeIntInRange(0, 255)
        elif action == 1:
            doc[at:at] = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 8))
        else:
            del doc[at : at + fdp.ConsumeIntInRange(1, 16)]
    return bytes(doc)


def make_file(fdp: atheris.FuzzedDataProvider) -> bytes:
    mode = fdp.ConsumeIntInRange(0, 5)
    if mode == 0:
        return fdp.ConsumeBytes(fdp.remaining_bytes())
    if mode == 1:
        return SEED[: fdp.ConsumeIntInRange(0, len(SEED))]
    if mode == 2:
        data = bytearray(SEED)
        for _ in range(fdp.ConsumeIntInRange(1, 8)):
            data[fdp.ConsumeIntInRange(0, len(data) - 1)] = fdp.ConsumeIntInRange(0, 255)
        return bytes(data)
    if mode == 3:
        return pack(mutate_tree(fdp), SEED_DATA)
    if mode == 4:
        return pack(mutate_text(fdp), SEED_DATA)
    # forged header fields (and data section length), checksums valid
    data = SEED_DATA[: fdp.ConsumeIntInRange(0, len(SEED_DATA))] if fdp.ConsumeBool() else SEED_DATA
    doc = SEED[40 : 40 + _J]
    fields = {}
    for name in ("version", "flags", "json_len", "data_len", "reserved"):
        if fdp.ConsumeIntInRange(0, 4) == 0:
            top = 2**32 - 1 if name in ("version", "flags", "reserved") else 2**64 - 1
            fields[name] = fdp.ConsumeIntInRange(0, top)
    return pack(doc, data, **fields)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    with open(FILE, "wb") as f:
        f.write(make_file(fdp))
    try:
        state = gf.load(FILE)
    except gf.CheckpointError:
        return
    gf.save(state, RESAVED)  # whatever loads is a state that saves again


def main() -> None:
    # Inputs of up to 4 KiB from the start (libFuzzer otherwise grows them from a few bytes).
    defaults = [
        arg
        for arg in ("-max_len=4096", "-len_control=0")
        if not any(a.startswith(arg.split("=")[0] + "=") for a in sys.argv)
    ]
    atheris.Setup(sys.argv + defaults, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
