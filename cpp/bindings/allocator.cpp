// allocator.cpp: the caching allocator (gradfuse/allocator.hpp) as NumPy's data allocator, a NEP 49
// handler. NumPy keeps the current handler in a context variable, and each array keeps the handler
// that allocated it (and frees through it), so arrays from before, or from outside a scope, are
// unaffected. python/gradfuse/memory.py decides where the handler is current.
#include <pybind11/pybind11.h>
// NumPy's C API, in this file only (the handler calls); imported when the module loads.
#define NPY_NO_DEPRECATED_API NPY_2_0_API_VERSION
#include <numpy/arrayobject.h>

#include "gradfuse/allocator.hpp"

namespace py = pybind11;
using namespace pybind11::literals;

namespace {

void* h_malloc(void*, size_t bytes) { return gf::alloc::allocate(bytes); }
void* h_calloc(void*, size_t count, size_t size) { return gf::alloc::allocate_zeroed(count, size); }
void* h_realloc(void*, void* p, size_t bytes) { return gf::alloc::reallocate(p, bytes); }
void h_free(void*, void* p, size_t) { gf::alloc::deallocate(p); }  // the block knows its own size

PyDataMem_Handler handler = {"gradfuse_caching", 1, {nullptr, h_malloc, h_calloc, h_realloc, h_free}};

// The handler's capsule; one reference is held forever (arrays point at it until they are freed).
PyObject* capsule() {
  static PyObject* c = PyCapsule_New(&handler, "mem_handler", nullptr);
  if (!c) throw py::error_already_set();
  return c;
}

}  // namespace

namespace gf::bind {

void bind_allocator(py::module_& m) {
  if (PyArray_ImportNumPyAPI() < 0) throw py::error_already_set();
  m.def(
      "_alloc_enter",
      []() -> py::object {
        PyObject* current = PyDataMem_GetHandler();
        if (!current) throw py::error_already_set();
        py::object old = py::reinterpret_steal<py::object>(current);
        if (old.ptr() == capsule()) return py::none();  // already current: nothing to undo
        PyObject* previous = PyDataMem_SetHandler(capsule());
        if (!previous) throw py::error_already_set();
        return py::reinterpret_steal<py::object>(previous);
      },
      "Make the caching allocator NumPy's current one (in this context); returns the handler to put back "
      "with _alloc_exit, or None when it already was current.");
  m.def(
      "_alloc_exit",
      [](py::object previous) {
        PyObject* replaced = PyDataMem_SetHandler(previous.ptr());
        if (!replaced) throw py::error_already_set();
        Py_DECREF(replaced);
      },
      "previous"_a, "Put back the handler _alloc_enter returned.");
  m.def(
      "_alloc_handler", [] { return py::reinterpret_borrow<py::object>(capsule()); },
      "The caching allocator's NEP 49 handler (a capsule), for tests.");
  m.def(
      "_alloc_stats",
      [] {
        const gf::alloc::Stats s = gf::alloc::stats();
        return py::dict("cached_bytes"_a = s.cached_bytes, "cached_blocks"_a = s.cached_blocks,
                        "live_bytes"_a = s.live_bytes, "live_blocks"_a = s.live_blocks, "limit_bytes"_a = s.limit_bytes,
                        "hits"_a = s.hits, "misses"_a = s.misses, "released_bytes"_a = s.released_bytes,
                        "large_min_bytes"_a = gf::alloc::kLargeMin, "alignment"_a = gf::alloc::kAlign);
      },
      "The caching allocator's counters.");
  m.def("_alloc_set_limit", &gf::alloc::set_limit, "bytes"_a, "Cap the cached bytes (evicts down to it at once).");
  m.def(
      "_alloc_release", [](bool idle_only) { return gf::alloc::release(idle_only); }, "idle_only"_a = false,
      "Unmap the cached blocks (idle_only: those not reused since the previous idle release); returns the bytes.");
  m.def("_alloc_sanitized", &gf::alloc::sanitized, "Whether the extension was built with AddressSanitizer.");
  m.def("_alloc_size_class", &gf::alloc::size_class, "bytes"_a, "The capacity a large request gets.");
}

}  // namespace gf::bind
