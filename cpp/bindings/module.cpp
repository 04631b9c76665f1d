// module.cpp: gradfuse._core. Build information, ISA selection, threads; each kernel family
// registers its functions from its own bindings file.
#include <dlfcn.h>
#include <omp.h>
#include <pybind11/pybind11.h>

#include <Eigen/Core>
#include <string>

#include "gradfuse/blas.hpp"
#include "gradfuse/kernels.hpp"

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
  const gf::Blas& blas = gf::current_blas();  // one snapshot: the name and description agree
  const std::string gemm = blas.use ? "OpenBLAS (" + blas.description + ")" : "Eigen " + eigen;
  return py::dict("version"_a = GF_VERSION, "isas"_a = isas, "cpu_isas"_a = cpu, "compiler"_a = "GCC " __VERSION__,
                  "openmp"_a = openmp_runtime(), "eigen"_a = eigen, "gemm"_a = gemm, "blas"_a = gf::blas_description(),
                  "cxx_standard"_a = __cplusplus);
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
  m.def("_get_gemm", &gf::gemm_name, "The GEMM backend in use: openblas or eigen.");
  m.def(
      "_set_gemm",
      [](const std::string& name) {
        try {
          gf::select_gemm(name);
        } catch (const std::invalid_argument& e) {
          throw py::value_error(e.what());
        }
      },
      "name"_a, "Use openblas (if loaded) or eigen for GEMMs; for tests and benchmarks.");
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
