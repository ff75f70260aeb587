"""Hub stand-ins: real configs and tokenizer kinds under real hub ids, in the cache layout offline loading reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from course_utils.course import hub_standins
from course_utils.ground import paths, profiles
from course_utils.models import model_specs


@pytest.fixture(scope="module")
def texts():
    return hub_standins.training_texts()


def test_every_hub_id_of_the_colab_profile_has_a_stand_in():
    models, datasets = hub_standins.colab_hub_ids()
    colab = profiles.PROFILES["colab"]
    assert set(models) == {name for name in colab.models.values() if "/" in name}
    assert set(models) <= set(hub_standins.STANDIN_MODELS)
    assert set(datasets) <= set(hub_standins.STANDIN_DATASETS)
    with pytest.raises(KeyError, match="No stand-in is defined for org/unknown"):
        hub_standins.build_standins("unused", models=["org/unknown"], datasets=[], verbose=False)


@pytest.mark.parametrize("hub_id", list(hub_standins.STANDIN_MODELS))
def test_stand_in_configs_agree_with_the_size_table(hub_id):
    """The two tables of real config values (sizes in model_specs, full configs here) cannot drift apart."""
    standin = hub_standins.STANDIN_MODELS[hub_id]
    size = model_specs.model_size(model_specs.get_spec(hub_id))
    config = hub_standins.standin_config(standin, standin.real_layers)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.vocab_size) == \
        (size.n_layers, size.hidden_size, size.n_heads, size.vocab_size)
    assert getattr(config, "num_key_value_heads", config.num_attention_heads) == size.n_kv_heads
    assert config.max_position_embeddings == size.max_context
    assert bool(config.tie_word_embeddings) == size.tied_embeddings
    cut = hub_standins.standin_config(standin)
    assert cut.num_hidden_layers == standin.keep_layers < standin.real_layers
    assert cut.architectures == standin.config["architectures"]


@pytest.mark.parametrize("spec", [hub_standins.GPT2_TOKENIZER, hub_standins.SMOLLM2_TOKENIZER,
                                  hub_standins.QWEN25_TOKENIZER], ids=["gpt2", "smollm2", "qwen2.5"])
def test_tokenizers_have_the_real_length_special_ids_and_class(spec, texts, tmp_path):
    tokenizer = hub_standins.build_tokenizer(spec, texts)
    assert type(tokenizer).__name__ == spec.tokenizer_class and len(tokenizer) == spec.size
    for token, token_id in spec.specials:
        assert tokenizer.convert_tokens_to_ids(token) == token_id
    assert tokenizer.eos_token == spec.roles["eos_token"]
    ids = tokenizer("Once upon a time, a fox said 42.")["input_ids"]
    assert tokenizer.decode(ids) == "Once upon a time, a fox said 42."
    assert max(ids) < spec.size and not any(i in dict(spec.specials).values() for i in ids)
    tokenizer.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "tokenizer.json").read_text())
    pre = json.dumps(saved["pre_tokenizer"])
    assert ("Digits" in pre) == (spec.pre_tokenizer == "smollm")  # SmolLM2 splits single digits first
    assert ("Split" in pre) == (spec.pre_tokenizer == "qwen2")
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"] == spec.tokenizer_class


def test_chat_templates_render_chatml_with_each_default_system_message(texts):
    chat = [{"role": "user", "content": "Translate: a cat."}]
    smol = hub_standins.build_tokenizer(hub_standins.SMOLLM2_TOKENIZER, texts)
    qwen = hub_standins.build_tokenizer(hub_standins.QWEN25_TOKENIZER, texts)
    assert smol.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nTranslate: a cat.<|im_end|>\n<|im_start|>assistant\n")
    assert qwen.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nTranslate: a cat.<|im_end|>\n<|im_start|>assistant\n")
    own_system = [{"role": "system", "content": "Be brief."}, *chat]
    assert qwen.apply_chat_template(own_system, tokenize=False).startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert hub_standins.build_tokenizer(hub_standins.GPT2_TOKENIZER, texts).chat_template is None


def test_a_snapshot_has_the_hub_cache_layout(tmp_path):
    files = tmp_path / "files"
    (files / "data").mkdir(parents=True)
    (files / "config.json").write_text("{}")
    (files / "data" / "w.safetensors").write_bytes(b"\x00" * 16)
    snapshot, revision = hub_standins.write_snapshot(tmp_path / "hub", "model", "org/name", files)
    repo = tmp_path / "hub" / "models--org--name"
    assert (repo / "refs" / "main").read_text() == revision and snapshot == repo / "snapshots" / revision
    assert (snapshot / "data" / "w.safetensors").read_bytes() == b"\x00" * 16
    assert {p.name for p in (repo / "blobs").iterdir()} == {
        hub_standins._blob_name(files / "config.json"), hub_standins._blob_name(files / "data" / "w.safetensors")}
    assert hub_standins.write_snapshot(tmp_path / "hub2", "model", "org/name", files)[1] == revision  # by content


@pytest.mark.slow
def test_from_pretrained_and_load_dataset_work_unchanged_offline(tmp_path):
    home = tmp_path / "hf_home"
    built = hub_standins.build_standins(home, models=["HuggingFaceTB/SmolLM2-135M"],
                                        datasets=["roneneldan/TinyStories"], verbose=False)
    assert [b.hub_id for b in built] == ["HuggingFaceTB/SmolLM2-135M", "roneneldan/TinyStories"]
    script = textwrap.dedent("""
        import json, torch
        from datasets import load_dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from course_utils.ground import sources
        model = AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M")
        tokenizer = AutoTokenizer.from_pretrained("HuggingFaceTB/SmolLM2-135M")
        stories = load_dataset("roneneldan/TinyStories")
        streamed = next(iter(load_dataset("roneneldan/TinyStories", split="validation", streaming=True)))
        print(json.dumps({"class": type(model).__name__, "dtype": str(model.dtype), "layers": model.config.num_hidden_layers,
                          "heads": [model.config.num_attention_heads, model.config.num_key_value_heads],
                          "rope_theta": model.config.rope_parameters["rope_theta"], "tokens": len(tokenizer),
                          "embedding": list(model.get_input_embeddings().weight.shape),
                          "splits": {k: [v.num_rows, v.column_names] for k, v in stories.items()},
                          "streamed": sorted(streamed), "origin": sources.resolve_model("HuggingFaceTB/SmolLM2-135M").origin}))
    """)
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(paths.REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found == {"class": "LlamaForCausalLM", "dtype": "torch.bfloat16", "layers": 2, "heads": [9, 3],
                     "rope_theta": 100000.0, "tokens": 49152, "embedding": [49152, 576],
                     "splits": {"train": [600, ["text"]], "validation": [100, ["text"]]}, "streamed": ["text"],
                     "origin": "cache"}
    assert "2 of its 30 layers" in (Path(built[0].snapshot) / "README.md").read_text()
