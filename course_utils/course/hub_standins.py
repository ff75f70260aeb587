"""Hub-shaped stand-ins: the colab profile's models and datasets under their real hub ids, in a local HF cache.

CI has no network, yet the colab branch of every notebook must run somewhere before a student meets it.
:func:`build_standins` writes, into ``HF_HOME``, what a download of each hub repository the colab profile names
would have left there: ``hub/models--org--name/{blobs,snapshots/<rev>,refs/main}`` for models and datasets, and,
for a dataset, the Arrow cache an online ``load_dataset`` writes under ``datasets/``. With ``HF_HUB_OFFLINE=1``
and ``HF_HOME`` pointing there, ``AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M")`` and
``load_dataset("roneneldan/TinyStories")`` work unchanged.

What is real and what is not:

* ``config.json``: the model's own values (architecture class, widths, heads, key/value heads, vocabulary, RoPE,
  tied embeddings), each table citing where it comes from; only ``num_hidden_layers`` is cut, and the builder
  says so, to keep CPU time small.
* weights: random, from a seed, generated on the spot (never committed), in the dtype the real checkpoint has.
* tokenizer: the same class, pre-tokenizer and special tokens at the same ids, and a chat template of the same
  format; its merges are trained on the workbook's own corpora, and the vocabulary is filled up with unused
  placeholder tokens (``[unused123]``) so that ``len(tokenizer)`` and every special id match the real one.
* datasets: a few hundred rows of the embedded corpora in the hub dataset's own columns and splits.

Quality figures measured on these stand-ins mean nothing; what runs, and the shapes, dtypes and files, are real.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from course_utils.ground import paths

SEED = 0
FILLER = "[unused{}]"  # placeholder tokens: made of characters the byte-level alphabet has, never produced by a merge


# --------------------------------------------------------------------------------------------------- tokenizers
@dataclass(frozen=True)
class TokenizerSpec:
    """The kind of tokenizer a hub model ships: class, pre-tokenizer, special tokens and their ids."""

    tokenizer_class: str  # the transformers class named in tokenizer_config.json
    pre_tokenizer: str  # "gpt2" (GPT-2's regex), "smollm" (single digits, then GPT-2's regex), "qwen2"
    size: int  # len(tokenizer) of the real one: regular tokens plus added special tokens
    specials: tuple[tuple[str, int], ...]  # (token, id): where the real tokenizer has them
    not_special: tuple[str, ...] = ()  # added tokens the real tokenizer marks "special": false
    roles: dict[str, str | None] = field(default_factory=dict)  # bos_token, eos_token, unk_token, pad_token
    extra_special_tokens: tuple[str, ...] = ()
    model_max_length: int = 1024
    chat_template: str | None = None


# The chat templates below are our own Jinja, written to render exactly the format the real ones render for
# system, user and assistant messages (ChatML, with each model's default system message).
SMOLLM2_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# Qwen2.5's real template also renders tool definitions and tool calls; no notebook uses tools, so this one does not.
QWEN25_CHAT_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- set conversation = messages[1:] %}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- set conversation = messages %}"
    "{%- endif %}"
    "{%- for message in conversation %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# tokenizer_config.json / tokenizer.json of openai-community/gpt2: 50,256 byte-level BPE tokens, then
# <|endoftext|> (id 50256) as bos, eos and unk; no pad token; model_max_length 1024.
GPT2_TOKENIZER = TokenizerSpec(
    "GPT2Tokenizer", "gpt2", 50257, (("<|endoftext|>", 50256),),
    roles={"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"},
    model_max_length=1024,
)
# tokenizer_config.json / tokenizer.json of HuggingFaceTB/SmolLM2-135M (and -360M, the same tokenizer): 17 special
# tokens at ids 0-16, then byte-level BPE to 49,152; single digits are split off first; <|endoftext|> is bos, eos
# and unk; model_max_length 8192; a ChatML chat template with SmolLM's default system message.
SMOLLM2_TOKENIZER = TokenizerSpec(
    "GPT2Tokenizer", "smollm", 49152,
    tuple((token, i) for i, token in enumerate((
        "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>", "<file_sep>", "<filename>",
        "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>", "<jupyter_start>", "<jupyter_text>",
        "<jupyter_code>", "<jupyter_output>", "<jupyter_script>", "<empty_output>"))),
    roles={"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"},
    extra_special_tokens=("<|im_start|>", "<|im_end|>"),
    model_max_length=8192, chat_template=SMOLLM2_CHAT_TEMPLATE,
)
# tokenizer_config.json / tokenizer.json of Qwen/Qwen2.5-0.5B: 151,643 byte-level BPE tokens (NFC, Qwen2's split
# regex), then 22 added tokens from <|endoftext|> = 151643 to <|file_sep|> = 151664 (len 151,665; the config's
# vocab_size 151,936 leaves unused rows); no bos token, <|endoftext|> is eos and pad; the tool-call and
# fill-in-the-middle tokens are added as "special": false; model_max_length 131072.
_QWEN_ADDED = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
               "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
               "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
               "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>")
QWEN25_TOKENIZER = TokenizerSpec(
    "Qwen2Tokenizer", "qwen2", 151665, tuple((token, 151643 + i) for i, token in enumerate(_QWEN_ADDED)),
    not_special=_QWEN_ADDED[14:],
    roles={"bos_token": None, "eos_token": "<|endoftext|>", "unk_token": None, "pad_token": "<|endoftext|>"},
    extra_special_tokens=_QWEN_ADDED[1:14],
    model_max_length=131072, chat_template=QWEN25_CHAT_TEMPLATE,
)


def _pipeline(kind: str) -> tuple[Any, Any]:
    """(normalizer, pre-tokenizer) of a tokenizer kind, as its real tokenizer.json has them."""
    from tokenizers import Regex, normalizers, pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if kind == "gpt2":
        return None, byte_level
    if kind == "smollm":
        return None, pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if kind == "qwen2":
        from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

        return normalizers.NFC(), pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    raise ValueError(f"Unknown tokenizer kind {kind!r}: expected 'gpt2', 'smollm' or 'qwen2'.")


def _trained_bpe(kind: str, texts: Iterable[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Byte-level BPE trained on ``texts`` with the kind's pipeline: (tokens in id order, merges)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    normalizer, pre_tokenizer = _pipeline(kind)
    tokenizer = Tokenizer(models.BPE())
    if normalizer is not None:
        tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1_000_000, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    model = json.loads(tokenizer.to_str())["model"]
    tokens = sorted(model["vocab"], key=model["vocab"].get)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return tokens, merges


def build_tokenizer(spec: TokenizerSpec, texts: Iterable[str]):
    """A transformers tokenizer of ``spec``'s class with the real special ids and length; merges from ``texts``."""
    from tokenizers import AddedToken

    trained, merges = _trained_bpe(spec.pre_tokenizer, texts)
    special_at = {token_id: token for token, token_id in spec.specials}
    regular = spec.size - len(special_at)
    if len(trained) > regular:
        raise ValueError(f"{len(trained)} trained tokens do not fit the {regular} regular slots of {spec.tokenizer_class}")
    queue = iter(trained + [FILLER.format(i) for i in range(regular - len(trained))])
    # Special tokens at their real ids, regular ones (trained, then placeholders) in every other slot.
    vocab = {special_at.get(token_id) or next(queue): token_id for token_id in range(spec.size)}
    tokenizer = _tokenizer_class(spec.tokenizer_class)(vocab=vocab, merges=merges, **_roles(spec))
    normalizer, pre_tokenizer = _pipeline(spec.pre_tokenizer)  # the class may rebuild its own: keep the real one
    backend = tokenizer.backend_tokenizer
    backend.pre_tokenizer = pre_tokenizer
    if normalizer is not None:
        backend.normalizer = normalizer
    tokenizer.add_tokens([AddedToken(t, special=t not in spec.not_special, normalized=False)
                          for t, _ in sorted(spec.specials, key=lambda s: s[1])])
    if spec.extra_special_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": list(spec.extra_special_tokens)})
    tokenizer.model_max_length = spec.model_max_length
    if spec.chat_template:
        tokenizer.chat_template = spec.chat_template
    _check_tokenizer(tokenizer, spec)
    return tokenizer


def _tokenizer_class(name: str):
    import transformers

    return getattr(transformers, name)


def _roles(spec: TokenizerSpec) -> dict[str, Any]:
    roles = {"bos_token": None, "eos_token": None, "unk_token": None, "pad_token": None}
    roles.update(spec.roles)
    return roles


def _check_tokenizer(tokenizer: Any, spec: TokenizerSpec) -> None:
    """Fail loudly if a library change moved a special token or changed the length the config relies on."""
    if len(tokenizer) != spec.size:
        raise RuntimeError(f"stand-in {spec.tokenizer_class} has {len(tokenizer)} tokens, the real one {spec.size}")
    for token, token_id in spec.specials:
        if tokenizer.convert_tokens_to_ids(token) != token_id:
            raise RuntimeError(f"{token} has id {tokenizer.convert_tokens_to_ids(token)}, the real one {token_id}")


# ------------------------------------------------------------------------------------------------------ models
@dataclass(frozen=True)
class StandinModel:
    """A hub model to stand in for: its real config.json values, tokenizer kind, saved dtype and layers kept."""

    hub_id: str
    config: dict[str, Any]
    source: str  # where the config values come from
    tokenizer: TokenizerSpec
    generation: dict[str, Any]
    dtype: str  # the dtype of the real checkpoint's weights
    keep_layers: int  # layers the stand-in keeps, to stay small on a CPU

    @property
    def real_layers(self) -> int:
        return int(self.config.get("num_hidden_layers", self.config.get("n_layer")))


# What both SmolLM2 sizes' config.json files share: Llama blocks, head size 64, SmolLM2's vocabulary, 8k context.
_SMOLLM2 = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": False,
            "attention_dropout": 0.0, "hidden_act": "silu", "mlp_bias": False, "pretraining_tp": 1,
            "rms_norm_eps": 1e-05, "rope_scaling": None, "use_cache": True, "head_dim": 64, "vocab_size": 49152,
            "max_position_embeddings": 8192, "rope_theta": 100000.0, "tie_word_embeddings": True,
            "bos_token_id": 0, "eos_token_id": 0}

STANDIN_MODELS: dict[str, StandinModel] = {m.hub_id: m for m in (
    StandinModel(
        "openai-community/gpt2",
        {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "activation_function": "gelu_new",
         "n_ctx": 1024, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257,
         "layer_norm_epsilon": 1e-05, "initializer_range": 0.02, "attn_pdrop": 0.1, "embd_pdrop": 0.1,
         "resid_pdrop": 0.1, "bos_token_id": 50256, "eos_token_id": 50256, "tie_word_embeddings": True},
        "config.json of openai-community/gpt2 on the Hub (the 124M GPT-2; sizes as in course_utils.models.model_specs)",
        GPT2_TOKENIZER, {"bos_token_id": 50256, "eos_token_id": 50256}, "float32", 2),
    StandinModel(
        "HuggingFaceTB/SmolLM2-135M",
        {**_SMOLLM2, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
         "num_attention_heads": 9, "num_key_value_heads": 3, "initializer_range": 0.041666666666666664},
        "config.json of HuggingFaceTB/SmolLM2-135M on the Hub (as recalled; the sizes match course_utils.models.model_specs "
        "and the Llama module printout stored in public READMEs the search tool holds)",
        SMOLLM2_TOKENIZER, {"bos_token_id": 0, "eos_token_id": 0}, "bfloat16", 2),
    StandinModel(
        "HuggingFaceTB/SmolLM2-360M",
        {**_SMOLLM2, "hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32,
         "num_attention_heads": 15, "num_key_value_heads": 5, "initializer_range": 0.02},
        "config.json of HuggingFaceTB/SmolLM2-360M on the Hub (as recalled; sizes as in course_utils.models.model_specs)",
        SMOLLM2_TOKENIZER, {"bos_token_id": 0, "eos_token_id": 0}, "bfloat16", 3),
    StandinModel(
        "Qwen/Qwen2.5-0.5B",
        {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu", "hidden_size": 896,
         "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
         "vocab_size": 151936, "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-06,
         "initializer_range": 0.02, "attention_dropout": 0.0, "use_sliding_window": False, "sliding_window": 32768,
         "max_window_layers": 24, "tie_word_embeddings": True, "use_cache": True, "bos_token_id": 151643,
         "eos_token_id": 151643},
        "config.json of Qwen/Qwen2.5-0.5B on the Hub (as recalled; sizes as in course_utils.models.model_specs)",
        QWEN25_TOKENIZER,
        {"bos_token_id": 151643, "eos_token_id": 151643, "do_sample": False, "max_new_tokens": 2048},
        "bfloat16", 2),
)}


def _layer_key(config: dict[str, Any]) -> str:
    return "n_layer" if "n_layer" in config else "num_hidden_layers"


def standin_config(model: StandinModel, layers: int | None = None) -> Any:
    """The transformers config of the stand-in: the real values with ``layers`` layers (default ``keep_layers``)."""
    from transformers import AutoConfig

    layers = layers or model.keep_layers
    values = dict(model.config)
    values.pop("architectures")
    values[_layer_key(values)] = layers
    if "max_window_layers" in values:  # Qwen2: sliding-window layers counted from the top, none used here
        values["max_window_layers"] = layers
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    config.architectures = list(model.config["architectures"])
    return config


def build_model_files(model: StandinModel, texts: Sequence[str], out: Path, *, seed: int = SEED,
                      layers: int | None = None) -> Path:
    """Write the stand-in's files (config, generation config, random weights, tokenizer, model card) into ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    layers = layers or model.keep_layers
    config = standin_config(model, layers)
    torch.manual_seed(seed)
    dtype = getattr(torch, model.dtype)
    weights = AutoModelForCausalLM.from_config(config, dtype=dtype)
    weights.generation_config = GenerationConfig(**model.generation)
    out.mkdir(parents=True, exist_ok=True)
    weights.save_pretrained(out)
    build_tokenizer(model.tokenizer, texts).save_pretrained(out)
    (out / "README.md").write_text(
        f"# Stand-in for {model.hub_id}\n\nBuilt offline by `course_utils.course.hub_standins` for the colab rehearsal: "
        f"the real config.json values ({model.source}) with {layers} of its {model.real_layers} layers, "
        f"random weights (seed {seed}) in {model.dtype}, and a {model.tokenizer.tokenizer_class} with the real "
        "special tokens and length whose merges were trained on the workbook's corpora. Not the real model.\n",
        encoding="utf-8")
    return out


# ---------------------------------------------------------------------------------------------------- datasets
@dataclass(frozen=True)
class StandinDataset:
    """A hub dataset to stand in for: its splits and the columns each row has, filled from an embedded corpus."""

    hub_id: str
    source: str  # where the layout comes from
    splits: dict[str, int]  # split -> rows in the stand-in
    rows: Callable[[str, int], list[dict[str, Any]]]  # (split, n) -> rows in the hub dataset's columns


def _story_rows(split: str, n: int) -> list[dict[str, Any]]:
    path = paths.data_dir() / "datasets" / "tiny-stories" / f"{split}.jsonl"
    with path.open(encoding="utf-8") as lines:
        return [{"text": json.loads(line)["text"]} for line, _ in zip(lines, range(n))]


STANDIN_DATASETS: dict[str, StandinDataset] = {d.hub_id: d for d in (
    StandinDataset("roneneldan/TinyStories",
                   "roneneldan/TinyStories on the Hub: parquet shards data/{train,validation}-*.parquet, "
                   "one string column 'text'",
                   {"train": 600, "validation": 100}, _story_rows),
)}


def write_dataset_files(dataset: StandinDataset, out: Path) -> Path:
    """Write the stand-in's parquet shards and dataset card into ``out`` (the layout of its hub repository)."""
    from datasets import Dataset

    for split, n in dataset.splits.items():
        rows = dataset.rows(split, n)
        if len(rows) < n:
            raise ValueError(f"the embedded corpus has {len(rows)} rows for split {split!r}, the stand-in needs {n}")
        shard = out / "data" / f"{split}-00000-of-00001.parquet"
        shard.parent.mkdir(parents=True, exist_ok=True)
        Dataset.from_list(rows).to_parquet(str(shard))  # the format the hub's dataset viewer converts to
    configs = "".join(f"  - split: {split}\n    path: data/{split}-*\n" for split in dataset.splits)
    (out / "README.md").write_text(
        f"---\nconfigs:\n- config_name: default\n  data_files:\n{configs}---\n\n# Stand-in for {dataset.hub_id}\n\n"
        f"Built offline by `course_utils.course.hub_standins` from the workbook's embedded corpora ({dataset.source}).\n",
        encoding="utf-8")
    return out


def _prepare_arrow_cache(dataset: StandinDataset, snapshot: Path, revision: str, datasets_cache: Path) -> Path:
    """What an online ``load_dataset(hub_id)`` leaves in ``HF_DATASETS_CACHE``: offline, it reads only this.

    datasets names the folder ``<owner>___<snake_case name>/default/0.0.0/<commit>``; the builder is told the
    files' hub paths (it checks that they belong to the repository) and then reads the local snapshot copies.
    """
    from datasets.data_files import DataFilesDict, DataFilesList
    from datasets.packaged_modules.parquet.parquet import Parquet

    base = f"hf://datasets/{dataset.hub_id}@{revision}"
    shards = {split: f"data/{split}-00000-of-00001.parquet" for split in dataset.splits}
    builder = Parquet(cache_dir=str(datasets_cache), dataset_name=dataset.hub_id.split("/")[1],
                      repo_id=dataset.hub_id, config_name="default", config_id="default", hash=revision,
                      base_path=base,
                      data_files=DataFilesDict({s: DataFilesList([f"{base}/{f}"], [None]) for s, f in shards.items()}))
    builder.config.data_files = DataFilesDict({s: DataFilesList([str(snapshot / f)], [None]) for s, f in shards.items()})
    builder.download_and_prepare()
    return Path(builder.cache_dir)


# ------------------------------------------------------------------------------------------------- cache layout
def _blob_name(path: Path) -> str:
    """The name huggingface_hub gives a cached file: the sha256 of a large (LFS) file, the git blob sha1 of others."""
    data = path.read_bytes()
    if path.suffix in (".safetensors", ".parquet"):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def write_snapshot(hub_cache: Path, repo_type: str, repo_id: str, files: Path) -> tuple[Path, str]:
    """Copy the folder ``files`` into the hub cache as one snapshot of ``repo_id``; returns (snapshot, revision).

    The layout is huggingface_hub's: ``blobs/<hash>``, ``snapshots/<rev>/<path>`` linking to the blob, and
    ``refs/main`` naming the revision (here a hash of the contents, standing in for a commit id).
    """
    from huggingface_hub.file_download import repo_folder_name

    repo = hub_cache / repo_folder_name(repo_id=repo_id, repo_type=repo_type)
    listing = sorted((p.relative_to(files).as_posix(), _blob_name(p)) for p in files.rglob("*") if p.is_file())
    revision = hashlib.sha1(json.dumps(listing).encode()).hexdigest()
    snapshot = repo / "snapshots" / revision
    shutil.rmtree(snapshot, ignore_errors=True)
    for relative, blob in listing:
        target = repo / "blobs" / blob
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            shutil.copyfile(files / relative, target)
        link = snapshot / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            link.symlink_to(os.path.relpath(target, link.parent))
        except OSError:  # no symlinks (Windows without developer mode): huggingface_hub then copies, so do we
            shutil.copyfile(target, link)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision, encoding="utf-8")
    return snapshot, revision


# ---------------------------------------------------------------------------------------------------- building
def colab_hub_ids() -> tuple[list[str], list[str]]:
    """(model ids, dataset ids) that the colab profile loads from the hub (embedded names such as zorbish excluded)."""
    from course_utils.ground.profiles import PROFILES

    colab = PROFILES["colab"]
    models = sorted({name for name in colab.models.values() if "/" in name})
    datasets = sorted({name for name in colab.datasets.values() if "/" in name})
    return models, datasets


def training_texts() -> list[str]:
    """The text the stand-in tokenizers' merges are trained on: the embedded stories and Zorbish pairs."""
    data = paths.data_dir() / "datasets"
    texts = [json.loads(line)["text"] for line in (data / "tiny-stories" / "train.jsonl").open(encoding="utf-8")]
    for split in ("train", "validation", "test"):
        for line in (data / "zorbish" / f"{split}.jsonl").open(encoding="utf-8"):
            row = json.loads(line)
            texts.append(row["prompt"] + row["completion"])
    return texts


@dataclass(frozen=True)
class BuiltStandin:
    """One stand-in written into the cache."""

    hub_id: str
    kind: str  # "model" or "dataset"
    revision: str
    snapshot: Path
    note: str  # what differs from the real repository, in words


def build_standins(hf_home: str | Path, *, models: Sequence[str] | None = None,
                   datasets: Sequence[str] | None = None, seed: int = SEED, full_depth: bool = False,
                   verbose: bool = True) -> list[BuiltStandin]:
    """Write the stand-ins (default: every hub id the colab profile names) into the HF cache at ``hf_home``.

    Layers are cut to each model's ``keep_layers`` for a CPU; ``full_depth`` keeps all of them (for a GPU).

    Models go to ``hf_home/hub`` and datasets to ``hf_home/hub`` plus their Arrow cache in ``hf_home/datasets``,
    the folders ``HF_HOME=hf_home`` makes huggingface_hub and datasets use.
    """
    from datasets.utils.logging import disable_progress_bar
    from transformers.utils import logging as transformers_logging

    disable_progress_bar()  # no progress bars for files that take a blink
    transformers_logging.disable_progress_bar()
    wanted_models, wanted_datasets = colab_hub_ids()
    models = list(wanted_models if models is None else models)
    datasets = list(wanted_datasets if datasets is None else datasets)
    unknown = [m for m in models if m not in STANDIN_MODELS] + [d for d in datasets if d not in STANDIN_DATASETS]
    if unknown:
        raise KeyError(f"No stand-in is defined for {', '.join(unknown)}; known models: {', '.join(STANDIN_MODELS)}; "
                       f"datasets: {', '.join(STANDIN_DATASETS)}. Add its config to course_utils/course/hub_standins.py.")
    hf_home = Path(hf_home)
    hub_cache = hf_home / "hub"
    built: list[BuiltStandin] = []
    texts = training_texts() if models else []
    with tempfile.TemporaryDirectory(prefix="standin_") as scratch:
        for hub_id in models:
            model = STANDIN_MODELS[hub_id]
            layers = model.real_layers if full_depth else model.keep_layers
            files = build_model_files(model, texts, Path(scratch) / hub_id, seed=seed, layers=layers)
            snapshot, revision = write_snapshot(hub_cache, "model", hub_id, files)
            depth = "all layers" if layers == model.real_layers else "cut"
            note = (f"{layers} of {model.real_layers} layers kept ({depth}), random weights in {model.dtype}, "
                    f"{model.tokenizer.tokenizer_class} of {model.tokenizer.size:,} tokens")
            built.append(BuiltStandin(hub_id, "model", revision, snapshot, note))
        for hub_id in datasets:
            dataset = STANDIN_DATASETS[hub_id]
            files = write_dataset_files(dataset, Path(scratch) / hub_id)
            snapshot, revision = write_snapshot(hub_cache, "dataset", hub_id, files)
            _prepare_arrow_cache(dataset, snapshot, revision, hf_home / "datasets")
            rows = ", ".join(f"{split} {n}" for split, n in dataset.splits.items())
            built.append(BuiltStandin(hub_id, "dataset", revision, snapshot, f"rows: {rows} (embedded corpus)"))
    if verbose:
        for item in built:
            print(f"{item.kind:8} {item.hub_id:30} {item.note}")
    return built
