"""Train the workbook's byte-level BPE tokenizer on the story corpus and save it in Hugging Face format."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

EOS = "<|endoftext|>"
PAD = "<|pad|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
SPECIAL_TOKENS = [EOS, PAD, USER, ASSISTANT]

# A minimal chat template, so that apply_chat_template works offline on the tiny models too.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<|user|>' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>' + message['content'] + '<|endoftext|>' }}"
    "{% else %}{{ message['content'] + '\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def train_bpe(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE ``tokenizers.Tokenizer`` (the GPT-2 recipe) trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte is representable: no unknown tokens
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def to_transformers(tokenizer, model_max_length: int):
    """Wrap a trained ``tokenizers.Tokenizer`` as a transformers fast tokenizer with our special tokens."""
    from transformers import PreTrainedTokenizerFast

    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=EOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=model_max_length,
        additional_special_tokens=[USER, ASSISTANT],
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def build_tokenizer(texts: Iterable[str], out_dir: Path, vocab_size: int, model_max_length: int):
    """Train, wrap and save the tokenizer to ``out_dir``; returns the transformers tokenizer."""
    wrapped = to_transformers(train_bpe(texts, vocab_size), model_max_length)
    wrapped.save_pretrained(out_dir)
    return wrapped
