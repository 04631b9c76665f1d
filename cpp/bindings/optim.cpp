// optim.cpp (bindings): gradfuse._core.<algorithm>(params, grads, <states>, *, <scalars>) -> bool.
//
// Thin: check every argument (arrays.hpp; scalars here), release the GIL, call the selected ISA's
// kernel. Returns False when skip_nonfinite found NaN/Inf in the gradients (nothing was written),
// True otherwise. Signatures and defaults are those of the NumPy twins in
// python/gradfuse/_numpy/optim.py (a test compares them).
#include <pybind11/pybind11.h>

#include "arrays.hpp"
#include "gradfuse/kernels.hpp"
#include "gradfuse/optim.hpp"

namespace gf {
namespace bind {
namespace {

using namespace pybind11::literals;

bool run_step(Algo algo, const std::string& fn, const OptimArgs& args, std::vector<TensorArg> tensors,
              bool skip_nonfinite) {
  TensorLists lists(fn, std::move(tensors));
  if (lists.empty()) return true;
  const int threads = num_threads();
  py::gil_scoped_release release;
  if (lists.dtype() == DType::f32) return GF_CALL(optim_step<float>, algo, args, lists.view<float>(), skip_nonfinite, threads);
  return GF_CALL(optim_step<double>, algo, args, lists.view<double>(), skip_nonfinite, threads);
}

// Arguments every kernel shares: gradient scaling, maximize.
OptimArgs common(const std::string& fn, py::handle grad_scale, bool maximize) {
  OptimArgs a;
  parse_grad_scale(fn, grad_scale, a);
  a.maximize = maximize;
  return a;
}

// Adam, Adamax, NAdam, RAdam: the step and the scalars they share.
void check_adam_family(const std::string& fn, OptimArgs& a, int64_t step, double lr, double beta1, double beta2,
                       double eps, double weight_decay) {
  check_step(fn, step);
  check_nonneg(fn, "lr", lr);
  check_unit(fn, "beta1", beta1);
  check_unit(fn, "beta2", beta2);
  check_nonneg(fn, "eps", eps);
  check_nonneg(fn, "weight_decay", weight_decay);
  a.step = step, a.lr = lr, a.beta1 = beta1, a.beta2 = beta2, a.eps = eps, a.weight_decay = weight_decay;
}

}  // namespace

void bind_optim(py::module_& m) {
  m.def(
      "sgd",
      [](py::handle params, py::handle grads, py::handle momentum_buffers, int64_t step, double lr, double momentum,
         double dampening, double weight_decay, bool nesterov, bool maximize, py::handle grad_scale,
         bool skip_nonfinite) {
        const std::string fn = "sgd";
        OptimArgs a = common(fn, grad_scale, maximize);
        check_step(fn, step);
        check_nonneg(fn, "lr", lr);
        check_nonneg(fn, "momentum", momentum);
        check_finite(fn, "dampening", dampening);
        check_nonneg(fn, "weight_decay", weight_decay);
        if (nesterov && (momentum <= 0 || dampening != 0))
          raise_value(fn + ": Nesterov momentum requires a momentum and zero dampening");
        a.step = step, a.lr = lr, a.momentum = momentum, a.dampening = dampening, a.weight_decay = weight_decay;
        a.nesterov = nesterov, a.first_step = step == 1;
        return run_step(Algo::sgd, fn, a,
                        {{"params", params, true}, {"grads", grads, false},
                         {"momentum_buffers", momentum != 0 ? momentum_buffers : py::none(), true, momentum != 0}},
                        skip_nonfinite);
      },
      "params"_a, "grads"_a, "momentum_buffers"_a = py::none(), py::kw_only(), "step"_a = 1, "lr"_a = 1e-3,
      "momentum"_a = 0.0, "dampening"_a = 0.0, "weight_decay"_a = 0.0, "nesterov"_a = false, "maximize"_a = false,
      "grad_scale"_a = py::none(), "skip_nonfinite"_a = false,
      "SGD step (torch.optim.SGD). momentum_buffers are required when momentum != 0; step == 1 "
      "initialises them with the gradient, as torch does on a parameter's first step.");

  m.def(
      "adam",
      [](py::handle params, py::handle grads, py::handle exp_avgs, py::handle exp_avg_sqs, py::handle max_exp_avg_sqs,
         int64_t step, double lr, double beta1, double beta2, double eps, double weight_decay, bool amsgrad,
         bool decoupled_weight_decay, bool maximize, py::handle grad_scale, bool skip_nonfinite) {
        const std::string fn = "adam";
        OptimArgs a = common(fn, grad_scale, maximize);
        check_adam_family(fn, a, step, lr, beta1, beta2, eps, weight_decay);
        a.amsgrad = amsgrad, a.decoupled_weight_decay = decoupled_weight_decay;
        return run_step(Algo::adam, fn, a,
                        {{"params", params, true}, {"grads", grads, false}, {"exp_avgs", exp_avgs, true},
                         {"exp_avg_sqs", exp_avg_sqs, true},
                         {"max_exp_avg_sqs", amsgrad ? max_exp_avg_sqs : py::none(), true, amsgrad}},
                        skip_nonfinite);
      },
      "params"_a, "grads"_a, "exp_avgs"_a, "exp_avg_sqs"_a, "max_exp_avg_sqs"_a = py::none(), py::kw_only(), "step"_a,
      "lr"_a = 1e-3, "beta1"_a = 0.9, "beta2"_a = 0.999, "eps"_a = 1e-8, "weight_decay"_a = 0.0, "amsgrad"_a = false,
      "decoupled_weight_decay"_a = false, "maximize"_a = false, "grad_scale"_a = py::none(),
      "skip_nonfinite"_a = false,
      "Adam / AdamW (decoupled_weight_decay=True) / AMSGrad (amsgrad=True) step (torch.optim.Adam).");

  m.def(
      "adagrad",
      [](py::handle params, py::handle grads, py::handle state_sums, int64_t step, double lr, double lr_decay,
         double weight_decay, double eps, bool maximize, py::handle grad_scale, bool skip_nonfinite) {
        const std::string fn = "adagrad";
        OptimArgs a = common(fn, grad_scale, maximize);
        check_step(fn, step);
        check_nonneg(fn, "lr", lr);
        check_nonneg(fn, "lr_decay", lr_decay);
        check_nonneg(fn, "weight_decay", weight_decay);
        check_nonneg(fn, "eps", eps);
        a.step = step, a.lr = lr, a.lr_decay = lr_decay, a.weight_decay = weight_decay, a.eps = eps;
        return run_step(Algo::adagrad, fn, a,
                        {{"params", params, true}, {"grads", grads, false}, {"state_sums", state_sums, true}},
                        skip_nonfinite);
      },
      "params"_a, "grads"_a, "state_sums"_a, py::kw_only(), "step"_a, "lr"_a = 1e-2, "lr_decay"_a = 0.0,
      "weight_decay"_a = 0.0, "eps"_a = 1e-10, "maximize"_a = false, "grad_scale"_a = py::none(),
      "skip_nonfinite"_a = false, "Adagrad step (torch.optim.Adagrad).");

  m.def(
      "rmsprop",
      [](py::handle params, py::handle grads, py::handle square_avgs, py::handle grad_avgs,
         py::handle momentum_buffers, double lr, double alpha, double eps, double weight_decay, double momentum,
         bool centered, bool maximize, py::handle grad_scale, bool skip_nonfinite) {
        const std::string fn = "rmsprop";
        OptimArgs a = common(fn, grad_scale, maximize);
        check_nonneg(fn, "lr", lr);
        check_closed_unit(fn, "alpha", alpha);
        check_nonneg(fn, "eps", eps);
        check_nonneg(fn, "weight_decay", weight_decay);
        check_nonneg(fn, "momentum", momentum);
        a.lr = lr, a.alpha = alpha, a.eps = eps, a.weight_decay = weight_decay, a.momentum = momentum;
        a.centered = centered;
        const bool has_momentum = momentum > 0;
        return run_step(Algo::rmsprop, fn, a,
                        {{"params", params, true}, {"grads", grads, false}, {"square_avgs", square_avgs, true},
                         {"grad_avgs", centered ? grad_avgs : py::none(), true, centered},
                         {"momentum_buffers", has_momentum ? momentum_buffers : py::none(), true, has_momentum}},
                        skip_nonfinite);
      },
      "params"_a, "grads"_a, "square_avgs"_a, "grad_avgs"_a = py::none(), "momentum_buffers"_a = py::none(),
      py::kw_only(), "lr"_a = 1e-2, "alpha"_a = 0.99, "eps"_a = 1e-8, "weight_decay"_a = 0.0, "momentum"_a = 0.0,
      "centered"_a = false, "maximize"_a = false, "grad_scale"_a = py::none(), "skip_nonfinite"_a = false,
      "RMSprop step (torch.optim.RMSprop). grad_avgs are required when centered, momentum_buffers when "
      "momentum > 0.");

  m.def(
      "adadelta",
      [](py::handle params, py::handle grads, py::handle square_avgs, py::handle acc_deltas, double lr, double rho,
         double eps, double weight_decay, bool maximize, py::handle grad_scale, bool skip_nonfinite) {
        const std::string fn = "adadelta";
        OptimArgs a = common(fn, grad_scale, maximize);
        check_nonneg(fn, "lr", lr);
        check_closed_unit(fn, "rho", rho);
        check_nonneg(fn, "eps", eps);
        check_nonneg(fn, "weight_decay", weight_decay);
        a.lr = lr, a.rho = rho, a.eps = eps, a.weight_decay = weight_decay;
        return run_step(Algo::adadelta, fn, a,
                        {{"params", params, true}, {"grads", grads, false}, {"square_avgs", square_avgs, true},
                         {"acc_deltas", acc_deltas, true}},
                        skip_nonfinite);
      },
      "params"_a, "grads"_a, "square_avgs"_a, "acc_deltas"_a, py::kw_only(), "lr"_a = 1.0, "rho"_a = 0.9,
      "eps"_a = 1e-6, "weight_decay"_a = 0.0, "maximize"_a = false, "grad_scale"_a = py::none(),
      "skip_nonfinite"_a = false, "Adadelta step (torch.optim.Adadelta).");

  m.def(
      "adamax",
      [](py::handle params, py::handle grads, py::handle exp_avgs, py::handle exp_infs, int64_t step, double lr,
         double beta1, double beta2, double eps, double weight_decay, bool maximize, py::handle grad_scale,
         bool skip_nonfinite) {
        const std::string fn = "adamax";
        OptimArgs a = common(fn, grad_scale, maximize);
        check_adam_family(fn, a, step, lr, beta1, beta2, eps, weight_decay);
        return run_step(Algo::adamax, fn, a,
                        {{"params", params, true}, {"grads", grads, false}, {"exp_avgs", exp_avgs, true},
                         {"exp_infs", exp_infs, true}},
                        skip_nonfinite);
      },
      "params"_a, "grads"_a, "exp_avgs"_a, "exp_infs"_a, py::kw_only(), "step"_a, "lr"_a = 2e-3, "beta1"_a = 0.9,
      "beta2"_a = 0.999, "eps"_a = 1e-8, "weight_decay"_a = 0.0, "maximize"_a = false, "grad_scale"_a = py::none(),
      "skip_nonfinite"_a = false, "Adamax step (torch.optim.Adamax).");

  m.def(
      "nadam",
      [](py::handle params, py::handle grads, py::handle exp_avgs, py::handle exp_avg_sqs, int64_t step,
         double mu_product, double lr, double beta1, double beta2, double eps, double weight_decay,
         double momentum_decay, bool decoupled_weight_decay, bool maximize, py::handle grad_scale,
         bool skip_nonfinite) {
        const std::string fn = "nadam";
        OptimArgs a = common(fn, grad_scale, maximize);
        check_adam_family(fn, a, step, lr, beta1, beta2, eps, weight_decay);
        check_nonneg(fn, "momentum_decay", momentum_decay);
        check_unit(fn, "mu_product", mu_product);
        a.mu_product = mu_product, a.momentum_decay = momentum_decay;
        a.decoupled_weight_decay = decoupled_weight_decay;
        return run_step(Algo::nadam, fn, a,
                        {{"params", params, true}, {"grads", grads, false}, {"exp_avgs", exp_avgs, true},
                         {"exp_avg_sqs", exp_avg_sqs, true}},
                        skip_nonfinite);
      },
      "params"_a, "grads"_a, "exp_avgs"_a, "exp_avg_sqs"_a, py::kw_only(), "step"_a, "mu_product"_a, "lr"_a = 2e-3,
      "beta1"_a = 0.9, "beta2"_a = 0.999, "eps"_a = 1e-8, "weight_decay"_a = 0.0, "momentum_decay"_a = 4e-3,
      "decoupled_weight_decay"_a = false, "maximize"_a = false, "grad_scale"_a = py::none(),
      "skip_nonfinite"_a = false,
      "NAdam step (torch.optim.NAdam). mu_product is the product of the momentum coefficients mu_1..mu_step, "
      "this step's included (the optimizer keeps it as state).");

  m.def(
      "radam",
      [](py::handle params, py::handle grads, py::handle exp_avgs, py::handle exp_avg_sqs, int64_t step, double lr,
         double beta1, double beta2, double eps, double weight_decay, bool decoupled_weight_decay, bool maximize,
         py::handle grad_scale, bool skip_nonfinite) {
        const std::string fn = "radam";
        OptimArgs a = common(fn, grad_scale, maximize);
        check_adam_family(fn, a, step, lr, beta1, beta2, eps, weight_decay);
        a.decoupled_weight_decay = decoupled_weight_decay;
        return run_step(Algo::radam, fn, a,
                        {{"params", params, true}, {"grads", grads, false}, {"exp_avgs", exp_avgs, true},
                         {"exp_avg_sqs", exp_avg_sqs, true}},
                        skip_nonfinite);
      },
      "params"_a, "grads"_a, "exp_avgs"_a, "exp_avg_sqs"_a, py::kw_only(), "step"_a, "lr"_a = 1e-3, "beta1"_a = 0.9,
      "beta2"_a = 0.999, "eps"_a = 1e-8, "weight_decay"_a = 0.0, "decoupled_weight_decay"_a = false,
      "maximize"_a = false, "grad_scale"_a = py::none(), "skip_nonfinite"_a = false,
      "RAdam step (torch.optim.RAdam).");

  m.def(
      "rprop",
      [](py::handle params, py::handle grads, py::handle prevs, py::handle step_sizes, double etaminus,
         double etaplus, double step_size_min, double step_size_max, bool maximize, py::handle grad_scale,
         bool skip_nonfinite) {
        const std::string fn = "rprop";
        OptimArgs a = common(fn, grad_scale, maximize);
        if (!(0.0 < etaminus && etaminus < 1.0 && 1.0 < etaplus && std::isfinite(etaplus)))
          raise_value(fn + ": etas must satisfy 0 < etaminus < 1 < etaplus");
        check_nonneg(fn, "step_size_min", step_size_min);
        check_nonneg(fn, "step_size_max", step_size_max);
        a.etaminus = etaminus, a.etaplus = etaplus, a.step_size_min = step_size_min, a.step_size_max = step_size_max;
        return run_step(Algo::rprop, fn, a,
                        {{"params", params, true}, {"grads", grads, false}, {"prevs", prevs, true},
                         {"step_sizes", step_sizes, true}},
                        skip_nonfinite);
      },
      "params"_a, "grads"_a, "prevs"_a, "step_sizes"_a, py::kw_only(), "etaminus"_a = 0.5, "etaplus"_a = 1.2,
      "step_size_min"_a = 1e-6, "step_size_max"_a = 50.0, "maximize"_a = false, "grad_scale"_a = py::none(),
      "skip_nonfinite"_a = false, "Rprop step (torch.optim.Rprop).");

  m.def(
      "lion",
      [](py::handle params, py::handle grads, py::handle exp_avgs, double lr, double beta1, double beta2,
         double weight_decay, bool maximize, py::handle grad_scale, bool skip_nonfinite) {
        const std::string fn = "lion";
        OptimArgs a = common(fn, grad_scale, maximize);
        check_nonneg(fn, "lr", lr);
        check_unit(fn, "beta1", beta1);
        check_unit(fn, "beta2", beta2);
        check_nonneg(fn, "weight_decay", weight_decay);
        a.lr = lr, a.beta1 = beta1, a.beta2 = beta2, a.weight_decay = weight_decay;
        return run_step(Algo::lion, fn, a,
                        {{"params", params, true}, {"grads", grads, false}, {"exp_avgs", exp_avgs, true}},
                        skip_nonfinite);
      },
      "params"_a, "grads"_a, "exp_avgs"_a, py::kw_only(), "lr"_a = 1e-4, "beta1"_a = 0.9, "beta2"_a = 0.99,
      "weight_decay"_a = 0.0, "maximize"_a = false, "grad_scale"_a = py::none(), "skip_nonfinite"_a = false,
      "Lion step (Chen et al. 2023, 'Symbolic Discovery of Optimization Algorithms'), decoupled weight decay.");

  m.def(
      "_touch",
      [](py::handle params, py::handle grads, py::handle s0, py::handle s1, py::handle s2) {
        return run_step(Algo::touch, "_touch", OptimArgs{},
                        {{"params", params, true}, {"grads", grads, false}, {"s0", s0, true, false},
                         {"s1", s1, true, false}, {"s2", s2, true, false}},
                        false);
      },
      "params"_a, "grads"_a, "s0"_a = py::none(), "s1"_a = py::none(), "s2"_a = py::none(),
      "Benchmark ceiling: the memory traffic of an optimizer step with these arrays (p += 0*g, s += 0*g), "
      "no math. Not a training kernel.");

  m.def(
      "_check_tensor_lists",
      [](const std::string& fn, py::list specs) {
        std::vector<std::string> names;
        names.reserve(specs.size());  // TensorArg keeps a pointer into each name
        std::vector<TensorArg> args;
        for (py::handle spec : specs) {
          auto t = spec.cast<py::tuple>();
          names.push_back(t[0].cast<std::string>());
          args.push_back({names.back().c_str(), t[1], t[2].cast<bool>(), t[3].cast<bool>()});
        }
        TensorLists lists(fn, std::move(args));
      },
      "fn"_a, "specs"_a,
      "Run the array checks of a multi-tensor kernel without calling it. specs: (name, array or list, "
      "written, required) tuples, the parameters first.");

  m.def(
      "all_finite",
      [](py::handle arrays, py::handle grad_scale) {
        const std::string fn = "all_finite";
        OptimArgs a = common(fn, grad_scale, false);
        TensorLists lists(fn, {{"arrays", arrays, false}});
        if (lists.empty()) return true;
        const int threads = num_threads();
        py::gil_scoped_release release;
        if (lists.dtype() == DType::f32) return GF_CALL(all_finite<float>, lists.view<float>(), a, threads);
        return GF_CALL(all_finite<double>, lists.view<double>(), a, threads);
      },
      "arrays"_a, "grad_scale"_a = py::none(),
      "True when every element of every array (divided by grad_scale, if given) is finite.");
}

}  // namespace bind
}  // namespace gf
