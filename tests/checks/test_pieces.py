"""Notebook 03's model from the student's pieces: yours if written, else the reference, one line saying which."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
from exercise_answers import WRONG

from course_utils.checks import CheckFailed, nb03, pieces
from course_utils.course.exercises import load_exercises
from course_utils.course.release import (
    make_student_notebook,
    nbgrader_meta,
    read_notebook,
    solution_notebooks,
)

NOTEBOOK = next(path for path in solution_notebooks() if path.name.startswith("03_"))
# piece -> (the exercise's grade_id, the function its cell defines, the check)
PIECES = {"causal attention": ("nb03-causal-attention", "causal_attention", nb03.causal_attention),
          "learning-rate schedule": ("nb03-cosine-lr", "cosine_lr", nb03.cosine_lr),
          "sampling step": ("nb03-sampling-probs", "sampling_probs", nb03.sampling_probs)}


def _printed(fn, *args, **kwargs):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = fn(*args, **kwargs)
    return result, out.getvalue()


def _defined(source: str, name: str):
    book = load_exercises(NOTEBOOK)
    namespace: dict = {"__name__": "__main__"}
    exec(book.imports_source, namespace)  # noqa: S102 - the notebook's own imports, then the cell
    exec(source, namespace)  # noqa: S102
    return namespace[name]


def test_your_piece_takes_a_written_function_and_says_so():
    def mine(x):
        return x + 1

    assert _printed(pieces.your_piece, "the step", mine, 1, reference="the reference") == (mine, "the step: yours\n")


def test_a_stub_or_no_function_lets_the_reference_stand_in():
    def stub(x):
        raise NotImplementedError()

    for yours in (stub, None):
        got, line = _printed(pieces.your_piece, "the step", yours, 1, reference="the reference (f)")
        assert got is None and line == "the step: not written yet, the reference (f) stands in\n"


def test_a_piece_that_crashes_says_what_it_raised_and_the_reference_stands_in():
    def crashes(x):
        return x / 0

    got, line = _printed(pieces.your_piece, "the step", crashes, 1, reference="the reference")
    assert got is None and "yours raised ZeroDivisionError" in line and "the reference stands in" in line


@pytest.mark.parametrize("piece", PIECES)
def test_the_solution_stands_in_and_the_released_stub_does_not(piece):
    grade_id, name, _ = PIECES[piece]
    solution = load_exercises(NOTEBOOK).by_grade_id()[grade_id].solution_source
    got, line = _printed(nb03.your_piece, piece, _defined(solution, name))
    assert got is not None and line == f"{piece}: yours\n"
    student = make_student_notebook(read_notebook(NOTEBOOK))
    stub = next(cell.source for cell in student.cells if nbgrader_meta(cell).get("grade_id") == grade_id)
    assert "raise NotImplementedError" in stub
    got, line = _printed(nb03.your_piece, piece, _defined(stub, name))
    assert got is None and line.startswith(f"{piece}: not written yet, the reference (")


@pytest.mark.parametrize("piece", PIECES)
def test_a_wrong_piece_stands_in_as_written_and_its_check_still_catches_it(piece):
    grade_id, name, check = PIECES[piece]
    solution = load_exercises(NOTEBOOK).by_grade_id()[grade_id].solution_source
    for mistake in WRONG[grade_id]:
        wrong = _defined(solution.replace(mistake.old, mistake.new), name)
        got, line = _printed(nb03.your_piece, piece, wrong)
        assert got is wrong and line == f"{piece}: yours\n", mistake.why
        with pytest.raises(CheckFailed):
            check(wrong)


def test_the_notebook_builds_its_model_from_the_pieces():
    """The cells that build, train and sample pass the pieces on: attention=, the schedule, probs_fn=."""
    code = "\n".join(cell.source for cell in read_notebook(NOTEBOOK).cells if cell.cell_type == "code")
    for piece, (_, name, _) in PIECES.items():
        assert f'checks.your_piece("{piece}", {name})' in code
    assert code.count("attention=attention") >= 4  # the trained model, the overfit run, the reloaded, the resumed
    assert code.count("lr_schedule=lr_schedule") >= 2  # the plot, and the runs' TrainExtras
    assert code.count("extras=your_schedule") >= 3  # the run, the overfit run, the resumed run
    assert "probs_fn=sampling_step" in code
    assert "gpt.GPT(model_cfg).to(device)" not in code.split('checks.your_piece("causal attention"')[1]


def test_what_trains_is_what_the_piece_computes():
    """A model built with a piece attends with it: a piece that peeks at the future changes the past's logits."""
    from course_utils.models.gpt import GPT, GPTConfig

    cfg = GPTConfig(vocab_size=40, context_length=8, n_embd=16, n_layer=1, n_head=2)
    solution = load_exercises(NOTEBOOK).by_grade_id()["nb03-causal-attention"].solution_source
    unmasked = _defined(solution.replace('    scores = scores.masked_fill(future, float("-inf"))\n', ""),
                        "causal_attention")
    idx = torch.randint(0, 40, (1, 6))
    changed = idx.clone()
    changed[0, -1] = (changed[0, -1] + 1) % 40
    firsts = []
    for attention in (_defined(solution, "causal_attention"), unmasked):
        torch.manual_seed(0)
        model = GPT(cfg, attention=nb03.your_piece("causal attention", attention)).eval()
        with torch.no_grad():
            firsts.append(torch.allclose(model(idx)[0, 0], model(changed)[0, 0]))
    assert firsts == [True, False]
