"""Checks for Notebook 05 (LoRA and QLoRA): the LoRA forward pass, adapter parameter counts, label masking with
padding, block-wise NF4 quantization, the experiment that finds where LoRA stops improving with the rank, and
the debugging exercise of a training example built by hand."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from course_utils.checks import (
    CheckFailed,
    call,
    check,
    expect,
    expect_equal,
    expect_tensor_close,
    library_calls,
    measured_losses,
    passed,
    passed_experiment,
    tiny_llama_sizes,
)
from course_utils.finetuning import lora, quant, sft_data

IGNORE_INDEX = sft_data.IGNORE_INDEX


def _tensor(value: object, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise CheckFailed(f"{what}: expected a torch.Tensor, got {type(value).__name__}. Return the tensor.")
    return value


# ------------------------------------------------------------------------------------------------ lora_forward
def _lora_case(seed: int, d_out: int, d_in: int, r: int, bias: bool) -> dict[str, torch.Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(2, 3, d_in, generator=g), "weight": torch.randn(d_out, d_in, generator=g) / d_in**0.5,
            "bias": torch.randn(d_out, generator=g) if bias else None,
            "lora_A": torch.randn(r, d_in, generator=g) * 0.1, "lora_B": torch.randn(d_out, r, generator=g) * 0.1}


@check(forbids=("course_utils.finetuning.lora.lora_forward", "course_utils.finetuning.lora.LoRALinear"))
def lora_forward(student: Callable[..., torch.Tensor]) -> None:
    """``lora_forward(x, weight, bias, lora_A, lora_B, alpha, r)``: ``x W0^T + b + (alpha/r) x A^T B^T``."""
    cases = [(0, 6, 5, 2, 8.0, True), (1, 4, 7, 3, 6.0, False), (2, 9, 9, 4, 16.0, True)]  # alpha / r never 1
    for seed, d_out, d_in, r, alpha, bias in cases:
        t = _lora_case(seed, d_out, d_in, r, bias)
        what = (f"lora_forward with x {tuple(t['x'].shape)}, weight {d_out}x{d_in}, A {r}x{d_in}, B {d_out}x{r}, "
                f"alpha={alpha:g}, r={r}" + ("" if bias else ", no bias"))
        got = _tensor(call(student, t["x"], t["weight"], t["bias"], t["lora_A"], t["lora_B"], alpha, r,
                           what="lora_forward"), what)
        expected = lora.lora_forward(t["x"], t["weight"], t["bias"], t["lora_A"], t["lora_B"], alpha, r)
        expect_equal(tuple(got.shape), tuple(expected.shape), f"{what}: output shape",
                     "The output has one value per output feature: (..., d_out).")
        base = torch.nn.functional.linear(t["x"], t["weight"], t["bias"])
        update = (t["x"] @ t["lora_A"].T) @ t["lora_B"].T
        if torch.allclose(got, base, atol=1e-5):
            raise CheckFailed(f"{what}: your output equals the frozen layer alone; add the low-rank update "
                              "(alpha / r) * (x @ A.T) @ B.T.")
        if torch.allclose(got, base + update, atol=1e-5):
            raise CheckFailed(f"{what}: the update is not scaled. Multiply (x @ A.T) @ B.T by alpha / r "
                              f"(here {alpha:g} / {r} = {alpha / r:g}).")
        if torch.allclose(got, base + (r / alpha) * update, atol=1e-5):
            raise CheckFailed(f"{what}: the update is scaled by r / alpha; the scaling is alpha / r.")
        if torch.allclose(got, base + alpha * update, atol=1e-5):
            raise CheckFailed(f"{what}: the update is scaled by alpha; divide by r too (alpha / r).")
        if bias and torch.allclose(got, expected - t["bias"], atol=1e-5):
            raise CheckFailed(f"{what}: the bias is missing; the frozen layer computes x @ weight.T + bias.")
        expect_tensor_close(got, expected, what, atol=1e-5, rtol=1e-5,
                            hint="Compute x @ weight.T (+ bias) + (alpha / r) * (x @ lora_A.T) @ lora_B.T.")
    t = _lora_case(3, 5, 4, 2, True)
    zero_b = torch.zeros_like(t["lora_B"])
    got = _tensor(call(student, t["x"], t["weight"], t["bias"], t["lora_A"], zero_b, 32.0, 2, what="lora_forward"),
                  "lora_forward with B = 0")
    expect(torch.equal(got, torch.nn.functional.linear(t["x"], t["weight"], t["bias"])),
           "lora_forward with B = 0 should give exactly the frozen layer's output (that is why B starts at zero).")
    passed("lora_forward: x W0^T + b + (alpha/r) (x A^T) B^T, and exactly the frozen layer while B = 0.")


# ------------------------------------------------------------------------------------------------ parameter count
def tiny_llama_shapes() -> list[tuple[int, int]]:
    """(d_out, d_in) of every q, k, v, o, gate, up and down projection of the embedded tiny-llama."""
    s = tiny_llama_sizes()
    h, kv, mlp = s["hidden"], s["kv"], s["mlp"]
    return [(h, h), (kv, h), (kv, h), (h, h), (mlp, h), (mlp, h), (h, mlp)] * s["layers"]


@check(forbids=("course_utils.finetuning.lora.lora_param_count", "course_utils.finetuning.lora.count_table"))
def lora_parameter_count(student: Callable[[Sequence[tuple[int, int]], int], int]) -> None:
    """``lora_parameter_count(shapes, r)``: trainable LoRA parameters over layers of shape ``(d_out, d_in)``."""
    cases = [([(4096, 4096)], 16, "one 4096 x 4096 layer (the workshop guide's example)"),
             ([(11008, 4096)], 8, "one 11008 x 4096 MLP layer"),
             (tiny_llama_shapes(), 16, "every q,k,v,o,gate,up,down layer of tiny-llama"),
             ([(10, 3), (5, 10), (7, 7)], 2, "three small layers")]
    for shapes, r, label in cases:
        what = f"lora_parameter_count for {label}, r={r}"
        got = call(student, list(shapes), r, what="lora_parameter_count")
        expected = sum(lora.lora_param_count(d, k, r) for d, k in shapes)
        if isinstance(got, float) and got.is_integer():
            got = int(got)
        if not isinstance(got, int) or isinstance(got, bool):
            raise CheckFailed(f"{what}: expected an integer, got {type(got).__name__} {got!r}.")
        if got == sum(d * k for d, k in shapes):
            raise CheckFailed(f"{what}: got {got:,}, the size of the full weights (d x k). LoRA trains A (r x k) "
                              "and B (d x r) instead.")
        if got == sum(r * d * k for d, k in shapes):
            raise CheckFailed(f"{what}: got {got:,} = r x d x k. A has r x k and B has d x r entries: add them, "
                              "do not multiply.")
        if len(shapes) > 1 and got == lora.lora_param_count(*shapes[0], r):
            raise CheckFailed(f"{what}: got {got:,}, the count of the first layer only; sum over all layers.")
        if got == sum(2 * r * d for d, _ in shapes) and any(d != k for d, k in shapes):
            raise CheckFailed(f"{what}: got {got:,}; that assumes square layers. A is r x d_in, B is d_out x r.")
        expect_equal(got, expected, what, "Each layer adds r * (d_out + d_in); sum over the layers.")
    passed("lora_parameter_count: r (d + k) per layer; 131,072 instead of 16,777,216 for 4096 x 4096 at r = 16.")


# ------------------------------------------------------------------------------------------------ make_batch
@check(forbids=("course_utils.finetuning.sft_data.build_example", "trl.trainer.sft_trainer.DataCollatorForLanguageModeling"))
def make_batch(student: Callable[..., dict[str, torch.Tensor]]) -> None:
    """``make_batch(pairs, pad_id)``: right-padded ids, attention mask, labels with -100 on prompt and padding."""
    pad_id = 1
    pairs = [([5, 6, 7, 8], [20, 21, 0]), ([9, 10], [30, 31, 32, 33, 0]), ([11, 12, 13], [40, 0])]
    got = call(student, [(list(p), list(c)) for p, c in pairs], pad_id, what="make_batch")
    if not isinstance(got, dict):
        raise CheckFailed(f"make_batch: expected a dict with input_ids, attention_mask and labels, got "
                          f"{type(got).__name__}.")
    missing = {"input_ids", "attention_mask", "labels"} - set(got)
    expect(not missing, f"make_batch: the dict lacks {sorted(missing)}; return input_ids, attention_mask, labels.")
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    # The reference is TRL's own collator, on the examples its SFTTrainer builds (labels -100 on the prompt).
    expected = DataCollatorForLanguageModeling(pad_token_id=pad_id)([sft_data.build_example(p, c) for p, c in pairs])
    for key in ("input_ids", "attention_mask", "labels"):
        value = _tensor(got[key], f"make_batch()[{key!r}]")
        expect_equal(tuple(value.shape), tuple(expected[key].shape), f"make_batch()[{key!r}] shape",
                     "One row per pair, as long as the longest prompt + completion.")
        expect(value.dtype == torch.long, f"make_batch()[{key!r}]: expected dtype torch.long (int64), got "
                                          f"{value.dtype}. Ids and labels are indices: use dtype=torch.long.")
    ids, mask, labels = got["input_ids"], got["attention_mask"], got["labels"]
    if ids[2, 0].item() == pad_id:  # row 2 is the shortest
        raise CheckFailed("make_batch: the padding is on the left. For training, pad on the right: every "
                          "sequence starts at position 0 (left padding is for generation).")
    expect(torch.equal(ids, expected["input_ids"]),
           f"make_batch input_ids: expected {expected['input_ids'].tolist()}, got {ids.tolist()}. Each row is "
           "prompt + completion, then pad_id up to the longest row.")
    expect(torch.equal(mask, expected["attention_mask"]),
           f"make_batch attention_mask: expected {expected['attention_mask'].tolist()}, got {mask.tolist()}: 1 on "
           "real tokens (prompt and completion), 0 on padding.")
    if torch.equal(labels, ids):
        raise CheckFailed("make_batch labels: your labels equal input_ids, so the loss would also train on the "
                          "prompt and the padding. Set them to -100 there.")
    if torch.equal(labels[:, :-1], expected["labels"][:, 1:]):
        raise CheckFailed("make_batch labels: shifted one position to the left. Keep labels aligned with "
                          "input_ids: the model shifts them itself when it computes the loss.")
    for row, (prompt, completion) in enumerate(pairs):
        n = len(prompt) + len(completion)
        if (labels[row, : len(prompt)] != IGNORE_INDEX).any():
            raise CheckFailed(f"make_batch labels, row {row}: the prompt positions 0..{len(prompt) - 1} must be -100 "
                              f"(the loss ignores them), got {labels[row, :len(prompt)].tolist()}.")
        if (labels[row, n:] != IGNORE_INDEX).any():
            raise CheckFailed(f"make_batch labels, row {row}: padding positions must be -100, got "
                              f"{labels[row, n:].tolist()}. Padding with pad_id would teach the model to predict "
                              "padding.")
    expect(torch.equal(labels, expected["labels"]),
           f"make_batch labels: expected {expected['labels'].tolist()}, got {labels.tolist()}. The completion "
           "tokens keep their ids; everything else is -100.")
    passed("make_batch: the loss sees only completion tokens; prompt and padding are -100, padding on the right.")


# ------------------------------------------------------------------------------------------------ NF4
@check(forbids=(
    "course_utils.finetuning.quant.quantize_blockwise", "course_utils.finetuning.quant.dequantize_blockwise",
    "course_utils.finetuning.quant.roundtrip",
    *library_calls("this exercise asks you to write NF4 quantization yourself",
                   "bitsandbytes.functional.quantize_4bit", "bitsandbytes.functional.quantize_nf4"),
))
def nf4_quantize(quantize: Callable[..., tuple[torch.Tensor, torch.Tensor]],
                 dequantize: Callable[..., torch.Tensor]) -> None:
    """``nf4_quantize(x, levels, block_size)`` -> (codes, absmax); ``nf4_dequantize(codes, absmax, levels,
    block_size, shape)`` -> tensor of ``shape``."""
    levels = quant.nf4_levels()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 64, generator=g)
    x[0, :32] *= 5.0  # a block whose largest value is negative, and blocks of very different scales
    x[0, 3] = -9.0
    x[2] *= 0.01
    block_size = 32
    what = f"nf4_quantize(x of shape {tuple(x.shape)}, NF4 levels, block_size={block_size})"
    result = call(quantize, x.clone(), levels.clone(), block_size, what="nf4_quantize")
    if not isinstance(result, tuple) or len(result) != 2:
        raise CheckFailed(f"{what}: expected a tuple (codes, absmax), got {type(result).__name__}.")
    codes, absmax = (_tensor(v, f"{what}[{i}]") for i, v in enumerate(result))
    reference = quant.quantize_blockwise(x, levels, block_size)
    n_blocks = x.numel() // block_size
    expect_equal(tuple(absmax.reshape(-1).shape), (n_blocks,), f"{what}: number of absmax values",
                 "One absmax per block of block_size values of the flattened tensor.")
    if torch.allclose(absmax.reshape(-1).float(), x.reshape(-1, block_size).amax(1)):
        raise CheckFailed(f"{what}: absmax is the largest value of each block, but it must be the largest ABSOLUTE "
                          "value (block 0 has -9.0): use x.abs().")
    if torch.allclose(absmax.reshape(-1).float(), torch.full((n_blocks,), x.abs().max().item())):
        raise CheckFailed(f"{what}: one absmax for the whole tensor; take one per block of {block_size} values.")
    expect_tensor_close(absmax.reshape(-1).float(), reference.absmax, f"{what}: absmax", atol=1e-6,
                        hint="Reshape the flattened x to (-1, block_size) and take abs().amax(dim=1).")
    expect_equal(codes.numel(), x.numel(), f"{what}: number of codes", "One code (0..15) per value.")
    flat_codes = codes.reshape(-1).long()
    expect(int(flat_codes.min()) >= 0 and int(flat_codes.max()) <= 15,
           f"{what}: codes must be indices 0..15 into levels, got values from {int(flat_codes.min())} to "
           f"{int(flat_codes.max())}.")
    wrong = int((flat_codes != reference.codes.long()).sum())
    expect(wrong == 0, f"{what}: {wrong} of {x.numel()} codes differ from the nearest level. Divide each block by "
                       "its absmax, then take argmin over levels of |value - level|.")
    shape = tuple(x.shape)
    restored = _tensor(call(dequantize, reference.codes.clone(), reference.absmax.clone(), levels.clone(),
                            block_size, shape, what="nf4_dequantize"), "nf4_dequantize")
    expected = quant.dequantize_blockwise(reference)
    expect_equal(tuple(restored.shape), shape, "nf4_dequantize: output shape", "Reshape to `shape` at the end.")
    expect_tensor_close(restored, expected, "nf4_dequantize", atol=1e-6,
                        hint="levels[codes] times the absmax of each code's block, then reshape.")
    error_nf4 = (restored - x).pow(2).mean().item()
    passed(f"NF4 round trip: block-wise absmax and nearest level; mean squared error {error_nf4:.2e} on this tensor.")


# ---------------------------------------------------------------------------------------------------------------
# Experiment (medium): where does LoRA stop improving?

GOOD_ENOUGH = 0.02  # "stopped improving": within 2% of the lowest loss measured


def smallest_good_rank(losses: dict[int, float]) -> int:
    """The smallest rank whose loss is within 2% of the lowest loss measured."""
    lowest = min(losses.values())
    return min(rank for rank, loss in losses.items() if loss <= (1 + GOOD_ENOUGH) * lowest)


@check()
def rank_experiment(student: Callable[..., object], probe: object = None) -> object:
    """``where_lora_stops(loss_after)``: the smallest rank within 2% of the best loss, with a larger rank tried.

    Returns the probe, whose rows are the runs measured (for the plot of loss against rank beside the table).
    """
    from course_utils.checks import experiments

    probe = probe or experiments.lora_rank_probe()
    got, losses = measured_losses(student, probe, "where_lora_stops", "rank",
                                  too_few="tried {n} ranks; try at least four (powers of two, say).")
    expected = smallest_good_rank(losses)
    expect(got in losses, f"where_lora_stops returned {got!r}, a rank it did not try; return one from your table.")
    expect(got == expected, f"where_lora_stops returned {got}; in your table the smallest rank within 2% of the "
                            f"lowest loss ({min(losses.values()):.3f}) is {expected}.")
    expect(any(rank > got for rank in losses), f"{got} is the largest rank you tried, so you cannot tell whether a "
                                               "larger one would still learn faster: try one above it.")
    passed_experiment(f"where_lora_stops: rank {got} is within 2% of the lowest loss{_beyond_spread(probe, got)}",
                      probe)
    return probe


def _beyond_spread(probe: object, answer: int) -> str:
    """What the seeds' spread says about the ranks above the answer, where the probe measured one."""
    rows = [row for row in probe.rows if "spread" in row]
    if not rows:
        return ""
    by_rank = {row["rank"]: row for row in rows}
    mine = by_rank[answer]
    lower = [rank for rank, row in sorted(by_rank.items()) if rank > answer
             and mine["validation loss"] - row["validation loss"] > mine["spread"] + row["spread"]]
    if lower:
        return (f"; rank {', '.join(map(str, lower))} is lower still by more than the seeds' spread: the 2% rule "
                "stops before the seeds would")
    return "; no larger rank is lower by more than the seeds' spread"


# ---------------------------------------------------------------------------------------------------------------
# Debugging exercise: a fine-tuning example that trains, but on the wrong tokens


def _ids(value: object, what: str) -> list[int]:
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise CheckFailed(f"{what}: expected a list of token ids (ints), got {type(value).__name__}.")
    return list(value)


@check(forbids=("course_utils.finetuning.sft_data.tokenize_example", "course_utils.finetuning.sft_data.build_example",
                "course_utils.finetuning.sft_data.encode_completion"))
def sft_example_debugged(student: Callable[..., dict[str, list[int]]]) -> None:
    """``sft_example(tokenizer, prompt, completion)``: ``input_ids`` and ``labels`` of one training example, as TRL
    builds it with ``completion_only_loss=True`` (plain text, no chat template)."""
    from course_utils.ground import sources

    tokenizer = sources.load_tokenizer("tiny-llama")
    rows = sources.load_text_dataset("zorbish", "train", max_examples=3)
    for prompt, completion in zip(rows["prompt"], rows["completion"]):
        what = f"sft_example(tokenizer, {prompt!r}, {completion!r})"
        got = call(student, tokenizer, prompt, completion, what="sft_example")
        if not isinstance(got, dict) or not {"input_ids", "labels"} <= set(got):
            raise CheckFailed(f"{what}: expected a dict with input_ids and labels, got {type(got).__name__}.")
        ids, labels = _ids(got["input_ids"], f"{what}['input_ids']"), _ids(got["labels"], f"{what}['labels']")
        expected = sft_data.tokenize_example(tokenizer, prompt, completion, chat=False)
        expect(len(labels) == len(ids), f"{what}: {len(ids)} input ids but {len(labels)} labels; the labels are "
                                        "aligned with the input ids, one per position.")
        sees = sft_data.decode_labels(tokenizer, {"input_ids": ids, "labels": labels})
        should = sft_data.decode_labels(tokenizer, expected)
        in_loss = sum(label != IGNORE_INDEX for label in labels)
        if ids[: len(expected["input_ids"]) - 1] == expected["input_ids"][:-1] and len(ids) < len(expected["input_ids"]):
            raise CheckFailed(f"{what}: the example stops after the answer's last word, so nothing teaches the model "
                              "to stop there: a model trained on it writes on after its answer (generation ends only "
                              f"at {tokenizer.eos_token!r}). TRL's example, section 3's table, ends otherwise.")
        expect(ids == expected["input_ids"],
               f"{what}: input_ids {ids} are not the tokens of the prompt followed by the completion as TRL "
               f"tokenizes them: {expected['input_ids']}. Tokenize the whole text at once, as section 3 describes.")
        if in_loss > sum(label != IGNORE_INDEX for label in expected["labels"]):
            raise CheckFailed(f"{what}: the loss would see {sees!r}, {in_loss} positions, the prompt included: the "
                              "model would be trained to write prompts, which it is given at test time, and here "
                              "the prompt has most of the tokens. Section 3 printed what TRL's example lets the "
                              f"loss see: {should!r}.")
        expect(labels == expected["labels"], f"{what}: the loss would see {sees!r}; TRL's example lets it see "
                                             f"{should!r}.")
    passed("sft_example: the loss sees the answer and the token that ends it, and nothing of the prompt.")
