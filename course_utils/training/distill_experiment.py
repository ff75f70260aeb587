"""The distillation experiment of notebook 04: one student architecture trained several ways, then compared.

Every arm starts from the same seed, sees the same batches in the same order for the same number of steps, and is
scored on the same held-out stories: only the loss (labels, or labels plus the teacher's soft targets) and the
starting weights (random, or copied from the teacher) change. Also the small data helpers the notebook needs:
story loaders and prompts made of each story's first sentence.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from transformers import set_seed

from course_utils.ground import machine
from course_utils.ground.sources import load_text_dataset, resolve_model
from course_utils.reporting import repeats
from course_utils.reporting.plots import new_figure
from course_utils.reporting.tables import Table, markdown_table
from course_utils.training import distill
from course_utils.training.text_data import SlidingWindowDataset, encode_documents, make_loader
from course_utils.training.train import History, TrainConfig, TrainExtras, logits_of, make_train_loader, train


# --------------------------------------------------------------------------------------------------- data
def story_texts(dataset: str, split: str, max_docs: int) -> list[str]:
    """The ``text`` field of the first ``max_docs`` stories of a split."""
    return list(load_text_dataset(dataset, split, max_examples=max_docs)["text"])


def story_loaders(tokenizer: Any, train_texts: Sequence[str], val_texts: Sequence[str], *, context: int,
                  batch_size: int, seed: int = 0) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
    """A seeded training loader (same order for every arm) and a fixed validation loader of ``context``-token windows."""
    train_set = SlidingWindowDataset(encode_documents(tokenizer, train_texts), context)
    val_set = SlidingWindowDataset(encode_documents(tokenizer, val_texts), context)
    return (make_train_loader(train_set, batch_size, seed=seed),
            make_loader(val_set, batch_size, shuffle=False, drop_last=False))


def first_sentence(text: str) -> str:
    """A story's opening sentence (up to and including the first full stop), used as a prompt."""
    end = text.find(".")
    return text if end < 0 else text[: end + 1]


def load_config(name: str) -> Any:
    """The ``config.json`` of a model by name (embedded, local or hub): only the shape, no weights."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(resolve_model(name).location)


def fresh_student(config: Any, seed: int) -> torch.nn.Module:
    """A randomly initialised fp32 model of the given config; the same ``seed`` gives the same weights.

    fp32 whatever the config says: transformers 5 builds in the config's ``dtype``, which is bfloat16 for hub
    checkpoints such as SmolLM2, and trained weights stay in fp32 (autocast does the 16-bit math).
    """
    from transformers import AutoModelForCausalLM

    set_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def config_parameters(config: Any) -> int:
    """Parameters of a model with this config, counted on the meta device (no memory, no download)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return distill.count_parameters(AutoModelForCausalLM.from_config(config))


def shape_table(configs: dict[str, Any]) -> str:
    """Layers, widths, heads, vocabulary and parameters of each named config, as a markdown table."""
    rows = []
    for name, c in configs.items():
        heads = c.num_attention_heads
        rows.append([name, c.num_hidden_layers, c.hidden_size, c.intermediate_size, heads,
                     getattr(c, "num_key_value_heads", None) or heads, c.vocab_size, f"{config_parameters(c):,}"])
    return markdown_table(["model", "layers", "hidden", "MLP", "heads", "kv heads", "vocab", "parameters"], rows)


def narrower_config(config: Any) -> Any:
    """A copy of a Llama-style config with half the key/value heads (at least one) and the width to match.

    The head size and the number of query heads per key/value head stay the same, so the narrower model can be
    cut out of the wider one's weights (:func:`course_utils.training.distill.init_student_from_teacher`).
    """
    narrow = copy.deepcopy(config)
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    narrow.num_key_value_heads = max(1, kv // 2)
    narrow.num_attention_heads = narrow.num_key_value_heads * (heads // kv)
    narrow.hidden_size = narrow.num_attention_heads * head_dim
    narrow.head_dim = head_dim
    narrow.intermediate_size = config.intermediate_size * narrow.hidden_size // config.hidden_size
    return narrow


# ------------------------------------------------------------------------------------------------ the arms
@dataclass(frozen=True)
class Arm:
    """One way of training the student."""

    name: str
    init: Literal["random", "teacher"] = "random"
    alpha: float = 0.0  # weight of the teacher's soft targets; 0 trains on the labels only
    temperature: float = 1.0
    layer_rule: str = "spread"  # which teacher layers a student started from the teacher copies

    @property
    def loss(self) -> str:
        return "labels only" if self.alpha == 0 else f"KD alpha={self.alpha:g}, T={self.temperature:g}"


def standard_arms(alpha: float, temperature: float, *, control: bool = True) -> list[Arm]:
    """The experiment's arms: labels only, logit KD, KD from the teacher's layers (and labels from them, a control)."""
    arms = [Arm("labels only", "random", 0.0, temperature), Arm("logit KD", "random", alpha, temperature),
            Arm("KD + layer init", "teacher", alpha, temperature)]
    if control:
        arms.append(Arm("labels + layer init", "teacher", 0.0, temperature))
    return arms


@dataclass
class ArmResult:
    """What one arm produced and how it scores on held-out text."""

    arm: Arm
    parameters: int
    steps: int
    metrics: dict[str, float]
    history: History
    wall_seconds: float
    cpu_seconds: float
    model: torch.nn.Module = field(repr=False)
    seed: int = 0  # the student's initial weights (random arms) and the training order came from it


def copied_student(teacher: torch.nn.Module, student_config: Any, layers: Sequence[int]) -> torch.nn.Module:
    """A trainable fp32 student of ``student_config`` whose layer ``i`` is a copy of teacher layer ``layers[i]``.

    Same width: the layers are copied whole. Narrower: the leading block of every matrix is kept.
    """
    same_width = student_config.hidden_size == teacher.config.hidden_size and (
        getattr(student_config, "intermediate_size", None) == getattr(teacher.config, "intermediate_size", None))
    if same_width:
        student = distill.init_student_from_teacher(teacher, layers=layers)
    else:
        student = distill.init_student_from_teacher(teacher, student_config=student_config, layers=layers)
    return student.float()  # trained weights stay in fp32, whatever the teacher was loaded in


def make_student(arm: Arm, teacher: torch.nn.Module, student_config: Any, seed: int) -> torch.nn.Module:
    """The arm's starting student: random weights from ``seed``, or copies of teacher layers (``arm.layer_rule``)."""
    if arm.init == "random":
        return fresh_student(student_config, seed)
    set_seed(seed)
    layers = distill.teacher_layers_for_student(teacher.config.num_hidden_layers, student_config.num_hidden_layers,
                                                arm.layer_rule)
    return copied_student(teacher, student_config, layers)


def layer_choice_rows(teacher: torch.nn.Module, student_config: Any, val_loader, teacher_tokens, *,
                      device: torch.device | str = "cpu", max_choices: int = 10) -> list[dict[str, Any]]:
    """Held-out perplexity and agreement of untrained students copied from different sets of teacher layers.

    Every choice when there are at most ``max_choices`` (a 2-layer student of a 4-layer teacher has 6), else the
    two rules of :func:`course_utils.training.distill.teacher_layers_for_student`. One dict per choice: ``layers``,
    ``rule`` (the rule that picks it, or ""), ``perplexity``, ``agreement``.
    """
    import itertools

    n_teacher, n_student = teacher.config.num_hidden_layers, student_config.num_hidden_layers
    rules = {tuple(distill.teacher_layers_for_student(n_teacher, n_student, r)): r for r in distill.LAYER_RULES}
    if math.comb(n_teacher, n_student) <= max_choices:
        choices = list(itertools.combinations(range(n_teacher), n_student))
    else:
        choices = list(rules)
    rows = []
    for layers in choices:
        student = copied_student(teacher, student_config, layers).to(device)
        m = distill.heldout_metrics(student, val_loader, device, teacher_tokens=teacher_tokens)
        rows.append({"layers": tuple(layers), "rule": rules.get(tuple(layers), ""), "perplexity": m["perplexity"],
                     "agreement": m["agreement"]})
    return rows


def layer_choice_table(rows: Sequence[dict[str, Any]]) -> Table:
    """The rows of :func:`layer_choice_rows` as a markdown table."""
    return markdown_table(["teacher layers copied", "rule", "held-out perplexity (untrained)", "top-1 agreement"],
                          [[str(list(r["layers"])), r["rule"], f"{r['perplexity']:,.2f}",
                            f"{100 * r['agreement']:.1f}%"] for r in rows])


def layer_choice_figures(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """What the prose reads from the layer-choice table: the best and worst copy that keeps layer 0, the best
    without it, and where the rule "spread" ranks among the copies that keep layer 0 (1 = lowest perplexity)."""
    kept = sorted(r["perplexity"] for r in rows if 0 in r["layers"])
    dropped = [r["perplexity"] for r in rows if 0 not in r["layers"]]
    spread = next(r["perplexity"] for r in rows if r["rule"] == "spread")
    figures = {"layer0_copies_best_perplexity": kept[0], "layer0_copies_worst_perplexity": kept[-1],
               "spread_rule_rank_among_layer0_copies": float(kept.index(spread) + 1),
               "layer0_copies": float(len(kept))}
    if dropped:
        figures["copies_without_layer0_best_perplexity"] = min(dropped)
    return figures


def run_arm(arm: Arm, teacher: torch.nn.Module, student_config: Any, train_loader, val_loader, cfg: TrainConfig, *,
            seed: int = 0, device: torch.device | str = "cpu", precision: machine.Precision | None = None,
            teacher_tokens: Sequence[torch.Tensor] | None = None, progress: bool = True) -> ArmResult:
    """Build the arm's student, train it for ``cfg.max_steps`` steps and score it on ``val_loader``."""
    device = torch.device(device)
    student = make_student(arm, teacher, student_config, seed).to(device)
    extras = TrainExtras() if arm.alpha == 0 else TrainExtras(
        loss_fn=distill.kd_loss_fn(teacher, alpha=arm.alpha, temperature=arm.temperature))
    set_seed(seed)
    wall, cpu = time.perf_counter(), time.process_time()
    state, _ = train(student, train_loader, val_loader, cfg, device=device, precision=precision, progress=progress,
                     extras=extras)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    metrics = distill.heldout_metrics(student, val_loader, device, teacher_tokens=teacher_tokens)
    return ArmResult(arm, distill.count_parameters(student), state.step, metrics, state.history, wall, cpu,
                     student.eval(), seed)


def run_arms(arms: Sequence[Arm], teacher: torch.nn.Module, student_config: Any, train_loader, val_loader,
             cfg: TrainConfig, **kwargs: Any) -> list[ArmResult]:
    """:func:`run_arm` for each arm, one after the other, printing a line as each finishes."""
    results = []
    for arm in arms:
        result = run_arm(arm, teacher, student_config, train_loader, val_loader, cfg, **kwargs)
        print(f"{arm.name:>18}: held-out perplexity {result.metrics['perplexity']:.3f} "
              f"({result.wall_seconds:.1f} s)")
        results.append(result)
    return results


def loader_seed(train_loader) -> int | None:
    """The seed that orders a loader made by ``make_train_loader`` (None for any other loader)."""
    return getattr(getattr(train_loader, "sampler", None), "seed", None)


def run_seeds(arms: Sequence[Arm], seeds: Sequence[int], teacher: torch.nn.Module, student_config: Any, train_loader,
              val_loader, cfg: TrainConfig, *, done: Sequence[ArmResult] = (), progress: bool = True,
              **kwargs: Any) -> dict[str, list[dict]]:
    """Held-out metrics of every arm trained from every seed: ``{arm name: [metrics of each seed]}``.

    A seed sets the student's initial weights and the order of the training windows (the same windows, reshuffled).
    Runs in ``done`` (same config and loader) whose arm and seed are asked for are reused instead of trained again.
    Only the metrics are kept: the trained students are freed as each run ends. With ``progress``, one bar counts
    the runs to train (each run's own bar would be a dozen bars).
    """
    from tqdm.auto import tqdm

    reused = {(r.arm.name, r.seed): r.metrics for r in done
              if r.steps == cfg.max_steps and loader_seed(train_loader) == r.seed}
    runs: dict[str, list[dict]] = {arm.name: [] for arm in arms}
    to_train = sum((arm.name, seed) not in reused for seed in seeds for arm in arms)
    with tqdm(total=to_train, desc="seed repeats", unit="run", disable=not progress) as bar:
        for seed in seeds:
            loader = train_loader if loader_seed(train_loader) == seed else make_train_loader(
                train_loader.dataset, train_loader.batch_size, seed=seed)
            for arm in arms:
                if (arm.name, seed) in reused:
                    runs[arm.name].append(reused[(arm.name, seed)])
                    continue
                result = run_arm(arm, teacher, student_config, loader, val_loader, cfg, seed=seed, progress=False,
                                 **kwargs)
                bar.write(f"{arm.name:>18}, seed {seed}: held-out perplexity {result.metrics['perplexity']:.3f} "
                          f"({result.wall_seconds:.1f} s)")
                bar.update()
                runs[arm.name].append(result.metrics)
                del result
    return runs


def seeds_table(runs: dict[str, list[dict]]) -> Table:
    """Mean ± spread over seeds of each arm's held-out perplexity and top-1 agreement, as a markdown table."""
    rows = []
    for name, metrics in runs.items():
        ppl = repeats.spread([m["perplexity"] for m in metrics])
        agree = repeats.spread([m["agreement"] for m in metrics])
        rows.append([name, len(metrics), ppl.format(3), f"{min(ppl.values):.3f} - {max(ppl.values):.3f}",
                     agree.format(1, 100, "%")])
    return markdown_table(["arm", "seeds", "held-out ppl (mean ± spread)", "ppl range", "top-1 agreement"], rows)


def seeds_verdict(runs: dict[str, list[dict]], baseline: str, challenger: str) -> str:
    """Does ``challenger`` reach a lower held-out perplexity than ``baseline``, by more than the spread over seeds?"""
    return repeats.verdict(baseline, [m["perplexity"] for m in runs[baseline]], challenger,
                           [m["perplexity"] for m in runs[challenger]]).sentence()


def one_run_summary(results: Sequence[ArmResult]) -> str:
    """Each arm's held-out perplexity from a single run, lowest first: a description, not a verdict."""
    ranked = sorted(results, key=lambda r: r.metrics["perplexity"])
    order = ", ".join(f"{r.arm.name} {r.metrics['perplexity']:.3f}" for r in ranked)
    return f"One run each (seed {ranked[0].seed}), held-out perplexity from lowest: {order}."


# --------------------------------------------------------------------------------------------- reporting
def results_table(results: Sequence[ArmResult], teacher_metrics: dict[str, float] | None = None,
                  teacher_parameters: int | None = None) -> str:
    """A markdown table: one row per arm (and the teacher), perplexity, agreement, entropy, parameters, time."""
    headers = ["model", "start", "loss", "steps", "parameters", "held-out ppl", "top-1 agreement",
               "entropy (nats)", "train s"]
    rows = []
    if teacher_metrics is not None:
        rows.append(["teacher", "pretrained", "-", "-", f"{teacher_parameters:,}" if teacher_parameters else "-",
                     f"{teacher_metrics['perplexity']:.3f}", "100.0%", f"{teacher_metrics['entropy']:.3f}", "-"])
    for r in results:
        rows.append([r.arm.name, "teacher's layers" if r.arm.init == "teacher" else "random", r.arm.loss, r.steps,
                     f"{r.parameters:,}", f"{r.metrics['perplexity']:.3f}", f"{100 * r.metrics['agreement']:.1f}%",
                     f"{r.metrics['entropy']:.3f}", f"{r.wall_seconds:.1f}"])
    return markdown_table(headers, rows)


def plot_results(results: Sequence[ArmResult], teacher_metrics: dict[str, float] | None = None):
    """Validation loss against steps for every arm, and the final perplexity and agreement as bars; a Figure."""
    fig = new_figure(figsize=(11, 3.6), layout="constrained")
    curves, ppl, agree = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.6, 1, 1]})
    colors = ["#8c8c8c", "#4c72b0", "#55a868", "#c44e52", "#8172b3", "#dd8452"]
    names = [r.arm.name for r in results]
    for r, color in zip(results, colors):
        curves.plot(r.history.step, r.history.val_loss, marker=".", color=color, label=r.arm.name)
    if teacher_metrics is not None:
        curves.axhline(teacher_metrics["loss"], ls="--", color="black", lw=1, label="teacher")
        ppl.axhline(teacher_metrics["perplexity"], ls="--", color="black", lw=1, label="teacher")
    curves.set(xlabel="optimizer step", ylabel="validation loss (nats)", title="learning curves")
    curves.legend(fontsize=8)
    curves.grid(alpha=0.3)
    for ax, values, title, fmt in ((ppl, [r.metrics["perplexity"] for r in results], "held-out perplexity", "{:.2f}"),
                                   (agree, [100 * r.metrics["agreement"] for r in results],
                                    "top-1 agreement with teacher (%)", "{:.1f}")):
        bars = ax.bar(range(len(values)), values, color=colors[: len(values)])
        ax.bar_label(bars, [fmt.format(v) for v in values], fontsize=8)
        ax.set_xticks(range(len(values)), names, rotation=20, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    for ax in (ppl, agree):  # bars start at zero, so that their heights compare as the values do
        ax.set_ylim(bottom=0)
    return fig


def speed_table(models: dict[str, torch.nn.Module], prompt_ids: torch.Tensor, new_tokens: int,
                repeats: int = 3) -> tuple[str, dict[str, float]]:
    """Generation tokens/s of each model on the same prompts, as a markdown table and a dict."""
    speeds = {name: distill.generation_speed(model, prompt_ids, new_tokens, repeats)
              for name, model in models.items()}
    reference = next(iter(speeds.values()))
    rows = [[name, f"{distill.count_parameters(model):,}", model.config.num_hidden_layers, f"{speeds[name]:,.0f}",
             f"{speeds[name] / reference:.2f}x"] for name, model in models.items()]
    table = markdown_table(["model", "parameters", "layers", "tokens/s", "speed vs first"], rows)
    return table, speeds


# ------------------------------------------------------------------------------------------- section helpers
def fine_tune_on_pairs(student_config: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str],
                       cfg: TrainConfig, *, batch_size: int, max_length: int, seed: int = 0,
                       device: torch.device | str = "cpu", precision: machine.Precision | None = None,
                       progress: bool = True) -> torch.nn.Module:
    """A fresh student (from ``seed``) fine-tuned on (prompt, response) pairs, the loss on the responses only."""
    data = distill.prompt_response_dataset(tokenizer, prompts, responses, max_length)
    student = fresh_student(student_config, seed).to(device)
    set_seed(seed)
    train(student, make_train_loader(data, batch_size, seed=seed), None, cfg, device=device, precision=precision,
          progress=progress)
    return student.eval()


@torch.no_grad()
def _next_token_logits(model: torch.nn.Module, tokenizer: Any, prompt: str, top: int) -> tuple[torch.Tensor, Any]:
    """The model's next-token logits after ``prompt`` (on the CPU) and the ids of its ``top`` most likely tokens."""
    device = next(model.parameters()).device
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)
    logits = logits_of(model(ids))[0, -1].float().cpu()
    return logits, logits.argsort(descending=True)[:top]


def tail_mass(model: torch.nn.Module, tokenizer: Any, prompt: str, temperatures: Sequence[float],
              top: int = 6) -> dict[float, float]:
    """``{T: probability left outside the top tokens}``: the "all others" column of :func:`softening_table`."""
    logits, order = _next_token_logits(model, tokenizer, prompt, top)
    return {t: 1.0 - distill.softened(logits, t)[order].sum().item() for t in temperatures}


@torch.no_grad()
def softening_table(model: torch.nn.Module, tokenizer: Any, prompt: str, temperatures: Sequence[float],
                    top: int = 6) -> str:
    """The model's most likely next tokens after ``prompt`` and their probabilities at each temperature."""
    logits, order = _next_token_logits(model, tokenizer, prompt, top)
    rows = []
    for temperature in temperatures:
        probs = distill.softened(logits, temperature)
        rest = 1.0 - probs[order].sum().item()
        entropy = -(probs * probs.clamp_min(1e-30).log()).sum().item()
        rows.append([f"T = {temperature:g}", *(f"{probs[i].item():.3f}" for i in order), f"{rest:.3f}",
                     f"{entropy:.2f}"])
    headers = ["", *(repr(tokenizer.decode([int(i)])) for i in order), "all others", "entropy (nats)"]
    return markdown_table(headers, rows)


def temperature_gradient_norms(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                               temperatures: Sequence[float]) -> dict[float, tuple[float, float]]:
    """Size of the soft term's gradient on the student's logits at each T: ``{T: (without T**2, with T**2)}``."""
    norms = {}
    for temperature in temperatures:
        pair = []
        for scale in (1.0, temperature**2):
            logits = student_logits.detach().clone().float().requires_grad_()
            with torch.enable_grad():
                soft = distill.distillation_loss(logits, teacher_logits.detach(), None, alpha=1.0,
                                                 temperature=temperature)
                (soft / temperature**2 * scale).backward()
            pair.append(logits.grad.norm().item())
        norms[temperature] = (pair[0], pair[1])
    return norms


def temperature_gradient_table(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                               temperatures: Sequence[float]) -> Table:
    """The norms of :func:`temperature_gradient_norms` as a markdown table."""
    norms = temperature_gradient_norms(student_logits, teacher_logits, temperatures)
    return markdown_table(["T", "gradient norm of KL_T", "gradient norm of T^2 KL_T"],
                          [[f"{t:g}", f"{plain:.4f}", f"{scaled:.4f}"] for t, (plain, scaled) in norms.items()])


@torch.no_grad()
def hidden_state_mse_columns(students: dict[str, torch.nn.Module], teacher: torch.nn.Module, inputs: torch.Tensor,
                             layer_map: Sequence[int]) -> dict[str, list[float]]:
    """``{student name: [MSE to its teacher layer, per student layer]}``: the numbers of :func:`hidden_state_mse`."""
    distiller = distill.HiddenStateDistiller(layer_map, teacher.config.hidden_size, teacher.config.hidden_size)
    teacher_hidden = teacher(inputs, output_hidden_states=True).hidden_states
    return {name: [v.item() for v in distiller.per_layer(model(inputs, output_hidden_states=True).hidden_states,
                                                         teacher_hidden)]
            for name, model in students.items()}


@torch.no_grad()
def hidden_state_mse(students: dict[str, torch.nn.Module], teacher: torch.nn.Module, inputs: torch.Tensor,
                     layer_map: Sequence[int]) -> str:
    """Per mapped layer, the hidden-state MSE between each student and the teacher, as a markdown table."""
    columns = hidden_state_mse_columns(students, teacher, inputs, layer_map)
    rows = [[f"student {i} -> teacher {j}", *(f"{columns[name][i]:.4f}" for name in students)]
            for i, j in enumerate(layer_map)]
    return markdown_table(["layer pair", *students], rows)
