"""course_utils.serving.adapters: merged copies, swapping and mixed batches decode the same tokens per adapter."""

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from course_utils.ground import paths
from course_utils.serving import adapters


@pytest.fixture(scope="module")
def two_adapters():
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(paths.data_dir() / "models" / "tiny-llama").eval()
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, init_lora_weights=False)
    model = get_peft_model(copy.deepcopy(base), config, adapter_name="first")
    model.add_adapter("second", config)  # init_lora_weights=False: B is random, so the two adapters differ
    return base, model.eval()


def test_the_three_ways_decode_the_same_tokens(two_adapters):
    base, model = two_adapters
    prompts, routed = [[5, 9, 12], [7, 8], [30, 31, 32, 33], [40]], ["first", "second", "second", "first"]
    mixed = adapters.serve_mixed(model, prompts, routed, 5, pad_id=0)
    assert adapters.serve_swapping(model, prompts, routed, 5, pad_id=0) == mixed
    copies = adapters.merged_copies(model, ["first", "second"])
    assert adapters.serve_merged(copies, prompts, routed, 5, pad_id=0) == mixed
    assert all(len(tokens) == 5 for tokens in mixed)
    one_adapter = adapters.serve_mixed(model, prompts, ["first"] * 4, 5, pad_id=0)
    assert one_adapter != mixed, "the adapters should differ, or the test proves nothing"
    assert all(type(c).__name__ == type(base).__name__ for c in copies.values())  # plain models, no LoRA layers
    assert sum(p.numel() for p in copies["first"].parameters()) == sum(p.numel() for p in base.parameters())


def test_tokens_per_second_counts_the_generated_tokens():
    calls = []

    def serve(tokens):
        calls.append(1)
        return [tokens, [4]]

    rates = adapters.tokens_per_second(serve, [1, 2, 3], repeats=3)
    assert len(rates) == 3 and len(calls) == 4 and all(r > 0 for r in rates)
