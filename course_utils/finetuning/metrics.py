"""Scoring generated text: exact match, token-overlap F1, ROUGE and BLEU, and batched greedy generation.

ROUGE comes from Google's ``rouge-score`` package and BLEU from ``sacrebleu``, both installed with the workbook:
nothing is fetched from a hub at run time, so the scores are the same offline and in CI.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch


def normalize(text: str) -> str:
    """Strip the ends and collapse runs of whitespace (case and punctuation are kept: they matter in Zorbish)."""
    return re.sub(r"\s+", " ", text).strip()


def _check_lengths(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references: they must pair up.")
    if not predictions:
        raise ValueError("No predictions to score.")


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Fraction of predictions equal to their reference after :func:`normalize`."""
    _check_lengths(predictions, references)
    return sum(normalize(p) == normalize(r) for p, r in zip(predictions, references)) / len(predictions)


def token_f1(prediction: str, reference: str) -> float:
    """F1 of the words two texts share (each word counted as often as it occurs in both), as in SQuAD."""
    pred, ref = normalize(prediction).split(), normalize(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def mean_token_f1(predictions: Sequence[str], references: Sequence[str]) -> float:
    """:func:`token_f1` averaged over pairs."""
    _check_lengths(predictions, references)
    return sum(token_f1(p, r) for p, r in zip(predictions, references)) / len(predictions)


def rouge(predictions: Sequence[str], references: Sequence[str],
          types: Sequence[str] = ("rouge1", "rouge2", "rougeL")) -> dict[str, float]:
    """Mean ROUGE F-measure per type, from the ``rouge-score`` package (no stemming)."""
    from rouge_score import rouge_scorer

    _check_lengths(predictions, references)
    scorer = rouge_scorer.RougeScorer(list(types), use_stemmer=False)
    totals = dict.fromkeys(types, 0.0)
    for p, r in zip(predictions, references):
        for name, score in scorer.score(normalize(r), normalize(p)).items():  # rouge-score takes (target, pred)
            totals[name] += score.fmeasure
    return {name: total / len(predictions) for name, total in totals.items()}


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU from ``sacrebleu`` (13a tokenizer, one reference per prediction), on 0-1 like the other scores.

    sacrebleu reports 0-100; it is divided by 100 here so that every score in a table reads on the same scale.
    """
    import sacrebleu

    _check_lengths(predictions, references)
    return float(sacrebleu.corpus_bleu([normalize(p) for p in predictions],
                                       [[normalize(r) for r in references]]).score) / 100


def score(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Every metric at once, each on 0-1: exact match, token F1, ROUGE-1/2/L F-measure, BLEU."""
    scores = {"exact match": exact_match(predictions, references),
              "token F1": mean_token_f1(predictions, references)}
    scores.update({name.replace("rouge", "ROUGE-"): value for name, value in rouge(predictions, references).items()})
    scores["BLEU"] = bleu(predictions, references)
    return scores


# ------------------------------------------------------------------------------------------------ generation
def _as_ids(tokenizer: Any, prompt: str | Sequence[int]) -> list[int]:
    if isinstance(prompt, str):
        return list(tokenizer(prompt)["input_ids"])
    return [int(i) for i in prompt]


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` with every sequence padded on the LEFT to the longest one.

    A decoder generates after the last position, so the prompts must end together: padding goes in front
    and the attention mask hides it.
    """
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq):] = 1
    return ids, mask


def cut_at_stop(ids: Sequence[int], stop_ids: Sequence[int]) -> list[int]:
    """The ids before the first stop id (the rest is what generation produced after it, or padding)."""
    out = []
    for i in ids:
        if i in stop_ids:
            break
        out.append(int(i))
    return out


def greedy_config(max_new_tokens: int, stop_ids: Sequence[int], pad_token_id: int,
                  min_new_tokens: int | None = None) -> Any:
    """A ``GenerationConfig`` for plain greedy decoding that the checkpoint's own settings cannot change.

    transformers fills every setting left unset from the model's ``generation_config`` (a repetition penalty there
    would silently change "greedy" answers), so the settings that act on greedy decoding are set to neutral
    values, and the sampling ones to their defaults, which also keeps generate from warning about them.
    """
    from transformers import GenerationConfig

    return GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                            eos_token_id=list(stop_ids), pad_token_id=pad_token_id, repetition_penalty=1.0,
                            no_repeat_ngram_size=0, temperature=1.0, top_k=50, top_p=1.0)


@torch.no_grad()
def generate(model: Any, tokenizer: Any, prompts: Sequence[str | Sequence[int]], *, max_new_tokens: int = 16,
             batch_size: int = 32, stop_ids: Sequence[int] | None = None, progress: bool = False) -> list[str]:
    """Greedy continuations of ``prompts`` (texts or token ids), batched with left padding; stop ids cut the text."""
    if tokenizer.pad_token_id is None:
        raise ValueError("The tokenizer has no pad token; set tokenizer.pad_token = tokenizer.eos_token first.")
    stop = list(stop_ids) if stop_ids is not None else [tokenizer.eos_token_id]
    config = greedy_config(max_new_tokens, stop, tokenizer.pad_token_id)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs: list[str] = []
    starts = range(0, len(prompts), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="generating", unit="batch")
    for start in starts:
        batch = [_as_ids(tokenizer, p) for p in prompts[start:start + batch_size]]
        ids, mask = left_pad(batch, tokenizer.pad_token_id)
        generated = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                   generation_config=config)
        for row in generated[:, ids.shape[1]:].tolist():
            outputs.append(tokenizer.decode(cut_at_stop(row, stop), skip_special_tokens=True))
    model.train(was_training)
    return outputs


def side_by_side(prompts: Sequence[str], references: Sequence[str], columns: dict[str, Sequence[str]],
                 n: int = 5) -> list[dict[str, str]]:
    """The first ``n`` examples as rows: prompt, reference, then each named column of outputs, with a tick if exact."""
    rows = []
    for i in range(min(n, len(prompts))):
        row = {"prompt": normalize(prompts[i]), "reference": normalize(references[i])}
        for name, outputs in columns.items():
            mark = " \u2713" if normalize(outputs[i]) == normalize(references[i]) else ""
            row[name] = normalize(outputs[i]) + mark
        rows.append(row)
    return rows


def table(rows: Sequence[dict[str, Any]], digits: int = 3) -> str:
    """A markdown table of ``rows`` (dicts with the same keys) with floats shown to ``digits`` significant digits."""
    from course_utils.reporting.tables import records_table

    def cell(value: Any) -> Any:
        return f"{value:.{digits}g}" if isinstance(value, float) else value

    return records_table([{key: cell(value) for key, value in row.items()} for row in rows])
