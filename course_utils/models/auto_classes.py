"""From ``config.json`` to a Python class: what the ``Auto`` classes of transformers do, offline, on tiny configs.

A checkpoint folder holds numbers (``model.safetensors``) and a description (``config.json``); the code that runs
the model is in the installed ``transformers`` package. ``AutoConfig`` reads ``model_type`` and picks a config class;
each ``AutoModelFor...`` class maps that config class to the model class for its task. ``architectures`` records
which class saved the checkpoint, which tells you the Auto class to use. Everything here builds models from
configs with ``from_config`` (random weights, nothing downloaded), mostly on PyTorch's ``meta`` device (shapes
without memory).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from course_utils.ground.paths import display_path
from course_utils.models.arch import HeadCountError, check_head_counts

# Token ids inside the tiny vocabularies below (the defaults of some configs point past a 256-token vocabulary).
_IDS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
_DECODER = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "vocab_size": 256, "max_position_embeddings": 128, **_IDS}

# model_type -> the config.json fields of a tiny model of that architecture.
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "gpt2": {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 128, "vocab_size": 256, **_IDS},
    "llama": dict(_DECODER),
    "gemma": dict(_DECODER, head_dim=16),
    "phi3": dict(_DECODER),
    "qwen2": dict(_DECODER),
    "mistral": dict(_DECODER),
    "mixtral": dict(_DECODER, num_local_experts=4, num_experts_per_tok=2),
    "bert": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "vocab_size": 256, "max_position_embeddings": 128, "pad_token_id": 0},
    "t5": {"d_model": 64, "d_kv": 16, "d_ff": 128, "num_layers": 2, "num_heads": 4, "vocab_size": 256,
           "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0},
    "bart": {"d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
             "decoder_attention_heads": 4, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128, "vocab_size": 256,
             "max_position_embeddings": 128, **_IDS, "decoder_start_token_id": 2, "forced_eos_token_id": 2},
}

# model_type -> (a public checkpoint, the "architectures" entry of its config.json).
REAL_CHECKPOINTS: dict[str, tuple[str, str]] = {
    "gpt2": ("openai-community/gpt2", "GPT2LMHeadModel"),
    "llama": ("meta-llama/Llama-2-7b-hf", "LlamaForCausalLM"),
    "gemma": ("google/gemma-2b", "GemmaForCausalLM"),
    "phi3": ("microsoft/Phi-3-mini-4k-instruct", "Phi3ForCausalLM"),
    "qwen2": ("Qwen/Qwen2.5-0.5B", "Qwen2ForCausalLM"),
    "mistral": ("mistralai/Mistral-7B-v0.1", "MistralForCausalLM"),
    "mixtral": ("mistralai/Mixtral-8x7B-v0.1", "MixtralForCausalLM"),
    "bert": ("google-bert/bert-base-uncased", "BertForMaskedLM"),
    "t5": ("google-t5/t5-small", "T5ForConditionalGeneration"),
    "bart": ("facebook/bart-base", "BartForConditionalGeneration"),
}

KIND = {"gpt2": "decoder-only", "llama": "decoder-only", "gemma": "decoder-only", "phi3": "decoder-only",
        "qwen2": "decoder-only", "mistral": "decoder-only", "mixtral": "decoder-only, MoE",
        "bert": "encoder-only", "t5": "encoder-decoder", "bart": "encoder-decoder"}


class UnknownArchitectureError(ValueError):
    """A config whose ``model_type`` the installed transformers does not implement."""


def _field(config: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        value = config.get(name) if isinstance(config, Mapping) else getattr(config, name, None)
        if value is not None:
            return value
    return default


def validate_head_counts(config: Any) -> None:
    """Raise :class:`~course_utils.models.arch.HeadCountError` (naming the config) if its attention heads do not fit."""
    hidden = _field(config, "hidden_size", "n_embd", "d_model")
    heads = _field(config, "num_attention_heads", "n_head", "num_heads", "encoder_attention_heads")
    if hidden is None or heads is None:
        return
    kv_heads = _field(config, "num_key_value_heads", default=heads)
    head_dim = _field(config, "head_dim", "d_kv")
    try:
        check_head_counts(hidden, heads, kv_heads, head_dim)
    except HeadCountError as error:
        kind = _field(config, "model_type", default="this")
        raise HeadCountError(f"The {kind} config cannot build attention layers: {error}") from None


def known_model_types() -> set[str]:
    """Every ``model_type`` the installed transformers has a config class for."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return set(CONFIG_MAPPING_NAMES)


def _unknown_message(model_type: Any, architectures: Sequence[str], auto_map: Mapping[str, str] | None,
                     where: str) -> str:
    import transformers

    arch = ", ".join(architectures) or "not given"
    lines = [f"{where} says model_type={model_type!r} (architectures: {arch}), but transformers "
             f"{transformers.__version__}, installed here, has no code for that architecture."]
    if auto_map:
        files = sorted({ref.split("--")[-1].split(".")[0] + ".py" for ref in auto_map.values()})
        lines.append(
            f"The repository ships its own Python code for it ({', '.join(files)}, listed under auto_map). "
            "Loading it with trust_remote_code=True would import and run those files on this machine with your "
            "permissions: read them first, and pin the exact revision you read (revision=<commit>), because the "
            "files can change after you looked. That is why trust_remote_code is off by default.")
    lines.append("What to do: (1) upgrade transformers (pip install -U transformers): new architectures arrive in "
                 "new releases, and the model card usually names the first version that supports it; "
                 "(2) if no release has it yet, and the repository ships modeling code, use trust_remote_code=True "
                 "as described above; (3) check the spelling of model_type in config.json.")
    return "\n".join(lines)


@dataclass(frozen=True)
class CheckpointInfo:
    """What ``config.json`` tells you before anything is loaded."""

    model_type: str
    architectures: tuple[str, ...]
    config_class: str
    auto_class: str  # the Auto class whose mapping holds the saved architecture
    model_class: str  # what that Auto class builds for this config
    custom_code: tuple[str, ...]  # auto_map entries: code shipped in the repository

    def as_rows(self) -> list[dict[str, str]]:
        return [{"field": k, "value": v if isinstance(v, str) else ", ".join(v) or "none"}
                for k, v in self.__dict__.items()]


# Auto classes in the order they are tried when finding the one that holds an architecture name.
AUTO_MAPPINGS: tuple[tuple[str, str], ...] = (
    ("AutoModelForCausalLM", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),
    ("AutoModelForMaskedLM", "MODEL_FOR_MASKED_LM_MAPPING_NAMES"),
    ("AutoModelForSeq2SeqLM", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"),
    ("AutoModelForSequenceClassification", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"),
    ("AutoModelForTokenClassification", "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES"),
    ("AutoModelForQuestionAnswering", "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES"),
    ("AutoModelForImageClassification", "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES"),
    ("AutoModelForObjectDetection", "MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES"),
    ("AutoModelForCTC", "MODEL_FOR_CTC_MAPPING_NAMES"),
    ("AutoModelForAudioClassification", "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES"),
    ("AutoModelForImageTextToText", "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES"),
    ("AutoModel", "MODEL_MAPPING_NAMES"),
)


def _mapping(name: str) -> Mapping[str, Any]:
    from transformers.models.auto import modeling_auto

    return getattr(modeling_auto, name, {})


def _class_names(value: Any) -> tuple[str, ...]:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def auto_class_for(architecture: str) -> str | None:
    """The Auto class whose mapping contains ``architecture`` (e.g. ``LlamaForCausalLM``), or None."""
    for auto_name, mapping_name in AUTO_MAPPINGS:
        if any(architecture in _class_names(v) for v in _mapping(mapping_name).values()):
            return auto_name
    return None


def read_config(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """A ``config.json`` as a dict, from a folder, a file or a dict."""
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    path = path / "config.json" if path.is_dir() else path
    if not path.exists():
        raise FileNotFoundError(f"No config.json at {path}: pass a save_pretrained folder or the config file.")
    return json.loads(path.read_text())


def config_json(name: str) -> dict[str, Any]:
    """The ``config.json`` of a model by name (embedded, local folder, hub cache or hub), as a dict."""
    from course_utils.ground import sources

    location = sources.resolve_model(name).location
    if Path(location).is_dir():
        return read_config(location)
    from huggingface_hub import hf_hub_download

    return read_config(hf_hub_download(location, "config.json"))


def describe_checkpoint(source: str | Path | Mapping[str, Any]) -> CheckpointInfo:
    """Which config class, Auto class and model class a checkpoint needs, from its ``config.json`` alone.

    Raises :class:`UnknownArchitectureError` when the installed transformers does not know the ``model_type``,
    and :class:`~course_utils.models.arch.HeadCountError` when the head counts cannot work.
    """
    config = read_config(source)
    where = f"config.json of {display_path(source)}" if not isinstance(source, Mapping) else "This config"
    model_type = config.get("model_type")
    architectures = tuple(config.get("architectures") or ())
    auto_map = config.get("auto_map") or {}
    if not model_type:
        raise UnknownArchitectureError(f"{where} has no model_type, so AutoConfig cannot pick a class. Every "
                                       "config.json written by save_pretrained has one: is this the right file?")
    if model_type not in known_model_types():
        raise UnknownArchitectureError(_unknown_message(model_type, architectures, auto_map, where))
    validate_head_counts(config)
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    auto_class, model_class = "AutoModel", _class_names(_mapping("MODEL_MAPPING_NAMES").get(model_type, "?"))[0]
    for architecture in architectures:
        found = auto_class_for(architecture)
        if found:
            auto_class, model_class = found, architecture
            break
    return CheckpointInfo(model_type, architectures, CONFIG_MAPPING_NAMES[model_type], auto_class, model_class,
                          tuple(f"{k} -> {v}" for k, v in auto_map.items()))


def tiny_config(model_type: str, **overrides: Any) -> Any:
    """A transformers config of a tiny model of ``model_type`` (``TINY_CONFIGS`` sizes unless overridden)."""
    from transformers import AutoConfig

    values = {**TINY_CONFIGS.get(model_type, {}), **overrides}
    if model_type not in known_model_types():
        raise UnknownArchitectureError(_unknown_message(model_type, (), None, "The requested config"))
    validate_head_counts({"model_type": model_type, **values})
    return AutoConfig.for_model(model_type, **values)


# Mixture-of-experts architectures, by model_type, and one that no transformers release has.
MOE_MODEL_TYPES = ("mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v3", "gpt_oss", "llama4_text", "zorbish_moe")


def moe_support(model_types: Sequence[str] = MOE_MODEL_TYPES) -> list[dict[str, str]]:
    """Which mixture-of-experts model types the installed transformers can build, and with which class."""
    import transformers

    known, causal = known_model_types(), _mapping("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES")
    return [{"model_type": t, f"in transformers {transformers.__version__}": "yes" if t in known else "no",
             "AutoModelForCausalLM builds": _class_names(causal[t])[0] if t in causal else "-"}
            for t in model_types]


def build(auto_class: Any, config: Any, device: str | torch.device = "meta") -> torch.nn.Module | None:
    """``auto_class.from_config(config)`` on ``device`` (meta: no memory), or None if the class has no such model.

    transformers' advice for unusual combinations (such as BERT as a causal LM) is silenced while building.
    """
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with torch.device(device):
            return auto_class.from_config(config)
    except ValueError as error:
        if "Unrecognized configuration class" in str(error):
            return None
        raise
    finally:
        hf_logging.set_verbosity(verbosity)


def class_table(model_types: Sequence[str] = tuple(TINY_CONFIGS)) -> list[dict[str, str]]:
    """One row per model_type: its config class and what four Auto classes build from it (``-``: none)."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM

    rows = []
    for model_type in model_types:
        config = tiny_config(model_type)
        row = {"model_type": model_type, "kind": KIND.get(model_type, ""), "config class": type(config).__name__}
        for auto in (AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM):
            model = build(auto, config)
            row[auto.__name__] = type(model).__name__ if model is not None else "-"
        hub_id, saved = REAL_CHECKPOINTS.get(model_type, ("", ""))
        row["architectures in config.json"] = f"{saved} ({hub_id})" if saved else ""
        rows.append(row)
    return rows


# (Auto class, modality, task, what the head outputs)
TASKS: tuple[tuple[str, str, str, str], ...] = (
    ("AutoModel", "text", "hidden states, no head", "last_hidden_state (batch, seq, hidden)"),
    ("AutoModelForCausalLM", "text", "next-token generation", "logits (batch, seq, vocab)"),
    ("AutoModelForMaskedLM", "text", "fill in [MASK] tokens", "logits (batch, seq, vocab)"),
    ("AutoModelForSeq2SeqLM", "text", "text to text (translate, summarize)", "logits (batch, target seq, vocab)"),
    ("AutoModelForSequenceClassification", "text", "label a whole text", "logits (batch, labels)"),
    ("AutoModelForTokenClassification", "text", "label each token (NER)", "logits (batch, seq, labels)"),
    ("AutoModelForQuestionAnswering", "text", "extract an answer span", "start and end logits (batch, seq)"),
    ("AutoModelForImageClassification", "vision", "label an image", "logits (batch, labels)"),
    ("AutoModelForObjectDetection", "vision", "boxes and labels", "logits + boxes per query"),
    ("AutoModelForCTC", "audio", "speech to text without a decoder", "logits (batch, frames, vocab)"),
    ("AutoModelForAudioClassification", "audio", "label a clip", "logits (batch, labels)"),
    ("AutoModelForImageTextToText", "multimodal", "image + text to text", "logits (batch, seq, vocab)"),
)

TASK_EXAMPLES = ("llama", "bert", "t5", "vit", "detr", "wav2vec2", "llava")


def task_table(examples: Sequence[str] = TASK_EXAMPLES) -> list[dict[str, str]]:
    """Auto classes by task, with the class each builds for a few example model types (from this transformers)."""
    mapping_of = dict(AUTO_MAPPINGS)
    rows = []
    for auto_name, modality, task, output in TASKS:
        mapping = _mapping(mapping_of[auto_name])
        found = [f"{t}: {_class_names(mapping[t])[0]}" for t in examples if t in mapping]
        rows.append({"Auto class": auto_name, "modality": modality, "task": task, "output": output,
                     "model types": str(len(mapping)), "examples": "; ".join(found[:3]) or "-"})
    return rows


# ---------------------------------------------------------------------------------------------------------------
# New architectures: an unknown model_type, and code shipped with a checkpoint


def write_unknown_checkpoint(folder: str | Path, *, with_custom_code: bool = False) -> Path:
    """Write the ``config.json`` of a made-up MoE architecture (and, optionally, the code that defines it).

    With ``with_custom_code`` the folder also gets ``configuration_zorbish_moe.py`` and an ``auto_map`` entry, the
    way Hub repositories ship code for architectures that transformers does not have yet. The file is harmless:
    importing it prints one line, to show that it ran.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["ZorbishMoeForCausalLM"], "model_type": "zorbish_moe", "hidden_size": 64,
              "num_attention_heads": 4, "num_key_value_heads": 2, "num_experts": 8, "num_experts_per_token": 2,
              "vocab_size": 256}
    if with_custom_code:
        config["auto_map"] = {"AutoConfig": "configuration_zorbish_moe.ZorbishMoeConfig"}
        (folder / "configuration_zorbish_moe.py").write_text(textwrap.dedent('''\
            """A config class shipped inside a checkpoint folder; transformers imports it on trust_remote_code."""
            from transformers import PretrainedConfig

            print("configuration_zorbish_moe.py is running inside your Python process (the one that loaded the "
                  "config: your notebook's kernel): it could read your files and environment variables just as well.")


            class ZorbishMoeConfig(PretrainedConfig):
                model_type = "zorbish_moe"

                def __init__(self, num_experts=8, num_experts_per_token=2, **kwargs):
                    self.num_experts = num_experts
                    self.num_experts_per_token = num_experts_per_token
                    super().__init__(**kwargs)
            '''))
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder


def load_config(source: str | Path, *, trust_remote_code: bool = False) -> Any:
    """``AutoConfig.from_pretrained`` with an explicit ``trust_remote_code`` (never the interactive prompt) and
    an actionable :class:`UnknownArchitectureError` when the architecture is unknown."""
    from transformers import AutoConfig

    if not isinstance(trust_remote_code, bool):
        raise TypeError("trust_remote_code must be True or False: None would make transformers ask on stdin, "
                        "which hangs a notebook run by papermill.")
    config = read_config(source)
    known = config.get("model_type") in known_model_types()
    if not known and not (trust_remote_code and config.get("auto_map")):
        where = f"config.json of {display_path(source)}"
        raise UnknownArchitectureError(_unknown_message(config.get("model_type"),
                                                        tuple(config.get("architectures") or ()),
                                                        config.get("auto_map"), where))
    validate_head_counts(config)  # before transformers' own, terser validation
    return AutoConfig.from_pretrained(str(source), trust_remote_code=trust_remote_code)


# ---------------------------------------------------------------------------------------------------------------
# Causal LM, base model, masked LM, seq2seq: shapes and attention direction


@torch.no_grad()
def changes_earlier_positions(model: torch.nn.Module, input_ids: torch.Tensor) -> float:
    """Largest change of the outputs at positions ``0..n-2`` when only the last input token is replaced.

    Zero for a causal model (a position sees only itself and the past), non-zero for a bidirectional one.
    """
    def outputs(ids: torch.Tensor) -> torch.Tensor:
        out = model(input_ids=ids)
        return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state

    vocab = model.config.vocab_size
    input_ids = input_ids.to(next(model.parameters()).device) % vocab  # token ids valid for this vocabulary
    changed = input_ids.clone()
    changed[:, -1] = (changed[:, -1] + 1 + vocab // 2) % vocab
    return float((outputs(input_ids)[:, :-1] - outputs(changed)[:, :-1]).abs().max())


def _shape(value: Any) -> str:
    return "(" + ", ".join(str(s) for s in value.shape) + ")"


@torch.no_grad()
def output_shapes(models: Mapping[str, torch.nn.Module], input_ids: torch.Tensor,
                  decoder_input_ids: torch.Tensor | None = None) -> list[dict[str, str]]:
    """For each named model: its class, the fields of its output and their shapes on ``input_ids``."""
    rows = []
    for label, model in models.items():
        kwargs: dict[str, Any] = {"input_ids": input_ids}
        if model.config.is_encoder_decoder:
            kwargs["decoder_input_ids"] = decoder_input_ids if decoder_input_ids is not None else input_ids[:, :3]
        out = model(**kwargs)
        fields = [f"{k} {_shape(v)}" for k, v in out.items() if isinstance(v, torch.Tensor)]
        inputs = ", ".join(f"{k} {_shape(v)}" for k, v in kwargs.items())
        rows.append({"model": label, "class": type(model).__name__, "inputs": inputs, "outputs": "; ".join(fields)})
    return rows


def attention_direction(models: Mapping[str, torch.nn.Module], input_ids: torch.Tensor) -> list[dict[str, str]]:
    """For each model: does replacing the last token change the outputs at earlier positions?"""
    rows = []
    for label, model in models.items():
        change = changes_earlier_positions(model, input_ids)
        rows.append({"model": label, "class": type(model).__name__,
                     "largest change at earlier positions": f"{change:.2g}",
                     "earlier positions see the last token": "yes (bidirectional)" if change > 0 else "no (causal)"})
    return rows


@torch.no_grad()
def shift_table(model: torch.nn.Module, tokenizer: Any, text: str, first: int = 8) -> list[dict[str, str]]:
    """Position by position: the input token, its label (the next token) and the model's top prediction."""
    ids = tokenizer(text, return_tensors="pt").input_ids.to(model.device)
    predictions = model(input_ids=ids).logits[0].argmax(-1)
    tokens = ids[0].tolist()
    rows = []
    for t in range(min(first, len(tokens))):
        label = tokenizer.decode([tokens[t + 1]]) if t + 1 < len(tokens) else "(none: beyond the text)"
        guess = tokenizer.decode([int(predictions[t])])
        rows.append({"position t": str(t), "input token": repr(tokenizer.decode([tokens[t]])),
                     "label = input at t+1": repr(label) if t + 1 < len(tokens) else label,
                     "prediction from logits[t]": repr(guess),
                     "right": ("yes" if t + 1 < len(tokens) and int(predictions[t]) == tokens[t + 1] else
                               "no" if t + 1 < len(tokens) else "")})
    return rows
