"""Sliding windows: shapes, shifted targets, stride, and clear errors."""

from __future__ import annotations

import pytest
import torch

from course_utils.training.text_data import SlidingWindowDataset, encode_documents, make_loader


def test_windows_and_shifted_targets():
    data = SlidingWindowDataset(list(range(20)), max_length=4, stride=4)
    assert len(data) == 4  # starts 0, 4, 8, 12; a window needs max_length + 1 tokens
    inputs, targets = data[1]
    assert inputs.tolist() == [4, 5, 6, 7] and targets.tolist() == [5, 6, 7, 8]


def test_overlapping_stride():
    data = SlidingWindowDataset(list(range(10)), max_length=4, stride=1)
    assert len(data) == 6
    assert data[5][1].tolist() == [6, 7, 8, 9]


@pytest.mark.parametrize(("tokens", "max_length", "stride"), [(5, 5, 1), (10, 0, 1), (10, 4, 0)])
def test_bad_windows_are_refused(tokens, max_length, stride):
    with pytest.raises(ValueError):
        SlidingWindowDataset(list(range(tokens)), max_length, stride)


def test_loader_order_depends_only_on_seed():
    data = SlidingWindowDataset(list(range(200)), max_length=4)
    first = [b[0].tolist() for b in make_loader(data, 4, shuffle=True, seed=3)]
    again = [b[0].tolist() for b in make_loader(data, 4, shuffle=True, seed=3)]
    other = [b[0].tolist() for b in make_loader(data, 4, shuffle=True, seed=4)]
    assert first == again and first != other


def test_encode_documents_separates_with_eos():
    from course_utils.ground.sources import load_tokenizer

    tokenizer = load_tokenizer("tiny-llama")
    ids = encode_documents(tokenizer, ["The cat.", "The dog."])
    assert ids.count(tokenizer.eos_token_id) == 2 and ids[-1] == tokenizer.eos_token_id
    assert torch.tensor(ids).dtype == torch.long


def test_bpe_merges_fuse_the_most_frequent_pair_first():
    from course_utils.training.text_data import SPACE, apply_bpe_merges, bpe_merge_steps, learn_bpe_merges

    texts = ["low lower lowest", "low low slow"]
    merges = learn_bpe_merges(texts, 3)
    assert merges[0] == ("l", "o", 6)          # "lo" is in all six words
    assert merges[1] == ("lo", "w", 6)
    assert merges[2] == (SPACE, "low", 3)     # " low" three times (the first word of a text has no space)
    assert apply_bpe_merges(" lowest", merges) == [SPACE + "low", "e", "s", "t"]
    assert learn_bpe_merges(texts, 3) == merges   # deterministic
    rows = bpe_merge_steps(texts, 2, " slow")
    assert [r["merge"] for r in rows] == [0, 1, 2] and rows[-1]["example split"].endswith("low")
    assert learn_bpe_merges(["a"], 5) == []     # nothing left to merge


def test_the_project_tokenizer_merges_and_pieces():
    from course_utils.ground.sources import load_tokenizer
    from course_utils.training.text_data import token_pieces, tokenizer_merges

    tokenizer = load_tokenizer("tiny-llama")
    merges = tokenizer_merges(tokenizer)
    assert len(merges) == len(tokenizer) - 256 - 4   # 256 bytes and 4 special tokens are not merges
    assert all(len(pair) == 2 for pair in tokenizer_merges(tokenizer, 5))
    pieces = token_pieces(tokenizer, "Once upon a time")
    assert tokenizer.decode([i for i, _ in pieces]) == "Once upon a time"
