"""The kernel table: one row per kernel of gf.ops, the single place where a kernel's facts live.

A row (Kernel) lists the kernel's arguments in signature order:

- Array: an array argument with its role (READ, WRITE: an output, UPDATE: read and written in
  place, STATE: an optimizer's state, updated in place and kept between steps), its dtype rule
  ("float": the call's one floating dtype, float32 or float64; "real": the same or bfloat16, the
  ml_dtypes dtype, stored in bf16 and computed in float32; "wide": the call's dtype, but float32
  in a bfloat16 call: statistics, accumulators, fp32 masters; or a fixed dtype such as "uint8", or
  "bfloat16": always ml_dtypes.bfloat16 and only beside a float32 call, the bf16 compute copies of
  fp32 masters),
  its shape rule (below), whether it may be None, whether it is a list of arrays (multi-tensor
  kernels), which argument it may be exactly (in place), and what valid data looks like.
- Scalar: a number, flag or name with its type, default, valid range and message, and for the
  optimizers the torch hyperparameter it comes from ("betas"[0] -> beta1) and torch's wording.

and beside them the bytes moved per element, the FLOPs, the torch counterpart, joint rules on the
scalars, and examples: valid calls that together take every path (the generated tests run them).

What reads it:

- gradfuse.ops builds each gf.ops.<kernel> from its row (signature, defaults, docstring), and
  _checks.py, the one argument checker, validates the NumPy twins' calls from it (and every
  optimizer call, for both backends: the C++ optimizer entry point checks only the arrays).
- gf.optim's classes validate their hyperparameters with it (torch's wording) and build their
  kernel calls from it; the state keys are its STATE arrays' torch names.
- the benchmark suite takes its bytes per element and FLOPs from it.
- the tests generate signatures, bad inputs, properties, determinism and ISA parity from it, and
  one test checks the C++ bindings against it (names, order, defaults, ranges).

Adding a kernel: write its C++ functor or binding, its NumPy twin, and a row here (README, "How to
add a kernel").

Shape rules: None (any shape); "like:<arg>" (that argument's shape; in a list, element by element);
a tuple of dimensions, each an int, a symbol bound by the first array that has it (in `shape_order`,
else signature order) or "..." for any number of dimensions; or a function of the scalars and the
arrays that returns one of these (a layout chosen by a flag) or a Needs (a size computed from
another array's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

READ, WRITE, UPDATE, STATE = "read", "write", "update", "state"
FLOATING = ("float", "real", "wide")  # the floating dtype rules (Array.dtype); the others are fixed dtypes
FIXED_ITEMSIZE = {"bfloat16": 2, "uint8": 1, "uint32": 4, "int64": 8}


class _NoDefault:
    def __repr__(self) -> str:
        return "<no default>"


NO_DEFAULT = _NoDefault()


# ---- ranges -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Range:
    """The valid values of a number: `says` completes "<name> must be ...". good / bad: values
    just inside and outside it (the tests probe both backends with them)."""

    test: Callable[[float], bool]
    says: str
    good: tuple = ()
    bad: tuple = ()

    def __call__(self, x) -> bool:
        return bool(self.test(x))


NONNEG = Range(
    lambda x: math.isfinite(x) and x >= 0,
    "a finite number >= 0",
    (0.0, 5e-324, 3.5),
    (-5e-324, -1.0, math.nan, math.inf),
)
FINITE = Range(math.isfinite, "a finite number", (-1e300, 0.0, 2.5), (math.nan, math.inf, -math.inf))
UNIT = Range(lambda x: 0 <= x < 1, "in [0, 1)", (0.0, 0.5, 1 - 2**-53), (-5e-324, 1.0, math.nan))
CLOSED_UNIT = Range(lambda x: 0 <= x <= 1, "in [0, 1]", (0.0, 1.0), (-5e-324, 1 + 2**-52, math.nan))
OPEN_UNIT = Range(lambda x: 0 < x < 1, "in (0, 1)", (5e-324, 0.5, 1 - 2**-53), (0.0, 1.0, math.nan))
HALF_OPEN_UNIT = Range(lambda x: 0 < x <= 1, "in (0, 1]", (5e-324, 0.5, 1.0), (0.0, 1 + 2**-52, math.nan))
POSITIVE_OR_INF = Range(lambda x: x > 0, "a number > 0 or inf", (5e-324, 2.0, math.inf), (0.0, -1.0, math.nan))
NONNEG_OR_INF = Range(lambda x: x >= 0, "a number >= 0", (0.0, 1.0, math.inf), (-5e-324, math.nan))
SCALE = Range(
    lambda x: math.isfinite(x) and x > 0, "a finite number > 0", (5e-324, 3.0), (0.0, -2.0, math.nan, math.inf)
)
STEP = Range(lambda x: x >= 1, ">= 1 (the 1-based step being taken)", (1, 2**62), (0, -3))
COUNT = Range(lambda x: x >= 0, ">= 0", (0, 7), (-1,))
U64 = Range(lambda x: 0 <= x < 2**64, "an int in [0, 2**64)", (0, 2**64 - 1), (-1, 2**64))


# ---- arguments --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Array:
    """An array argument. See the module docstring for roles and shape rules.

    optional: None is accepted (the kernel does without it). when: a function of the scalars; the
    array is used (and then required) only when it returns True, ignored otherwise. many: an
    ndarray or a list/tuple of them. in_place: the argument this one may be exactly (same memory,
    same shape); any other overlap of a written array with another argument is refused. values:
    what valid data looks like, for generated tests (any, signed, nonneg, positive, labels, bytes).
    state_key: an optimizer state's torch name (exp_avg for exp_avgs).
    """

    name: str
    role: str = READ
    shape: object = None
    dtype: str = "float"
    optional: bool = False
    default: object = NO_DEFAULT
    when: Callable | None = None
    many: bool = False
    in_place: str | None = None
    values: str = "any"
    state_key: str | None = None

    @property
    def written(self) -> bool:
        return self.role != READ

    @property
    def floating(self) -> bool:
        """A floating array ("float", "real" or "wide"), not a fixed dtype."""
        return self.dtype in FLOATING


@dataclass(frozen=True)
class Scalar:
    """A scalar argument: type "float", "int", "bool", "str" or "u64" (an int in [0, 2**64)); None is
    also accepted when `nullable`. range: a Range (numbers) or a tuple of the accepted values
    (choices). message: the refusal after "kernel: " when not "<name> must be <range.says>, got v"
    ({value} is the value). hyper: the optimizer hyperparameter it comes from, a group key or
    (key, index) for a pair; torch: torch's message for a bad value of it ({value})."""

    name: str
    type: str = "float"
    default: object = NO_DEFAULT
    range: object = None
    message: str | None = None
    keyword_only: bool = True
    nullable: bool = False
    hyper: object = None
    torch: str | None = None


@dataclass(frozen=True)
class Rule:
    """A joint condition on the scalars (a function of them returning True when valid), its
    argument and message, and torch's message formatted with the group's values ({etaminus})."""

    test: Callable[[dict], bool]
    argument: str
    message: str
    torch: str | None = None


@dataclass(frozen=True)
class Needs:
    """The shape a shape function computed from the other arguments, and what the message says
    before it ("x.size = 100 needs"); shape None: no shape can do (the message is then why)."""

    shape: tuple | None
    why: str


@dataclass(frozen=True)
class Example:
    """A valid call: scalars, and for single-array kernels the dimensions of its arrays ("..." -> a
    tuple). The examples of a row together take every path of the kernel."""

    id: str
    scalars: dict = field(default_factory=dict)
    dims: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Kernel:
    """One kernel. family: the C++ file and twin module (optim, clip, batchnorm, dropout, activation,
    dense, loss). entry: "optim_step" when the C++ side is the optimizers' one entry point, else the
    binding of the same name. returns: what the call returns. bytes: bytes moved per element in
    float32 (None: computed from the roles, for the element-wise multi-tensor kernels); flops: a
    function of the bound dimensions; torch: the counterpart; rules: joint scalar conditions."""

    name: str
    family: str
    doc: str
    args: tuple
    returns: str = "None"
    entry: str | None = None
    bytes: float | None = None
    flops: Callable | None = None
    torch: str | None = None
    rules: tuple = ()
    shape_order: tuple = ()
    examples: tuple = ()

    # Derived views of `args`, computed once (a row is read on every call).
    @cached_property
    def arrays(self) -> tuple:
        return tuple(a for a in self.args if isinstance(a, Array))

    @cached_property
    def scalars(self) -> tuple:
        return tuple(a for a in self.args if isinstance(a, Scalar))

    @cached_property
    def states(self) -> tuple:
        return tuple(a for a in self.args if isinstance(a, Array) and a.role == STATE)

    @cached_property
    def by_name(self) -> dict:
        return {a.name: a for a in self.args}

    def arg(self, name: str):
        return self.by_name[name]

    def defaults(self) -> dict:
        return {a.name: a.default for a in self.args if a.default is not NO_DEFAULT}

    def used(self, array: Array, scalars: dict) -> bool:
        """Whether the call with these scalars uses the array (its `when`)."""
        return array.when is None or bool(array.when(scalars))

    @cached_property
    def bf16(self) -> bool:
        """Whether the kernel takes bfloat16 arrays (its "real" ones)."""
        return any(a.dtype == "real" for a in self.arrays)

    def __post_init__(self):
        # the first floating array sets a call's dtype, which a "wide" one's rule needs
        kinds = [a.dtype for a in self.arrays if a.floating]
        if kinds and kinds[0] == "wide":
            raise ValueError(f"{self.name}: a 'wide' array before the first 'float'/'real' one")

    def bytes_per_element(
        self, itemsize: int = 4, scalars: dict | None = None, wide_itemsize: int | None = None, given: tuple = ()
    ) -> float:
        """Bytes the kernel moves per element (per parameter, for an optimizer) in a dtype of this
        itemsize (wide arrays: wide_itemsize, 4 beside bf16): each element of a READ or WRITE array
        once, of an UPDATE or STATE one twice (read and write), for the arrays the scalars use;
        optional fixed-dtype arrays (an optimizer's bf16 copies) only when named in `given`."""
        if self.bytes is not None:
            return self.bytes * itemsize / 4
        scalars = {**self.defaults(), **(scalars or {})}
        total = 0
        for a in self.arrays:
            if a.floating and self.used(a, scalars):
                size = (wide_itemsize or itemsize) if a.dtype == "wide" else itemsize
            elif not a.floating and (not a.optional or a.name in given):
                size = FIXED_ITEMSIZE[a.dtype]
            else:
                continue
            total += size * (2 if a.role in (UPDATE, STATE) else 1)
        return total


# ---- shared pieces of rows --------------------------------------------------------------------------------
def _params() -> Array:
    return Array("params", UPDATE, many=True)


def _grads(role: str = READ) -> Array:
    return Array("grads", role, shape="like:params", many=True, values="grad")


def _state(name: str, key: str, values: str = "signed", when=None) -> Array:
    return Array(
        name,
        STATE,
        shape="like:params",
        many=True,
        optional=when is not None,
        default=None if when is not None else NO_DEFAULT,
        when=when,
        values=values,
        state_key=key,
    )


_LR_TORCH = "Invalid learning rate: {value}"
_EPS_TORCH = "Invalid epsilon value: {value}"
_WD_TORCH = "Invalid weight_decay value: {value}"


def _lr(default: float) -> Scalar:
    return Scalar("lr", default=default, range=NONNEG, hyper="lr", torch=_LR_TORCH)


def _eps(default: float) -> Scalar:
    return Scalar("eps", default=default, range=NONNEG, hyper="eps", torch=_EPS_TORCH)


def _weight_decay() -> Scalar:
    return Scalar("weight_decay", default=0.0, range=NONNEG, hyper="weight_decay", torch=_WD_TORCH)


def _betas(beta1: float, beta2: float) -> tuple:
    return tuple(
        Scalar(
            f"beta{i + 1}",
            default=d,
            range=UNIT,
            hyper=("betas", i),
            torch=f"Invalid beta parameter at index {i}: {{value}}",
        )
        for i, d in enumerate((beta1, beta2))
    )


def _flag(name: str, hyper: bool = True) -> Scalar:
    return Scalar(name, "bool", default=False, hyper=name if hyper else None)


_STEP = Scalar("step", "int", range=STEP)
# Every optimizer kernel ends with these: the gradient prologue (divide by grad_scale, negate when
# maximizing) and the all-or-nothing NaN/Inf check.
# copies: the bf16 compute copies of float32 parameters (mixed precision: fp32 masters, bf16
# weights for the forward pass), written in the same pass; never beside float64 parameters.
_OPTIM_TAIL = (
    _flag("maximize"),
    Scalar("grad_scale", default=None, nullable=True, range=SCALE),
    _flag("skip_nonfinite", hyper=False),
    Array("copies", WRITE, shape="like:params", dtype="bfloat16", optional=True, default=None, many=True),
)
_ADAM_FAMILY = lambda lr: (_STEP, _lr(lr), *_betas(0.9, 0.999), _eps(1e-8), _weight_decay())  # noqa: E731

_OPTIM_DOC = (
    "Updates params and the state lists in place, reads grads (one list per argument: an array or "
    "a list of arrays, the i-th of each the shape of params[i]); one call is one fused pass over all "
    "of them. Returns False only when skip_nonfinite found NaN/Inf in the (scaled) gradients: then "
    "nothing was written. copies (optional, float32 params only): ml_dtypes.bfloat16 arrays, one per "
    "parameter, into which the same pass writes the updated parameters rounded to nearest even "
    "(bitwise params.astype(bfloat16)); a skipped step leaves them alone."
)


def _optim(
    name: str,
    doc: str,
    arrays: tuple,
    scalars: tuple,
    *,
    torch: str | None,
    examples: tuple,
    rules: tuple = (),
    bytes: float | None = None,
) -> Kernel:
    return Kernel(
        name,
        "optim",
        f"{doc}\n\n{_OPTIM_DOC}",
        (_params(), _grads(), *arrays, *scalars, *_OPTIM_TAIL),
        returns="bool",
        entry="optim_step",
        torch=torch,
        rules=rules,
        examples=examples,
        bytes=bytes,
    )


def _nadam_mu_product(step: int, beta1: float = 0.9, momentum_decay: float = 4e-3) -> float:
    """mu_1 ... mu_step of NAdam (torch's formula; examples only, the twin has the kernel's own)."""
    return math.prod(beta1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay)) for t in range(1, step + 1))


# ---- the optimizers ---------------------------------------------------------------------------------------
OPTIMIZERS = (
    _optim(
        "sgd",
        "SGD step (torch.optim.SGD). momentum_buffers are used when momentum != 0; step == 1 "
        "initialises them with the gradient, as torch does on a parameter's first step.",
        (_state("momentum_buffers", "momentum_buffer", when=lambda s: s["momentum"] != 0),),
        (
            Scalar("step", "int", default=1, range=STEP),
            _lr(1e-3),
            Scalar("momentum", default=0.0, range=NONNEG, hyper="momentum", torch="Invalid momentum value: {value}"),
            Scalar("dampening", default=0.0, range=FINITE, hyper="dampening", torch="Invalid dampening value: {value}"),
            _weight_decay(),
            _flag("nesterov"),
        ),
        torch="torch.optim.SGD",
        rules=(
            Rule(
                lambda s: not s["nesterov"] or (s["momentum"] > 0 and s["dampening"] == 0),
                "nesterov",
                "Nesterov momentum requires a momentum and zero dampening",
                "Nesterov momentum requires a momentum and zero dampening",
            ),
        ),
        examples=(
            Example("plain", dict(lr=0.1, weight_decay=0.01)),
            Example("momentum_first_step", dict(step=1, lr=0.1, momentum=0.9)),
            Example("momentum_dampening", dict(step=3, lr=0.1, momentum=0.9, dampening=0.2, weight_decay=0.01)),
            Example("nesterov", dict(step=2, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)),
        ),
    ),
    _optim(
        "adam",
        "Adam / AdamW (decoupled_weight_decay=True) / AMSGrad (amsgrad=True) step (torch.optim.Adam).",
        (
            _state("exp_avgs", "exp_avg"),
            _state("exp_avg_sqs", "exp_avg_sq", "nonneg"),
            _state("max_exp_avg_sqs", "max_exp_avg_sq", "nonneg", when=lambda s: s["amsgrad"]),
        ),
        (*_ADAM_FAMILY(1e-3), _flag("amsgrad"), _flag("decoupled_weight_decay")),
        torch="torch.optim.Adam",
        examples=(
            Example("plain", dict(step=3, lr=0.01, weight_decay=0.1)),
            Example("amsgrad", dict(step=5, lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6, amsgrad=True)),
            Example("decoupled", dict(step=7, lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
            Example(
                "decoupled_amsgrad", dict(step=2, lr=0.01, weight_decay=0.3, amsgrad=True, decoupled_weight_decay=True)
            ),
        ),
    ),
    _optim(
        "adagrad",
        "Adagrad step (torch.optim.Adagrad).",
        (_state("state_sums", "sum", "nonneg"),),
        (
            _STEP,
            _lr(1e-2),
            Scalar("lr_decay", default=0.0, range=NONNEG, hyper="lr_decay", torch="Invalid lr_decay value: {value}"),
            _weight_decay(),
            _eps(1e-10),
        ),
        torch="torch.optim.Adagrad",
        examples=(Example("lr_decay", dict(step=4, lr=0.1, lr_decay=0.01, weight_decay=0.1)),),
    ),
    _optim(
        "rmsprop",
        "RMSprop step (torch.optim.RMSprop). grad_avgs are used when centered, momentum_buffers when momentum > 0.",
        (
            _state("square_avgs", "square_avg", "nonneg"),
            _state("grad_avgs", "grad_avg", when=lambda s: s["centered"]),
            _state("momentum_buffers", "momentum_buffer", when=lambda s: s["momentum"] > 0),
        ),
        (
            _lr(1e-2),
            Scalar("alpha", default=0.99, range=CLOSED_UNIT, hyper="alpha", torch="Invalid alpha value: {value}"),
            _eps(1e-8),
            _weight_decay(),
            Scalar("momentum", default=0.0, range=NONNEG, hyper="momentum", torch="Invalid momentum value: {value}"),
            _flag("centered"),
        ),
        torch="torch.optim.RMSprop",
        examples=(
            Example("plain", dict(lr=0.01, weight_decay=0.1)),
            Example("centered", dict(lr=0.01, alpha=0.9, centered=True)),
            Example("momentum", dict(lr=0.01, momentum=0.9)),
            Example(
                "centered_momentum", dict(lr=0.01, alpha=0.95, eps=1e-6, momentum=0.5, centered=True, weight_decay=0.05)
            ),
        ),
    ),
    _optim(
        "adadelta",
        "Adadelta step (torch.optim.Adadelta).",
        (_state("square_avgs", "square_avg", "nonneg"), _state("acc_deltas", "acc_delta", "nonneg")),
        (
            _lr(1.0),
            Scalar("rho", default=0.9, range=CLOSED_UNIT, hyper="rho", torch="Invalid rho value: {value}"),
            _eps(1e-6),
            _weight_decay(),
        ),
        torch="torch.optim.Adadelta",
        examples=(Example("weight_decay", dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.1)),),
    ),
    _optim(
        "adamax",
        "Adamax step (torch.optim.Adamax).",
        (_state("exp_avgs", "exp_avg"), _state("exp_infs", "exp_inf", "nonneg")),
        _ADAM_FAMILY(2e-3),
        torch="torch.optim.Adamax",
        examples=(Example("weight_decay", dict(step=3, lr=0.002, beta1=0.8, eps=1e-6, weight_decay=0.1)),),
    ),
    _optim(
        "nadam",
        "NAdam step (torch.optim.NAdam). mu_product is the product of the momentum coefficients "
        "mu_1..mu_step, this step's included (the optimizer keeps it as state).",
        (_state("exp_avgs", "exp_avg"), _state("exp_avg_sqs", "exp_avg_sq", "nonneg")),
        (
            _STEP,
            Scalar("mu_product", range=UNIT),
            *_ADAM_FAMILY(2e-3)[1:],
            Scalar(
                "momentum_decay",
                default=4e-3,
                range=NONNEG,
                hyper="momentum_decay",
                torch="Invalid momentum_decay value: {value}",
            ),
            _flag("decoupled_weight_decay"),
        ),
        torch="torch.optim.NAdam",
        examples=(
            Example("weight_decay", dict(step=3, mu_product=_nadam_mu_product(3), weight_decay=0.1)),
            Example(
                "decoupled",
                dict(step=9, mu_product=_nadam_mu_product(9), lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
            ),
        ),
    ),
    # rho_t = 2.0 at step 2 (beta2 = 0.999): no rectification; rho_t = 49.6 at step 50: rectified.
    _optim(
        "radam",
        "RAdam step (torch.optim.RAdam).",
        (_state("exp_avgs", "exp_avg"), _state("exp_avg_sqs", "exp_avg_sq", "nonneg")),
        (*_ADAM_FAMILY(1e-3), _flag("decoupled_weight_decay")),
        torch="torch.optim.RAdam",
        examples=(
            Example("unrectified", dict(step=2, lr=0.01, weight_decay=0.1)),
            Example("rectified", dict(step=50, lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
        ),
    ),
    _optim(
        "rprop",
        "Rprop step (torch.optim.Rprop).",
        (_state("prevs", "prev"), _state("step_sizes", "step_size", "positive")),
        (
            Scalar("etaminus", default=0.5, hyper=("etas", 0)),
            Scalar("etaplus", default=1.2, hyper=("etas", 1)),
            Scalar(
                "step_size_min",
                default=1e-6,
                range=NONNEG,
                hyper=("step_sizes", 0),
                torch="Invalid minimal step size: {value}",
            ),
            Scalar(
                "step_size_max",
                default=50.0,
                range=NONNEG,
                hyper=("step_sizes", 1),
                torch="Invalid maximal step size: {value}",
            ),
        ),
        torch="torch.optim.Rprop",
        rules=(
            Rule(
                lambda s: 0.0 < s["etaminus"] < 1.0 < s["etaplus"] < math.inf,
                "etaminus",
                "etas must satisfy 0 < etaminus < 1 < etaplus",
                "Invalid eta values: {etaminus}, {etaplus}",
            ),
        ),
        examples=(
            Example("defaults", {}),
            Example("etas", dict(etaminus=0.3, etaplus=1.5, step_size_min=1e-3, step_size_max=0.05)),
        ),
    ),
    _optim(
        "lion",
        "Lion step (Chen et al. 2023, 'Symbolic Discovery of Optimization Algorithms'), decoupled weight decay.",
        (_state("exp_avgs", "exp_avg"),),
        (_lr(1e-4), *_betas(0.9, 0.99), _weight_decay()),
        torch=None,
        examples=(
            Example("weight_decay", dict(lr=1e-3, weight_decay=0.1)),
            Example("betas", dict(lr=1e-4, beta1=0.5, beta2=0.9)),
        ),
    ),
    _optim(
        "asgd",
        "ASGD step (torch.optim.ASGD): SGD with a step size eta that decays, and a running average ax of the "
        "parameters (from the step where mu drops below 1). eta and mu are this step's values: the optimizer "
        "keeps them as state and advances them from lr, lambd, alpha and t0, as torch does.",
        (_state("axs", "ax"),),
        (
            Scalar("eta", range=NONNEG),
            Scalar("mu", range=HALF_OPEN_UNIT),
            Scalar("lambd", default=1e-4, range=NONNEG, hyper="lambd", torch="Invalid lambd value: {value}"),
            _weight_decay(),
        ),
        torch="torch.optim.ASGD",
        examples=(
            Example("averaging", dict(eta=0.01, mu=0.5, weight_decay=0.1)),
            Example("before_t0", dict(eta=0.005, mu=1.0, lambd=0.01)),
        ),
    ),
    # Schedule-free (Defazio et al. 2024), as the schedulefree package 1.4.1: lr is this step's
    # (warmed-up) lr and average_weight its weight in the average x; the optimizer computes both from
    # its group entries (k, lr_max, weight_sum) and keeps params at y while training.
    _optim(
        "sgd_schedulefree",
        "Schedule-free SGD step (schedulefree.SGDScheduleFree): params hold y; z is the SGD sequence. "
        "g += weight_decay y; y = lerp(y, z, average_weight) + lr (momentum (1 - average_weight) - 1) g; "
        "z -= lr g.",
        (_state("zs", "z"),),
        (
            Scalar("lr", default=1.0, range=NONNEG, hyper="lr", torch=_LR_TORCH),
            Scalar(
                "momentum",
                default=0.9,
                range=OPEN_UNIT,
                hyper="momentum",
                torch="Momentum must be between 0 and 1 exclusive: {value}",
            ),
            Scalar("average_weight", range=CLOSED_UNIT),
            _weight_decay(),
        ),
        torch=None,
        examples=(
            Example("first_step", dict(lr=0.5, average_weight=1.0)),
            Example("averaging", dict(lr=0.1, momentum=0.8, average_weight=0.25, weight_decay=0.1)),
        ),
    ),
    _optim(
        "adamw_schedulefree",
        "Schedule-free AdamW step (schedulefree.AdamWScheduleFree): params hold y; z is the base sequence. "
        "v = beta2 v + (1 - beta2) g^2; d = g / (sqrt(v / (1 - beta2^step)) + eps) + weight_decay y; "
        "y = lerp(y, z, average_weight) + lr (beta1 (1 - average_weight) - 1) d; z -= lr d.",
        (_state("zs", "z"), _state("exp_avg_sqs", "exp_avg_sq", "nonneg")),
        (
            _STEP,
            Scalar("lr", default=0.0025, range=NONNEG, hyper="lr", torch=_LR_TORCH),
            Scalar(
                "beta1",
                default=0.9,
                range=OPEN_UNIT,
                hyper=("betas", 0),
                torch="Invalid beta parameter at index 0: {value}",
            ),
            _betas(0.9, 0.999)[1],
            _eps(1e-8),
            Scalar("average_weight", range=CLOSED_UNIT),
            _weight_decay(),
        ),
        torch=None,
        examples=(
            Example("first_step", dict(step=1, lr=0.01, average_weight=1.0)),
            Example("averaging", dict(step=6, lr=0.01, beta1=0.8, average_weight=0.4, weight_decay=0.1)),
            Example("lerp_from_z", dict(step=3, lr=0.01, eps=1e-6, average_weight=0.75)),
        ),
    ),
    # LAMB (You et al. 2019) as timm's Lamb: per-tensor trust ratios ||p|| / ||u|| from norms the
    # first pass accumulates (deterministic blocks, each tensor on its own even inside an arena), then
    # a second pass p -= lr trust u: 24 + 16 B/param in float32 (one pass of 24 B when nothing adapts).
    # timm's global max_grad_norm clip is the optimizer's grad_scale.
    _optim(
        "lamb",
        "LAMB step (timm.optim.Lamb), per tensor (never merged with its neighbours): "
        "m = lerp(m, g, 1 - beta1) (grad_averaging, else beta1 m + g); v = beta2 v + (1 - beta2) g^2; "
        "u = m / bc1 / (sqrt(v) / sqrt(bc2) + eps) + weight_decay p (bc = 1 - beta^step, or 1 without "
        "bias_correction); when weight_decay != 0 or always_adapt: trust = ||p|| / ||u|| if both > 0 else 1 "
        "(at most 1 with trust_clip), else 1; p -= lr trust u.",
        (_state("exp_avgs", "exp_avg"), _state("exp_avg_sqs", "exp_avg_sq", "nonneg")),
        (
            _STEP,
            _lr(1e-3),
            *_betas(0.9, 0.999),
            _eps(1e-6),
            Scalar("weight_decay", default=0.01, range=NONNEG, hyper="weight_decay", torch=_WD_TORCH),
            Scalar("bias_correction", "bool", default=True, hyper="bias_correction"),
            Scalar("grad_averaging", "bool", default=True, hyper="grad_averaging"),
            _flag("trust_clip"),
            _flag("always_adapt"),
        ),
        torch=None,
        bytes=40,
        examples=(
            Example("adapt", dict(step=1, lr=0.01)),
            Example("no_decay", dict(step=3, lr=0.01, weight_decay=0.0)),
            Example("always_adapt", dict(step=2, lr=0.1, weight_decay=0.0, always_adapt=True, trust_clip=True)),
            Example("plain_moments", dict(step=4, lr=0.01, grad_averaging=False, bias_correction=False)),
        ),
    ),
    # LARS (You et al. 2017) as timm's Lars: a reduction pass (p, g: 8 B/param) for the per-tensor
    # trust ratios, then SGD's pass with the scaled gradient (20 B with momentum).
    _optim(
        "lars",
        "LARS step (timm.optim.Lars), per tensor (never merged with its neighbours): when weight_decay != 0 "
        "or always_adapt, g = (g + weight_decay p) trust, trust = trust_coeff ||p|| / (||g|| + weight_decay "
        "||p|| + eps) when both norms > 0 else 1 (trust_clip: min(trust / lr, 1)); then SGD's momentum "
        "(step == 1 starts the buffer with g), dampening, nesterov and p -= lr g.",
        (_state("momentum_buffers", "momentum_buffer", when=lambda s: s["momentum"] != 0),),
        (
            Scalar("step", "int", default=1, range=STEP),
            _lr(1.0),
            Scalar("momentum", default=0.0, range=NONNEG, hyper="momentum", torch="Invalid momentum value: {value}"),
            Scalar("dampening", default=0.0, range=FINITE, hyper="dampening", torch="Invalid dampening value: {value}"),
            _weight_decay(),
            _flag("nesterov"),
            Scalar(
                "trust_coeff", default=0.001, range=NONNEG, hyper="trust_coeff", torch="Invalid trust_coeff: {value}"
            ),
            _eps(1e-8),
            _flag("trust_clip"),
            _flag("always_adapt"),
        ),
        torch=None,
        bytes=28,
        rules=(
            Rule(
                lambda s: not s["nesterov"] or (s["momentum"] > 0 and s["dampening"] == 0),
                "nesterov",
                "Nesterov momentum requires a momentum and zero dampening",
                "Nesterov momentum requires a momentum and zero dampening",
            ),
        ),
        examples=(
            Example("plain", dict(lr=0.1)),
            Example("adapt_momentum", dict(step=2, lr=0.5, momentum=0.9, weight_decay=1e-4)),
            Example(
                "first_step_clip", dict(step=1, lr=0.5, momentum=0.9, dampening=0.1, weight_decay=0.01, trust_clip=True)
            ),
            Example("nesterov", dict(step=3, lr=0.2, momentum=0.9, nesterov=True, weight_decay=0.01)),
            Example("always_adapt", dict(step=2, lr=0.1, always_adapt=True, trust_coeff=0.02)),
        ),
    ),
)


# ---- gradients: finiteness, norms, clipping, penalties ----------------------------------------------------
def _norm_type() -> Scalar:
    return Scalar("norm_type", default=2.0, range=POSITIVE_OR_INF)


def _max_norm() -> Scalar:
    return Scalar(
        "max_norm", range=NONNEG_OR_INF, message="max_norm must be a number >= 0 (inf: no clipping), got {value}"
    )


# p = 1, 2, inf and any other p take different paths; max_norm = inf never clips.
_CLIP_NORM_EXAMPLES = (
    *(Example(f"p={p}", dict(max_norm=1.0, norm_type=p)) for p in (1.0, 2.0, math.inf, 3.0)),
    Example("no_clip", dict(max_norm=math.inf)),
)

GRADIENTS = (
    Kernel(
        "all_finite",
        "optim",
        "True when every element of every array (divided by grad_scale, if given) is finite.",
        (
            Array("arrays", many=True, dtype="real", values="grad"),
            Scalar("grad_scale", default=None, nullable=True, range=SCALE, keyword_only=False),
        ),
        returns="bool",
        bytes=4,
        examples=(Example("plain"), Example("scaled", dict(grad_scale=1024.0))),
    ),
    Kernel(
        "grad_norm",
        "clip",
        "The p-norm of all the gradients together (as one vector): p = 2, 1, inf or any "
        "p > 0 (torch.nn.utils.get_total_norm). Accumulated in double, deterministic; 0.0 for no elements.",
        (Array("grads", many=True, dtype="real", values="grad"), _norm_type()),
        returns="float",
        bytes=4,
        torch="torch.nn.utils.get_total_norm",
        examples=tuple(Example(f"p={p}", dict(norm_type=p)) for p in (1.0, 2.0, math.inf, 3.0, 0.5)),
    ),
    Kernel(
        "clip_grad_norm",
        "clip",
        "torch.nn.utils.clip_grad_norm_ on a list of gradients, in place: n = the "
        "p-norm of all of them together; each is multiplied by min(max_norm / (n + 1e-6), 1) (only when that is "
        "below 1). Returns n, the norm before clipping. error_if_nonfinite: a NaN/Inf norm raises RuntimeError, "
        "nothing written.",
        (
            Array("grads", UPDATE, many=True, dtype="real", values="grad"),
            _max_norm(),
            _norm_type(),
            Scalar("error_if_nonfinite", "bool", default=False),
        ),
        returns="float",
        bytes=12,
        torch="torch.nn.utils.clip_grad_norm_",
        examples=_CLIP_NORM_EXAMPLES,
    ),
    Kernel(
        "clip_grad_norm_per_tensor",
        "clip",
        "Per-tensor norm clipping, in place: each gradient array on its "
        "own, n_i = its p-norm, multiplied by min(max_norm / (n_i + 1e-6), 1). Returns [n_i], one per array "
        "(before clipping). error_if_nonfinite: a NaN/Inf norm raises RuntimeError, nothing written.",
        (
            Array("grads", UPDATE, many=True, dtype="real", values="grad"),
            _max_norm(),
            _norm_type(),
            Scalar("error_if_nonfinite", "bool", default=False),
        ),
        returns="list[float]",
        bytes=12,
        examples=_CLIP_NORM_EXAMPLES,
    ),
    Kernel(
        "clip_grad_value",
        "clip",
        "torch.nn.utils.clip_grad_value_ on a list of gradients, in place: clamp to "
        "[-clip_value, clip_value] (NaN stays NaN).",
        (Array("grads", UPDATE, many=True, dtype="real", values="grad"), Scalar("clip_value", range=NONNEG_OR_INF)),
        bytes=8,
        torch="torch.nn.utils.clip_grad_value_",
        examples=(Example("half", dict(clip_value=0.5)), Example("inf", dict(clip_value=math.inf))),
    ),
    Kernel(
        "penalty",
        "loss",
        "L1 / L2 / elastic-net penalty over a list of parameters (or an arena) in one pass: "
        "returns l1 sum|w| + (l2/2) sum w^2 and, when grads are given, adds l1 sign(w) + l2 w to them in place.",
        (
            Array("params", many=True, dtype="real"),
            Array("grads", UPDATE, shape="like:params", many=True, dtype="real", optional=True, default=None),
            Scalar("l1", default=0.0, range=NONNEG),
            Scalar("l2", default=0.0, range=NONNEG),
        ),
        returns="float",
        bytes=12,
        examples=(
            Example("elastic", dict(l1=1e-3, l2=1e-2)),
            Example("l1", dict(l1=1e-2)),
            Example("l2", dict(l2=1e-2)),
            Example("none"),
        ),
    ),
)


# ---- layers -----------------------------------------------------------------------------------------------
def _bn_layout(s: dict, arrays: dict) -> tuple:
    return ("N", "...", "C") if s["channels_last"] else ("N", "C", "...")


BATCHNORM = (
    Kernel(
        "batchnorm_forward",
        "batchnorm",
        "Batch normalization forward (torch.nn.functional.batch_norm), written into y, save_mean and "
        "save_invstd (and running_mean / running_var when training).\n\n"
        "x: (N, C, ...) or, with channels_last, (N, ..., C). weight, bias: (C,) or None (1 and 0). "
        "running_mean, running_var: (C,), both or neither. Batch statistics are used when training, or "
        "when there are no running statistics; then save_mean = the batch mean, save_invstd = "
        "1/sqrt(biased var + eps), and the running statistics (when given) move by momentum towards the "
        "batch mean and the unbiased variance, as torch does. Otherwise the running statistics are used "
        "(and saved). y may be x itself (in place). Statistics accumulate in double.\n\n"
        "dtypes: x and y float32, float64 or bfloat16; the per-channel arrays the call's dtype, float32 "
        "beside bfloat16 (statistics and affine parameters stay fp32; y is the float32 result rounded "
        "once).",
        (
            Array("x", shape=_bn_layout, dtype="real"),
            Array("weight", shape=("C",), dtype="wide", optional=True),
            Array("bias", shape=("C",), dtype="wide", optional=True),
            Array("running_mean", UPDATE, shape=("C",), dtype="wide", optional=True),
            Array("running_var", UPDATE, shape=("C",), dtype="wide", optional=True, values="positive"),
            Array("y", WRITE, shape="like:x", dtype="real", in_place="x"),
            Array("save_mean", WRITE, shape=("C",), dtype="wide"),
            Array("save_invstd", WRITE, shape=("C",), dtype="wide"),
            Scalar("training", "bool", default=True),
            Scalar("momentum", default=0.1, range=CLOSED_UNIT),
            Scalar("eps", default=1e-5, range=NONNEG),
            Scalar("channels_last", "bool", default=False),
        ),
        bytes=12,
        torch="torch.nn.functional.batch_norm",
        examples=(
            Example("train", {}, dict(N=5, C=3, **{"...": (4,)})),
            Example("eval", dict(training=False), dict(N=5, C=3, **{"...": (2, 2)})),
            Example("channels_last", dict(channels_last=True), dict(N=4, C=3, **{"...": (3,)})),
            Example(
                "channels_last_eval",
                dict(training=False, channels_last=True, momentum=0.5, eps=1e-3),
                dict(N=4, C=3, **{"...": (2,)}),
            ),
        ),
    ),
    Kernel(
        "batchnorm_backward",
        "batchnorm",
        "Batch normalization backward: dx (and dweight = sum(dy xhat), dbias = sum(dy) when given) from "
        "save_mean and save_invstd of the forward. training=True: the statistics were the batch's, and dx "
        "includes their gradient; training=False: dx = dy weight invstd. dx may be dy itself (in place).\n\n"
        "dtypes: dy, x and dx float32, float64 or bfloat16; weight, save_mean, save_invstd, dweight and "
        "dbias the call's dtype, float32 beside bfloat16 (dx is the float32 result rounded once).",
        (
            Array("dy", shape="like:x", dtype="real"),
            Array("x", shape=_bn_layout, dtype="real"),
            Array("weight", shape=("C",), dtype="wide", optional=True),
            Array("save_mean", shape=("C",), dtype="wide"),
            Array("save_invstd", shape=("C",), dtype="wide", values="positive"),
            Array("dx", WRITE, shape="like:x", dtype="real", in_place="dy"),
            Array("dweight", WRITE, shape=("C",), dtype="wide", optional=True),
            Array("dbias", WRITE, shape=("C",), dtype="wide", optional=True),
            Scalar("training", "bool", default=True),
            Scalar("channels_last", "bool", default=False),
        ),
        bytes=20,
        shape_order=("x",),
        examples=(
            Example("train", {}, dict(N=5, C=3, **{"...": (4,)})),
            Example("eval", dict(training=False), dict(N=5, C=3, **{"...": ()})),
            Example("channels_last", dict(channels_last=True), dict(N=4, C=3, **{"...": (3,)})),
            Example("channels_last_eval", dict(training=False, channels_last=True), dict(N=4, C=3, **{"...": (2,)})),
        ),
    ),
)


def _mask_shape(source: str):
    def shape(s: dict, arrays: dict) -> Needs:
        n = arrays[source].size
        return Needs((8 * ((n + 63) // 64),), f"{source}.size = {n} needs")

    return shape


def _class_axis(s: dict, arrays: dict) -> Needs:
    logits = arrays["logits"]
    if logits.ndim < 1:
        return Needs(None, "needs logits with a class axis (the last), got shape ()")
    return Needs((logits.shape[-1],), "must be (C,) =")


_P = Scalar("p", range=CLOSED_UNIT, message="dropout probability has to be between 0 and 1, but got {value}")

DROPOUT = (
    Kernel(
        "dropout_forward",
        "dropout",
        "Inverted dropout, training mode: y = x * keep / (1 - p), and the keep bits packed into mask "
        "(uint8, dropout_mask_bytes(x.size) bytes; np.unpackbits(mask, bitorder='little')[:x.size]). "
        "keep comes from Philox4x32-10 keyed on (seed, counter, element index): the same for every "
        "thread count, ISA and backend. p in [0, 1] (1: zeros); seed and counter: ints in [0, 2**64). "
        "y may be x (in place). x and y: float32, float64 or bfloat16 (the float32 product, rounded once).",
        (
            Array("x", dtype="real"),
            Array("y", WRITE, shape="like:x", dtype="real", in_place="x"),
            Array("mask", WRITE, shape=_mask_shape("x"), dtype="uint8", values="bytes"),
            _P,
            Scalar("seed", "u64", range=U64),
            Scalar("counter", "u64", range=U64),
        ),
        bytes=8.125,
        torch="torch.nn.functional.dropout",
        examples=(
            Example("half", dict(p=0.3, seed=2**64 - 5, counter=7), {"...": (3, 67)}),
            Example("all", dict(p=1.0, seed=1, counter=0), {"...": (5,)}),
            Example("none", dict(p=0.0, seed=3, counter=2**64 - 1), {"...": (70,)}),
        ),
    ),
    Kernel(
        "dropout_backward",
        "dropout",
        "Dropout backward: dx = dy * keep / (1 - p) with keep read from the forward's mask (0 when "
        "p == 1). dx may be dy (in place). dy and dx: float32, float64 or bfloat16.",
        (
            Array("dy", dtype="real"),
            Array("mask", shape=_mask_shape("dy"), dtype="uint8", values="bytes"),
            Array("dx", WRITE, shape="like:dy", dtype="real", in_place="dy"),
            _P,
        ),
        bytes=8.125,
        examples=(
            Example("half", dict(p=0.3), {"...": (3, 67)}),
            Example("all", dict(p=1.0), {"...": (5,)}),
            Example("none", dict(p=0.0), {"...": (70,)}),
        ),
    ),
    Kernel(
        "dropout_mask_bytes",
        "dropout",
        "Bytes of the packed dropout mask of n elements: 8 * ceil(n / 64) (whole 64-bit words).",
        (Scalar("n", "int", range=COUNT, keyword_only=False),),
        returns="int",
        examples=(Example("n", dict(n=100)),),
    ),
    Kernel(
        "philox4x32_10",
        "dropout",
        "Philox4x32-10 (Random123): out[i] = the four output words of counter counters[i] (uint32, "
        "(n, 4)) under key (uint32, (2,)); out is uint32 (n, 4).",
        (
            Array("counters", shape=("N", 4), dtype="uint32", values="bytes"),
            Array("key", shape=(2,), dtype="uint32", values="bytes"),
            Array("out", WRITE, shape="like:counters", dtype="uint32"),
        ),
        examples=(Example("words", {}, dict(N=9)),),
    ),
)

ACTIVATIONS = ("none", "relu", "leaky_relu", "tanh", "sigmoid", "gelu", "gelu_tanh")
# What each activation's backward reads: "x" (the input), "y" (the output) or either.
ACTIVATION_NEEDS = {
    "none": (),
    "relu": ("x", "y"),
    "leaky_relu": ("x", "y"),
    "tanh": ("y",),
    "sigmoid": ("y",),
    "gelu": ("x",),
    "gelu_tanh": ("x",),
}


def _activation(default=NO_DEFAULT) -> Scalar:
    return Scalar(
        "activation",
        "str",
        default=default,
        range=ACTIVATIONS,
        message="unknown activation '{value}' (expected none, relu, leaky_relu, tanh, sigmoid, gelu or gelu_tanh)",
    )


_SLOPE = Scalar("negative_slope", default=0.01, range=FINITE)
_EACH_ACTIVATION = tuple(Example(a, dict(activation=a), {"...": (7, 33)}) for a in ACTIVATIONS)

ACTIVATION = (
    Kernel(
        "activation_forward",
        "activation",
        "y = activation(x), element-wise, any shape; y may be x (in place).",
        (
            Array("x", dtype="real"),
            Array("y", WRITE, shape="like:x", dtype="real", in_place="x"),
            _activation(),
            _SLOPE,
        ),
        bytes=8,
        examples=_EACH_ACTIVATION,
    ),
    Kernel(
        "activation_backward",
        "activation",
        "dx = dy * activation'(.), element-wise. Needs y (the forward output) for tanh and sigmoid, x (the "
        "input) for gelu and gelu_tanh, either for relu and leaky_relu; dx may be dy (in place).",
        (
            Array("dy", dtype="real"),
            Array("dx", WRITE, shape="like:dy", dtype="real", in_place="dy"),
            _activation(),
            Array("x", shape="like:dy", dtype="real", optional=True, default=None),
            Array("y", shape="like:dy", dtype="real", optional=True, default=None),
            _SLOPE,
        ),
        bytes=12,
        examples=_EACH_ACTIVATION,
    ),
)


def _op(trans: str, rows: str, cols: str):
    return lambda s, arrays: (cols, rows) if s[trans] else (rows, cols)


DENSE = (
    Kernel(
        "matmul",
        "dense",
        "c = op(a) @ op(b), or c += ... with accumulate; op transposes when trans_a / "
        "trans_b. a and b may be bfloat16 (c float32: float32 accumulation, products exact). "
        "Deterministic for every thread count.",
        (
            Array("a", shape=_op("trans_a", "M", "K"), dtype="real"),
            Array("b", shape=_op("trans_b", "K", "N"), dtype="real"),
            Array("c", WRITE, shape=("M", "N"), dtype="wide"),
            Scalar("trans_a", "bool", default=False),
            Scalar("trans_b", "bool", default=False),
            Scalar("accumulate", "bool", default=False),
        ),
        flops=lambda d: 2 * d["M"] * d["K"] * d["N"],
        torch="torch.mm",
        examples=(
            Example("plain", {}, dict(M=5, K=7, N=3)),
            Example("trans_b_accumulate", dict(trans_b=True, accumulate=True), dict(M=5, K=7, N=3)),
            Example("trans_a", dict(trans_a=True), dict(M=4, K=6, N=2)),
            Example("trans_both", dict(trans_a=True, trans_b=True), dict(M=3, K=5, N=4)),
        ),
    ),
    Kernel(
        "dense_forward",
        "dense",
        "y = activation(x @ weight + bias); weight (in_features, out_features), bias "
        "(out_features,) or None; z, if given, receives the pre-activation x @ weight + bias (gelu's backward "
        "needs it). bfloat16 x, weight, y, z take a float32 bias; the epilogue runs on the float32 tile, y and z "
        "are rounded once.",
        (
            Array("x", shape=("N", "IN"), dtype="real"),
            Array("weight", shape=("IN", "OUT"), dtype="real"),
            Array("bias", shape=("OUT",), dtype="wide", optional=True),
            Array("y", WRITE, shape=("N", "OUT"), dtype="real"),
            _activation("none"),
            _SLOPE,
            Array("z", WRITE, shape=("N", "OUT"), dtype="real", optional=True, default=None),
        ),
        flops=lambda d: 2 * d["N"] * d["IN"] * d["OUT"],
        torch="torch.nn.functional.linear",
        examples=tuple(Example(a, dict(activation=a), dict(N=6, IN=5, OUT=4)) for a in ACTIVATIONS),
    ),
    Kernel(
        "dense_backward",
        "dense",
        "Backward of dense_forward: dz = dy * activation'(.) (from y, the forward "
        "output, or z, the pre-activation: tanh/sigmoid need y, gelu needs z, relu either), dbias = column sums "
        "of dz, dx = dz @ weight.T, dweight = x.T @ dz; dx, dweight, dbias may each be None (not computed); "
        "accumulate adds into dweight and dbias; dz is an optional scratch array (else one is allocated). "
        "bfloat16 dy, x, weight, y, z, dx, dz take float32 dweight and dbias (they feed float32 master "
        "weights); dz is rounded to bfloat16 before the bias sum and both GEMMs read it.",
        (
            Array("dy", shape=("N", "OUT"), dtype="real"),
            Array("x", shape=("N", "IN"), dtype="real"),
            Array("weight", shape=("IN", "OUT"), dtype="real"),
            Array("dx", WRITE, shape=("N", "IN"), dtype="real", optional=True),
            Array("dweight", UPDATE, shape=("IN", "OUT"), dtype="wide", optional=True),
            Array("dbias", UPDATE, shape=("OUT",), dtype="wide", optional=True),
            _activation("none"),
            Array("y", shape=("N", "OUT"), dtype="real", optional=True, default=None),
            Array("z", shape=("N", "OUT"), dtype="real", optional=True, default=None),
            _SLOPE,
            Scalar("accumulate", "bool", default=False),
            Array("dz", WRITE, shape=("N", "OUT"), dtype="real", optional=True, default=None),
        ),
        flops=lambda d: 4 * d["N"] * d["IN"] * d["OUT"],
        shape_order=("x", "weight"),
        examples=(
            *(Example(a, dict(activation=a), dict(N=6, IN=5, OUT=4)) for a in ACTIVATIONS),
            Example("accumulate", dict(activation="relu", accumulate=True), dict(N=6, IN=5, OUT=4)),
        ),
    ),
)


_REDUCTION = Scalar(
    "reduction",
    "str",
    default="mean",
    range=("mean", "sum"),
    message="reduction must be 'mean' or 'sum', got '{value}'",
)


def _softmax(name: str, doc: str) -> Kernel:
    return Kernel(
        name,
        "loss",
        doc,
        (Array("x", shape=("...", "K"), dtype="real"), Array("y", WRITE, shape="like:x", dtype="real", in_place="x")),
        bytes=8,
        torch="torch.nn.functional." + name.replace("_forward", ""),
        examples=(Example("rows", {}, {"...": (6,), "K": 9}),),
    )


def _softmax_backward(name: str, doc: str) -> Kernel:
    return Kernel(
        name,
        "loss",
        doc,
        (
            Array("y", shape=("...", "K"), dtype="real", values="probability"),
            Array("dy", shape="like:y", dtype="real"),
            Array("dx", WRITE, shape="like:y", dtype="real", in_place="dy"),
        ),
        bytes=12,
        examples=(Example("rows", {}, {"...": (6,), "K": 9}),),
    )


LOSS = (
    _softmax(
        "softmax_forward", "y = softmax(x) over the last axis (max-subtracted: stable). y may be x itself (in place)."
    ),
    _softmax_backward(
        "softmax_backward", "dx = y * (dy - sum(dy * y, last axis)), y = softmax(x). dx may be dy itself (in place)."
    ),
    _softmax(
        "log_softmax_forward",
        "y = log_softmax(x) = (x - max) - log(sum(exp(x - max))) over the last axis. y may be x itself.",
    ),
    _softmax_backward(
        "log_softmax_backward",
        "dx = dy - exp(y) * sum(dy, last axis), y = log_softmax(x). dx may be dy itself (in place).",
    ),
    Kernel(
        "softmax_cross_entropy",
        "loss",
        "Softmax cross-entropy of (N, K) logits and (N,) int64 labels, as "
        "torch.nn.functional.cross_entropy; writes d loss / d logits into grad when given. Returns the loss.",
        (
            Array("logits", shape=("N", "K"), dtype="real"),
            Array("labels", shape=("N",), dtype="int64", values="labels"),
            Array("grad", WRITE, shape="like:logits", dtype="real", optional=True, default=None),
            _REDUCTION,
            Scalar("ignore_index", "int", default=-100),
            Scalar("label_smoothing", default=0.0, range=CLOSED_UNIT),
        ),
        returns="float",
        bytes=8,
        torch="torch.nn.functional.cross_entropy",
        examples=(
            Example("smoothing", dict(label_smoothing=0.1), dict(N=7, K=5)),
            Example("sum", dict(reduction="sum"), dict(N=7, K=5)),
            Example("ignore", dict(ignore_index=0), dict(N=40, K=3)),
        ),
    ),
    Kernel(
        "multi_margin_loss",
        "loss",
        "Multiclass hinge loss of (N, K) scores and (N,) int64 labels, as "
        "torch.nn.functional.multi_margin_loss (divided by K); writes d loss / d scores into grad when given. "
        "Returns the loss.",
        (
            Array("scores", shape=("N", "K"), dtype="real"),
            Array("labels", shape=("N",), dtype="int64", values="labels"),
            Array("grad", WRITE, shape="like:scores", dtype="real", optional=True, default=None),
            Scalar("p", "int", default=1, range=(1, 2), message="p must be 1 or 2, got {value}"),
            Scalar("margin", default=1.0, range=FINITE),
            _REDUCTION,
        ),
        returns="float",
        bytes=8,
        torch="torch.nn.functional.multi_margin_loss",
        examples=(
            Example("p1", {}, dict(N=7, K=5)),
            Example("p2", dict(p=2, margin=0.5), dict(N=7, K=5)),
            Example("sum", dict(reduction="sum"), dict(N=7, K=5)),
        ),
    ),
    Kernel(
        "mse_loss",
        "loss",
        "Mean (or summed) squared error, as torch.nn.functional.mse_loss; grad = 2 (pred - "
        "target) / n (no / n for 'sum') when given. Returns the loss.",
        (
            Array("pred", dtype="real"),
            Array("target", shape="like:pred", dtype="wide"),
            Array("grad", WRITE, shape="like:pred", dtype="real", optional=True, default=None),
            _REDUCTION,
        ),
        returns="float",
        torch="torch.nn.functional.mse_loss",
        examples=(Example("mean", {}, {"...": (9, 3)}), Example("sum", dict(reduction="sum"), {"...": (4,)})),
    ),
    Kernel(
        "sum_of_squares_loss",
        "loss",
        "The seeds' L2 loss L = sum_i (pred_i - target_i)^2 (= "
        "mse_loss(reduction='sum')); grad = 2 (pred - target) when given. Returns the loss.",
        (
            Array("pred", dtype="real"),
            Array("target", shape="like:pred", dtype="wide"),
            Array("grad", WRITE, shape="like:pred", dtype="real", optional=True, default=None),
        ),
        returns="float",
        examples=(Example("flat", {}, {"...": (11,)}),),
    ),
    Kernel(
        "bce_with_logits",
        "loss",
        "Binary cross-entropy with logits, as "
        "torch.nn.functional.binary_cross_entropy_with_logits (pos_weight: (C,) over the last axis); grad = "
        "((pw t + 1 - t) sigmoid(x) - pw t) / n when given. Returns the loss.",
        (
            Array("logits", dtype="real"),
            Array("targets", shape="like:logits", dtype="wide", values="probability"),
            Array("grad", WRITE, shape="like:logits", dtype="real", optional=True, default=None),
            _REDUCTION,
            Array("pos_weight", shape=_class_axis, dtype="wide", optional=True, default=None, values="positive"),
        ),
        returns="float",
        bytes=12,
        torch="torch.nn.functional.binary_cross_entropy_with_logits",
        examples=(Example("plain", {}, {"...": (6, 4)}), Example("sum", dict(reduction="sum"), {"...": (5,)})),
    ),
)

KERNELS: dict[str, Kernel] = {
    k.name: k for k in (*OPTIMIZERS, *GRADIENTS, *BATCHNORM, *DROPOUT, *ACTIVATION, *DENSE, *LOSS)
}
