"""Moving a saved model: reload it in a fresh process on another device, see where its code comes from, push it
to the Hugging Face Hub (only when a token is present AND the notebook's flag says so; a token is never printed).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from course_utils.ground import hub
from course_utils.reporting.course_documents import EXAM_NOTES

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

# Logits from another process on the same CPU come back bit for bit; another device (MPS, CUDA) sums in a
# different order, which moves fp32 logits by about 1e-6 to 1e-4. The tolerance allows that and nothing more:
# editing a single weight (section 3 of Notebook 01) moves them by far more.
LOGITS_ATOL = 1e-3
LOGITS_RTOL = 1e-3

# What the "other machine" runs: nothing from this workbook, only torch, transformers and the saved folder.
RELOAD_SCRIPT = """\
import json, sys, time, inspect
import torch, transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

folder, device, prompt, out = sys.argv[1:5]
start = time.perf_counter()
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device).eval()
ids = tokenizer(prompt, return_tensors="pt").input_ids
with torch.no_grad():
    logits = model(ids.to(device)).logits.float().cpu()
save_file({"logits": logits.contiguous(), "input_ids": ids.contiguous()}, out)
print(json.dumps({
    "device": str(next(model.parameters()).device), "seconds": time.perf_counter() - start,
    "transformers": transformers.__version__, "torch": torch.__version__,
    "model_class": type(model).__name__, "architectures": model.config.architectures,
    "modeling_file": inspect.getsourcefile(type(model)),
}))
"""


@dataclass(frozen=True)
class ReloadReport:
    """What the fresh process saw and computed."""

    device: str
    seconds: float
    transformers: str
    torch: str
    model_class: str
    architectures: list[str]
    modeling_file: str
    input_ids: torch.Tensor = field(repr=False)
    logits: torch.Tensor = field(repr=False)

    @property
    def modeling_module(self) -> str:
        """The modeling file as a path inside the transformers package (e.g. models/llama/modeling_llama.py)."""
        parts = Path(self.modeling_file).parts
        return "/".join(parts[parts.index("transformers") + 1:]) if "transformers" in parts else self.modeling_file


def reload_in_fresh_process(folder: str | os.PathLike[str], prompt: str, device: str = "cpu",
                            timeout: float = 300) -> ReloadReport:
    """Run :data:`RELOAD_SCRIPT` in a new Python process: load ``folder`` with the Auto classes on ``device``."""
    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "logits.safetensors"
        command = [sys.executable, "-c", RELOAD_SCRIPT, str(folder), str(device), prompt, str(out)]
        env = dict(os.environ, TRANSFORMERS_VERBOSITY="error", TQDM_DISABLE="1")
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"the fresh process failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
        info = json.loads(done.stdout.strip().splitlines()[-1])
        tensors = load_file(out)
    return ReloadReport(**info, input_ids=tensors["input_ids"], logits=tensors["logits"])


def compare_logits(reference: torch.Tensor, other: torch.Tensor, *, atol: float = LOGITS_ATOL,
                   rtol: float = LOGITS_RTOL) -> dict[str, Any]:
    """How close two logits tensors are: bit-identical?, largest difference, within tolerance?, same top token?"""
    import torch

    reference, other = reference.detach().float().cpu(), other.detach().float().cpu()
    if reference.shape != other.shape:
        raise ValueError(f"logits shapes differ: {tuple(reference.shape)} and {tuple(other.shape)}")
    return {
        "bit-identical": bool(torch.equal(reference, other)),
        "max |difference|": float((reference - other).abs().max()),
        f"within atol={atol:g}, rtol={rtol:g}": bool(torch.allclose(reference, other, atol=atol, rtol=rtol)),
        "same top token everywhere": bool(torch.equal(reference.argmax(-1), other.argmax(-1))),
    }


# ---------------------------------------------------------------------------------------------------------------
# What a saved folder holds

FILE_ROLES: dict[str, str] = {
    "model.safetensors": "every weight: the whole state dict (names, dtypes, shapes, raw bytes)",
    "model.safetensors.index.json": "sharded checkpoints: which shard file holds each tensor",
    "config.json": "the architecture: which class to build, and its sizes",
    "generation_config.json": "default settings for model.generate (sampling, special token ids)",
    "tokenizer.json": "the tokenizer: vocabulary, merges, special tokens",
    "tokenizer_config.json": "tokenizer settings: special tokens, maximum length, class",
    "special_tokens_map.json": "which tokens are bos, eos, pad",
    "chat_template.jinja": "how a list of chat messages becomes one prompt string",
    "adapter_model.safetensors": "LoRA adapter weights only (the base model is not in here)",
    "adapter_config.json": "the adapter's base model, target layers, rank and alpha",
    "README.md": "the model card",
}

# The fields the exam-question notes show for Llama-2-7B, explained.
CONFIG_NOTES: dict[str, str] = {
    "architectures": "the class from_pretrained builds",
    "model_type": "the family: picks the config class and modeling code",
    "hidden_size": "width of each token's vector",
    "num_hidden_layers": "transformer blocks",
    "num_attention_heads": "query heads per layer",
    "num_key_value_heads": "key/value heads (fewer than query heads: GQA)",
    "head_dim": "width of one attention head",
    "intermediate_size": "width inside the MLP",
    "vocab_size": "rows of the embedding and of lm_head",
    "max_position_embeddings": "longest context it was built for",
    "rope_parameters": "rotary positions: base frequency and scaling",
    "tie_word_embeddings": "lm_head shares the embedding matrix?",
    "rms_norm_eps": "epsilon of RMSNorm",
    "dtype": "dtype of the saved weights",
    "bos_token_id": "id of the begin-of-sequence token",
    "eos_token_id": "id of the end-of-sequence token",
    "transformers_version": "the version that wrote the file",
}
GENERATION_NOTES: dict[str, str] = {
    "do_sample": "sample (true) or always take the top token",
    "temperature": "divides the logits: below 1 sharpens",
    "top_p": "sample only from the smallest set with this much probability",
    "top_k": "sample only from the k most likely tokens",
    "max_length": "default cap on prompt + generated tokens",
    "bos_token_id": "begin-of-sequence token id",
    "eos_token_id": "generation stops at this token",
    "pad_token_id": "token used to pad batches",
}
# Values that the exam-question notes print for meta-llama/Llama-2-7b-hf; the sizes also sit in model_specs.
LLAMA2_DOCUMENTED_VALUES: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"], "head_dim": 128, "rms_norm_eps": 1e-05, "dtype": "float16",
    "rope_parameters": {"rope_theta": 10000, "rope_type": "default"}, "bos_token_id": 1, "eos_token_id": 2,
    "transformers_version": "5.2.0",
}
LLAMA2_DOCUMENTED_GENERATION: dict[str, Any] = {"do_sample": True, "temperature": 0.6, "top_p": 0.9, "max_length": 4096,
                                          "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}


def file_role(name: str) -> str:
    """What a file in a saved model folder is for."""
    if name in FILE_ROLES:
        return FILE_ROLES[name]
    if name.startswith("model-") and name.endswith(".safetensors"):
        return "one shard of the weights (see the index)"
    return ""


def folder_table(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The files of a saved model folder: name, bytes, what each one is for."""
    return [{"file": p.name, "bytes": p.stat().st_size, "what it holds": file_role(p.name)}
            for p in sorted(Path(folder).iterdir()) if p.is_file()]


def _short(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def config_table(folder: str | os.PathLike[str], filename: str = "config.json") -> list[dict[str, str]]:
    """Fields of ``config.json`` (or ``generation_config.json``): this model's value, Llama-2-7B's, the meaning."""
    from course_utils.models import model_specs

    ours = json.loads((Path(folder) / filename).read_text())
    if filename == "generation_config.json":
        notes, llama = GENERATION_NOTES, LLAMA2_DOCUMENTED_GENERATION
    else:
        notes, llama = CONFIG_NOTES, {**model_specs.get_spec("Llama-2-7B").config, **LLAMA2_DOCUMENTED_VALUES}
    return [{"field": key, "this model": _short(ours[key]) if key in ours else "-",
             f"Llama-2-7B ({EXAM_NOTES})": _short(llama[key]) if key in llama else "-", "meaning": note}
            for key, note in notes.items() if key in ours or key in llama]


# ---------------------------------------------------------------------------------------------------------------
# Where the code comes from


def describe_error(exc: BaseException, limit: int = 300, *, hide: str | os.PathLike[str] | None = None) -> str:
    """An error's first line, shortened to whole sentences (about ``limit`` characters): enough to read what went
    wrong. ``hide``, a temporary folder, is shown as ``<folder>``."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if hide is not None:
        first = first.replace(str(hide), "<folder>")
    if len(first) <= limit:
        return f"{type(exc).__name__}: {first}"
    sentences = re.split(r"(?<=[.!?])\s+", first)
    kept = sentences[0]
    for sentence in sentences[1:]:
        if len(kept) + 1 + len(sentence) > limit:
            break
        kept += " " + sentence
    if len(kept) > limit:  # one long sentence: cut it between words
        kept = kept[:limit].rsplit(" ", 1)[0]
    return f"{type(exc).__name__}: {kept} [...]"


def _copy_folder_with_config(folder: Path, target: Path, **changes: Any) -> Path:
    shutil.copytree(folder, target)
    config = json.loads((target / "config.json").read_text())
    config.update(changes)
    (target / "config.json").write_text(json.dumps(config, indent=2))
    return target


def try_unknown_architecture(folder: str | os.PathLike[str]) -> str:
    """Load a copy of ``folder`` whose config names an architecture this transformers does not know."""
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        copy = _copy_folder_with_config(Path(folder), Path(tmp) / "future-model", model_type="llama9000",
                                        architectures=["Llama9000ForCausalLM"])
        try:
            AutoModelForCausalLM.from_pretrained(copy)
        except (ValueError, KeyError, OSError) as exc:
            return describe_error(exc, hide=copy)
    return "loaded (unexpected: this transformers knows the architecture)"


def try_remote_code_without_trust(folder: str | os.PathLike[str]) -> str:
    """Load a copy of ``folder`` whose config points at custom modeling code, without trust_remote_code.

    The code file is never run: transformers refuses first. (Its only line would raise if it were imported.)
    """
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        auto_map = {"AutoConfig": "modeling_custom.CustomConfig",
                    "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}
        copy = _copy_folder_with_config(Path(folder), Path(tmp) / "custom-model", auto_map=auto_map,
                                        model_type="custom-llama", architectures=["CustomForCausalLM"])
        (copy / "modeling_custom.py").write_text('raise RuntimeError("custom code was executed")\n')
        try:
            AutoModelForCausalLM.from_pretrained(copy, trust_remote_code=False)
        except (ValueError, OSError, RuntimeError) as exc:
            return describe_error(exc, hide=copy)
    return "loaded (unexpected: the custom code was ignored)"


def try_weights_only(folder: str | os.PathLike[str]) -> str:
    """Load a folder that holds model.safetensors and nothing else: the weights alone are not a model."""
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy2(Path(folder) / "model.safetensors", tmp)
        try:
            AutoModelForCausalLM.from_pretrained(tmp)
        except (ValueError, OSError) as exc:
            return describe_error(exc, hide=tmp)
    return "loaded (unexpected)"


def untrained_adapter(model: Any, r: int = 8, alpha: int = 16,
                      target_modules: tuple[str, ...] = ("q_proj", "v_proj")) -> Any:
    """A copy of ``model`` with fresh LoRA adapters (peft is imported here: it is slow to import)."""
    import copy

    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(target_modules), task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft calls a transformers method that is being renamed
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(copy.deepcopy(model), config)


# ---------------------------------------------------------------------------------------------------------------
# The Hub


@dataclass(frozen=True)
class HubGate:
    """Whether the cells that write to the Hub may run, and why (never contains the token)."""

    enabled: bool
    reason: str

    def __str__(self) -> str:
        return ("Hub cells RUN: " if self.enabled else "Hub cells NOT RUN: ") + self.reason


def hub_gate(flag: bool, repo_id: str | None) -> HubGate:
    """Pushing needs the notebook's flag, a repository id, a token in the environment and a reachable Hub."""
    missing = []
    if not flag:
        missing.append("the flag PUSH_TO_HUB in the parameters cell is False")
    if not repo_id:
        missing.append("HUB_REPO_ID is not set")
    if not hub.token_present():
        missing.append("no Hub token (set HF_TOKEN, run `hf auth login`, or add it to Colab's secrets)")
    if hub.offline_requested() or not hub.hub_reachable():
        missing.append("the Hub is not reachable (offline)")
    if missing:
        return HubGate(False, "; ".join(missing) + ". Nothing was uploaded.")
    return HubGate(True, f"the flag is set and a token is present; pushing to {repo_id} (private).")


def push_with_save_pretrained(model: Any, tokenizer: Any, folder: str | os.PathLike[str], repo_id: str) -> str:
    """Way 1: ``save_pretrained(..., push_to_hub=True)`` writes the folder, then uploads it in one commit."""
    model.save_pretrained(folder, push_to_hub=True, repo_id=repo_id, private=True)
    tokenizer.save_pretrained(folder, push_to_hub=True, repo_id=repo_id, private=True)
    return f"https://huggingface.co/{repo_id}"


def push_with_push_to_hub(model: Any, tokenizer: Any, repo_id: str) -> str:
    """Way 2: ``push_to_hub`` on the model and on the tokenizer, straight from memory."""
    model.push_to_hub(repo_id, private=True)
    tokenizer.push_to_hub(repo_id, private=True)
    return f"https://huggingface.co/{repo_id}"


def trainer_hub_settings(output_dir: str | os.PathLike[str], repo_id: str | None, *, push: bool = False,
                         **overrides: Any) -> dict[str, Any]:
    """Way 3's ``TrainingArguments``: save at the end of every epoch and, with ``push``, upload every save."""
    settings: dict[str, Any] = dict(output_dir=str(output_dir), save_strategy="epoch", push_to_hub=push,
                                    hub_model_id=repo_id, hub_strategy="every_save", hub_private_repo=True,
                                    report_to="none", num_train_epochs=1, per_device_train_batch_size=8,
                                    use_cpu=not _cuda())
    settings.update(overrides)
    return settings


def trainer_hub_arguments(output_dir: str | os.PathLike[str], repo_id: str | None, *, push: bool = False,
                          **overrides: Any) -> Any:
    """:func:`trainer_hub_settings` as a ``TrainingArguments`` (importing it takes seconds: done only here)."""
    from transformers import TrainingArguments

    return TrainingArguments(**trainer_hub_settings(output_dir, repo_id, push=push, **overrides))


def push_with_trainer(model: Any, tokenizer: Any, texts: list[str], output_dir: str | os.PathLike[str],
                      repo_id: str) -> str:
    """Way 3: a Trainer with ``push_to_hub=True``: one short epoch on ``texts``, pushed when the epoch is saved."""
    from transformers import DataCollatorForLanguageModeling, Trainer

    encoded = [tokenizer(t, truncation=True, max_length=128) for t in texts]
    trainer = Trainer(model=model, args=trainer_hub_arguments(output_dir, repo_id, push=True),
                      train_dataset=encoded, processing_class=tokenizer,
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    trainer.train()
    trainer.push_to_hub()
    return f"https://huggingface.co/{repo_id}"


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _installed(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def transfer_report() -> list[dict[str, str]]:
    """How this huggingface_hub moves big files: hf_transfer (old releases) or hf_xet (its successor)."""
    from huggingface_hub import constants

    reads_hf_transfer = hasattr(constants, "HF_HUB_ENABLE_HF_TRANSFER")
    return [
        {"item": "huggingface_hub", "value": _installed("huggingface_hub")},
        {"item": "hf_transfer package", "value": _installed("hf_transfer")},
        {"item": "this huggingface_hub reads HF_HUB_ENABLE_HF_TRANSFER",
         "value": "yes" if reads_hf_transfer else "no (hf_transfer is no longer used; setting it only warns)"},
        {"item": "hf_xet package (chunked, deduplicated transfers)", "value": _installed("hf_xet")},
        {"item": "HF_XET_HIGH_PERFORMANCE", "value": os.environ.get("HF_XET_HIGH_PERFORMANCE", "unset")},
    ]


