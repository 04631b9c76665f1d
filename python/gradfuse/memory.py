"""Memory reuse: gradfuse's caching allocator for NumPy arrays.

A layer returns fresh arrays on every call (its output, dropout's mask, the input gradient). A large
fresh array is a new memory mapping, and touching it the first time page-faults: on 64 MB that
costs about as much as the kernel that fills it. So while a gradfuse layer runs (the forward and
backward of every gf.nn Module, custom ones included, and fit / evaluate / predict), NumPy allocates
array data through gradfuse's caching allocator (a NEP 49 handler, C++): blocks of 256 KiB and more
are kept mapped when their array is freed and handed to the next array of the same size class.

Nothing changes for the arrays themselves: an output you keep stays yours (a block is reused only
once its array is gone), it frees correctly wherever and whenever it is freed, and NumPy's own
allocator stays in charge everywhere outside gradfuse's calls (`with gf.memory.caching():` extends
it to a block of your own code).

    GRADFUSE_ALLOC=system          never use it (the default in AddressSanitizer builds, so that a use
                                   after free stays visible to ASan); =caching forces it on there
    GRADFUSE_ALLOC_LIMIT=512M      the most cached (freed, still mapped) bytes; default 1G
    gf.set_allocator("system" | "caching", limit=None);  gf.get_allocator()
    gf.release_memory() -> bytes   unmap every cached block now
    gf.memory_stats() -> dict      cached / live bytes, hits, misses, ...

Cached blocks are also unmapped once they sit unused through a whole cycle of Python's full
(generation 2) garbage collections, and the oldest first whenever the limit would be passed.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import re
import warnings

from ._ext import _core

DEFAULT_LIMIT = 1 << 30
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

_active = False
_limit = DEFAULT_LIMIT  # the cap while caching (the C++ side holds 0 while switched off)
_note = ""  # why the allocator is what it is (for gf.config())


def parse_size(text) -> int:
    """Bytes from an int or a string like "1073741824", "512M", "2G", "1.5GiB"."""
    if isinstance(text, int) and not isinstance(text, bool):
        size = text
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
        if not match:
            raise ValueError(f"not a size: {text!r} (bytes, or a number with K, M, G or T)")
        size = int(float(match[1]) * _UNITS[match[2].upper()])
    if size < 0:
        raise ValueError(f"a size must be >= 0, got {text!r}")
    return size


def set_allocator(name: str, limit=None) -> None:
    """Use the caching allocator inside gradfuse's calls ("caching") or NumPy's own ("system": the
    cache is given back, and blocks of cached arrays still alive are unmapped when freed). limit:
    the most cached bytes (an int or a string like "512M")."""
    global _limit, _note
    if name not in ("caching", "system"):
        raise ValueError(f"set_allocator: name must be 'caching' or 'system', got {name!r}")
    if limit is not None:
        _limit = parse_size(limit)
    if _core is None and name == "caching":
        raise RuntimeError("set_allocator: the C++ extension is not loaded, so only 'system' is available")
    _switch(name == "caching")
    _note = "set_allocator"


def _switch(on: bool) -> None:
    global _active
    _active = on and _core is not None
    if _core is not None:
        _core._alloc_set_limit(_limit if _active else 0)  # 0: nothing is kept, what is cached goes now


def get_allocator() -> str:
    """'caching' while gradfuse's calls allocate through the caching allocator, else 'system'."""
    return "caching" if _active else "system"


def release_memory() -> int:
    """Unmap every cached block now (live arrays are untouched); returns the bytes given back."""
    return 0 if _core is None else int(_core._alloc_release(False))


def memory_stats() -> dict:
    """The caching allocator's counters: cached_bytes / cached_blocks (freed, kept mapped),
    live_bytes / live_blocks (large blocks in use), limit_bytes (0 while switched off), hits / misses (large requests
    served from the cache / by a new mapping), released_bytes (unmapped in total), large_min_bytes
    (smaller requests go to posix_memalign), alignment; and allocator ("caching" / "system")."""
    stats = {} if _core is None else dict(_core._alloc_stats())
    stats["allocator"] = get_allocator()
    return stats


def describe() -> str:
    """For gf.config(): what allocates array data inside gradfuse's calls, and why."""
    if _active:
        return f"caching (gradfuse, limit {_limit / 2**20:g} MiB{', ' + _note if _note else ''})"
    return f"system (numpy{', ' + _note if _note else ''})"


def scoped(fn):
    """fn, run with the caching allocator as NumPy's current one (when it is switched on)."""
    if getattr(fn, "__gf_scoped__", False):
        return fn

    @functools.wraps(fn)
    def run(*args, **kwargs):
        if not _active:
            return fn(*args, **kwargs)
        previous = _core._alloc_enter()
        if previous is None:  # already current: an outer gradfuse call set it
            return fn(*args, **kwargs)
        try:
            return fn(*args, **kwargs)
        finally:
            _core._alloc_exit(previous)

    run.__gf_scoped__ = True
    return run


@contextlib.contextmanager
def caching():
    """The caching allocator for the NumPy arrays allocated in this block (this thread / context),
    as inside gradfuse's own calls. Nothing happens when it is switched off."""
    previous = _core._alloc_enter() if _active else None
    try:
        yield
    finally:
        if previous is not None:
            _core._alloc_exit(previous)


@contextlib.contextmanager
def _switched(active: bool):
    """The allocator on or off for a while, keeping the cache (benchmarks compare both in one run)."""
    global _active
    saved, _active = _active, active and _core is not None
    try:
        yield
    finally:
        _active = saved


def _after_gc(phase, info) -> None:
    # After a full collection: unmap the blocks no array has used since the previous one.
    if phase == "stop" and info.get("generation") == 2:
        _core._alloc_release(True)


def _configure() -> None:
    global _limit, _note
    if _core is None:
        _note = "the C++ extension is not loaded"
        return
    requested = os.environ.get("GRADFUSE_ALLOC", "").strip().lower()
    if requested not in ("", "caching", "system"):
        warnings.warn(
            f"gradfuse: GRADFUSE_ALLOC={requested!r} is not 'caching' or 'system'; using the default",
            RuntimeWarning,
            stacklevel=3,
        )
        requested = ""
    limit = os.environ.get("GRADFUSE_ALLOC_LIMIT", "").strip()
    try:
        _limit = parse_size(limit) if limit else DEFAULT_LIMIT
    except ValueError as exc:
        warnings.warn(f"gradfuse: GRADFUSE_ALLOC_LIMIT: {exc}; using 1G", RuntimeWarning, stacklevel=3)
    if requested:
        _note = f"GRADFUSE_ALLOC={requested}"
        _switch(requested == "caching")
    elif _core._alloc_sanitized():  # let ASan see every freed block: no cache unless asked for
        _note = "AddressSanitizer build"
        _switch(False)
    else:
        _switch(True)
    gc.callbacks.append(_after_gc)


_configure()
