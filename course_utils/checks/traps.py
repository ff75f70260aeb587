"""No answer by delegation: while a student's function runs, the workbook's own answer to the exercise is a trap.

Almost every exercise has its reference implementation one attribute away (``arch.rms_norm`` for the RMSNorm
exercise), so ``return arch.rms_norm(x, weight, eps)`` would pass any check. Each check declares the references
its exercise must not call with :func:`check`; while the check runs, :func:`forbid` puts a trap in place of each
of them (in every loaded ``course_utils`` module and in the student's namespace), and :func:`student_code` arms
the traps only while the student's own code runs. The check itself, computing its expected values with the
reference, never trips them. A tripped trap raises :class:`DelegationError`, which names the reference.

A library's own implementation of the exercise is a shortcut too (``F.scaled_dot_product_attention`` for the
causal attention exercise, ``F.rms_norm`` for RMSNorm). A check declares it as a :class:`LibraryCall` among its
``forbids``: its trap goes on the attribute of every loaded module of that library that binds it (the module that
owns it and the aliases students use, ``torch.nn.functional.X`` and ``torch.X``), besides the places above, and its
refusal says which call was refused and why.

The traps stop delegation, not a determined cheat (who can read the solutions or the check's source anyway).
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib
import inspect
import sys
import types
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from course_utils.checks.failure import CheckFailed

F = TypeVar("F", bound=Callable[..., Any])



@dataclass(frozen=True)
class LibraryCall:
    """A library's implementation of what an exercise asks the student to write, and why the check refuses it."""

    path: str  # where students find it, e.g. "torch.nn.functional.scaled_dot_product_attention"
    why: str  # e.g. "this exercise asks you to write causal attention yourself"

    def __str__(self) -> str:
        return self.path


def library_calls(why: str, *paths: str) -> tuple[LibraryCall, ...]:
    """The library calls ``paths`` (dotted names), all refused for the same reason."""
    return tuple(LibraryCall(path, why) for path in paths)


Reference = str | LibraryCall  # a workbook reference (its dotted name) or a library call

_armed = 0  # how deep we are in student code (a student's function may call another one)
_tripped: list[Reference] = []  # every reference a trap refused, in order, so a swallowed refusal still counts
_traps: dict[int, Any] = {}  # id(original) -> its trap, reused by nested forbid()
_originals: dict[int, Any] = {}  # id(trap) -> the original
_active: dict[int, list[Reference]] = {}  # id(original) -> the declarations of the forbid() blocks forbidding it now


class DelegationError(CheckFailed):
    """The student's answer called the workbook's own implementation of the exercise, or a library's."""


def refusal(what: str, reference: Reference) -> str:
    """The message a student sees when ``what`` calls (or is) ``reference``."""
    if isinstance(reference, LibraryCall):
        return (f"{what} calls {reference.path}, the library's own answer to this exercise, which the check refuses: "
                f"{reference.why}, with the operations the exercise names, then run the check again.")
    return (f"{what} calls {reference}, the workbook's own answer to this exercise: write it yourself, with the "
            "operations the exercise names, then run the check again.")


# ---------------------------------------------------------------------------------------------------------------
# The traps


def _refuse(original: Any) -> None:
    reference = _active[id(original)][-1]  # the innermost check's declaration
    _tripped.append(reference)
    raise DelegationError(refusal("your code", reference))


def _function_trap(original: Callable[..., Any]) -> Callable[..., Any]:
    def trap(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        if _armed and _active.get(id(original)):  # a trap kept past its forbid() refuses nothing
            _refuse(original)
        return original(*args, **kwargs)

    for attribute in ("__name__", "__qualname__", "__doc__", "__module__"):  # not __wrapped__: no way around
        setattr(trap, attribute, getattr(original, attribute, None))
    return trap


def _class_trap(original: type) -> type | Callable[..., Any]:
    def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:  # noqa: N807 - it is the class's __new__
        if _armed and _active.get(id(original)):  # a trap kept past its forbid() refuses nothing
            _refuse(original)
        return original(*args, **kwargs)  # an instance of the original class, initialised once

    def body(namespace: dict[str, Any]) -> None:
        namespace.update(__new__=__new__, __module__=original.__module__, __doc__=original.__doc__)

    try:
        return types.new_class(original.__name__, (original,), exec_body=body)
    except TypeError:  # a compiled class that refuses subclasses (safetensors' safe_open): a function stands in
        return _function_trap(original)


def _trap_for(original: Any) -> Any:
    trap = _traps.get(id(original))
    if trap is None:
        trap = _class_trap(original) if isinstance(original, type) else _function_trap(original)
        _traps[id(original)] = trap
        _originals[id(trap)] = original
    return trap


def reference_of(obj: Any) -> Reference | None:
    """The forbidden reference ``obj`` is (its trap or the original), or None."""
    trap = _traps.get(id(obj), obj)
    original = _originals.get(id(trap))
    declarations = _active.get(id(original)) if original is not None else None
    return declarations[-1] if declarations else None


_NOT_INSTALLED = object()


def _resolve(reference: Reference) -> Any:
    """The original object ``reference`` names; for a library call of a package not installed, _NOT_INSTALLED."""
    dotted = str(reference)
    module_name, _, attribute = dotted.rpartition(".")
    try:
        value = getattr(importlib.import_module(module_name), attribute)
    except ImportError:
        if isinstance(reference, LibraryCall):
            return _NOT_INSTALLED  # nobody can call a library that is not there
        raise ValueError(f"{dotted!r} is declared as a forbidden reference but cannot be imported") from None
    except AttributeError as exc:
        raise ValueError(f"{dotted!r} is declared as a forbidden reference but does not exist: {exc}") from None
    original = _originals.get(id(value))
    return original if original is not None else value


def _library_bindings(reference: LibraryCall, value: Any) -> list[tuple[MutableMapping[str, Any], str]]:
    """Every loaded module of the library binding ``value`` under the call's own name: where the trap goes."""
    package, attribute = reference.path.split(".", 1)[0], reference.path.rsplit(".", 1)[1]
    found = []
    for name, module in list(sys.modules.items()):
        if module is None or not (name == package or name.startswith(package + ".")):
            continue
        namespace = getattr(module, "__dict__", None)
        if isinstance(namespace, dict) and namespace.get(attribute) is value:
            found.append((namespace, attribute))
    return found


def _containers(namespaces: Iterable[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    modules = [vars(module) for name, module in list(sys.modules.items())
               if module is not None and (name == "course_utils" or name.startswith("course_utils."))]
    extra = [namespace for namespace in namespaces if all(namespace is not m for m in modules)]
    return modules + extra


@contextlib.contextmanager
def forbid(references: Sequence[Reference], namespaces: Iterable[MutableMapping[str, Any]] = ()) -> Iterator[None]:
    """Put a trap in place of each reference wherever it is bound; restore everything afterwards, whatever happens.

    Bindings are replaced in every loaded ``course_utils`` module and in ``namespaces`` (the student's globals),
    so ``from course_utils.models.arch import rms_norm as mine`` binds the trap too; a :class:`LibraryCall` is
    replaced in its library's modules as well. Traps refuse only while armed.
    """
    changed: list[tuple[MutableMapping[str, Any], str, Any]] = []
    pairs = [(original, reference) for reference in references
             if (original := _resolve(reference)) is not _NOT_INSTALLED]
    for original, reference in pairs:
        _active.setdefault(id(original), []).append(reference)
    try:
        containers = _containers(list(namespaces))
        for original, reference in pairs:
            trap = _trap_for(original)
            for container in containers:
                for key, value in list(container.items()):
                    if value is original:
                        container[key] = trap
                        changed.append((container, key, original))
            if isinstance(reference, LibraryCall):
                for container, key in _library_bindings(reference, original):
                    container[key] = trap
                    changed.append((container, key, original))
        yield
    finally:
        for container, key, original in reversed(changed):
            container[key] = original
        for original, reference in pairs:
            last = len(_active[id(original)]) == 1  # an outer forbid() of the same call keeps its traps
            if last and isinstance(reference, LibraryCall):  # a lazy module (transformers) may have cached the trap
                for container, key in _library_bindings(reference, _traps[id(original)]):
                    container[key] = original
            _active[id(original)].pop()


class student_code:  # noqa: N801 - used like a function: ``with student_code() as region:``
    """Arms the traps while the student's code runs; ``tripped`` names the first reference refused inside."""

    def __enter__(self) -> student_code:
        global _armed
        self._start = len(_tripped)
        self.tripped: Reference | None = None
        _armed += 1
        return self

    def __exit__(self, *exc_info: object) -> None:
        global _armed
        _armed -= 1
        if len(_tripped) > self._start:
            self.tripped = _tripped[self._start]

    def raise_if_tripped(self, what: str) -> None:
        """Raise DelegationError if a trap fired in the region, even when the student's code caught it."""
        if self.tripped is not None:
            raise DelegationError(refusal(what, self.tripped))


# ---------------------------------------------------------------------------------------------------------------
# Declaring a check, and finding what a check cell forbids


def _globals_of(value: Any) -> MutableMapping[str, Any] | None:
    function = inspect.unwrap(value) if callable(value) else None
    return getattr(function, "__globals__", None)


def check(*, forbids: Sequence[Reference] = ()) -> Callable[[F], F]:
    """Declare an exercise check: the references its exercise must not call, and a traceback that hides the check.

    ``forbids`` holds the workbook's references by dotted name and the libraries' implementations as
    :class:`LibraryCall` (see :func:`library_calls`). While the check runs, they are traps (see :func:`forbid`)
    in the modules and in the globals of the student functions it was given. A failing check re-raises its :class:`CheckFailed` without the check's own
    frames, so the student sees the message, not the lines that compute the expected answer.
    """
    references = tuple(forbids)

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def run_check(*args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True  # IPython and pytest leave this frame out of the traceback
            namespaces = [g for g in map(_globals_of, (*args, *kwargs.values())) if g is not None]
            try:
                with forbid(references, namespaces):
                    return fn(*args, **kwargs)
            except CheckFailed as failure:
                _report(failure)

        run_check.forbids = references  # type: ignore[attr-defined]
        return run_check  # type: ignore[return-value]

    return decorate


def _report(failure: CheckFailed) -> NoReturn:
    # The check's own frames are left out of this traceback: the message below says what to fix.
    raise failure.with_traceback(None) from failure.__cause__


def _lookup(node: ast.expr, namespace: MutableMapping[str, Any]) -> Any:
    if isinstance(node, ast.Name):
        return namespace.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _lookup(node.value, namespace)
        if isinstance(base, types.ModuleType) or callable(base):
            return getattr(base, node.attr, None)
    return None


def forbidden_by(check_source: str, namespace: MutableMapping[str, Any]) -> tuple[Reference, ...]:
    """The references (library calls included) forbidden by the checks that ``check_source`` calls."""
    try:
        tree = ast.parse(check_source)
    except SyntaxError:
        return ()
    found: list[Reference] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for reference in getattr(_lookup(node.func, namespace), "forbids", ()):
                if reference not in found:
                    found.append(reference)
    return tuple(found)


def arm_functions_from(namespace: MutableMapping[str, Any], filename: str) -> list[str]:
    """Wrap every function defined in the code named ``filename`` so that calling it arms the traps.

    The grader does this after the exercise cell ran, so a hidden test that calls the student's function directly
    is held to the same rule as the check. Returns the names wrapped.
    """
    wrapped = []
    for name, value in list(namespace.items()):
        if isinstance(value, types.FunctionType) and value.__code__.co_filename == filename:
            namespace[name] = _armed_function(value)
            wrapped.append(name)
    return wrapped


def _armed_function(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def armed(*args: Any, **kwargs: Any) -> Any:
        with student_code() as region:
            result = fn(*args, **kwargs)
        region.raise_if_tripped(getattr(fn, "__name__", "your function"))
        return result

    return armed
