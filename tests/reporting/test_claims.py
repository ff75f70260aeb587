"""Claims: a markdown sentence bound to the key figures it reads fails when a run's figures contradict it."""

from __future__ import annotations

import nbformat
import pytest

from course_utils.reporting import claims


def _notebook(sentence_cell: str, entries: list[dict], record: str = 'key_figures.record("speedup", 1.3, "x")'):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(record), nbformat.v4.new_markdown_cell(sentence_cell)]
    nb.cells[1].metadata["claims"] = entries
    return nb


FASTER = {"sentence": "the student runs faster than its\nteacher", "holds": "speedup > 1"}
CELL = "Measured: the student runs faster than its teacher (the table above)."


def test_a_true_claim_passes_and_a_false_one_fails_with_its_sentence_figures_and_cell():
    nb = _notebook(CELL, [FASTER])
    assert claims.failed_claims(nb, {"speedup": {"value": 1.3, "unit": "x"}}) == []
    (failure,) = claims.failed_claims(nb, {"speedup": {"value": 0.8, "unit": "x"}})
    text = str(failure)
    assert failure.claim.cell == 1 and "cell 1" in text and "speedup = 0.8" in text
    assert "the student runs faster than its\\nteacher" in text and "false" in text


def test_a_claim_whose_figure_was_not_recorded_fails_and_names_it():
    (failure,) = claims.failed_claims(_notebook(CELL, [FASTER]), {"other": 2.0})
    assert "speedup was not recorded" in str(failure)


def test_the_language_reads_backticked_names_chains_arithmetic_and_functions():
    figures = {"nb03 tokens per parameter": 12.0, "a": 2.0, "b": 1.0, "c": -3.0}
    assert claims.evaluate("`nb03 tokens per parameter` < 20 and 0.4 < b / a < 0.6", figures)
    assert claims.evaluate("abs(c) > max(a, b) and min(a, b) == 1 and not a < b", figures)
    assert not claims.evaluate("1 < a < 1.5", figures)
    assert claims.figure_names("`x y` > z * 2 or abs(z) < 1") == ["x y", "z"]


@pytest.mark.parametrize("holds", ["__import__('os').system('true') == 0", "a.real > 1", "a[0] > 1",
                                   "'text' == a", "(lambda: 1)() > 0", "len(a) > 0", "a ** 2 > 1"])
def test_anything_beyond_the_language_is_refused(holds):
    with pytest.raises(claims.ClaimSyntaxError):
        claims.evaluate(holds, {"a": 2.0})


def test_a_claim_about_one_profile_is_checked_only_on_that_profile():
    nb = _notebook(CELL, [{**FASTER, "profile": "tiny"}])
    slow = {"speedup": 0.5}
    assert len(claims.failed_claims(nb, slow, profile="tiny")) == 1
    assert claims.failed_claims(nb, slow, profile="colab") == []


def test_failed_claims_reads_a_notebook_file(tmp_path):
    path = tmp_path / "04_example.ipynb"
    nbformat.write(_notebook(CELL, [FASTER]), path)
    (failure,) = claims.failed_claims(path, {"speedup": 0.9})
    assert str(failure).startswith("04_example.ipynb cell 1")


def test_the_authoring_check_finds_a_sentence_not_in_its_cell_and_a_figure_no_cell_records():
    nb = _notebook(CELL, [FASTER, {"sentence": "three times faster", "holds": "speedup > 3"},
                          {"sentence": "Measured", "holds": "tokens_per_second > 100"},
                          {"sentence": "Measured", "holds": "speedup ** 2"}, {"sentence": "Measured"}])
    problems = claims.claim_problems(nb)
    assert len(problems) == 4
    assert "not in the cell: 'three times faster'" in problems[0]
    assert "'tokens_per_second', which no cell of this notebook records" in problems[1]
    assert "Pow is not part of the claim language" in problems[2]
    assert "needs a 'sentence' and a 'holds'" in problems[3]
    assert claims.claim_problems(_notebook(CELL, [FASTER])) == []


def test_every_solution_notebooks_claims_are_well_formed_and_each_notebook_has_some():
    from course_utils.course.release import solution_notebooks

    for path in solution_notebooks():
        assert claims.claim_problems(path) == [], path.name
        assert claims.notebook_claims(path), f"{path.name} ties no sentence to a figure"

