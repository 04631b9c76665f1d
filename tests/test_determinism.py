"""Determinism of every gf.ops kernel and of a whole training run, in fresh processes:

- dtypes: float32, float64, and bfloat16 for the kernels whose rows take it;
- thread counts: 1, 2, 3 and 4 threads (OMP_NUM_THREADS=4, then gf.set_num_threads; more threads than
  cores is fine) give bitwise the same outputs;
- runs: two fresh processes give bitwise the same outputs and the same checkpoint bytes;
- ISA paths (GRADFUSE_CPU=scalar / avx2 / avx512, those this CPU has): bitwise where the kernel's
  contract promises it, else within the contract's tolerance, measured in ulps of the output's
  largest element (cpp/include/gradfuse/*.hpp):

| kernels | across ISA paths | why |
|---|---|---|
| optimizers, all_finite | bitwise | element-wise IEEE, same order, no fma |
| grad_norm, clip_grad_norm(_per_tensor), clip_grad_value | bitwise | fixed 16 double lanes on every path |
| dropout_forward/backward, dropout_mask_bytes, philox | bitwise | counter-based RNG, one multiply |
| mse_loss / sum_of_squares_loss gradient, penalty grads | bitwise | element-wise, no fma |
| activation_forward/backward (tanh, sigmoid, gelu...) | 16 ulp f32, 4 ulp f64 | Eigen polynomials use fma where it is |
| batchnorm_forward/backward | 8 ulp f32, 128 ulp f64 | double sums in lane order per ISA |
| matmul, dense_forward/backward | 8 ulp | GEMM kernel and epilogue per ISA |
| softmax, log_softmax, the losses' values and grads | 8 ulp f32, 64 ulp f64 | exp/log per ISA, lane count of sums |
| a whole fit() (Dense+BatchNorm+Dropout+Adam) | 1e-4 of each parameter's max | the tolerances above, over 2 epochs |

(ulps of the output array's largest element, in the problem's dtype; see ULPS and the measured
worst cases next to it.)

The per-kernel files (test_optim_kernels.py, test_batchnorm.py, test_dropout.py, test_clip.py,
test_loss.py, test_activation.py, test_dense.py) check 1 vs 2 threads in-process kernel by kernel;
this file is the one consolidated check over every kernel (test_every_kernel_has_a_case keeps it so)
and the only one of a whole training run.
"""

from __future__ import annotations

import functools
import io
import os
import subprocess
import sys

import numpy as np
import pytest

import gradfuse as gf
import kernel_cases as kc
from conftest import CPU_ISAS, HAS_CORE

pytestmark = pytest.mark.skipif(not HAS_CORE, reason="the C++ extension is not available")

N = 100_003  # > 2 * the kernels' 16384-element grain: every thread count splits the arrays
DTYPES = (np.float32, np.float64)
BF16 = kc.BF16.type  # the kernels whose rows take bfloat16 run in it too (stored as their uint16 bits)

# Across ISA paths: the largest difference, in ulps (of the problem's dtype) of the output's largest
# element; per dtype. A float64 kernel's statistics and sums are double sums in a per-ISA lane order,
# so they agree to the last bits of double, tens of ulps after cancellation. Measured worst, scalar /
# avx2 against avx512 (2 threads, float32 | float64): activation 9.2 / 0.5 | 0 / 0 (gelu_tanh backward
# on the scalar path), batchnorm 0 / 0 | 48 / 14 (dweight, planes layout), dense 2 / 1 | 0 / 0,
# loss 1.5 / 1.5 | 23 / 7.5 (softmax_backward: y (dy - sum dy y) cancels).
ULPS = {
    "exact": {np.float32: 0, np.float64: 0, BF16: 0},
    # bf16: a float32 result a few ulps apart can round to the neighbouring bf16
    "activation": {np.float32: 16, np.float64: 4, BF16: 1},
    "batchnorm": {np.float32: 8, np.float64: 128, BF16: 1},
    "dense": {np.float32: 8, np.float64: 8, BF16: 1},
    "loss": {np.float32: 8, np.float64: 64, BF16: 1},
}
TRAIN_RTOL = 1e-4  # a 2-epoch fit: those rounding differences, grown by training


# ---- every example of every kernel, scaled up ------------------------------------------------------------------


def _rank_variants(row, ex):
    """The example, and where its dims have a non-empty "..." the same call with "..." = () (a batch
    norm's 2-D (N, C) layout), when no array becomes 0-d and the largest stays 2-D at least."""
    out = [ex]
    if ex.dims.get("..."):
        variant = gf.table.Example(ex.id + "-rank", ex.scalars, dict(ex.dims, **{"...": ()}))
        s = kc.scalars_of(row, variant)
        try:
            shapes = kc.shapes_of(row, s, dict(variant.dims), present=[a.name for a in kc.used_arrays(row, s)])
        except ValueError:
            return out
        if (
            min(len(sh) for sh in shapes.values() if not isinstance(sh, list)) >= 1
            and max(len(sh) for sh in shapes.values() if not isinstance(sh, list)) >= 2
        ):
            out.append(variant)
    return out


def kernel_calls(name: str, dtype) -> list:
    """[{argument: value}]: the calls of kernel `name` this file checks: every example of its row
    (and its rank variant), every dimension scaled so that the largest array has about N elements
    (list arguments: [(N,), (17,)]); fresh arrays of the table's valid values, fixed seeds."""
    return [kc.copy_call(values) for values in _calls(name, np.dtype(dtype).type)]


@functools.lru_cache(maxsize=None)
def _calls(name: str, dtype) -> tuple:
    row = gf.table.KERNELS[name]
    calls = []
    for i, ex in enumerate(v for e in kc.examples(row) for v in _rank_variants(row, e)):
        calls.append(kc.build(row, ex, dtype, salt=7 * i + np.dtype(dtype).itemsize, **kc.scaled(row, ex, N)))
    return tuple(calls)


# The ISA tolerance class of each kernel family (see the table above); test-only knowledge, per family.
FAMILY_CLASS = {
    "optim": "exact",
    "clip": "exact",
    "dropout": "exact",
    "activation": "activation",
    "batchnorm": "batchnorm",
    "dense": "dense",
    "loss": "loss",
}
# OVERRIDE (test-only: a tolerance class): these kernels' gradients are element-wise, hence bitwise
# on every path; only their returned value (a double sum in per-ISA lanes) takes the loss tolerance.
ELEMENTWISE_GRADIENTS = {"mse_loss", "sum_of_squares_loss", "penalty"}


def family(name: str, output: str) -> str:
    """The ISA tolerance class of one output of a kernel (see the table above)."""
    if name in ELEMENTWISE_GRADIENTS:
        return "loss" if output.startswith("ret") else "exact"
    return FAMILY_CLASS[gf.table.KERNELS[name].family]


def _arrays(obj):
    if obj is None:
        return []
    if isinstance(obj, np.ndarray):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [a for o in obj for a in _arrays(o)]
    return [np.asarray(obj)]


def run_every_kernel(dtype) -> dict:
    """{'name#call#j': array}: every argument array after the call (outputs updated in place, and the
    inputs, which must not change) and the return value, of every call of every kernel."""
    out = {}
    for name in gf.ops.__all__:
        if dtype is BF16 and not gf.table.KERNELS[name].bf16:
            continue
        for c, values in enumerate(kernel_calls(name, dtype)):
            result = getattr(gf.ops, name)(**values)
            for j, a in enumerate(kc.arrays_in(values)):
                out[f"{name}#{c}#{j}"] = _storable(a)
            for j, a in enumerate(_arrays(result)):
                out[f"{name}#{c}#ret{j}"] = _storable(a)
    return out


def _storable(a: np.ndarray) -> np.ndarray:
    """A copy that np.savez stores without pickling: bfloat16 as its uint16 bits."""
    return a.view(np.uint16).copy() if a.dtype == kc.BF16 else a.copy()


def train_digits():
    """A short fit: Standardize, Dense+BatchNorm+ReLU+Dropout, Dense; Adam; 2 epochs of digits. (No
    bias before BatchNorm: its gradient is zero but for rounding, which Adam would amplify into noise.)
    Returns the parameters, and the bytes of a checkpoint of model + optimizer."""
    x_train, y_train, *_ = gf.data.load_digits_split(0)
    nn = gf.nn
    model = nn.Sequential(
        [
            nn.Standardize().adapt(x_train),
            nn.Dense(64, 64, init="he_normal", bias=False, seed=1),
            nn.BatchNorm(64),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Dense(64, 10, seed=2),
        ],
        seed=3,
    )
    opt = gf.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    gf.train.fit(model, "cross_entropy", opt, x_train, y_train, epochs=2, batch_size=64, seed=4, verbose=0)
    return [p.data.copy() for p in model.parameters()], {"model": model.state_dict(), "optimizer": opt.state_dict()}


def worker(path: str, thread_counts: list[int]) -> None:
    """Run in a fresh process: every kernel in both dtypes and a short training run, once per thread
    count, saved into one .npz (keys prefixed 't<threads>/')."""
    import tempfile

    results = {}
    for n in thread_counts:
        gf.set_num_threads(n)
        assert gf.get_num_threads() == n, (n, gf.get_num_threads())
        for dtype in (*DTYPES, BF16):
            for key, a in run_every_kernel(dtype).items():
                results[f"t{n}/{np.dtype(dtype).name}/{key}"] = a
        params, state = train_digits()
        for j, p in enumerate(params):
            results[f"t{n}/train/param{j}"] = p
        with tempfile.TemporaryDirectory() as folder:
            ckpt = os.path.join(folder, "fit.gfc")
            gf.save(state, ckpt)
            with open(ckpt, "rb") as f:
                results[f"t{n}/train/checkpoint"] = np.frombuffer(f.read(), np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **results)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def start_worker(tmp_path, label: str, thread_counts, **env):
    """A fresh process running worker(); returns (process, path of its results)."""
    path = tmp_path / f"{label}.npz"
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    environ = dict(os.environ, **env)
    environ["PYTHONPATH"] = os.pathsep.join([tests_dir, *sys.path])
    code = f"import test_determinism as t; t.worker({str(path)!r}, {list(thread_counts)!r})"
    with open(tmp_path / f"{label}.stderr", "w") as err:  # a file: no pipe to fill while others run
        proc = subprocess.Popen([sys.executable, "-c", code], env=environ, stdout=subprocess.DEVNULL, stderr=err)
    return proc, path


def finish_worker(proc, path) -> dict:
    proc.wait(timeout=600)
    assert proc.returncode == 0, path.with_suffix(".stderr").read_text()[-4000:]
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


# ---- comparisons ------------------------------------------------------------------------------------------


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def ulps_of_max(a: np.ndarray, b: np.ndarray, dtype) -> float:
    """max |a - b| in units of the last place, in dtype, of b's largest element (bfloat16: stored as
    its bits; a bf16 ulp is 2^-7 of the power of two below)."""
    if dtype is BF16 and a.dtype in (np.uint16, np.float32):  # bf16 bits, or a float32 "wide" output
        a, b = (x.view(kc.BF16).astype(np.float32) if x.dtype == np.uint16 else x for x in (a, b))
        top = float(np.abs(b).max()) if b.size else 0.0
        spacing = 2.0 ** (np.floor(np.log2(top)) - 7) if top > 0 and np.isfinite(top) else 1.0
        return float(np.abs(a.astype(np.float64) - b).max() / spacing) if a.size else 0.0
    if a.dtype.kind != "f":
        return 0.0 if np.array_equal(a, b) else np.inf
    if a.size == 0:
        return 0.0
    top = np.abs(b).max()
    return float(np.abs(a.astype(np.float64) - b).max() / np.spacing(dtype(top)))


def split_key(key: str):
    prefix, dtype, rest = key.split("/", 2)
    return prefix, dtype, rest


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The fresh processes, each computing everything once per thread count."""
    tmp = tmp_path_factory.mktemp("determinism")
    # all at once (their results do not depend on the load); the best path's process is also the
    # second run of the threads process's code
    started = {"threads": start_worker(tmp, "threads", [1, 2, 3, 4], OMP_NUM_THREADS="4", GRADFUSE_CPU=CPU_ISAS[-1])}
    for isa in CPU_ISAS:
        started[isa] = start_worker(tmp, isa, [2], OMP_NUM_THREADS="4", GRADFUSE_CPU=isa)
    return {label: finish_worker(*started[label]) for label in started}


def test_every_kernel_has_a_case():
    for name in gf.ops.__all__:
        assert kernel_calls(name, np.float32), name
        assert gf.table.KERNELS[name].family in FAMILY_CLASS, name


def test_the_calls_are_large_and_cover_both_dtypes_and_every_example():
    """Every example runs; the arrays are large enough that every thread count splits them."""
    for name in gf.ops.__all__:
        row = gf.table.KERNELS[name]
        calls = kernel_calls(name, np.float64)
        assert len(calls) >= len(kc.examples(row))
        largest = max((a.size for values in calls for a in kc.arrays_in(values)), default=0)
        assert largest >= N * 0.9 or not row.arrays, (name, largest)


SUBJECTS = [*gf.ops.__all__, "train"]  # every kernel, and the training run
OTHER_ISAS = [i for i in CPU_ISAS if i != (CPU_ISAS or [None])[-1]]


def subject_of(key: str) -> str:
    """The kernel (or "train") of a result key 't<threads>/<dtype or train>/<kernel>#<call>#<output>'."""
    _, dtype_name, rest = split_key(key)
    return "train" if dtype_name == "train" else rest.split("#")[0]


def keys_of(results: dict, prefix: str, subject: str) -> list:
    return [k for k in results if k.startswith(prefix) and subject_of(k) == subject]


@pytest.mark.parametrize("subject", SUBJECTS)
def test_one_to_four_threads_are_bitwise_equal(runs, subject):
    got = runs["threads"]
    keys = keys_of(got, "t1/", subject)
    assert keys
    for n in (2, 3, 4):
        differ = [k for k in keys if not same_bits(got[k], got[f"t{n}/" + k[3:]])]
        assert not differ, f"1 vs {n} threads: {differ[:10]}"


@pytest.mark.parametrize("subject", SUBJECTS)
def test_two_fresh_processes_are_bitwise_equal(runs, subject):
    """The 2-thread results of the threads process and of a second process on the same ISA path,
    checkpoint bytes of the training run included."""
    first, second = runs["threads"], runs[CPU_ISAS[-1]]
    keys = keys_of(second, "t2/", subject)
    assert keys and (subject != "train" or "t2/train/checkpoint" in keys)
    differ = [k for k in keys if not same_bits(first[k], second[k])]
    assert not differ, differ[:10]


@pytest.mark.parametrize("name", gf.ops.__all__)
@pytest.mark.parametrize("isa", OTHER_ISAS)
def test_isa_paths_agree_as_promised(runs, isa, name):
    best, other = runs[CPU_ISAS[-1]], runs[isa]
    worst, failures = {}, []
    for key in keys_of(best, "t2/", name):
        want = best[key]
        _, dtype_name, rest = split_key(key)
        dtype = BF16 if dtype_name == "bfloat16" else np.dtype(dtype_name).type
        _, _, output = rest.split("#")
        fam = family(name, output)
        allowed = ULPS[fam][dtype]
        got = other[key]
        if allowed == 0:
            if not same_bits(got, want):
                failures.append(f"{key}: not bitwise equal")
            continue
        nan = (lambda x: np.isnan(x.view(kc.BF16))) if dtype is BF16 and got.dtype == np.uint16 else np.isnan
        err = ulps_of_max(got, want, dtype) if np.array_equal(nan(got), nan(want)) else np.inf
        worst[fam, dtype_name] = max(worst.get((fam, dtype_name), 0.0), err)
        if not err <= allowed:
            failures.append(f"{key}: {err:.1f} ulps of the largest element (allowed {allowed})")
    print(f"\n{isa} vs {CPU_ISAS[-1]}: {name}: worst ulps {worst}")
    assert not failures, f"{isa} vs {CPU_ISAS[-1]}: " + "; ".join(failures)


@pytest.mark.parametrize("isa", OTHER_ISAS)
def test_training_run_across_isa_paths_is_close(runs, isa):
    """Not bitwise (GEMM, activations and batch norm differ in the last bits across paths), but a
    2-epoch training run stays within TRAIN_RTOL of each parameter's scale (measured: 2.5e-6)."""
    best, other = runs[CPU_ISAS[-1]], runs[isa]
    keys = [k for k in best if k.startswith("t2/train/param")]
    assert keys
    for key in keys:
        want, got = best[key], other[key]
        rel = np.abs(got - want).max() / np.abs(want).max()
        print(f"{isa}: {key}: max difference {rel:.2g} of the largest element")
        assert rel <= TRAIN_RTOL, key
