"""Open-ended experiments: a student's strategy calls a probe that measures, and the probe keeps the table.

An experiment exercise hands the student's function a :class:`Probe`, a measurement it may call (with settings it
chooses, within a budget of runs), for example ``loss_after(lr)``: train a small GPT for a fixed number of steps
and return its validation loss. Every run is recorded, so the table the check prints is the run's own and the
student's conclusion can be checked against it (measured, not typed in). The probes are small on purpose: each
run takes a fraction of a second to a second on a CPU, on the data and tiny models shipped in ``data/``.

One probe per notebook: :func:`kv_cache_probe` (00), :func:`save_dtype_probe` (01), :func:`position_loss_probe`
(02), :func:`learning_rate_probe` (03), :func:`distillation_probe` (04), :func:`lora_rank_probe` (05),
:func:`gguf_type_probe` (06), :func:`latency_probe` (07) and
:func:`dpo_beta_probe` (08).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from course_utils.data_build.tiny_models import WINDOW
from course_utils.reporting.tables import records_table

TINY_LLAMA = "tiny-llama"
STORIES = "tiny-stories"
TRAINING_WINDOW = WINDOW  # tokens per window the tiny models were trained on


class BudgetExceeded(RuntimeError):
    """The experiment asked the probe for more runs than it allows."""


class BadSetting(ValueError):
    """A probe was asked for a setting it cannot measure (the message says which values it takes)."""


@dataclass
class Probe:
    """A measurement an experiment may call up to ``budget`` times; each distinct run becomes a row of its table.

    ``measure(**settings)`` returns a dict of measured values; calling the probe returns ``values[result]`` (or the
    whole dict when ``result`` is None). Asking again for settings already measured costs nothing.
    """

    name: str
    settings: tuple[str, ...]
    measure: Callable[..., dict[str, Any]]
    result: str | None
    budget: int
    about: str = "made-up measurements"  # what every run does, in a few words, for the check's messages
    real: bool = False  # measured by the workbook (its table is shown), not made up by a test
    rows: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        settings = self._bind(args, kwargs)
        row = self.measured(**settings)
        if row is None:
            if len(self.rows) >= self.budget:
                raise BudgetExceeded(f"{self.name} allows {self.budget} runs and you asked for one more "
                                     f"({self._describe(settings)}): choose your runs, then decide.")
            start = time.perf_counter()
            with _quiet():
                values = self.measure(**settings)
            row = {**settings, **values, "seconds": round(time.perf_counter() - start, 2)}
            self.rows.append(row)
        if self.result is None:
            return {key: row[key] for key in row if key not in self.settings and key != "seconds"}
        return row[self.result]

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if len(args) > len(self.settings) or set(kwargs) - set(self.settings):
            raise TypeError(f"{self.name} takes {', '.join(self.settings)}; got {args} {kwargs}")
        settings = dict(zip(self.settings, args)) | kwargs
        missing = [name for name in self.settings if name not in settings]
        if missing:
            raise TypeError(f"{self.name}: give {', '.join(missing)}")
        return {name: settings[name] for name in self.settings}

    def _describe(self, settings: dict[str, Any]) -> str:
        return ", ".join(f"{name}={value!r}" for name, value in settings.items())

    def remeasure(self, row: dict[str, Any]) -> dict[str, Any]:
        """Measure ``row``'s settings again, outside the budget: what the check compares the table with."""
        with _quiet():
            return self.measure(**{name: row[name] for name in self.settings})

    def measured(self, **settings: Any) -> dict[str, Any] | None:
        """The row measured with these settings, or None."""
        for row in self.rows:
            if all(_same(row[name], value) for name, value in settings.items()):
                return row
        return None

    def values(self, key: str, **where: Any) -> list[Any]:
        """``key`` of every row (that matches ``where``), in the order measured."""
        return [row[key] for row in self.rows if all(_same(row[name], value) for name, value in where.items())]

    def table(self, sort_by: Sequence[str] | None = None) -> str:
        """The measurements as a markdown table (sorted by the settings unless told otherwise)."""
        keys = list(sort_by) if sort_by is not None else list(self.settings)
        rows = sorted(self.rows, key=lambda row: tuple(row[key] for key in keys))
        return records_table([{key: _shown(value) for key, value in row.items() if key != "seconds"} for row in rows])


def _shown(value: Any) -> Any:
    """Floats with four significant digits (a learning rate of 0.003 must not print as 0.00)."""
    return f"{value:.4g}" if isinstance(value, float) else value


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No progress bars from transformers or datasets while a probe measures (they would freeze in a notebook)."""
    from datasets.utils import logging as datasets_logging
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled(), datasets_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    datasets_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars[0]:
            hf_logging.enable_progress_bar()
        if bars[1]:
            datasets_logging.enable_progress_bar()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    return a == b


# ---------------------------------------------------------------------------------------------------------------
# Shared data: the embedded tiny models and stories, loaded once per process


@functools.cache
def _tiny_llama() -> tuple[Any, Any]:
    from course_utils.ground import sources

    model, tokenizer = sources.load_causal_lm(TINY_LLAMA, verbose=False)
    return model.eval(), tokenizer


@functools.cache
def _story_ids(tokenizer_name: str, split: str, stories: int) -> torch.Tensor:
    from course_utils.ground import sources
    from course_utils.training import text_data

    tokenizer = sources.load_tokenizer(tokenizer_name)
    texts = sources.load_text_dataset(STORIES, split, max_examples=stories)["text"]
    return torch.tensor(text_data.encode_documents(tokenizer, texts))


def _validation_loss(model: torch.nn.Module, sequences: torch.Tensor) -> float:
    """Mean next-token cross-entropy of ``model`` over ``sequences`` (batch, time)."""
    from course_utils.training.train import logits_of

    with torch.no_grad():
        logits = logits_of(model(sequences)).float()
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                             sequences[:, 1:].reshape(-1)).item()


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= float(value) <= high:
        raise BadSetting(f"{name} must be a number from {low:g} to {high:g}, got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------------------------------------------
# 00: the KV cache, measured


def kv_cache_probe(budget: int = 8) -> Probe:
    """``cache_bytes(context)``: the bytes of the KV cache the tiny Llama returns after ``context`` tokens (fp32)."""

    def measure(context: int) -> dict[str, Any]:
        from course_utils.models import kv_cache

        if isinstance(context, bool) or not isinstance(context, int) or not 1 <= context <= 1024:
            raise BadSetting(f"context must be a whole number of tokens from 1 to 1024, got {context!r}")
        model, _ = _tiny_llama()
        ids = torch.randint(3, model.config.vocab_size, (1, context), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            cache = model(ids, use_cache=True).past_key_values
        return {"bytes": kv_cache.cache_size(cache).allocated_bytes}

    return Probe("cache_bytes", ("context",), measure, "bytes", budget, "the tiny Llama, fp32, batch 1", real=True)


# ---------------------------------------------------------------------------------------------------------------
# 01: the dtype to save in


SAVE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SAVE_PROMPT = "Once upon a time, a little fox found a shiny stone near the river."


def save_dtype_probe(budget: int = 3) -> Probe:
    """``save_as(dtype)``: save the tiny Llama in ``dtype``, reload it, compare with fp32 on a prompt.

    Returns ``{"bytes": size of model.safetensors, "max_logit_error": largest |logit - fp32 logit|,
    "agreement": fraction of positions whose most likely next token is fp32's}``.
    """

    def measure(dtype: str) -> dict[str, Any]:
        from transformers import AutoModelForCausalLM

        if dtype not in SAVE_DTYPES:
            raise BadSetting(f"dtype must be one of {', '.join(SAVE_DTYPES)}, got {dtype!r}")
        model, tokenizer = _tiny_llama()
        ids = tokenizer(SAVE_PROMPT, return_tensors="pt").input_ids
        with torch.no_grad(), tempfile.TemporaryDirectory(prefix="save-dtype-") as folder:
            reference = model(ids).logits.float()
            copy.deepcopy(model).to(SAVE_DTYPES[dtype]).save_pretrained(folder)  # the shared model stays fp32
            size = (Path(folder) / "model.safetensors").stat().st_size
            reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=SAVE_DTYPES[dtype]).eval()
            logits = reloaded(ids).logits.float()
        same = (logits.argmax(-1) == reference.argmax(-1)).float().mean().item()
        return {"bytes": size, "max_logit_error": (logits - reference).abs().max().item(), "agreement": same}

    return Probe("save_as", ("dtype",), measure, None, budget, "the tiny Llama saved and reloaded", real=True)


# ---------------------------------------------------------------------------------------------------------------
# 02: the loss at each position, past the training window


POSITION_BUCKET = 32
POSITION_LENGTH = 512


@functools.cache
def _position_losses() -> torch.Tensor:
    """The tiny Llama's next-token loss at every position of 32 held-out sequences of 512 tokens, averaged."""
    model, _ = _tiny_llama()
    ids = _story_ids(TINY_LLAMA, "validation", 300)
    sequences = ids[: 32 * POSITION_LENGTH].view(32, POSITION_LENGTH)
    with torch.no_grad():
        logits = model(sequences).logits.float()
    losses = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                               sequences[:, 1:].reshape(-1), reduction="none")
    return losses.view(32, -1).mean(0)


def position_loss_probe(budget: int = 16) -> Probe:
    """``loss_at(position)``: the tiny Llama's mean loss over positions ``position .. position + 31`` (of 512)."""

    def measure(position: int) -> dict[str, Any]:
        last = POSITION_LENGTH - POSITION_BUCKET
        if isinstance(position, bool) or not isinstance(position, int) or position % POSITION_BUCKET or \
                not 0 <= position <= last:
            raise BadSetting(f"position must be a multiple of {POSITION_BUCKET} from 0 to {last}, got {position!r}")
        return {"loss": _position_losses()[position : position + POSITION_BUCKET].mean().item()}

    about = f"the tiny Llama, trained on windows of {TRAINING_WINDOW} tokens, on 32 held-out sequences of 512"
    return Probe("loss_at", ("position",), measure, "loss", budget, about, real=True)


# ---------------------------------------------------------------------------------------------------------------
# 03: the learning rate that trains fastest


@dataclass(frozen=True)
class SmallRun:
    """The fixed part of a probe's training runs: model size, data, steps (small enough for a CPU)."""

    steps: int = 30
    batch_size: int = 8
    context: int = 32
    width: int = 64
    layers: int = 2
    train_stories: int = 200
    eval_batches: int = 4


def learning_rate_probe(run: SmallRun = SmallRun(), budget: int = 8) -> Probe:
    """``loss_after(lr)``: train a fresh small GPT (seed 0) for ``run.steps`` steps, return its validation loss.

    The schedule is notebook 03's: a tenth of the steps of warm-up, then cosine decay to lr / 10.
    """

    def measure(lr: float) -> dict[str, Any]:
        from course_utils.ground import sources
        from course_utils.models import gpt
        from course_utils.training import text_data, train

        rate = _number(lr, "lr", 1e-6, 1.0)
        tokenizer = sources.load_tokenizer("tiny-gpt2")
        windows = text_data.SlidingWindowDataset(_story_ids("tiny-gpt2", "train", run.train_stories), run.context,
                                                 run.context)
        held_out = _story_ids("tiny-gpt2", "validation", 60)
        n = min(run.eval_batches * 16, len(held_out) // run.context)
        torch.manual_seed(0)
        model = gpt.GPT(gpt.GPTConfig(vocab_size=len(tokenizer), context_length=run.context, n_embd=run.width,
                                      n_layer=run.layers, n_head=2))
        cfg = train.TrainConfig(max_steps=run.steps, lr=rate, min_lr=rate / 10, warmup_steps=max(1, run.steps // 10),
                                eval_every=run.steps)
        train.train(model, train.make_train_loader(windows, run.batch_size, seed=0), None, cfg, progress=False)
        model.eval()
        loss = _validation_loss(model, held_out[: n * run.context].view(n, run.context))
        return {"validation loss": loss}

    about = f"{run.steps} steps of a {run.layers}-layer GPT {run.width} wide, batches of {run.batch_size} x {run.context}"
    return Probe("loss_after", ("lr",), measure, "validation loss", budget, about, real=True)


# ---------------------------------------------------------------------------------------------------------------
# 04: the distillation temperature, over seeds


def distillation_probe(steps: int = 10, alpha: float = 0.5, budget: int = 18) -> Probe:
    """``perplexity_after(temperature, seed)``: logit-distil a fresh two-layer student from the tiny Llama.

    ``steps`` steps of 4 windows of 32 tokens, ``alpha`` of the loss on the teacher's softened logits; the seed
    sets the student's initial weights and the order of the batches. Returns the held-out perplexity.
    """

    def measure(temperature: float, seed: int) -> dict[str, Any]:
        from course_utils.training import distill, distill_experiment, text_data, train

        heat = _number(temperature, "temperature", 0.05, 20.0)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1000:
            raise BadSetting(f"seed must be a whole number from 0 to 999, got {seed!r}")
        teacher, _ = _tiny_llama()
        windows = text_data.SlidingWindowDataset(_story_ids(TINY_LLAMA, "train", 200), 32, 32)
        held_out = _story_ids(TINY_LLAMA, "validation", 60)[: 32 * 32].view(32, 32)
        student = distill_experiment.fresh_student(distill_experiment.load_config("tiny-llama-student"), seed)
        cfg = train.TrainConfig(max_steps=steps, lr=3e-3, min_lr=3e-4, warmup_steps=2, eval_every=steps)
        train.train(student, train.make_train_loader(windows, 4, seed=seed), None, cfg, progress=False,
                    extras=train.TrainExtras(loss_fn=distill.kd_loss_fn(teacher, alpha=alpha, temperature=heat)))
        student.eval()
        return {"perplexity": math.exp(_validation_loss(student, held_out))}

    about = f"{steps} steps of logit distillation, alpha {alpha:g}, a 2-layer student of the tiny Llama"
    return Probe("perplexity_after", ("temperature", "seed"), measure, "perplexity", budget, about, real=True)


# ---------------------------------------------------------------------------------------------------------------
# 05: where LoRA stops improving


RANK_PROBE_SEEDS = (0, 1, 2)
RANK_PROBE_EARLY = 15  # the step at which the probe also reads the loss: how fast each rank starts


def lora_rank_probe(steps: int = 60, seeds: tuple[int, ...] = RANK_PROBE_SEEDS, budget: int = 7) -> Probe:
    """``loss_after(rank)``: LoRA (PEFT, every linear layer, alpha = 2 x rank) on the tiny Llama for ``steps`` steps
    of Zorbish translation, once per seed; returns the validation loss on the answer tokens, the mean over the seeds.

    Each row also keeps every seed's loss (``seed 0``, ...), their spread, and the mean loss after
    ``RANK_PROBE_EARLY`` steps of the same runs, so that the table shows how fast each rank starts beside where it
    is at the end. A seed sets the adapters' random start and the batches drawn.
    """

    def measure(rank: int) -> dict[str, Any]:
        from course_utils.reporting import repeats

        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= 128:
            raise BadSetting(f"rank must be a whole number from 1 to 128, got {rank!r}")
        runs = [_lora_run(rank, seed, steps) for seed in seeds]
        final = repeats.spread([run[steps] for run in runs]) if len(seeds) > 1 else None
        early = [run[RANK_PROBE_EARLY] for run in runs if RANK_PROBE_EARLY in run]
        row: dict[str, Any] = {"validation loss": final.mean if final else runs[0][steps]}
        if final:
            row["spread"] = final.std
            row |= {f"seed {seed}": run[steps] for seed, run in zip(seeds, runs)}
        if early:
            row[f"loss after {RANK_PROBE_EARLY} steps"] = sum(early) / len(early)
        shared, _ = _tiny_llama()
        row["trainable parameters"] = _lora_parameters(shared, rank)
        return row

    about = (f"{steps} steps of LoRA on every linear layer of the tiny Llama, Zorbish translation, "
             f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''} per rank")
    return Probe("loss_after", ("rank",), measure, "validation loss", budget, about, real=True)


def _lora_parameters(model: torch.nn.Module, rank: int) -> int:
    """LoRA's trainable parameters at ``rank`` on every linear layer of ``model``: r (d_in + d_out) each."""
    from course_utils.finetuning import lora

    return sum(rank * (d_out + d_in) for _, d_out, d_in in lora.linear_shapes(model, lora.LLAMA_TARGETS))


def _lora_run(rank: int, seed: int, steps: int) -> dict[int, float]:
    """One LoRA run of the rank probe: the validation loss after ``RANK_PROBE_EARLY`` steps and after ``steps``."""
    from peft import LoraConfig, get_peft_model
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from course_utils.finetuning import lora
    from course_utils.serving import export

    shared, tokenizer = _tiny_llama()
    torch.manual_seed(seed)
    base = copy.deepcopy(shared)
    with export.quiet_peft():
        model = get_peft_model(base, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                                                target_modules=list(lora.LLAMA_TARGETS)))
    rows = _zorbish()
    collate = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)
    validation = collate(rows["validation"])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    losses = {}
    for step in range(1, steps + 1):
        model.train()
        picked = torch.randint(len(rows["train"]), (8,), generator=generator).tolist()
        model(**collate([rows["train"][i] for i in picked])).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step in (RANK_PROBE_EARLY, steps):
            model.eval()
            with torch.no_grad():
                losses[step] = model(**validation).loss.item()
    return losses


@functools.cache
def _zorbish() -> dict[str, list[dict[str, list[int]]]]:
    """Tokenized Zorbish examples (512 for training, 64 held out), the prompt masked in the labels."""
    from course_utils.finetuning import sft_data
    from course_utils.ground import sources

    _, tokenizer = _tiny_llama()
    data = sources.load_text_dataset("zorbish")
    return {split: [sft_data.tokenize_example(tokenizer, row["prompt"], row["completion"])
                    for row in data[split].select(range(min(64 if split == "validation" else 512, len(data[split]))))]
            for split in ("train", "validation")}


# ---------------------------------------------------------------------------------------------------------------
# 06: the GGUF type to ship


@contextlib.contextmanager
def _no_gguf_bar() -> Iterator[None]:
    """transformers' GGUF reader draws its own tqdm bar, which the logging switch does not reach: turn it off."""
    from unittest import mock

    from tqdm.auto import tqdm
    from transformers import modeling_gguf_pytorch_utils as reader

    with mock.patch.object(reader, "tqdm", functools.partial(tqdm, disable=True)):
        yield


def gguf_type_probe(budget: int = 3) -> Probe:
    """``export_as(file_type)``: write the tiny Llama as a GGUF file (f32, f16 or q8_0), read it back, score it.

    Returns ``{"bytes": file size, "perplexity": held-out perplexity of the model read back from the file}``.
    """

    def measure(file_type: str) -> dict[str, Any]:
        from course_utils.storage import gguf_io

        if file_type not in gguf_io.FILE_TYPES:
            raise BadSetting(f"file_type must be one of {', '.join(gguf_io.FILE_TYPES)}, got {file_type!r}")
        model, tokenizer = _tiny_llama()
        held_out = _story_ids(TINY_LLAMA, "validation", 60)[: 16 * 64].view(16, 64)
        with tempfile.TemporaryDirectory(prefix="gguf-type-") as folder, _no_gguf_bar():
            path = Path(folder) / f"tiny-llama-{file_type}.gguf"
            gguf_io.write_gguf(model, tokenizer, path, file_type)
            reread, _ = gguf_io.load_with_transformers(path)
            return {"bytes": path.stat().st_size, "perplexity": math.exp(_validation_loss(reread, held_out))}

    about = "the tiny Llama written as GGUF and read back"
    return Probe("export_as", ("file_type",), measure, None, budget, about, real=True)


# ---------------------------------------------------------------------------------------------------------------
# 07: where the latency curve bends (the knee)


def latency_probe(requests: int = 16, max_batch: int = 2, budget: int = 8) -> Probe:
    """``p95_at(rate)``: the tiny Llama serves ``requests`` Poisson arrivals at ``rate`` per second with continuous
    batching (greedy, ``max_batch`` at a time, on the simulated clock); returns the p95 latency in seconds."""

    def measure(rate: float) -> dict[str, Any]:
        from course_utils.serving import batching, workload

        rate = _number(rate, "rate", 0.01, 100_000.0)
        model, _ = _tiny_llama()
        work = workload.poisson_workload(requests, rate, prompt_lengths=(4, 16), output_lengths=(4, 12),
                                         vocab=model.config.vocab_size, seed=0)
        timings, _ = batching.serve_continuous(work, batching.greedy_decoder(model), max_batch)
        summary = workload.summary(timings)
        return {"latency p95": summary["latency p95"], "tokens/s": summary["tokens/s"]}

    about = f"{requests} requests on the tiny Llama, continuous batching of up to {max_batch}, greedy"
    return Probe("p95_at", ("rate",), measure, "latency p95", budget, about, real=True)


# 08: DPO's beta


@functools.cache
def _zorbish_pairs(train: int = 32, held_out: int = 32) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Preference pairs (the right translation against a one-word mistranslation) for training and held out."""
    import json

    from course_utils.evaluation import preferences
    from course_utils.ground import paths, sources

    data = sources.load_text_dataset("zorbish")
    vocabulary = sorted(set(json.loads((paths.data_dir() / "datasets" / "zorbish" / "dictionary.json").read_text())
                            .values()))
    return (preferences.preference_pairs(list(data["train"].select(range(train))), vocabulary, seed=0),
            preferences.preference_pairs(list(data["test"].select(range(held_out))), vocabulary, seed=1))


def dpo_beta_probe(steps: int = 4, budget: int = 6) -> Probe:
    """``accuracy_after(beta)``: DPO (written out, AdamW at 1e-3, 8 pairs a step) on the tiny Llama for ``steps``
    steps against a frozen copy of itself; returns how often it then prefers the right translation of held-out
    pairs (``{"held-out accuracy", "margin", "distance"}`` in the table)."""

    def measure(beta: float) -> dict[str, Any]:
        from course_utils.evaluation import preferences

        beta = _number(beta, "beta", 1e-4, 100.0)
        reference, tokenizer = _tiny_llama()
        torch.manual_seed(0)
        policy = copy.deepcopy(reference)
        train, held_out = _zorbish_pairs()
        optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(0)
        policy.train()
        for _ in range(steps):
            picked = [train[i] for i in torch.randint(len(train), (8,), generator=generator).tolist()]
            batch = preferences.pair_batch(tokenizer, picked)
            chosen, rejected = preferences.sequence_logps(policy, **batch).chunk(2)
            with torch.no_grad():
                ref_chosen, ref_rejected = preferences.sequence_logps(reference, **batch).chunk(2)
            preferences.dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta)[0].backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        policy.eval()
        after = preferences.preference_metrics(policy, reference, tokenizer, held_out, beta)
        return {"held-out accuracy": sum(after["prefers chosen"]) / len(held_out),
                "margin": sum(after["margin"]) / len(held_out), "distance": after["distance"]}

    about = f"{steps} steps of DPO on the tiny Llama, Zorbish pairs"
    return Probe("accuracy_after", ("beta",), measure, "held-out accuracy", budget, about, real=True)
