"""Every way to save a fine-tuned model, and what can run each one (a Mac included).

* **LoRA adapter only** (PEFT's ``model.save_pretrained``): megabytes, needs its base model at load time; the base
  is the one named in ``adapter_config.json`` (:func:`retarget_adapter` points a copy at another one).
* **Merged 16-bit** (:func:`merged_16bit`): one standalone transformers checkpoint. From a QLoRA run the base is
  4-bit; it is merged either into the dequantized 4-bit weights (what the adapter was trained against) or into the
  original 16-bit weights.
* **GGUF** (:func:`export_gguf`, written by :mod:`course_utils.storage.gguf_io`): one file for llama.cpp, Ollama and LM
  Studio, in f16 or q8_0, and the adapter alone as a GGUF LoRA file; :mod:`course_utils.serving.llama_cpp_run` runs them in
  llama.cpp and makes k-quants such as q4_k_m with its quantizer.
* **The Hub** (:func:`push_variants`): each of the above uploaded, only behind Notebook 01's gate (a token in the
  environment AND the notebook's flag).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from course_utils.finetuning import quant
from course_utils.finetuning.memory_measure import human_bytes, release_memory
from course_utils.finetuning.sft_data import render_turns, stop_ids
from course_utils.finetuning.sft_eval import generate, logits_on
from course_utils.ground import machine, sources
from course_utils.storage import gguf_io, sharing

MERGE_BASES = ("dequantized", "original")


# ================================================================================================ folders
def folder_bytes(folder: str | Path) -> dict[str, int]:
    """Size of each file in ``folder``, largest first."""
    files = {p.name: p.stat().st_size for p in Path(folder).iterdir() if p.is_file()}
    return dict(sorted(files.items(), key=lambda item: -item[1]))


def adapter_config(folder: str | Path) -> dict[str, Any]:
    """The saved ``adapter_config.json`` as a dict."""
    return json.loads((Path(folder) / "adapter_config.json").read_text())


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """Silence one FutureWarning: PEFT 0.21 reads an attribute transformers 5 deprecates (not ours to fix)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


# ================================================================================================ adapters
def retarget_adapter(adapter_dir: str | Path, base: str, out_dir: str | Path) -> Path:
    """A copy of an adapter folder whose ``adapter_config.json`` names ``base`` as its base model."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(adapter_dir, out_dir)
    config_file = out_dir / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = str(base)
    config_file.write_text(json.dumps(config, indent=2))
    return out_dir


def prequantize(name: str, folder: str | Path) -> Path:
    """Save ``name`` already quantized to 4-bit NF4 in ``folder`` (as the ``unsloth/...-bnb-4bit`` repositories are)."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    on_gpu = torch.cuda.is_available()
    placement = {"device_map": {"": 0}} if on_gpu else {}
    # The workbook's precision rule (bf16 only where the GPU computes it natively: fp16 on a T4), not
    # torch.cuda.is_bf16_supported(), which says True on a T4 because it counts emulation.
    compute = machine.pick_precision(torch.device("cuda", 0)).inference_dtype if on_gpu else torch.float32
    model = AutoModelForCausalLM.from_pretrained(sources.resolve_model(name).location, dtype=compute,
                                                 quantization_config=quant.nf4_config(compute), **placement)
    model.save_pretrained(folder)
    sources.load_tokenizer(name).save_pretrained(folder)
    del model
    release_memory()
    return folder


# ================================================================================================ merging
def dequantized_weights(model: Any) -> dict[str, torch.Tensor]:
    """The 4-bit (bitsandbytes) weights of a model, dequantized to float32 and keyed by transformers' names."""
    from bitsandbytes.nn import Linear4bit

    base = getattr(model, "get_base_model", lambda: model)()
    out = {}
    for name, module in base.named_modules():
        if not isinstance(module, Linear4bit):  # PEFT's LoRA wrapper shows its base layer's weight too: skip it
            continue
        out[name.replace(".base_layer", "") + ".weight"] = quant.dequantize_bnb_layer(module)
    return out


def dequantized_base(base_name: str, trained_model: Any = None) -> Any:
    """The plain float32 base of ``base_name`` with the linear weights a QLoRA ``trained_model`` really used: its
    4-bit weights, dequantized (without a quantized ``trained_model``: the base as saved)."""
    plain, _ = sources.load_causal_lm(base_name, dtype=torch.float32, device="cpu", verbose=False)
    if trained_model is not None and quant.is_quantized(trained_model):
        weights = dequantized_weights(trained_model)
        state = plain.state_dict()
        missing = [name for name in weights if name not in state]
        if missing:
            raise KeyError(f"dequantized weights without a place in {base_name}: {missing[:3]}")
        with torch.no_grad():
            for name, value in weights.items():
                state[name].copy_(value.reshape(state[name].shape))
    return plain.eval()


def merged_16bit(adapter_dir: str | Path, base_name: str, *, trained_model: Any = None, base: str = "dequantized",
                 dtype: torch.dtype = torch.float16) -> Any:
    """The adapter folded into its base, as a plain model in ``dtype``.

    ``base="dequantized"``: the linear weights of ``trained_model`` (a QLoRA model) are dequantized first, so the
    merged model computes what was trained. ``base="original"``: the adapter goes onto the 16-bit weights of
    ``base_name`` as they were before quantization (what Unsloth's ``save_pretrained_merged`` does in its current
    releases). For a model trained on a 16-bit base both are the same.
    """
    from peft import PeftModel

    if base not in MERGE_BASES:
        raise ValueError(f"base must be one of {MERGE_BASES}, got {base!r}")
    plain = dequantized_base(base_name, trained_model if base == "dequantized" else None)
    with quiet_peft():
        adapted = PeftModel.from_pretrained(plain, str(adapter_dir))
    return adapted.merge_and_unload().to(dtype).eval()


def save_merged_16bit(trained_model: Any, tokenizer: Any, adapter_dir: str | Path, base_name: str, folder: str | Path,
                      *, dtype: torch.dtype = torch.float16) -> Path:
    """Write the merged 16-bit checkpoint of a (Q)LoRA model, merged into the base it was trained against
    (:func:`merged_16bit` with ``base="dequantized"``), with ``save_pretrained``."""
    folder = Path(folder)
    merged = merged_16bit(adapter_dir, base_name, trained_model=trained_model, base="dequantized", dtype=dtype)
    merged.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del merged
    return folder


def merge_choices(model: Any, tokenizer: Any, adapter_dir: str | Path, base_name: str, prompts: Sequence[str], *,
                  chat: bool | None, dtype: torch.dtype = torch.float32) -> list[dict[str, Any]]:
    """Both merges of a QLoRA adapter beside the trained model: logit difference and agreement of greedy answers."""
    reference = logits_on(model, tokenizer, prompts, chat=chat)
    answers = generate(model, tokenizer, prompts, chat=chat)
    rows = []
    for base in MERGE_BASES:
        merged = merged_16bit(adapter_dir, base_name, trained_model=model, base=base, dtype=dtype)
        logits = logits_on(merged, tokenizer, prompts, chat=chat)
        same = sum(a == b for a, b in zip(answers, generate(merged, tokenizer, prompts, chat=chat)))
        rows.append({"merged into": {"dequantized": "dequantized 4-bit base (what was trained)",
                                     "original": "original 16-bit base"}[base],
                     "largest logit difference / largest logit":
                         ((logits - reference).abs().max() / reference.abs().max()).item(),
                     "same greedy answers": same / len(prompts)})
        del merged
    return rows


# ================================================================================================ GGUF
def export_gguf(model: Any, tokenizer: Any, folder: str | Path, file_types: Sequence[str] = ("f16", "q8_0"),
                stem: str = "model") -> list[gguf_io.GgufFile]:
    """One GGUF per file type, written by our own converter (:func:`course_utils.storage.gguf_io.write_gguf`)."""
    folder = Path(folder)
    return [gguf_io.write_gguf(model, tokenizer, folder / f"{stem}-{t}.gguf", t, name=stem) for t in file_types]


def verify_gguf(gguf_file: gguf_io.GgufFile, source: Any, tokenizer: Any, prompts: Sequence[str], *,
                chat: bool | None = None) -> dict[str, Any]:
    """Read the GGUF back with transformers (an independent reader) and compare its logits with ``source``'s."""
    reader_model, reader_tokenizer = gguf_io.load_with_transformers(gguf_file.path)
    reference = logits_on(source.float(), tokenizer, prompts, chat=chat)
    candidate = logits_on(reader_model, tokenizer, prompts, chat=chat)
    relative = ((candidate - reference).abs().max() / reference.abs().max()).item()
    tolerance = gguf_io.GGUF_TOLERANCE[gguf_file.file_type]
    same_ids = all(reader_tokenizer(p)["input_ids"] == tokenizer(p)["input_ids"] for p in prompts)
    answers_source = generate(source.float(), tokenizer, prompts, chat=chat)
    answers_reader = generate(reader_model, tokenizer, prompts, chat=chat)
    same = sum(a == b for a, b in zip(answers_source, answers_reader)) / len(prompts)
    del reader_model
    return {"file": gguf_file.path.name, "read back as": "transformers (gguf_file=...)",
            "largest logit difference / largest logit": relative, "tolerance": tolerance,
            "within tolerance": relative <= tolerance, "same token ids": same_ids, "same greedy answers": same}


def gguf_size_estimate(n_params: int, file_type: str) -> float:
    """Bytes of the weights of ``n_params`` parameters stored as ``file_type`` (the metadata is small beside them)."""
    return n_params * gguf_io.bits_per_weight(file_type) / 8


# ================================================================================================ sizes
def formats_table(entries: dict[str, Path | Sequence[Path]]) -> list[dict[str, Any]]:
    """One row per saved format: its files and their total size."""
    rows = []
    for label, where in entries.items():
        files = [where] if isinstance(where, Path) and where.is_file() else (
            sorted(p for p in where.iterdir() if p.is_file()) if isinstance(where, Path) else list(where))
        total = sum(p.stat().st_size for p in files)
        rows.append({"format": label, "files": len(files), "bytes": total, "size": human_bytes(total)})
    return rows


# ================================================================================================ the Hub
def push_variants(gate: sharing.HubGate, repo_id: str | None, *, adapter_dir: Path, merged_dir: Path,
                  gguf_files: Sequence[Path]) -> list[dict[str, str]]:
    """Upload the adapter, the merged model and the GGUF files to three private repositories, if the gate is open.

    With the gate closed, the rows say which repositories would be created (``<HUB_REPO_ID>`` standing for an unset
    id) and that nothing was uploaded; the gate itself says why.
    """
    name = repo_id or "<HUB_REPO_ID>"
    plan = [("LoRA adapter", f"{name}-lora", [adapter_dir]), ("merged 16-bit", name, [merged_dir]),
            ("GGUF", f"{name}-GGUF", list(gguf_files))]
    if not gate.enabled:
        return [{"what": what, "repository": repo, "status": "not pushed (gate closed)"} for what, repo, _ in plan]
    from huggingface_hub import HfApi

    api = HfApi()  # reads the token from the environment (HF_TOKEN) itself: it is never passed or printed here
    rows = []
    for what, repo, paths_ in plan:
        api.create_repo(repo, private=True, exist_ok=True)
        for path in paths_:
            if path.is_dir():
                api.upload_folder(folder_path=str(path), repo_id=repo)
            else:
                api.upload_file(path_or_fileobj=str(path), path_in_repo=path.name, repo_id=repo)
        rows.append({"what": what, "repository": repo, "status": f"pushed: https://huggingface.co/{repo}"})
    return rows


# ================================================================================================ on a Mac
def prompt_template(tokenizer: Any, chat: bool) -> str:
    """Ollama's ``TEMPLATE`` (Go template syntax) for prompts formatted as in training."""
    if not chat:
        return "{{ .Prompt }}"
    placeholder = "PROMPT_PLACEHOLDER"
    rendered = render_turns(tokenizer, placeholder, None)
    return rendered.replace(placeholder, "{{ .Prompt }}")


def ollama_modelfile(gguf_name: str, tokenizer: Any, *, chat: bool) -> str:
    """An Ollama Modelfile for a GGUF: the weights, the prompt format, greedy decoding, the tokens that stop it."""
    stops = sorted({tokenizer.convert_ids_to_tokens(i) for i in stop_ids(tokenizer, chat=chat)})
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{prompt_template(tokenizer, chat)}"""', "PARAMETER temperature 0"]
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    return "\n".join(lines) + "\n"


def mac_routes(gguf_name: str, merged_dir: str, prompt: str) -> list[dict[str, str]]:
    """Each way to run the model on a Mac: the commands, whether it uses the Mac's GPU, and how to check."""
    short = json.dumps(prompt)
    return [
        {"route": "transformers + PyTorch (mps)",
         "commands": f"model = AutoModelForCausalLM.from_pretrained('{merged_dir}').to('mps')",
         "Mac GPU?": "yes: PyTorch's MPS backend runs on Metal",
         "check": "torch.backends.mps.is_available(); next(model.parameters()).device == mps; Activity Monitor > "
                  "Window > GPU History"},
        {"route": "llama.cpp",
         "commands": f"brew install llama.cpp; llama-cli -m {gguf_name} -p {short} -n 32 --temp 0 -ngl 99",
         "Mac GPU?": "yes: Metal is on by default in macOS builds; -ngl sets how many layers go to the GPU",
         "check": "its log names the Metal device and says how many layers were offloaded to the GPU"},
        {"route": "Ollama",
         "commands": f"ollama create zorbish -f Modelfile; ollama run zorbish {short}",
         "Mac GPU?": "yes: runs llama.cpp with Metal",
         "check": "ollama ps: the PROCESSOR column says how much is on the GPU"},
        {"route": "LM Studio",
         "commands": "lms import " + gguf_name + " (or drag the file in), then load it and chat",
         "Mac GPU?": "yes: its llama.cpp (Metal) and MLX engines",
         "check": "the GPU offload setting of the loaded model; Activity Monitor's GPU History"},
        {"route": "MLX (mlx-lm)",
         "commands": f"pip install mlx-lm; mlx_lm.convert --hf-path {merged_dir} --mlx-path mlx_model -q; "
                     f"mlx_lm.generate --model mlx_model --prompt {short} --max-tokens 32",
         "Mac GPU?": "yes: MLX is Apple's array library for the Apple-silicon GPU (unified memory)",
         "check": "Activity Monitor's GPU History; sudo powermetrics --samplers gpu_power -i 1000"},
    ]
