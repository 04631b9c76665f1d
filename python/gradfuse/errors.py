"""The errors of gradfuse's kernels: TypeError and ValueError subclasses that carry their fields.

Every kernel (C++ binding or NumPy twin) refuses a bad argument with a KernelTypeError (wrong type
or dtype) or a KernelValueError (wrong shape, layout, range, aliasing). Both are ordinary
TypeError / ValueError for code that catches those, and they carry what went wrong as fields:

    kernel       the kernel's name ("adam")
    argument     the argument at fault ("grads"), or None for the call as a whole
    index        its position in a list argument (3 for grads[3]), or None
    other, other_index   a second argument the message names (aliasing, dtype mismatches)
    value        the scalar value refused, where there is one

so that a caller can say it in its own terms without parsing the message: an optimizer names the
hyperparameter with torch's wording, gradient clipping names the parameter whose .grad it was.
"""

from __future__ import annotations


def label(argument: str | None, index: int | None) -> str:
    """How a message names an argument: "grads[3]" for an element of a list, "x" otherwise."""
    if argument is None:
        return ""
    return argument if index is None else f"{argument}[{index}]"


class KernelError(Exception):
    """A refused kernel call. `template` is the message after "kernel: ", with {arg} and {other}
    standing for the labels of the two arguments."""

    def __init__(
        self,
        kernel: str,
        template: str,
        argument: str | None = None,
        index: int | None = None,
        other: str | None = None,
        other_index: int | None = None,
        value=None,
    ):
        self.kernel, self.template = kernel, template
        self.argument, self.index = argument, index
        self.other, self.other_index = other, other_index
        self.value = value
        super().__init__(self.render())

    def render(self, kernel: str | None = None, name=label) -> str:
        """The message, with another kernel name and another way of naming the arguments if given."""
        text = self.template.replace("{arg}", name(self.argument, self.index))
        text = text.replace("{other}", name(self.other, self.other_index))
        return f"{kernel or self.kernel}: {text}"

    def relabel(self, kernel: str | None = None, name=label) -> KernelError:
        """The same error said by `kernel` (a caller's name), each argument named by name(argument, index)."""
        err = type(self)(
            self.kernel, self.template, self.argument, self.index, self.other, self.other_index, self.value
        )
        err.args = (self.render(kernel, name),)
        return err

    def __reduce__(self):  # picklable (multiprocessing, pytest-xdist) despite the custom __init__
        return _rebuild, (
            type(self),
            self.kernel,
            self.template,
            self.argument,
            self.index,
            self.other,
            self.other_index,
            self.value,
            self.args,
        )


def _rebuild(cls, kernel, template, argument, index, other, other_index, value, args):
    err = cls(kernel, template, argument, index, other, other_index, value)
    err.args = args
    return err


class KernelTypeError(KernelError, TypeError):
    """A kernel argument of the wrong type or dtype."""


class KernelValueError(KernelError, ValueError):
    """A kernel argument of the wrong shape or layout, out of range, or sharing memory it must not."""


__all__ = ["KernelError", "KernelTypeError", "KernelValueError", "label"]
