// module.cpp: gradfuse._core. Build information, ISA selection, threads; each kernel family
// registers its functions from its own bindings file.
#include <dlfcn.h>
#include <omp.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <Eigen/Core>
#include <string>

#include "gradfuse/blas.hpp"
#include "gradfuse/kernels.hpp"
#include "gradfuse/onednn.hpp"

namespace gf {
namespace bind {
void bind_optim(pybind11::module_& m);
void bind_batchnorm(pybind11::module_& m);
void bind_dropout(pybind11::module_& m);
void bind_activation(pybind11::module_& m);
void bind_dense(pybind11::module_& m);
void bind_loss(pybind11::module_& m);
void bind_clip(pybind11::module_& m);
void bind_allocator(pybind11::module_& m);
}  // namespace bind
}  // namespace gf

namespace py = pybind11;
using namespace pybind11::literals;

namespace {

#define GF_STR2(x) #x
#define GF_STR(x) GF_STR2(x)

std::string openmp_runtime() {
  std::string name = "OpenMP " GF_STR(_OPENMP);
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&omp_get_max_threads), &info) && info.dli_fname)
    name += " (" + std::string(info.dli_fname) + ")";
  return name;
}

py::dict build_info() {
  py::list isas;
  int n = 0;
  const char* const* names = gf::compiled_isas(&n);
  for (int i = 0; i < n; ++i) isas.append(names[i]);
  py::list cpu;
  for (int i = 0; i < n; ++i)
    if (gf::cpu_supports(names[i])) cpu.append(names[i]);
  const std::string eigen = std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) + "." +
                            std::to_string(EIGEN_MINOR_VERSION);
  const gf::Blas& blas = gf::current_blas();  // one snapshot: the names and descriptions agree
  auto describe = [&](gf::GemmLib lib) {
    if (lib == gf::GemmLib::openblas) return "OpenBLAS (" + blas.description + ")";
    if (lib == gf::GemmLib::onednn) return "oneDNN " + gf::onednn_version() + " (" + gf::onednn_isa() + ")";
    return "Eigen " + eigen;
  };
  // The bf16 path as gf.config() shows it: "onednn (avx512_core_amx)" or "fp32 fallback (openblas)".
  const std::string gemm_bf16 = blas.bf16_onednn ? "onednn (" + gf::onednn_isa() + ")"
                                                 : std::string("fp32 fallback (") + gf::gemm_lib_name(blas.f32) + ")";
  const gf::CpuFeatures& f = gf::cpu_features();
  py::dict features("avx512_bf16"_a = f.avx512_bf16, "amx_tile"_a = f.amx_tile, "amx_bf16_cpu"_a = f.amx_bf16_cpu,
                    "amx_permitted"_a = f.amx_permitted, "amx_bf16"_a = f.amx_bf16);
  return py::dict("version"_a = GF_VERSION, "isas"_a = isas, "cpu_isas"_a = cpu, "compiler"_a = "GCC " __VERSION__,
                  "openmp"_a = openmp_runtime(), "eigen"_a = eigen, "gemm"_a = describe(blas.f32),
                  "gemm_f64"_a = describe(blas.f64), "gemm_bf16"_a = gemm_bf16, "blas"_a = gf::blas_description(),
                  "onednn"_a = gf::onednn_version(), "onednn_isa"_a = gf::onednn_isa(),
                  "onednn_native_bf16"_a = gf::onednn_native_bf16(), "cpu_features"_a = features,
                  "cxx_standard"_a = __cplusplus);
}

// gradfuse._core._onednn_matmul: oneDNN's own matmul, for the benchmark's peer row and the
// determinism check in the tests. float32 or bfloat16 (ml_dtypes) A and B, float32 or bfloat16 C.
gf::GemmType gemm_type(const py::array& x, const char* name) {
  const py::dtype d = x.dtype();
  if (d.kind() == 'f' && d.itemsize() == 4) return gf::GemmType::f32;
  if (d.itemsize() == 2 && std::string(py::str(d)) == "bfloat16") return gf::GemmType::bf16;
  throw py::type_error(std::string("_onednn_matmul: ") + name + " must be float32 or bfloat16");
}

std::string onednn_probe(py::array a, py::array b, py::array c, int threads, bool accumulate) {
  if (!gf::onednn_loaded()) throw py::value_error("_onednn_matmul: oneDNN is not loaded");
  for (const py::array* x : {&a, &b, &c})
    if (x->ndim() != 2 || !(x->flags() & py::array::c_style))
      throw py::value_error("_onednn_matmul: arrays must be 2-D and C-contiguous");
  if (!c.writeable()) throw py::value_error("_onednn_matmul: c is read-only");
  gf::OnednnGemm g;
  g.a = gemm_type(a, "a"), g.b = gemm_type(b, "b"), g.c = gemm_type(c, "c");
  g.m = a.shape(0), g.k = a.shape(1), g.n = b.shape(1), g.accumulate = accumulate;
  if (b.shape(0) != g.k || c.shape(0) != g.m || c.shape(1) != g.n)
    throw py::value_error("_onednn_matmul: shapes do not agree");
  g.lda = g.k, g.ldb = g.n, g.ldc = g.n;
  const int n = threads > 0 ? threads : gf::num_threads();
  {
    py::gil_scoped_release release;
    gf::onednn_gemm_threaded(g, a.data(), b.data(), c.mutable_data(), n);
  }
  return gf::onednn_impl(g, n);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "gradfuse C++ kernels (fused SIMD + OpenMP); use them through gradfuse.ops";
  m.def("_build_info", &build_info, "What the extension was built with and what this CPU supports.");
  m.def("_get_isa", [] { return std::string(gf::isa_name(gf::selected_isa())); }, "The ISA path the kernels use now.");
  m.def(
      "_set_isa",
      [](const std::string& isa) {
        try {
          gf::select_isa(isa);
        } catch (const std::invalid_argument& e) {
          throw py::value_error(e.what());
        }
      },
      "isa"_a, "Switch the kernels to another ISA path (scalar, avx2, avx512); for tests and benchmarks.");
  m.def(
      "_load_blas",
      [](const std::string& path) {
        std::string error;
        if (!gf::load_blas(path, &error)) throw py::value_error("cannot load OpenBLAS from " + path + ": " + error);
      },
      "path"_a, "Load OpenBLAS (scipy-openblas32's library) and use it for GEMMs.");
  m.def("_get_gemm", &gf::gemm_name, "The float32 GEMM backend in use: onednn, openblas or eigen.");
  m.def(
      "_set_gemm",
      [](const std::string& name) {
        try {
          gf::select_gemm(name);
        } catch (const std::invalid_argument& e) {
          throw py::value_error(e.what());
        }
      },
      "name"_a, "Use onednn or openblas (if loaded) or eigen for float32 GEMMs; for tests and benchmarks.");
  m.def(
      "_load_onednn",
      [](const std::string& path, bool max_isa_bf16) {
        std::string error;
        if (!gf::onednn_load(path, max_isa_bf16, &error))
          throw py::value_error("cannot load oneDNN from " + path + ": " + error);
      },
      "path"_a, "max_isa_bf16"_a = false,
      "Load oneDNN (libdnnl.so.3 of the onednn-cpu-gomp wheel), once per process; max_isa_bf16 keeps it off AMX.");
  m.def("_get_gemm_bf16", &gf::gemm_bf16_name, "The bf16 GEMM path in use: onednn or fallback.");
  m.def(
      "_set_gemm_bf16",
      [](const std::string& name) {
        try {
          gf::select_gemm_bf16(name);
        } catch (const std::invalid_argument& e) {
          throw py::value_error(e.what());
        }
      },
      "name"_a, "Run bf16 GEMMs on onednn (if loaded) or on the fp32 fallback; for tests and benchmarks.");
  m.def("_onednn_matmul", &onednn_probe, "a"_a, "b"_a, "c"_a, "threads"_a = 0, "accumulate"_a = false,
        "Benchmark probe: C (+)= A B as ONE oneDNN matmul with oneDNN's own threading (threads; 0: all), "
        "no checks beyond dtypes and shapes; returns oneDNN's implementation name.");
  m.def(
      "_fma_peak",
      [](int64_t iters, int threads) {
        double flops = 0;
        double seconds;
        {
          py::gil_scoped_release release;
          seconds = GF_CALL(fma_peak, iters, threads, &flops);
        }
        return py::make_tuple(seconds, flops);
      },
      "iters"_a, "threads"_a,
      "Benchmark probe: (seconds, flops) of iters rounds of independent float32 FMAs per thread on the selected "
      "ISA path.");
  m.def("get_num_threads", &gf::num_threads, "Threads a kernel called now, from this thread, would use.");
  m.def(
      "set_num_threads",
      [](int n) {
        if (n < 0) throw py::value_error("set_num_threads: n must be >= 1, or 0 to follow OpenMP's setting");
        gf::set_num_threads(n);
      },
      "n"_a, "Cap the kernels' threads at n (0: follow OMP_NUM_THREADS / omp_set_num_threads).");
  gf::bind::bind_optim(m);
  gf::bind::bind_batchnorm(m);
  gf::bind::bind_dropout(m);
  gf::bind::bind_activation(m);
  gf::bind::bind_dense(m);
  gf::bind::bind_loss(m);
  gf::bind::bind_clip(m);
  gf::bind::bind_allocator(m);
}
