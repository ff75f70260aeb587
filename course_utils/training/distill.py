"""Knowledge distillation: a small student learns from a larger teacher.

Four ways of learning from a teacher, each a few lines here:

* **response-based** (logit) distillation: :func:`distillation_loss`, and :func:`kd_loss_fn` to plug it into
  ``course_utils.training.train.train(..., extras=TrainExtras(loss_fn=...))``;
* **feature-based** distillation: a student-to-teacher layer map (:func:`teacher_layers_for_student`) and the
  hidden-state MSE of :class:`HiddenStateDistiller`, with a learned projection when the widths differ;
* **initialisation** from the teacher's own weights (the DistilBERT trick): :func:`init_student_from_teacher`;
* **black-box** (sequence-level) distillation: :func:`generate_completions` asks the teacher, and
  :func:`prompt_response_dataset` turns (prompt, teacher response) pairs into training batches.

And what we measure a student by: :func:`top1_agreement` with the teacher, :func:`heldout_metrics` (with the
teacher's answers from :func:`teacher_top1`), :func:`generation_speed` and :func:`count_parameters`.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from course_utils.reporting import timing
from course_utils.training.train import logits_of

LossFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------------------------------------- logit KD
def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None,
                      *, alpha: float = 0.5, temperature: float = 2.0) -> torch.Tensor:
    """``(1 - alpha) * CE(student, labels) + alpha * T^2 * KL(teacher_T || student_T)``, averaged over tokens.

    Both logit tensors are ``(..., vocab)``; labels equal to -100 are ignored by both terms. The ``T^2`` factor
    keeps the soft term's gradients on the same scale as the hard term's when ``T`` changes (Hinton et al., 2015).
    """
    if student_logits.shape[-1] != teacher_logits.shape[-1]:
        raise ValueError(
            f"Teacher and student must share one vocabulary: the teacher scores {teacher_logits.shape[-1]} tokens, "
            f"the student {student_logits.shape[-1]}. Use a student with the teacher's tokenizer (or map the "
            f"vocabularies first)."
        )
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"Logit shapes differ: student {tuple(student_logits.shape)}, "
                         f"teacher {tuple(teacher_logits.shape)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    vocab = student_logits.shape[-1]
    s = student_logits.reshape(-1, vocab).float()
    t = teacher_logits.reshape(-1, vocab).float()
    keep = torch.ones(s.shape[0], dtype=torch.bool, device=s.device)
    if labels is not None:
        keep = labels.reshape(-1) != -100
    log_p_student = F.log_softmax(s[keep] / temperature, dim=-1)
    log_p_teacher = F.log_softmax(t[keep] / temperature, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
    soft = temperature**2 * kl
    if alpha == 1.0:
        return soft
    if labels is None:
        raise ValueError("labels are needed for the hard-label term; pass them, or alpha=1.0 for soft targets only")
    hard = F.cross_entropy(s, labels.reshape(-1), ignore_index=-100)
    return (1.0 - alpha) * hard + alpha * soft


def kd_loss_fn(teacher: torch.nn.Module, *, alpha: float = 0.5, temperature: float = 2.0) -> LossFn:
    """A ``loss_fn`` for ``train()``: the teacher scores the same batch (no gradients), then :func:`distillation_loss`."""
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)

    def loss(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = logits_of(teacher(inputs))
        return distillation_loss(logits_of(model(inputs)), teacher_logits, targets, alpha=alpha,
                                 temperature=temperature)

    return loss


def kl_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """``KL(p || q)`` over the last dimension, one value per row; ``p`` and ``q`` are given as logits."""
    if p_logits.shape != q_logits.shape:
        raise ValueError(f"p and q need the same shape, got {tuple(p_logits.shape)} and {tuple(q_logits.shape)}")
    log_p = F.log_softmax(p_logits.float(), dim=-1)
    log_q = F.log_softmax(q_logits.float(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def softened(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The probabilities ``softmax(logits / T)``: flatter for ``T > 1``, the argmax unchanged."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return F.softmax(logits.float() / temperature, dim=-1)


# ------------------------------------------------------------------------------- layers: map and initialise
LAYER_RULES = ("last", "spread")


def teacher_layers_for_student(num_teacher_layers: int, num_student_layers: int, rule: str = "spread") -> list[int]:
    """Which teacher layer each student layer maps to (0-based), by one of two rules.

    * ``"last"``: split the teacher's layers into equal groups and keep the last of each:
      ``(4, 2) -> [1, 3]``, ``(12, 6) -> [1, 3, 5, 7, 9, 11]`` (one out of every two). The teacher's final layer is
      kept, its first is not: a poor start, since the layer that reads the embeddings is gone.
    * ``"spread"``: evenly spaced from the first layer to the last, rounded to the nearest:
      ``(4, 2) -> [0, 3]``, ``(12, 6) -> [0, 2, 4, 7, 9, 11]`` (the layers DistilBERT kept from BERT). The layer that
      reads the embeddings is kept too. A one-layer student keeps layer 0. The default, and how the data build
      made ``tiny-llama-student``.

    When the numbers do not divide, the gaps differ by at most one layer.
    """
    if not 1 <= num_student_layers <= num_teacher_layers:
        raise ValueError(f"num_layers must be between 1 and the teacher's {num_teacher_layers}, "
                         f"got {num_student_layers}")
    if rule == "last":
        return [((i + 1) * num_teacher_layers) // num_student_layers - 1 for i in range(num_student_layers)]
    if rule == "spread":
        if num_student_layers == 1:
            return [0]
        span = num_teacher_layers - 1
        # (2 * i * span + gaps) // (2 * gaps) is i * span / gaps rounded half up, in exact integer arithmetic
        gaps = num_student_layers - 1
        return [(2 * i * span + gaps) // (2 * gaps) for i in range(num_student_layers)]
    raise ValueError(f"Unknown rule {rule!r}: use one of {LAYER_RULES}")


def _decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers"):
        raise TypeError(f"{type(model).__name__} does not keep its decoder layers in model.model.layers "
                        "(Llama, Mistral, Qwen2, SmolLM2 ... do); this helper works for those.")
    return inner.layers


def init_student_from_teacher(teacher: torch.nn.Module, num_layers: int | None = None, *,
                              student_config: Any = None, layers: Sequence[int] | None = None) -> torch.nn.Module:
    """A student whose layers are copies of some of the teacher's layers; embeddings, final norm and head too.

    ``layers`` lists the teacher layer each student layer copies; by default
    ``teacher_layers_for_student(..., rule="spread")``: evenly spaced from the first layer to the last, which keeps
    the layer that reads the embeddings (DistilBERT's own choice). ``rule="last"`` (the last of each group) is a
    far worse start (notebook 04 measures both). Without ``student_config`` the student has the teacher's width.
    With a narrower ``student_config`` (e.g. SmolLM2-135M's for a SmolLM2-360M teacher) the student is built from
    it and every copied matrix keeps its leading rows and columns: the first heads, the first hidden and MLP
    dimensions ("weight selection", Xu et al., 2023). Works for transformers decoders that keep their layers in
    ``model.model.layers`` (Llama, Mistral, Qwen2, ...).
    """
    teacher_layers = _decoder_layers(teacher)
    if layers is not None:
        layers = [int(i) for i in layers]
        if num_layers is None and student_config is None:
            num_layers = len(layers)
        if not all(0 <= i < len(teacher_layers) for i in layers):
            raise ValueError(f"layers {layers} must be between 0 and {len(teacher_layers) - 1}")
    if student_config is None:
        if num_layers is None:
            raise ValueError("Give num_layers (same width as the teacher), layers, or a student_config")
        keep = layers if layers is not None else teacher_layers_for_student(len(teacher_layers), num_layers)
        if len(keep) != num_layers:
            raise ValueError(f"{len(keep)} layers listed for a {num_layers}-layer student")
        student = copy.deepcopy(teacher)
        student.model.layers = torch.nn.ModuleList(copy.deepcopy(teacher_layers[i]) for i in keep)
        for new_index, layer in enumerate(student.model.layers):
            if hasattr(layer, "self_attn") and hasattr(layer.self_attn, "layer_idx"):
                layer.self_attn.layer_idx = new_index  # the KV cache is indexed by layer
        student.config.num_hidden_layers = num_layers
        if getattr(student.config, "layer_types", None) is not None:
            student.config.layer_types = [student.config.layer_types[i] for i in keep]
        for parameter in student.parameters():
            parameter.requires_grad_(True)  # a teacher frozen for distillation must not give a frozen student
        return student
    from transformers import AutoModelForCausalLM

    if num_layers is not None and num_layers != student_config.num_hidden_layers:
        raise ValueError(f"num_layers={num_layers} disagrees with student_config.num_hidden_layers="
                         f"{student_config.num_hidden_layers}; pass one or the other")
    check_selectable(teacher.config, student_config)
    student = AutoModelForCausalLM.from_config(student_config, dtype=torch.float32)  # not the config's dtype (bf16 on the hub)
    keep = layers if layers is not None else teacher_layers_for_student(len(teacher_layers),
                                                                         student_config.num_hidden_layers)
    if len(keep) != student_config.num_hidden_layers:
        raise ValueError(f"{len(keep)} layers listed for a {student_config.num_hidden_layers}-layer student")
    copy_selected_weights(teacher, student, keep)
    return student


def _head_geometry(config: Any) -> tuple[int, int, int]:
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return heads, kv_heads, head_dim


def check_selectable(teacher_config: Any, student_config: Any) -> None:
    """Raise ValueError unless a student with ``student_config`` can be cut out of the teacher's weights."""
    problems = []
    if teacher_config.vocab_size != student_config.vocab_size:
        problems.append(f"vocabularies differ ({teacher_config.vocab_size} vs {student_config.vocab_size})")
    t_heads, t_kv, t_dim = _head_geometry(teacher_config)
    s_heads, s_kv, s_dim = _head_geometry(student_config)
    if t_dim != s_dim:
        problems.append(f"head dimensions differ ({t_dim} vs {s_dim})")
    if t_heads // t_kv != s_heads // s_kv:
        problems.append(f"query heads per key/value head differ ({t_heads // t_kv} vs {s_heads // s_kv})")
    for field in ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers"):
        t, s = getattr(teacher_config, field, None), getattr(student_config, field, None)
        if t is not None and s is not None and s > t:
            problems.append(f"the student's {field} ({s}) is larger than the teacher's ({t})")
    if problems:
        raise ValueError("Cannot initialise this student from the teacher's weights: " + "; ".join(problems) + ".")


_LAYER_INDEX = re.compile(r"(\.layers\.)(\d+)(\.)")


def copy_selected_weights(teacher: torch.nn.Module, student: torch.nn.Module, layer_map: Sequence[int]) -> None:
    """Copy into every student tensor the leading block of the teacher tensor it maps to (layer ``i`` from ``layer_map[i]``)."""
    teacher_state = teacher.state_dict()
    with torch.no_grad():
        for name, tensor in student.state_dict().items():
            source_name = _LAYER_INDEX.sub(lambda m: f"{m[1]}{layer_map[int(m[2])]}{m[3]}", name)
            if source_name not in teacher_state:
                raise KeyError(f"The teacher has no tensor {source_name!r} for the student's {name!r}")
            source = teacher_state[source_name]
            if source.dim() != tensor.dim() or any(s > t for s, t in zip(tensor.shape, source.shape)):
                raise ValueError(f"{name}: the student's shape {tuple(tensor.shape)} does not fit inside the "
                                 f"teacher's {tuple(source.shape)}")
            tensor.copy_(source[tuple(slice(0, n) for n in tensor.shape)])


# ----------------------------------------------------------------------------------------- feature-based KD
def layer_outputs(hidden_states: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Each decoder layer's output from a transformers ``hidden_states`` tuple (entry 0 is the embeddings).

    In transformers' Llama-style models the last entry has been through the final norm already.
    """
    return list(hidden_states[1:])


class HiddenStateDistiller(torch.nn.Module):
    """Feature distillation: mean squared error between each student layer's output and its teacher layer's.

    ``layer_map[i]`` is the teacher layer that student layer ``i`` imitates. When the widths differ, a learned
    linear projection (FitNets, Romero et al., 2015) lifts the student's hidden states to the teacher's width;
    train it with the student (put both in the optimizer).
    """

    def __init__(self, layer_map: Sequence[int], student_width: int, teacher_width: int):
        super().__init__()
        self.layer_map = list(layer_map)
        self.projections = torch.nn.ModuleList(
            torch.nn.Linear(student_width, teacher_width, bias=False) if student_width != teacher_width
            else torch.nn.Identity()
            for _ in self.layer_map
        )

    def per_layer(self, student_hidden: Sequence[torch.Tensor],
                  teacher_hidden: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """One MSE per mapped layer pair."""
        student_layers, teacher_layers = layer_outputs(student_hidden), layer_outputs(teacher_hidden)
        if len(student_layers) != len(self.layer_map):
            raise ValueError(f"The layer map has {len(self.layer_map)} entries but the student has "
                             f"{len(student_layers)} layers")
        if max(self.layer_map) >= len(teacher_layers):
            raise ValueError(f"The layer map points at teacher layer {max(self.layer_map)}, but the teacher has "
                             f"only {len(teacher_layers)} layers")
        return [F.mse_loss(projection(student_layers[i]).float(), teacher_layers[j].float())
                for i, (j, projection) in enumerate(zip(self.layer_map, self.projections))]

    def forward(self, student_hidden: Sequence[torch.Tensor], teacher_hidden: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack(self.per_layer(student_hidden, teacher_hidden)).mean()


def feature_kd_loss_fn(teacher: torch.nn.Module, distiller: HiddenStateDistiller, *, beta: float = 1.0,
                       alpha: float = 0.5, temperature: float = 1.0) -> LossFn:
    """A ``loss_fn`` for ``train()``: :func:`distillation_loss` plus ``beta`` times the hidden-state MSE."""
    teacher.eval()

    def loss(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_out = teacher(inputs, output_hidden_states=True)
        student_out = model(inputs, output_hidden_states=True)
        logit_term = distillation_loss(student_out.logits, teacher_out.logits, targets, alpha=alpha,
                                       temperature=temperature)
        return logit_term + beta * distiller(student_out.hidden_states, teacher_out.hidden_states)

    return loss


# ------------------------------------------------------------------------------- black-box / sequence-level
@torch.no_grad()
def generate_completions(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str], *,
                         max_new_tokens: int = 48, batch_size: int = 32, do_sample: bool = True,
                         temperature: float = 0.8, top_k: int | None = 40, seed: int = 0,
                         progress: bool = True) -> list[str]:
    """The model's continuation of each prompt (only the new text), generated in left-padded batches."""
    device = next(model.parameters()).device
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # a batch of prompts must end where generation starts
    torch.manual_seed(seed)
    batches = range(0, len(prompts), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="teacher answers", unit="batch")
    completions: list[str] = []
    try:
        for start in batches:
            batch = tokenizer(list(prompts[start:start + batch_size]), return_tensors="pt", padding=True).to(device)
            sampling = {"do_sample": True, "temperature": temperature, "top_k": top_k} if do_sample else {
                "do_sample": False}
            out = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                 **sampling)
            new_tokens = out[:, batch["input_ids"].shape[1]:]
            completions += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return completions


def prompt_response_dataset(tokenizer: Any, prompts: Sequence[str], responses: Sequence[str],
                            max_length: int) -> TensorDataset:
    """(inputs, targets) pairs for supervised fine-tuning on responses: prompt and padding targets are -100.

    Each example is prompt + response + end-of-text, cut or right-padded to ``max_length + 1`` tokens; the loss
    is then computed only on the response (and its end), which is what the student should learn to produce.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    inputs, targets = [], []
    for prompt, response in zip(prompts, responses):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = (prompt_ids + response_ids)[: max_length + 1]
        labels = ([-100] * len(prompt_ids) + response_ids)[: max_length + 1]
        ids += [pad] * (max_length + 1 - len(ids))
        labels += [-100] * (max_length + 1 - len(labels))
        inputs.append(ids[:-1])
        targets.append(labels[1:])
    return TensorDataset(torch.tensor(inputs), torch.tensor(targets))


# ------------------------------------------------------------------------------------------------- measuring
def top1_agreement(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                   mask: torch.Tensor | None = None) -> float:
    """Fraction of positions where student and teacher rank the same next token first (``mask``: positions to count)."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"Logit shapes differ: student {tuple(student_logits.shape)}, "
                         f"teacher {tuple(teacher_logits.shape)}")
    same = student_logits.argmax(-1) == teacher_logits.argmax(-1)
    if mask is not None:
        same = same[mask.bool()]
    if same.numel() == 0:
        raise ValueError("No positions to compare (the mask selects none)")
    return same.float().mean().item()


@torch.no_grad()
def teacher_top1(teacher: torch.nn.Module, loader: DataLoader, device: torch.device | str = "cpu",
                 max_batches: int | None = None) -> list[torch.Tensor]:
    """The teacher's most likely next token at every position of every batch (computed once, reused per student)."""
    teacher.eval()
    return [logits_of(teacher(inputs.to(device))).argmax(-1).cpu()
            for _, (inputs, _) in zip(range(max_batches or len(loader)), loader)]


@torch.no_grad()
def heldout_metrics(model: torch.nn.Module, loader: DataLoader, device: torch.device | str = "cpu", *,
                    teacher_tokens: Sequence[torch.Tensor] | None = None,
                    max_batches: int | None = None) -> dict[str, float]:
    """Held-out next-token ``loss``, ``perplexity`` (exp of the loss), mean ``entropy`` of the predictions (nats) and,
    given ``teacher_tokens`` from :func:`teacher_top1`, top-1 ``agreement`` with the teacher."""
    was_training = model.training
    model.eval()
    loss_sum, entropy_sum, agree, tokens = 0.0, 0.0, 0, 0
    for index, (inputs, targets) in zip(range(max_batches or len(loader)), loader):
        inputs, targets = inputs.to(device), targets.to(device)
        logits = logits_of(model(inputs)).float()
        keep = targets != -100
        log_probs = F.log_softmax(logits[keep], dim=-1)
        loss_sum += F.nll_loss(log_probs, targets[keep], reduction="sum").item()
        entropy_sum += -(log_probs.exp() * log_probs).sum().item()
        if teacher_tokens is not None:
            agree += (logits.argmax(-1).cpu() == teacher_tokens[index])[keep.cpu()].sum().item()
        tokens += keep.sum().item()
    model.train(was_training)
    if tokens == 0:
        raise ValueError("The loader produced no tokens to score")
    loss = loss_sum / tokens
    return {"loss": loss, "perplexity": math.exp(loss), "entropy": entropy_sum / tokens,
            "agreement": agree / tokens if teacher_tokens is not None else float("nan")}


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters (a tied embedding and LM head count once)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def generation_speed(model: torch.nn.Module, prompt_ids: torch.Tensor, new_tokens: int = 64,
                     repeats: int = 3) -> float:
    """Tokens generated per second (greedy, KV cache, exactly ``new_tokens`` per sequence), over ``repeats`` runs.

    :func:`course_utils.reporting.timing.seconds_per_call` warms up first, so one-off costs (memory allocation,
    kernel selection) are not counted.
    """
    device = next(model.parameters()).device
    model.eval()
    prompt_ids = prompt_ids.to(device)
    kwargs = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False,
              "attention_mask": torch.ones_like(prompt_ids)}
    pad = getattr(model.generation_config, "pad_token_id", None)
    if pad is None:
        kwargs["pad_token_id"] = getattr(model.generation_config, "eos_token_id", 0)
    seconds = timing.seconds_per_call(lambda: model.generate(prompt_ids, **kwargs), repeats)
    return prompt_ids.shape[0] * new_tokens / seconds
