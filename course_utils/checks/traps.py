"""No answer by delegation: while a student's function runs, the workbook's own answer to the exercise is a trap.

Almost every exercise has its reference implementation one attribute away (``arch.rms_norm`` for the RMSNorm
exercise), so ``return arch.rms_norm(x, weight, eps)`` would pass any check. Each check declares the references
its exercise must not call with :func:`check`; while the check runs, :func:`forbid` puts a trap in place of each
of them (in every loaded ``course_utils`` module and in the student's namespace), and :func:`student_code` arms
the traps only while the student's own code runs. The check itself, computing its expected values with the
reference, never trips them. A tripped trap raises :class:`DelegationError`, which names the reference.

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
from typing import Any, NoReturn, TypeVar

from course_utils.checks.failure import CheckFailed

F = TypeVar("F", bound=Callable[..., Any])

_armed = 0  # how deep we are in student code (a student's function may call another one)
_tripped: list[str] = []  # every reference a trap refused, in order, so a swallowed refusal still counts
_traps: dict[int, Any] = {}  # id(original) -> its trap, reused by nested forbid()
_originals: dict[int, tuple[Any, str]] = {}  # id(trap) -> (original, dotted name)
_active: dict[int, int] = {}  # id(original) -> how many forbid() blocks forbid it now


class DelegationError(CheckFailed):
    """The student's answer called the workbook's own implementation of the exercise."""


def refusal(what: str, dotted: str) -> str:
    """The message a student sees when ``what`` calls (or is) the reference ``dotted``."""
    return (f"{what} calls {dotted}, the workbook's own answer to this exercise: write it yourself, with the "
            "operations the exercise names, then run the check again.")


# ---------------------------------------------------------------------------------------------------------------
# The traps


def _refuse(dotted: str) -> None:
    _tripped.append(dotted)
    raise DelegationError(refusal("your code", dotted))


def _function_trap(original: Callable[..., Any], dotted: str) -> Callable[..., Any]:
    def trap(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        if _armed:
            _refuse(dotted)
        return original(*args, **kwargs)

    for attribute in ("__name__", "__qualname__", "__doc__", "__module__"):  # not __wrapped__: no way around
        setattr(trap, attribute, getattr(original, attribute, None))
    return trap


def _class_trap(original: type, dotted: str) -> type:
    def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:  # noqa: N807 - it is the class's __new__
        if _armed:
            _refuse(dotted)
        return original(*args, **kwargs)  # an instance of the original class, initialised once

    def body(namespace: dict[str, Any]) -> None:
        namespace.update(__new__=__new__, __module__=original.__module__, __doc__=original.__doc__)

    return types.new_class(original.__name__, (original,), exec_body=body)


def _trap_for(original: Any, dotted: str) -> Any:
    trap = _traps.get(id(original))
    if trap is None:
        trap = _class_trap(original, dotted) if isinstance(original, type) else _function_trap(original, dotted)
        _traps[id(original)] = trap
        _originals[id(trap)] = (original, dotted)
    return trap


def reference_of(obj: Any) -> str | None:
    """The dotted name of the forbidden reference ``obj`` is (its trap or the original), or None."""
    trap = _traps.get(id(obj), obj)
    entry = _originals.get(id(trap))
    if entry is None or not _active.get(id(entry[0])):
        return None
    return entry[1]


def _resolve(dotted: str) -> Any:
    module_name, _, attribute = dotted.rpartition(".")
    try:
        value = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{dotted!r} is declared as a forbidden reference but does not exist: {exc}") from None
    entry = _originals.get(id(value))
    return entry[0] if entry is not None else value


def _containers(namespaces: Iterable[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    modules = [vars(module) for name, module in list(sys.modules.items())
               if module is not None and (name == "course_utils" or name.startswith("course_utils."))]
    extra = [namespace for namespace in namespaces if all(namespace is not m for m in modules)]
    return modules + extra


@contextlib.contextmanager
def forbid(references: Sequence[str], namespaces: Iterable[MutableMapping[str, Any]] = ()) -> Iterator[None]:
    """Put a trap in place of each reference (dotted names) wherever it is bound; restore everything afterwards.

    Bindings are replaced in every loaded ``course_utils`` module and in ``namespaces`` (the student's globals),
    so ``from course_utils.models.arch import rms_norm as mine`` binds the trap too. Traps refuse only while armed.
    """
    changed: list[tuple[MutableMapping[str, Any], str, Any]] = []
    pairs = [(_resolve(dotted), dotted) for dotted in references]
    for original, _ in pairs:
        _active[id(original)] = _active.get(id(original), 0) + 1
    try:
        containers = _containers(list(namespaces))
        for original, dotted in pairs:
            trap = _trap_for(original, dotted)
            for container in containers:
                for key, value in list(container.items()):
                    if value is original:
                        container[key] = trap
                        changed.append((container, key, original))
        yield
    finally:
        for container, key, original in reversed(changed):
            container[key] = original
        for original, _ in pairs:
            _active[id(original)] -= 1


class student_code:  # noqa: N801 - used like a function: ``with student_code() as region:``
    """Arms the traps while the student's code runs; ``tripped`` names the first reference refused inside."""

    def __enter__(self) -> student_code:
        global _armed
        self._start = len(_tripped)
        self.tripped: str | None = None
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


def check(*, forbids: Sequence[str] = ()) -> Callable[[F], F]:
    """Declare an exercise check: the references its exercise must not call, and a traceback that hides the check.

    While the check runs, ``forbids`` are traps (see :func:`forbid`) in the modules and in the globals of the
    student functions it was given. A failing check re-raises its :class:`CheckFailed` without the check's own
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


def forbidden_by(check_source: str, namespace: MutableMapping[str, Any]) -> tuple[str, ...]:
    """The references forbidden by the checks that ``check_source`` calls (looked up in ``namespace``)."""
    try:
        tree = ast.parse(check_source)
    except SyntaxError:
        return ()
    found: list[str] = []
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
