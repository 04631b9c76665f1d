"""The benchmark harness shared by the suites (bench optim, and later bench layers / train).

Rules (DESIGN.md): every implementation of one comparison runs in ONE process, INTERLEAVED (each
repeat runs each implementation once, in a rotating order), after warm-up calls; a cell reports the
MEDIAN of its repeats (min and IQR too). Between two timed samples the harness sleeps a little, so
that one OpenMP runtime's spinning threads (torch ships its own libgomp) do not steal the cores from
the next implementation. Timings are never asserted anywhere: the machines are shared and noisy.

A "sample" is `number` back-to-back calls of one implementation divided by `number`; `number` is
chosen from the warm-up so that a sample lasts at least `min_sample_s` (1 for slow calls). This
keeps the timer and wake-up noise of millisecond-sized steps out of the medians.
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

import gradfuse as gf


# ---- timing ---------------------------------------------------------------------------------------------
@dataclass
class Timing:
    """Seconds per call of one implementation: one entry per repeat."""

    samples: list[float]
    number: int  # calls per sample

    def _q(self, q: float) -> float:
        return float(np.percentile(self.samples, q))

    @property
    def median(self) -> float:
        return float(np.median(self.samples))

    @property
    def min(self) -> float:
        return float(np.min(self.samples))

    @property
    def q1(self) -> float:
        return self._q(25)

    @property
    def q3(self) -> float:
        return self._q(75)

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    def as_ms(self) -> dict:
        return {
            "ms": self.median * 1e3,
            "ms_min": self.min * 1e3,
            "ms_q1": self.q1 * 1e3,
            "ms_q3": self.q3 * 1e3,
            "ms_iqr": self.iqr * 1e3,
            "samples_ms": [s * 1e3 for s in self.samples],
            "calls_per_sample": self.number,
        }


@dataclass
class Measurement:
    timings: dict[str, Timing] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # implementation -> why it has no timing


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def measure_interleaved(
    impls: dict[str, Callable[[], object]],
    *,
    repeats: int,
    warmup: int,
    min_sample_s: float = 0.0,
    sleep_s: float = 0.002,
    max_number: int = 10_000,
    required: tuple[str, ...] = (),
    warmup_budget_s: float = 1.0,
) -> Measurement:
    """Time each callable (one step each call) interleaved with the others.

    warmup calls of each implementation come first (at least two, but no more once they took
    warmup_budget_s; the last one sizes `number`); then `repeats`
    rounds, round r running the implementations in the order rotated by r. An implementation that
    raises is dropped and its error recorded, unless it is in `required` (the error propagates).

    A callable with a `timed(number) -> seconds` method (a peer in another process, see _peer.py)
    times itself: its sample is what timed() reports, so the round trip to the other process is
    not counted.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    result = Measurement()
    live: dict[str, Callable[[], object]] = {}
    numbers: dict[str, int] = {}
    for name, fn in impls.items():
        try:
            last = spent = 0.0
            for i in range(max(1, warmup)):
                if i >= 2 and spent > warmup_budget_s:  # a slow step is warm after two calls
                    break
                time.sleep(sleep_s)
                last = _run_timed(fn, 1)
                spent += last
        except Exception as exc:  # noqa: BLE001 - a peer that cannot run is a skipped cell
            if name in required:
                raise
            result.errors[name] = _describe(exc)
            continue
        live[name] = fn
        numbers[name] = max(1, min(max_number, math.ceil(min_sample_s / max(last, 1e-9)))) if min_sample_s > 0 else 1
    samples: dict[str, list[float]] = {name: [] for name in live}
    names = list(live)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # no collection pauses inside a sample (the caller collects between groups)
    try:
        for r in range(repeats):
            k = r % len(names) if names else 0
            for name in names[k:] + names[:k]:
                if name not in live:
                    continue
                fn, number = live[name], numbers[name]
                time.sleep(sleep_s)
                try:
                    dt = _run_timed(fn, number)
                except Exception as exc:  # noqa: BLE001
                    if name in required:
                        raise
                    result.errors[name] = _describe(exc)
                    del live[name]
                    continue
                samples[name].append(dt / number)
    finally:
        if gc_was_enabled:
            gc.enable()
    for name in live:
        result.timings[name] = Timing(samples[name], numbers[name])
    return result


def _run_timed(fn, number: int) -> float:
    """Seconds for `number` back-to-back calls of fn."""
    timed = getattr(fn, "timed", None)
    if timed is not None:
        return timed(number)
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return time.perf_counter() - t0


# ---- peers and threads -----------------------------------------------------------------------------------
def import_torch(disabled: bool = False):
    """(torch module or None, why it is absent or None). torch is optional: never an error."""
    if disabled:
        return None, "disabled (--no-torch)"
    try:
        import torch
    except ImportError as exc:
        return None, f"not importable ({_describe(exc)})"
    except Exception as exc:  # noqa: BLE001 - a broken install is a missing peer, not a crash
        return None, f"import failed ({_describe(exc)})"
    return torch, None


def set_threads(n: int | None, torch=None) -> None:
    """Use n threads in gradfuse and torch (None: leave both as they are)."""
    if n is None:
        return
    gf.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)


# ---- machine description ------------------------------------------------------------------------------
def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _meminfo_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def cpu_busy_fraction(interval_s: float = 0.3) -> float | None:
    """The fraction of all CPUs busy (not idle / iowait) over interval_s while this process sleeps:
    how much other work competes for the machine right now. None where /proc/stat is missing."""

    def read():
        with open("/proc/stat", encoding="ascii") as f:
            values = [int(x) for x in f.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values[:8]), idle  # user..steal; guest time is already inside user

    try:
        total0, idle0 = read()
        time.sleep(interval_s)
        total1, idle1 = read()
    except (OSError, ValueError, IndexError):
        return None
    total = total1 - total0
    return None if total <= 0 else max(0.0, min(1.0, 1.0 - (idle1 - idle0) / total))


CACHE_DIR = "/sys/devices/system/cpu/cpu0/cache"
ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
)


def _parse_size(text: str) -> int:
    """'48K' -> 49152 (sysfs cache sizes)."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    text = text.strip()
    return int(text[:-1]) * units[text[-1]] if text and text[-1] in units else int(text)


def _count_cpus(cpu_list: str) -> int:
    """'0-1,4' -> 3 (sysfs shared_cpu_list)."""
    n = 0
    for part in cpu_list.strip().split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


def cpu_caches(cache_dir: str = CACHE_DIR) -> list[dict]:
    """cpu0's caches from sysfs: level, type, size per instance, the cpus sharing one instance, and
    the total over the machine (instances = cpus / sharing cpus). [] where sysfs does not say."""
    caches = []
    try:
        entries = sorted(e for e in os.listdir(cache_dir) if e.startswith("index"))
    except OSError:
        return caches
    cpus = os.cpu_count() or 1
    for entry in entries:

        def read(name):
            with open(os.path.join(cache_dir, entry, name), encoding="ascii") as f:
                return f.read().strip()

        try:
            size = _parse_size(read("size"))
            sharing = _count_cpus(read("shared_cpu_list"))
            caches.append(
                {
                    "level": int(read("level")),
                    "type": read("type"),
                    "bytes": size,
                    "shared_by_cpus": sharing,
                    "total_bytes": size * max(1, cpus // max(1, sharing)),
                }
            )
        except (OSError, ValueError, IndexError, KeyError):
            continue
    return caches


def cpu_flags() -> list[str]:
    """The vector ISA extensions /proc/cpuinfo lists (of ISA_FLAGS)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [flag for flag in ISA_FLAGS if flag in have]
    except OSError:
        pass
    return []


def machine_info(torch=None, torch_missing: str | None = None) -> dict:
    info = {
        "gradfuse": gf.config(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "mem_total_gib": _meminfo_gib(),
        "caches": cpu_caches(),
        "cpu_flags": cpu_flags(),
        "numpy": np.__version__,
        "torch": torch.__version__ if torch is not None else None,
        "torch_missing": torch_missing,
        "threads": {"gradfuse": gf.get_num_threads(), "torch": torch.get_num_threads() if torch is not None else None},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        info["loadavg"] = list(os.getloadavg())
    except OSError:
        info["loadavg"] = None
    info["cpu_busy_at_start"] = cpu_busy_fraction()
    return info


# ---- output ----------------------------------------------------------------------------------------------
def format_table(headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    """A plain-text table; columns in `right` are right-aligned (default: all but the first two)."""
    right = set(range(2, len(headers))) if right is None else right
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


def run_suite(name: str, args, run: Callable, report: Callable, counts=("threads",)) -> int:
    """A suite's command: refuse counts below 1 (exit 2), run it, print its report, and write
    DIR/<name>.json with --out DIR."""
    bad = [f"--{key}" for key in counts if getattr(args, key, None) is not None and getattr(args, key) < 1]
    if bad:
        print(f"bench {name}: {' and '.join(bad)} must be >= 1", file=sys.stderr)
        return 2
    result = run(args)
    print(report(result))
    if args.out:
        path = os.path.join(args.out, f"{name}.json")
        write_json(path, result)
        print(f"wrote {path}")
    return 0


def write_json(path: str, obj) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, allow_nan=False, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


class Progress:
    """tqdm on a terminal when it is installed, a one-line counter on a terminal without it, and
    nothing when stderr is not a terminal."""

    def __init__(self, total: int, desc: str):
        self._bar = None
        self._tty = sys.stderr.isatty()
        self._total, self._done, self._desc = total, 0, desc
        if self._tty:
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self._bar = tqdm(total=total, desc=desc, leave=False, file=sys.stderr)

    def begin(self, label: str) -> None:
        """A new unit of work starts (the previous one, if any, is done)."""
        if self._bar is not None:
            self._bar.update(1 if self._done else 0)
            self._bar.set_postfix_str(label)
        elif self._tty:
            sys.stderr.write(f"\r{self._desc}: {self._done + 1}/{self._total} {label[:60]:<60}")
            sys.stderr.flush()
        self._done += 1

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._tty:
            sys.stderr.write("\r" + " " * 90 + "\r")
            sys.stderr.flush()
