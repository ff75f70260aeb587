"""course_utils.finetuning.sft_data: prompt/completion formatting and the hand-built label mask, equal to what TRL builds."""

from __future__ import annotations

import pytest
import torch

from course_utils.finetuning import sft_data
from course_utils.ground import sources

PROMPT = "Translate to Zorbish: a big dog jumps.\nZorbish:"
COMPLETION = " bell pond shell cold zo"


@pytest.fixture(scope="module")
def tokenizer():
    return sources.load_tokenizer("tiny-llama")


@pytest.fixture(scope="module")
def rows():
    return sources.load_text_dataset("zorbish")


def test_plain_example_masks_the_prompt_and_ends_with_eos(tokenizer):
    example = sft_data.tokenize_example(tokenizer, PROMPT, COMPLETION, chat=False)
    prompt_ids = tokenizer(PROMPT)["input_ids"]
    n = len(prompt_ids)
    assert example["input_ids"][:n] == prompt_ids
    assert example["labels"][:n] == [-100] * n
    assert example["labels"][n:] == example["input_ids"][n:]
    assert example["input_ids"][-1] == tokenizer.eos_token_id
    assert sft_data.decode_labels(tokenizer, example) == "\u00b7" * n + COMPLETION + "<|endoftext|>"
    table = sft_data.show_labels(tokenizer, example)
    assert table[0]["in the loss"] == "-" and table[-1]["in the loss"] == "yes"


def test_chat_example_uses_the_template_and_its_prompt_is_what_generation_sees(tokenizer):
    example = sft_data.tokenize_example(tokenizer, PROMPT, COMPLETION, chat=True)
    prompt_ids = sft_data.encode_prompt(tokenizer, PROMPT, chat=True)
    assert tokenizer.decode(prompt_ids).startswith("<|user|>") and tokenizer.decode(prompt_ids).endswith("<|assistant|>")
    assert example["input_ids"][: len(prompt_ids)] == prompt_ids
    assert sum(label != -100 for label in example["labels"]) == len(example["input_ids"]) - len(prompt_ids)
    assert sft_data.has_chat_template(tokenizer)
    assert sft_data.stop_ids(tokenizer, chat=True) == [tokenizer.eos_token_id]


def test_a_prompt_that_merges_into_its_completion_is_refused(tokenizer):
    with pytest.raises(ValueError, match="token boundary"):
        sft_data.encode_completion(tokenizer, "Translate to Zorbish: a big d", "og jumps.", chat=False)


def test_truncation_keeps_the_start():
    example = sft_data.build_example([1, 2, 3], [4, 5, 6], max_length=4)
    assert example == {"input_ids": [1, 2, 3, 4], "labels": [-100, -100, -100, 4]}


def test_sft_rows_are_trls_two_formats(rows):
    plain = sft_data.sft_rows(rows["validation"], chat=False)
    assert plain.column_names == ["prompt", "completion"] and plain[0]["prompt"] == rows["validation"][0]["prompt"]
    chat = sft_data.sft_rows(rows["validation"], chat=True)
    assert chat[0]["prompt"] == [{"role": "user", "content": rows["validation"][0]["prompt"]}]
    assert chat[0]["completion"] == [{"role": "assistant", "content": rows["validation"][0]["completion"]}]


@pytest.mark.parametrize("chat", [False, True])
def test_trl_builds_the_same_examples_and_batch(tokenizer, rows, chat, tmp_path):
    """TRL's SFTTrainer (completion_only_loss) tokenizes and masks each row as build_example does, and its collator
    pads them into the batch the hand-built one gives."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    data = rows["train"].select(range(8))
    model = AutoModelForCausalLM.from_pretrained(sources.resolve_model("tiny-llama").location)
    model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    config = SFTConfig(output_dir=str(tmp_path), completion_only_loss=True, use_cpu=True, bf16=False, report_to="none",
                       **sft_data.checkpointing_option(False))
    trainer = SFTTrainer(model=model, args=config, train_dataset=sft_data.sft_rows(data, chat=chat),
                         processing_class=tokenizer)
    mine = [sft_data.tokenize_example(tokenizer, r["prompt"], r["completion"], chat=chat) for r in data]
    theirs = [trainer.train_dataset[i] for i in range(len(data))]
    assert [m["input_ids"] for m in mine] == [t["input_ids"] for t in theirs]
    assert [m["labels"] for m in mine] == [t["labels"] for t in theirs]
    library = trainer.data_collator(theirs)
    width = max(len(m["input_ids"]) for m in mine)
    hand = {"input_ids": torch.full((8, width), tokenizer.pad_token_id), "attention_mask": torch.zeros(8, width),
            "labels": torch.full((8, width), -100)}
    for row, m in enumerate(mine):
        n = len(m["input_ids"])
        hand["input_ids"][row, :n], hand["labels"][row, :n] = torch.tensor(m["input_ids"]), torch.tensor(m["labels"])
        hand["attention_mask"][row, :n] = 1
    table = sft_data.compare_batches(hand, library)
    assert [r["equal"] for r in table] == ["yes", "yes", "yes"], table


def test_compare_batches_reports_a_difference():
    a = {"input_ids": torch.ones(2, 3), "attention_mask": torch.ones(2, 3), "labels": torch.ones(2, 3)}
    b = {**a, "labels": torch.zeros(2, 3)}
    assert [r["equal"] for r in sft_data.compare_batches(a, b)] == ["yes", "yes", "NO"]
    assert sft_data.compare_batches(a, {})[0]["library"] == "missing"
