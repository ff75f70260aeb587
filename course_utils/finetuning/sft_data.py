"""Prompt/completion examples for supervised fine-tuning: the rows TRL reads, and the label mask built by hand.

TRL's ``SFTTrainer`` tokenizes a prompt/completion dataset itself and, with ``completion_only_loss``, sets the labels
of every prompt position to -100. The notebooks let it do that, and use this module to show what it does and to check
it: :func:`encode_prompt` and :func:`encode_completion` format a row the same way (a plain prompt, or the tokenizer's
chat template), :func:`build_example` masks the prompt by hand, and :func:`compare_batches` sets a hand-built batch
beside the one TRL's collator makes. Generation uses :func:`encode_prompt` too, so that prompts at test time are
formatted exactly as in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

IGNORE_INDEX = -100  # the label value the cross-entropy of transformers (and PyTorch) skips


def has_chat_template(tokenizer: Any) -> bool:
    """Whether the tokenizer ships a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def _chat(tokenizer: Any, chat: bool | None) -> bool:
    return has_chat_template(tokenizer) if chat is None else chat


def render_turns(tokenizer: Any, prompt: str, completion: str | None) -> str:
    """The chat template's text for a user turn (and the assistant's answer, or the cue that it starts)."""
    messages = [{"role": "user", "content": prompt}]
    if completion is None:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    messages.append({"role": "assistant", "content": completion})
    return tokenizer.apply_chat_template(messages, tokenize=False)


def sft_rows(rows: Any, *, chat: bool) -> Any:
    """Rows in one of TRL's prompt/completion formats: plain strings, or conversational (lists of messages)."""
    if not chat:
        return rows.select_columns(["prompt", "completion"])
    return rows.map(lambda row: {"prompt": [{"role": "user", "content": row["prompt"]}],
                                 "completion": [{"role": "assistant", "content": row["completion"]}]},
                    remove_columns=rows.column_names)


def encode_prompt(tokenizer: Any, prompt: str, *, chat: bool | None = None) -> list[int]:
    """The token ids the model sees before it answers: the chat template's user turn, or the plain prompt."""
    if _chat(tokenizer, chat):
        return list(tokenizer(render_turns(tokenizer, prompt, None), add_special_tokens=False)["input_ids"])
    return list(tokenizer(prompt)["input_ids"])


def encode_completion(tokenizer: Any, prompt: str, completion: str, *, chat: bool | None = None) -> list[int]:
    """The ids of the answer, ending with the token that closes the turn (end of text, or the template's own).

    As TRL does it: the whole conversation is tokenized at once (with the end-of-text token after a plain
    completion), and the answer is what follows the prompt's own tokens.
    """
    prompt_ids = encode_prompt(tokenizer, prompt, chat=chat)
    if _chat(tokenizer, chat):
        full_ids = tokenizer(render_turns(tokenizer, prompt, completion), add_special_tokens=False)["input_ids"]
    else:
        full_ids = tokenizer(prompt + completion + tokenizer.eos_token)["input_ids"]
    if list(full_ids[:len(prompt_ids)]) != prompt_ids:
        raise ValueError("The prompt's tokens are not the first tokens of prompt + completion (the text merges into "
                         "other tokens across the boundary, or the chat template renders the prompt differently "
                         "alone), so the prompt cannot be masked by position. End the prompt on a token boundary "
                         "(a space or a newline), or format without the chat template (chat=False).")
    return list(full_ids[len(prompt_ids):])


def stop_ids(tokenizer: Any, *, chat: bool | None = None) -> list[int]:
    """Token ids that end an answer: end-of-text and, with a chat template, the special token closing its turn."""
    ids = [tokenizer.eos_token_id]
    if _chat(tokenizer, chat):
        special = set(tokenizer.all_special_ids)
        closing = [i for i in encode_completion(tokenizer, "x", "y", chat=True) if i in special]
        ids += [i for i in closing[:1] if i not in ids]
    return ids


def build_example(prompt_ids: Sequence[int], completion_ids: Sequence[int],
                  max_length: int | None = None) -> dict[str, list[int]]:
    """``input_ids`` = prompt + completion; ``labels`` the same with every prompt position set to -100.

    The labels are NOT shifted: the model compares position t's prediction with label t+1 itself. Too long an
    example is cut from the end, as TRL's ``truncation_mode="keep_start"`` does.
    """
    input_ids = list(prompt_ids) + list(completion_ids)
    labels = [IGNORE_INDEX] * len(prompt_ids) + list(completion_ids)
    if max_length is not None and len(input_ids) > max_length:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "labels": labels}


def tokenize_example(tokenizer: Any, prompt: str, completion: str, *, chat: bool | None = None,
                     max_length: int | None = None) -> dict[str, list[int]]:
    """One training example from a prompt and its completion, with the prompt masked in the labels."""
    return build_example(encode_prompt(tokenizer, prompt, chat=chat),
                         encode_completion(tokenizer, prompt, completion, chat=chat), max_length)


def show_labels(tokenizer: Any, example: dict[str, Sequence[int]]) -> list[dict[str, Any]]:
    """Each position of an example: its token, its label, and whether the loss sees it (for a table)."""
    rows = []
    for position, (token, label) in enumerate(zip(example["input_ids"], example["labels"])):
        rows.append({"position": position, "token": tokenizer.convert_ids_to_tokens(int(token)),
                     "label": int(label), "in the loss": "yes" if label != IGNORE_INDEX else "-"})
    return rows


def decode_labels(tokenizer: Any, example: dict[str, Sequence[int]], masked: str = "\u00b7") -> str:
    """The example's text with every masked (-100) position replaced by ``masked``: what the loss is computed on."""
    pieces = []
    for token, label in zip(example["input_ids"], example["labels"]):
        pieces.append(tokenizer.decode([int(token)]) if label != IGNORE_INDEX else masked)
    return "".join(pieces)


def compare_batches(mine: dict[str, torch.Tensor], library: dict[str, torch.Tensor],
                    keys: Sequence[str] = ("input_ids", "attention_mask", "labels")) -> list[dict[str, Any]]:
    """One row per tensor of two batches: both shapes, and whether every value is equal."""
    rows = []
    for key in keys:
        a, b = mine.get(key), library.get(key)
        same = a is not None and b is not None and a.shape == b.shape and torch.equal(a.long(), b.long())
        rows.append({"tensor": key, "hand-built": tuple(a.shape) if a is not None else "missing",
                     "library": tuple(b.shape) if b is not None else "missing", "equal": "yes" if same else "NO"})
    return rows


def checkpointing_option(enabled: bool) -> dict[str, bool]:
    """``SFTConfig``'s activation-checkpointing switch under the installed transformers' name for it.

    transformers releases after 5.17 renamed ``gradient_checkpointing`` to ``activation_checkpointing`` (the old
    name warns); Unsloth caps transformers at 5.17, which knows only the old one. TRL turns the switch on by
    default, so it is always passed.
    """
    import dataclasses

    from trl import SFTConfig

    names = {field.name for field in dataclasses.fields(SFTConfig)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": enabled}
