"""Exercise checks. One module per notebook (``nb00``, ``nb01``, ...); these helpers are shared by all.

A check calls the student's function on inputs it builds itself and raises :class:`CheckFailed` with a message
that says what was expected, what came back and what to try. Passing prints one line starting with a tick.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from course_utils.checks.failure import CheckFailed
from course_utils.checks.traps import (
    DelegationError,
    LibraryCall,
    check,
    library_calls,
    reference_of,
    refusal,
    student_code,
)


def call(fn: Callable[..., Any], *args: Any, what: str | None = None, **kwargs: Any) -> Any:
    """Call the student's ``fn`` with the traps armed, turning a stub, a crash or a delegation into a CheckFailed."""
    __tracebackhide__ = True
    name = what or getattr(fn, "__name__", "your function")
    if not callable(fn):
        raise CheckFailed(f"Expected a function for {name}, got {type(fn).__name__}: define it in the cell above.")
    reference = reference_of(fn)
    if reference is not None:
        raise DelegationError(refusal(name, reference).replace(" calls ", " is ", 1))
    try:
        with student_code() as region:
            result = fn(*args, **kwargs)
    except NotImplementedError:
        raise CheckFailed(
            f"{name} is not written yet: replace `raise NotImplementedError()` in the cell above with your code."
        ) from None
    except DelegationError as exc:  # a trap refused: name the student's function in the message
        raise DelegationError(refusal(name, region.tripped or str(exc))) from None
    except CheckFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - any crash is a failed check, shown with its type
        if region.tripped:  # the student caught the trap's error and failed later
            raise DelegationError(refusal(name, region.tripped)) from None
        raise CheckFailed(f"{name} raised {type(exc).__name__}: {exc}") from exc
    region.raise_if_tripped(name)
    return result


def expect(condition: bool, message: str) -> None:
    """Fail with ``message`` unless ``condition`` holds."""
    if not condition:
        raise CheckFailed(message)


def expect_equal(actual: Any, expected: Any, what: str, hint: str = "") -> None:
    """Fail unless ``actual == expected``."""
    if actual != expected:
        raise CheckFailed(f"{what}: expected {expected!r}, got {actual!r}." + (f" {hint}" if hint else ""))


def expect_close(actual: float, expected: float, what: str, *, rel: float = 1e-6, abs_: float = 0.0,
                 hint: str = "") -> None:
    """Fail unless ``actual`` is within the given relative or absolute tolerance of ``expected``."""
    try:
        value = float(actual)
    except (TypeError, ValueError):
        raise CheckFailed(f"{what}: expected a number close to {expected!r}, got {actual!r}.") from None
    if not math.isclose(value, expected, rel_tol=rel, abs_tol=abs_):
        raise CheckFailed(f"{what}: expected about {expected:.6g}, got {value:.6g}." + (f" {hint}" if hint else ""))


def expect_tensor_close(actual: Any, expected: Any, what: str, *, atol: float = 1e-5, rtol: float = 1e-5,
                        hint: str = "") -> None:
    """Fail unless two tensors (or arrays) have the same shape and values within tolerance."""
    import torch

    if not isinstance(actual, torch.Tensor):
        try:
            actual = torch.as_tensor(actual)
        except Exception:  # noqa: BLE001
            raise CheckFailed(f"{what}: expected a tensor, got {type(actual).__name__}.") from None
    expected = torch.as_tensor(expected)
    if tuple(actual.shape) != tuple(expected.shape):
        raise CheckFailed(f"{what}: expected shape {tuple(expected.shape)}, got {tuple(actual.shape)}."
                          + (f" {hint}" if hint else ""))
    actual64, expected64 = actual.detach().double().cpu(), expected.detach().double().cpu()
    if not torch.allclose(actual64, expected64, atol=atol, rtol=rtol):
        worst = (actual64 - expected64).abs().max().item()
        raise CheckFailed(f"{what}: values differ by up to {worst:.3g} (allowed {atol:g} + {rtol:g}*|expected|)."
                          + (f" {hint}" if hint else ""))


def run_experiment(student: Callable[..., Any], probe: Any, what: str) -> Any:
    """Run the student's experiment with ``probe`` (a :class:`course_utils.checks.experiments.Probe`); its answer."""
    __tracebackhide__ = True
    result = call(student, probe, what=what)
    expect(bool(probe.rows), f"{what} returned {result!r} without calling {probe.name}: the answer must come from "
                             "what you measure.")
    return result


def measured_losses(student: Callable[..., Any], probe: Any, what: str, setting: str, *, too_few: str,
                    loss: str = "validation loss", at_least: int = 4) -> tuple[Any, dict[Any, float]]:
    """Run the student's experiment: its answer, and the losses it measured by ``setting``, checked for sense.

    ``too_few`` is the message when fewer than ``at_least`` settings were measured, with ``{n}`` for their count.
    """
    __tracebackhide__ = True
    got = run_experiment(student, probe, what)
    losses = dict(zip(probe.values(setting), probe.values(loss)))
    expect(all(math.isfinite(value) and 0 < value < 20 for value in losses.values()), f"odd losses: {losses}")
    expect(len(losses) >= at_least, f"{what} " + too_few.format(n=len(losses)))
    return got, losses


def expect_reproduced(probe: Any, what: str, keys: tuple[str, ...], rel: float = 1e-6) -> None:
    """Measure every row of the probe's table again; fail unless each of ``keys`` agrees (the table is measured).

    The probe records what it measured, so a student's table can differ from a new measurement only where the
    student's code edited the record, or where the measurement itself does not repeat (then the check says so).
    """
    __tracebackhide__ = True
    for row in probe.rows:
        settings = ", ".join(f"{name}={row[name]!r}" for name in probe.settings)
        again = probe.remeasure(row)
        for key in keys:
            try:
                same = math.isclose(float(row[key]), float(again[key]), rel_tol=rel, abs_tol=1e-12)
            except (TypeError, ValueError, KeyError):
                same = False
            expect(same, f"{what}: your table gives {key} = {row.get(key)!r} for {settings}, and measuring it again "
                         f"gives {again[key]!r}. The table must hold what {probe.name} measured: call it, and leave "
                         "what it recorded as it is.")


def passed_experiment(message: str, probe: Any) -> None:
    """Report a passed experiment, with the table of the runs when the workbook measured them."""
    passed(f"{message} ({probe.about})")
    if probe.real:
        print(probe.table())


def passed(message: str) -> None:
    """Report a passed check."""
    print(f"\u2713 {message}")


def tiny_llama_sizes() -> dict[str, int]:
    """hidden, kv (the K/V projection width), mlp, vocab and layers of the embedded tiny-llama, from its config.json.

    Checks build their cases from the shipped model, so that a rebuilt model cannot leave a check behind.
    """
    import json

    from course_utils.ground import paths

    config = json.loads((paths.data_dir() / "models" / "tiny-llama" / "config.json").read_text())
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    return {"hidden": hidden, "kv": config["num_key_value_heads"] * (hidden // heads),
            "mlp": config["intermediate_size"], "vocab": config["vocab_size"], "layers": config["num_hidden_layers"]}


__all__ = ["CheckFailed", "DelegationError", "LibraryCall", "call", "check", "expect", "expect_close",
           "expect_equal", "expect_reproduced", "expect_tensor_close", "library_calls", "measured_losses", "passed",
           "passed_experiment", "run_experiment", "tiny_llama_sizes"]
