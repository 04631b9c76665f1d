"""Faults and limits: checkpoint saves killed at random points, arrays of more than 2^31 elements,
optimizers stepped from several Python threads, and memory that stays flat over 10^5 kernel calls.

(test_checkpoint.py kills one save at two chosen points and cleans its temporary file; here a child
saves in a loop and is killed at random moments, and the next saves and loads run with the stale
temporary files still there. test_optim_api.py steps one optimizer from two racing threads; here
the overlap is forced, and every optimizer class steps concurrently.)
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import gradfuse as gf
import kernel_cases as kc
from conftest import HAS_CORE

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(gf.__file__)))
TEMP_SUFFIX = ".gfckpt-tmp"


def child_env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")])))


# ---- checkpoints: a save killed at a random point ----------------------------------------------------------

SAVE_LOOP = textwrap.dedent("""
    import sys
    import numpy as np
    import gradfuse as gf
    path = sys.argv[1]
    big = np.empty(24 << 20, np.uint8)  # 24 MiB: each save takes a while, so kills land mid-way
    for i in range(1, 10 ** 6):
        big.fill(i % 251)
        gf.save({"big": big, "i": i}, path)
        print(i, flush=True)
""")


def check_complete(state):
    """A checkpoint written by SAVE_LOOP, whole: every byte of 'big' is the one of its save."""
    assert state["big"].shape == (24 << 20,)
    assert np.all(state["big"] == state["i"] % 251)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_saves_killed_at_random_points_leave_a_whole_checkpoint(tmp_path):
    path = tmp_path / "loop.gfc"
    gf.save({"big": np.zeros(24 << 20, np.uint8), "i": 0}, path)
    rng = random.Random(1234)
    last = 0
    for _ in range(4):
        child = subprocess.Popen(
            [sys.executable, "-c", SAVE_LOOP, str(path)], env=child_env(), stdout=subprocess.PIPE, text=True
        )
        try:
            child.stdout.readline()  # at least one save completed in this child
            time.sleep(rng.uniform(0.0, 0.3))  # then kill it wherever it is: writing, fsync, rename
            child.send_signal(signal.SIGKILL)
            child.wait(30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        state = gf.load(path)  # never a partial file at the final path
        check_complete(state)
        assert state["i"] >= 1
        last = state["i"]
    # the killed children's temporary files are still there: saving and loading do not mind them
    stale = [f for f in os.listdir(tmp_path) if f.endswith(TEMP_SUFFIX)]
    gf.save({"big": np.full(24 << 20, (last + 1) % 251, np.uint8), "i": last + 1}, path)
    check_complete(gf.load(path))
    assert gf.load(path)["i"] == last + 1
    # a stale temporary file with partial content is never mistaken for the checkpoint
    assert sorted(os.path.basename(p) for p in gf.checkpoint.clean_temp_files(path)) == sorted(stale)
    assert os.listdir(tmp_path) == ["loop.gfc"]


# ---- more than 2^31 elements ---------------------------------------------------------------------------------

BIG = 2**31 + 33  # element count past int32, with an odd tail for the vector loops


def mem_available() -> int:
    """MemAvailable from /proc/meminfo, in bytes (0 where there is no /proc)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@pytest.mark.slow
@pytest.mark.skipif(not HAS_CORE, reason="the C++ extension is not available")
@pytest.mark.skipif(mem_available() < 12 * 2**30, reason="needs ~9 GB of free memory (12 GB available)")
def test_kernels_past_2_to_the_31_elements():
    """One float32 parameter of 2^31 + 33 elements (8.6 GB, the only memory really used: the gradient
    is a zero-filled array whose untouched pages are the kernel's shared zero page). Only the head and
    the tail are non-zero; after each kernel they are checked against the NumPy twin on slices.
    Measured on the 2-core reference machine: 35-60 s (the first write of the 8.6 GB, page faults,
    takes most of it), peak RSS 8.1 GiB."""
    edge = 1000
    rng = np.random.default_rng(0)
    p = np.zeros(BIG, np.float32)
    g = np.zeros(BIG, np.float32)  # only its edges are ever written: ~nothing resident
    for a in (p, g):
        a[:edge] = rng.standard_normal(edge) * 3
        a[-edge:] = rng.standard_normal(edge) * 3
    last = np.float32(20.0)
    g[-1] = last  # the very last element: the largest |g|
    head_p, tail_p = p[:edge].copy(), p[-edge:].copy()

    # read-only reductions over the whole index space
    assert gf.ops.grad_norm([g], norm_type=float("inf")) == last
    edges = np.concatenate([g[:edge], g[-edge:]]).astype(np.float64)
    np.testing.assert_allclose(gf.ops.grad_norm([g], norm_type=2.0), np.sqrt((edges**2).sum()), rtol=1e-13)
    assert gf.ops.all_finite([g])
    g[-1] = np.nan
    assert not gf.ops.all_finite([g])
    g[-1] = last

    # an in-place update of every element: SGD with weight decay, the twin on the two slices
    assert gf.ops.sgd([p], [g], lr=0.5, weight_decay=0.1)
    for slot, start in ((slice(0, edge), head_p), (slice(BIG - edge, BIG), tail_p)):
        want = start.copy()
        gf.ops.sgd.numpy([want], [g[slot].copy()], lr=0.5, weight_decay=0.1)
        np.testing.assert_array_equal(p[slot], want)
    assert p[edge : edge + 4096].max() == 0 and p[BIG - edge - 4096 : BIG - edge].min() == 0  # zeros stay zeros

    # clip_grad_value in place over all of p
    before = np.concatenate([p[:edge], p[-edge:]])
    gf.ops.clip_grad_value([p], clip_value=1.0)
    np.testing.assert_array_equal(np.concatenate([p[:edge], p[-edge:]]), np.clip(before, -1.0, 1.0))
    assert p[-1] == np.clip(before[-1], -1, 1)


# ---- threads ---------------------------------------------------------------------------------------------------


class BlockingGrads:
    """A gradient list whose iteration (inside Optimizer.step, after the lock is taken) waits for
    `release`: a step in progress that another thread's step must overlap."""

    def __init__(self, grads):
        self.grads = grads
        self.entered = threading.Event()
        self.release = threading.Event()

    def __iter__(self):
        self.entered.set()
        assert self.release.wait(30)
        return iter(self.grads)


@pytest.mark.parametrize("name", ["Adam", "SGD"])  # any two: a stateful step (every state in use) and another
def test_overlapping_steps_on_one_optimizer_are_serialised(backend, name):
    """Thread A's step is held inside step(); thread B's step must wait for it (not run beside it,
    not fail), then both apply: the result is two serial steps, bitwise."""
    p = np.random.default_rng(0).standard_normal(50_000).astype(np.float32)
    g = [np.random.default_rng(1).standard_normal(50_000).astype(np.float32)]
    ref = p.copy()
    kwargs = kc.all_states(getattr(gf.optim, name))
    opt = getattr(gf.optim, name)([p], **kwargs)
    ref_opt = getattr(gf.optim, name)([ref], **kwargs)
    blocking = BlockingGrads(g)
    errors = []

    def step(grads):
        try:
            with gf.use_backend(backend):
                opt.step(grads)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    a = threading.Thread(target=step, args=(blocking,))
    a.start()
    assert blocking.entered.wait(30)  # A holds the optimizer
    b = threading.Thread(target=step, args=(g,))
    b.start()
    b.join(0.5)
    assert b.is_alive(), "the second step did not wait for the first"
    np.testing.assert_array_equal(p, ref)  # and nothing was written meanwhile
    blocking.release.set()
    a.join(30)
    b.join(30)
    assert not errors, errors
    ref_opt.step(g)
    ref_opt.step(g)
    np.testing.assert_array_equal(p, ref)
    for key, value in ref_opt.state[ref].items():  # step counts and state arrays: two steps, no more
        np.testing.assert_array_equal(opt.state[p][key], value)


# every optimizer class, with settings from its kernel table row (every state in use)
EVERY_OPTIMIZER = {cls.__name__: kc.varied(cls) for cls in kc.optimizer_classes()}


def test_every_optimizer_stepped_concurrently_equals_a_serial_run(backend):
    """One thread per optimizer class, all at once (the kernels release the GIL, so their passes
    overlap): each ends bitwise where the same optimizer run alone ends."""

    def problem(i):
        rng = np.random.default_rng(i)
        return [rng.standard_normal(s).astype(np.float32) for s in ((300, 129), (257,))]

    def grads(i, step):
        rng = np.random.default_rng([i, step])
        return [rng.standard_normal(s).astype(np.float32) for s in ((300, 129), (257,))]

    names = sorted(EVERY_OPTIMIZER)
    params = {n: problem(i) for i, n in enumerate(names)}
    serial = {n: problem(i) for i, n in enumerate(names)}
    barrier, errors = threading.Barrier(len(names)), []

    def run(i, n):
        try:
            with gf.use_backend(backend):
                opt = getattr(gf.optim, n)(params[n], **EVERY_OPTIMIZER[n])
                barrier.wait()
                for step in range(10):
                    opt.step(grads(i, step))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append((n, exc))

    threads = [threading.Thread(target=run, args=(i, n)) for i, n in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for i, n in enumerate(names):
        opt = getattr(gf.optim, n)(serial[n], **EVERY_OPTIMIZER[n])
        for step in range(10):
            opt.step(grads(i, step))
        for a, b in zip(params[n], serial[n]):
            assert a.tobytes() == b.tobytes(), n


# ---- no leak --------------------------------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
@pytest.mark.skipif(not HAS_CORE, reason="the C++ extension is not available")
def test_rss_is_flat_over_100k_kernel_calls():
    """10^5 calls of the C++ kernels of a mix of kernels on small arrays, a fifth of them refused (a wrong
    dtype, a wrong shape): after a warm-up, the resident memory grows by less than 4 MiB (a leak of one 64-byte
    object per call would be 6 MiB; of a small array per call, far more)."""
    rng = np.random.default_rng(0)
    p, g, m, v = (rng.standard_normal(64).astype(np.float32) for _ in range(4))
    v = np.abs(v)
    x = rng.standard_normal((8, 16)).astype(np.float32)
    y, dx = np.empty_like(x), np.empty_like(x)
    mask = np.empty(gf.ops.dropout_mask_bytes(x.size), np.uint8)
    wrong_dtype, wrong_shape = g.astype(np.float64), np.empty(3, np.float32)
    ops = gf.ops

    def refused(fn):
        try:
            fn()
        except (TypeError, ValueError):
            return
        raise AssertionError("the call should have been refused")

    calls = [
        lambda: ops.adam([p], [g], [m], [v], step=3, lr=1e-6),
        lambda: ops.sgd([p], [g], lr=1e-6),
        lambda: ops.grad_norm([g, x]),
        lambda: ops.clip_grad_norm([g], max_norm=1e9),
        lambda: ops.dropout_forward(x, y, mask, p=0.5, seed=1, counter=2),
        lambda: ops.activation_forward(x, y, activation="gelu"),
        lambda: ops.softmax_forward(x, y),
        lambda: refused(lambda: ops.adam([p], [wrong_dtype], [m], [v], step=1)),
        lambda: refused(lambda: ops.activation_backward(x, wrong_shape, activation="relu", x=x)),
        lambda: ops.batchnorm_forward(
            x, None, None, None, None, dx, np.empty(16, np.float32), np.empty(16, np.float32)
        ),
    ]
    total = 100_000

    def run(count):
        for i in range(count):
            calls[i % len(calls)]()

    run(10_000)  # warm-up: caches, interned objects, the allocator's pools
    before = rss_bytes()
    run(total)
    growth = rss_bytes() - before
    assert growth < 4 << 20, f"RSS grew by {growth / 2**20:.1f} MiB over {total} calls"
