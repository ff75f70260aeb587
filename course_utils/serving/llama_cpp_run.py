"""Running the exported GGUF files in llama.cpp, through its Python bindings (``llama-cpp-python``).

``pip install llama-cpp-python`` (the workbook's ``llama`` extra) builds llama.cpp from source with cmake and a C++
compiler, which takes minutes. Then ``llama_cpp.Llama(model_path=..., logits_all=True)`` loads a GGUF file, and
``Llama(..., lora_path=...)`` adds a GGUF LoRA adapter to it, what ``llama-cli --lora`` does. The helpers here set
llama.cpp's logits and greedy answers beside transformers' on the same token ids (:func:`compare_with_transformers`),
and make k-quants with llama.cpp's quantizer (:func:`quantize_with_llama_cpp`).

**Tolerances** (:data:`LLAMA_CPP_TOLERANCE`, relative to the largest logit) follow from the number formats. llama.cpp's
CPU kernels round not only the weights but also each layer's input: to f16 before an f16 matrix product (11
significant bits, a relative error of at most 2^-11 per value), and to Q8_0 blocks before a Q8_0 product (an error of
up to 1/254 of the block's largest value, for weights and inputs alike). Four layers and a softmax-free logit
comparison keep these errors at the same order, so the allowance is ten times the rounding step of the format:
5e-3 for f16 and 5e-2 for Q8_0. A file with a wrong layout (say, no query/key permutation) is off by about the size of
the logits themselves.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from course_utils.finetuning.sft_data import encode_prompt, stop_ids
from course_utils.finetuning.sft_eval import generate

INSTALL = ("pip install llama-cpp-python (or the workbook's extra: pip install -e '.[llama]'); it builds llama.cpp "
           "from source with cmake and a C++ compiler, a few minutes on two cores")
LLAMA_CPP_TOLERANCE: dict[str, float] = {"f32": 5e-4, "f16": 5e-3, "q8_0": 5e-2}


def available() -> tuple[bool, str]:
    """Whether the ``llama_cpp`` bindings can be imported here, and their version or how to install them."""
    if importlib.util.find_spec("llama_cpp") is None:
        return False, f"llama_cpp is not installed: {INSTALL}"
    try:
        import llama_cpp  # noqa: F401 - the import is the check (it loads the compiled library)
    except Exception as exc:  # noqa: BLE001 - any failure to load means "not available", with the reason
        return False, f"importing llama_cpp failed ({type(exc).__name__}: {str(exc)[:200]}); reinstall: {INSTALL}"
    return True, f"llama-cpp-python {importlib.metadata.version('llama_cpp_python')} (llama.cpp built into it)"


@contextlib.contextmanager
def without_weight_repacking() -> Iterator[None]:
    """Load models in the block without llama.cpp's "extra buffer types" (weights repacked for AMX and other kernels).

    On Intel CPUs with AMX, llama.cpp 0.3.36's AMX kernels crash (a general protection fault) on Q8_0 matrices as
    small as the tiny models'. Repacking only changes speed, never the numbers a layer computes. ``Llama`` does not
    expose the switch (``use_extra_bufts`` in llama.cpp's model parameters), so the defaults it reads are patched for
    the duration of the block.
    """
    import llama_cpp.llama as bindings

    default = bindings.llama_cpp.llama_model_default_params

    def params() -> Any:
        model_params = default()
        model_params.use_extra_bufts = False
        return model_params

    bindings.llama_cpp.llama_model_default_params = params
    try:
        yield
    finally:
        bindings.llama_cpp.llama_model_default_params = default


def load(path: str | Path, *, lora_path: str | Path | None = None, n_ctx: int = 256) -> Any:
    """``llama_cpp.Llama`` on a GGUF file (and a LoRA adapter file), keeping the logits of every position."""
    from llama_cpp import Llama

    with without_weight_repacking():
        return Llama(model_path=str(path), lora_path=str(lora_path) if lora_path else None, n_ctx=n_ctx,
                     logits_all=True, n_threads=torch.get_num_threads(), verbose=False)


def logits(llm: Any, ids: Sequence[int]) -> torch.Tensor:
    """llama.cpp's logits (float32) at every position of ``ids``, evaluated from an empty context."""
    llm.reset()
    llm.eval(list(ids))
    return torch.from_numpy(llm.scores[: len(ids)].copy())


def greedy_ids(llm: Any, ids: Sequence[int], max_new_tokens: int, stops: Sequence[int]) -> list[int]:
    """Greedy continuation in llama.cpp: the most likely token, again and again, until a stop id."""
    llm.reset()
    llm.eval(list(ids))
    out: list[int] = []
    for _ in range(max_new_tokens):
        token = int(llm.scores[llm.n_tokens - 1].argmax())
        if token in stops:
            break
        out.append(token)
        llm.eval([token])
    return out


@torch.no_grad()
def _transformers_logits(model: Any, ids: Sequence[int]) -> torch.Tensor:
    device = next(model.parameters()).device
    return model(input_ids=torch.tensor([list(ids)], device=device)).logits[0].float().cpu()


def compare_with_transformers(llm: Any, model: Any, tokenizer: Any, prompts: Sequence[str], *, chat: bool | None,
                              label: str, file_type: str, max_new_tokens: int = 12) -> dict[str, Any]:
    """llama.cpp against a transformers model on the same prompts: tokens, logits, greedy answers.

    Returns one table row; ``answers`` holds llama.cpp's greedy answers (for a side-by-side table).
    """
    stops = stop_ids(tokenizer, chat=chat)
    expected_answers = generate(model, tokenizer, prompts, chat=chat, max_new_tokens=max_new_tokens)
    worst, same_tokens, same_answers, answers = 0.0, 0, 0, []
    for prompt, expected in zip(prompts, expected_answers):
        ids = encode_prompt(tokenizer, prompt, chat=chat)
        text = tokenizer.decode(ids)
        same_tokens += llm.tokenize(text.encode(), add_bos=False, special=True) == ids
        reference = _transformers_logits(model, ids)
        worst = max(worst, ((logits(llm, ids) - reference).abs().max() / reference.abs().max()).item())
        answer = tokenizer.decode(greedy_ids(llm, ids, max_new_tokens, stops), skip_special_tokens=True)
        same_answers += answer == expected
        answers.append(answer)
    tolerance = LLAMA_CPP_TOLERANCE[file_type]
    return {"llama.cpp ran": label, "largest logit difference / largest logit": worst, "tolerance": tolerance,
            "within tolerance": "yes" if worst <= tolerance else "NO",
            "same tokens": f"{same_tokens}/{len(prompts)}", "same greedy answers": f"{same_answers}/{len(prompts)}",
            "answers": answers}


# ================================================================================================ k-quants
def type_summary(path: str | Path, quant: str) -> str:
    """How many tensors of each type a quantized file holds, and why some are not ``quant``."""
    from collections import Counter

    from course_utils.storage.gguf_io import tensor_table

    counts = Counter(row["type"] for row in tensor_table(path))
    text = "tensors by type: " + ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
    if quant.upper().startswith(("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")):
        text += (" (k-quants need rows that are whole blocks of 256 values; llama.cpp gives other rows a "
                 "fallback type)")
    return text


def find_llama_cpp() -> dict[str, str | None]:
    """Where llama.cpp's tools are: the ``llama-quantize`` binary on PATH, and the ``llama_cpp`` Python bindings."""
    bindings = None
    if importlib.util.find_spec("llama_cpp") is not None:
        try:
            bindings = importlib.metadata.version("llama_cpp_python")
        except importlib.metadata.PackageNotFoundError:
            bindings = "installed"
    return {"llama-quantize": shutil.which("llama-quantize"), "llama_cpp (Python bindings)": bindings}


def quantize_with_llama_cpp(source: str | Path, target: str | Path, quant: str = "Q4_K_M") -> tuple[Path | None, str]:
    """``(file, message)``: a k-quant of an f16/f32 GGUF made by llama.cpp, or ``(None, why not)``."""
    tools = find_llama_cpp()
    target = Path(target)
    if tools["llama-quantize"]:
        done = subprocess.run([tools["llama-quantize"], str(source), str(target), quant], capture_output=True,
                              text=True)
        if done.returncode == 0:
            return target, "made by llama-quantize"
        return None, f"llama-quantize failed: {done.stderr.strip().splitlines()[-1:]}"
    if tools["llama_cpp (Python bindings)"]:
        import llama_cpp
        from llama_cpp._utils import suppress_stdout_stderr

        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant.upper()}")
        params.nthread = os.cpu_count() or 1
        with suppress_stdout_stderr(disable=False):  # a warning per tensor that falls back: the summary says it
            status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params)
        if status == 0:
            return target, f"made by llama_cpp.llama_model_quantize (llama-cpp-python); {type_summary(target, quant)}"
        return None, f"llama_cpp.llama_model_quantize returned {status}"
    return None, (f"{quant} NOT made: llama.cpp is not installed here (no llama-quantize on PATH, no llama_cpp "
                  f"Python package). K-quants need llama.cpp's quantizer: {INSTALL}; or `brew install llama.cpp` on "
                  "a Mac, then: llama-quantize model-f16.gguf model-q4_k_m.gguf Q4_K_M")
