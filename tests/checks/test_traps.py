"""course_utils.checks.traps: references become traps while student code runs, and a failing check hides its code."""

from __future__ import annotations

import contextlib
import io
import traceback

import pytest
import torch

from course_utils.checks import CheckFailed, DelegationError, call, check, nb00, nb03, traps
from course_utils.course.exercises import evaluate, load_exercises
from course_utils.course.release import solution_notebooks
from course_utils.models import arch
from course_utils.training import text_data, train

RMS = "course_utils.models.arch.rms_norm"


def test_forbid_puts_a_trap_wherever_the_reference_is_bound_and_restores_it():
    original, imported = train.lr_at, nb03.lr_at  # nb03 imported it by name
    namespace = {"mine": train.lr_at, "other": 1}
    with traps.forbid(["course_utils.training.train.lr_at"], [namespace]):
        assert train.lr_at is not original and nb03.lr_at is train.lr_at and namespace["mine"] is train.lr_at
        assert namespace["other"] == 1
        assert train.lr_at.__name__ == "lr_at" and not hasattr(train.lr_at, "__wrapped__")
    assert train.lr_at is original and nb03.lr_at is imported and namespace["mine"] is original


def test_a_trap_calls_the_reference_for_the_check_and_refuses_the_student():
    x, w = torch.randn(2, 4), torch.ones(4)
    expected = arch.rms_norm(x, w)
    with traps.forbid([RMS]):
        assert torch.equal(arch.rms_norm(x, w), expected)  # the check computing its expected value
        with traps.student_code() as region, pytest.raises(DelegationError, match=f"calls {RMS}"):
            arch.rms_norm(x, w)
    assert region.tripped == RMS


def test_nested_forbids_keep_the_traps_until_the_outer_one_ends():
    original = arch.rms_norm
    with traps.forbid([RMS]):
        trap = arch.rms_norm
        with traps.forbid([RMS, "course_utils.models.arch.swiglu"]):
            assert arch.rms_norm is trap
        assert arch.rms_norm is trap and traps.reference_of(trap) == RMS
    assert arch.rms_norm is original and traps.reference_of(original) is None


def test_a_class_trap_builds_the_original_for_the_check_and_refuses_instances_and_subclasses_for_the_student():
    with traps.forbid(["course_utils.training.text_data.SlidingWindowDataset"]):
        windows = text_data.SlidingWindowDataset(list(range(10)), 4, 4)
        assert type(windows).__name__ == "SlidingWindowDataset" and len(windows) == 2
        with traps.student_code(), pytest.raises(DelegationError, match="SlidingWindowDataset"):
            text_data.SlidingWindowDataset(list(range(10)), 4, 4)

        class Mine(text_data.SlidingWindowDataset):
            pass

        with traps.student_code(), pytest.raises(DelegationError):
            Mine(list(range(10)), 4, 4)


def _forbidding_check(student):
    return call(student, torch.ones(3), torch.ones(3))


def test_call_refuses_the_reference_itself_a_call_to_it_and_a_call_the_student_caught():
    def delegates(x, w):
        return arch.rms_norm(x, w)

    def hides_it(x, w):
        try:
            return arch.rms_norm(x, w)
        except Exception:  # noqa: BLE001 - what a student might write
            return x

    def honest(x, w):
        return x * w

    with traps.forbid([RMS]):
        for answer, words in ((arch.rms_norm, "is course_utils"), (delegates, "delegates calls course_utils"),
                              (hides_it, "hides_it calls course_utils")):
            with pytest.raises(DelegationError, match=words):
                _forbidding_check(answer)
        assert torch.equal(_forbidding_check(honest), torch.ones(3))
    assert torch.equal(_forbidding_check(arch.rms_norm), arch.rms_norm(torch.ones(3), torch.ones(3)))  # not forbidden


def test_check_declares_the_references_and_patches_the_students_globals():
    @check(forbids=[RMS])
    def a_check(student):
        call(student, torch.ones(3), torch.ones(3))

    notebook = {"__name__": "__main__"}  # a kernel's namespace: the student imported the reference by name
    exec("from course_utils.models.arch import rms_norm as mine\n\ndef answer(x, w):\n    return mine(x, w)", notebook)
    assert a_check.forbids == (RMS,)
    with pytest.raises(DelegationError, match="answer calls course_utils.models.arch.rms_norm"):
        a_check(notebook["answer"])
    assert notebook["mine"] is arch.rms_norm  # restored


def test_a_failing_check_raises_without_its_own_frames():
    def stub(n_params, bits):
        raise NotImplementedError()

    with pytest.raises(CheckFailed) as info:
        nb00.weights_gib(stub)
    files = {frame.filename for frame in traceback.extract_tb(info.value.__traceback__)}
    assert not any(name.endswith("nb00.py") for name in files), files
    assert "not written yet" in str(info.value)


def _ipython_output(*cells: str) -> str:
    """What a notebook shows for the last cell (IPython's own traceback formatting, without colours)."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance(colors="nocolor")
    for cell in cells[:-1]:
        assert shell.run_cell(cell).success, cell
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        shell.run_cell(cells[-1])
    return out.getvalue()


@pytest.mark.parametrize(("answer", "message"), [
    ("    raise NotImplementedError()", "weights_gib is not written yet"),
    ("    return n_params * bits / 8 / 1e9", "which is in GB"),
    ("    return memory.weights_gib(n_params, bits)", "weights_gib calls course_utils.models.memory.weights_gib"),
])
def test_a_notebook_shows_the_checks_message_and_none_of_its_source(answer, message):
    output = _ipython_output("from course_utils.models import memory\nfrom course_utils.checks import nb00 as checks",
                             f"def weights_gib(n_params, bits):\n{answer}", "checks.weights_gib(weights_gib)")
    assert message in output
    for check_line in ("expected = memory.weights_gib", "got = _number(call(student", "nb00.py"):
        assert check_line not in output, output


def test_forbidden_by_reads_the_checks_a_check_cell_calls():
    namespace = {"checks": nb03}
    source = "checks.cosine_lr(cosine_lr)\nassert cosine_lr(0, 10, 1, 1.0, 0.0) == 1.0\ncheckz.nothing(1)"
    assert traps.forbidden_by(source, namespace) == ("course_utils.training.train.lr_at",)
    assert traps.forbidden_by("not python (", namespace) == ()


def test_the_grader_holds_a_hidden_test_to_the_same_rule():
    book = load_exercises(next(p for p in solution_notebooks() if p.name.startswith("02_")))
    exercise = book.by_grade_id()["nb02-rms-norm"]
    sneaky = exercise.solution_source.replace(
        "    ### BEGIN SOLUTION", "    if eps == 0.3125:  # a case the visible check does not try\n"
        "        return arch.rms_norm(x, weight, eps)\n    ### BEGIN SOLUTION")
    check_source = exercise.visible_check_source + "\nassert rms_norm(torch.ones(2), torch.ones(2), 0.3125).shape == (2,)"
    result = evaluate(book.imports_source, sneaky, check_source, timeout=120)
    assert not result.passed and result.kind == "delegated" and result.stage == "check", result
    assert result.line == 2 and RMS in result.message
    honest = evaluate(book.imports_source, exercise.solution_source, check_source, timeout=120)
    assert honest.passed, honest.message


SDPA = traps.LibraryCall("torch.nn.functional.scaled_dot_product_attention", "write attention yourself")


def test_a_library_call_is_trapped_in_every_module_of_its_library_and_restored_after_an_error():
    import torch.nn.functional as F

    original = F.scaled_dot_product_attention
    q = torch.randn(1, 1, 3, 4)
    namespace = {"sdpa": original}  # a student's `from torch.nn.functional import scaled_dot_product_attention`
    with pytest.raises(RuntimeError, match="inside"), traps.forbid([SDPA], [namespace]):
        trap = F.scaled_dot_product_attention
        assert trap is not original and torch._C._nn.scaled_dot_product_attention is trap and namespace["sdpa"] is trap
        assert torch.equal(trap(q, q, q), original(q, q, q))  # the check computing its expected value
        with traps.student_code() as region, pytest.raises(DelegationError) as info:
            torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
        assert region.tripped == SDPA
        assert "calls torch.nn.functional.scaled_dot_product_attention" in str(info.value)
        assert "write attention yourself" in str(info.value) and "workbook" not in str(info.value)
        raise RuntimeError("a check failing inside")
    assert F.scaled_dot_product_attention is original and torch._C._nn.scaled_dot_product_attention is original
    assert namespace["sdpa"] is original


def test_a_library_class_is_trapped_and_one_that_refuses_subclasses_gets_a_function_trap():
    import safetensors
    import safetensors.torch

    original = safetensors.safe_open
    mha = torch.nn.MultiheadAttention
    calls = traps.library_calls("read it yourself", "safetensors.safe_open", "torch.nn.MultiheadAttention")
    with traps.forbid(calls):
        assert safetensors.safe_open is not original and safetensors.torch.safe_open is safetensors.safe_open
        assert isinstance(torch.nn.MultiheadAttention(4, 1), mha)  # built for the check
        with traps.student_code(), pytest.raises(DelegationError, match="safetensors.safe_open"):
            safetensors.safe_open("anything.safetensors", "pt")
        with traps.student_code(), pytest.raises(DelegationError, match="torch.nn.MultiheadAttention"):
            torch.nn.modules.activation.MultiheadAttention(4, 1)
    assert safetensors.safe_open is original and safetensors.torch.safe_open is original
    assert torch.nn.MultiheadAttention is mha and torch.nn.modules.activation.MultiheadAttention is mha


def test_a_lazy_module_that_cached_the_trap_gets_the_original_back():
    import transformers
    from transformers.generation import logits_process

    warper = traps.LibraryCall("transformers.TopKLogitsWarper", "write top-k yourself")
    original = logits_process.TopKLogitsWarper
    with traps.forbid([warper]):
        vars(transformers.generation)["TopKLogitsWarper"] = logits_process.TopKLogitsWarper  # what a lazy import does
        assert transformers.TopKLogitsWarper is not original
    assert transformers.TopKLogitsWarper is original and transformers.generation.TopKLogitsWarper is original


def test_a_library_that_is_not_installed_is_nothing_to_trap_and_a_misspelt_call_is_an_error():
    with traps.forbid([traps.LibraryCall("no_such_library_here.quantize", "write it yourself")]):
        pass
    with pytest.raises(ValueError, match="does not exist"), traps.forbid(
            [traps.LibraryCall("torch.nn.functional.no_such_function", "write it yourself")]):
        pass


def test_the_innermost_check_gives_its_reason():
    outer, inner = traps.LibraryCall(SDPA.path, "outer reason"), traps.LibraryCall(SDPA.path, "inner reason")
    q = torch.randn(1, 1, 2, 2)
    with traps.forbid([outer]):
        with traps.forbid([inner]), traps.student_code(), pytest.raises(DelegationError, match="inner reason"):
            torch.nn.functional.scaled_dot_product_attention(q, q, q)
        with traps.student_code(), pytest.raises(DelegationError, match="outer reason"):
            torch.nn.functional.scaled_dot_product_attention(q, q, q)


def test_a_trap_kept_past_its_forbid_refuses_nothing():
    with traps.forbid([SDPA]):
        kept = torch.nn.functional.scaled_dot_product_attention  # e.g. a default argument bound to the trap
    q = torch.randn(1, 1, 2, 2)
    with traps.student_code() as region:
        assert torch.equal(kept(q, q, q), torch.nn.functional.scaled_dot_product_attention(q, q, q))
    assert region.tripped is None
