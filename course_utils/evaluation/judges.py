"""A model as judge: the prompt that shows it two answers, its verdict read from log-likelihoods, the position swap.

The judge reads a question and two answers and is asked which one is right; its verdict is the label (" A" or
" B") it gives the higher log-probability after the prompt, so no sampling is involved. Judges are known to favour
a position: asking again with the answers swapped and counting how often the verdict follows the answer (rather
than the slot) measures that bias.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from course_utils.evaluation.scoring import continuation_logprob

LABELS = (" A", " B")


def judge_prompt(question: str, answer_a: str, answer_b: str) -> str:
    """The judge's prompt: the question, two answers labelled A and B, and the request for one letter."""
    return (f"Question: {question.strip()}\nAnswer A: {answer_a.strip()}\nAnswer B: {answer_b.strip()}\n"
            "Which answer is correct, A or B? The correct answer is")


def verdict(model: Any, tokenizer: Any, prompt: str) -> int:
    """0 for A, 1 for B: the label the judge finds more likely after ``prompt``."""
    scores = [continuation_logprob(model, tokenizer, prompt, label) for label in LABELS]
    return int(scores[1] > scores[0])


def swapped_verdicts(model: Any, tokenizer: Any, question: str, right: str, wrong: str) -> dict[str, Any]:
    """The judge asked twice, the right answer first then second: did it pick the right one each time?"""
    first = verdict(model, tokenizer, judge_prompt(question, right, wrong)) == 0
    second = verdict(model, tokenizer, judge_prompt(question, wrong, right)) == 1
    return {"right when first": first, "right when second": second, "consistent": first == second}


def judge_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Agreement with exact match (the right answer picked, over both orders) and how often the verdict held."""
    n = len(rows)
    return {"items": n,
            "agrees with exact match": sum(r["right when first"] + r["right when second"] for r in rows) / (2 * n),
            "same verdict both orders": sum(r["consistent"] for r in rows) / n,
            "picks slot A": sum(r["right when first"] + (not r["right when second"]) for r in rows) / (2 * n)}
