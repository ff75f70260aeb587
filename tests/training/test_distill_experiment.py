"""The notebook-04 experiment helpers, on a tiny random teacher (fast) and on the shipped tiny models."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from course_utils.training import distill
from course_utils.training import distill_experiment as dx
from course_utils.training.train import TrainConfig, make_train_loader


def _config(layers=4, hidden=32, heads=4, kv_heads=2, intermediate=64):
    return LlamaConfig(vocab_size=40, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=hidden // heads,
                       max_position_embeddings=64)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    teacher = LlamaForCausalLM(_config()).eval()
    tokens = torch.randint(0, 40, (2000,))
    train_set = torch.utils.data.TensorDataset(tokens[:1600].view(-1, 16)[:, :-1], tokens[:1600].view(-1, 16)[:, 1:])
    val_set = torch.utils.data.TensorDataset(tokens[1600:].view(-1, 16)[:, :-1], tokens[1600:].view(-1, 16)[:, 1:])
    train_loader = make_train_loader(train_set, 8, seed=0)
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=8)
    return teacher, _config(layers=2), train_loader, val_loader, distill.teacher_top1(teacher, val_loader)


def test_arms_reproduce_and_differ_only_where_they_should(setup):
    teacher, student_config, train_loader, val_loader, tokens = setup
    cfg = TrainConfig(max_steps=3, warmup_steps=1, eval_every=3, eval_batches=2)
    arms = dx.standard_arms(0.9, 1.0)
    assert [a.name for a in arms] == ["labels only", "logit KD", "KD + layer init", "labels + layer init"]
    first = dx.run_arms(arms[:3], teacher, student_config, train_loader, val_loader, cfg, teacher_tokens=tokens,
                        progress=False)
    again = dx.run_arm(arms[1], teacher, student_config, train_loader, val_loader, cfg, teacher_tokens=tokens,
                       progress=False)
    assert again.metrics == first[1].metrics  # same seed, same batches: the same numbers
    assert first[0].metrics != first[1].metrics
    assert all(r.steps == 3 and r.parameters == first[0].parameters for r in first)
    table = dx.results_table(first, first[0].metrics, distill.count_parameters(teacher))
    assert table.count("\n") == 5 and "teacher's layers" in table and "KD alpha=0.9, T=1" in table
    figure = dx.plot_results(first, first[0].metrics)
    assert len(figure.axes) == 3 and all(ax.get_ylim()[0] == 0 for ax in figure.axes[1:])  # bars from zero
    assert dx.one_run_summary(first).startswith("One run each (seed 0), held-out perplexity from lowest: ")


def test_run_seeds_reuses_finished_runs_and_reshuffles_the_data_for_other_seeds(setup, capsys):
    teacher, student_config, train_loader, val_loader, tokens = setup
    cfg = TrainConfig(max_steps=3, warmup_steps=1, eval_every=3, eval_batches=2)
    labels, kd = dx.standard_arms(0.9, 1.0)[:2]
    done = dx.run_arms([labels], teacher, student_config, train_loader, val_loader, cfg, teacher_tokens=tokens,
                       progress=False)
    capsys.readouterr()
    runs = dx.run_seeds([labels, kd], [0, 1, 2], teacher, student_config, train_loader, val_loader, cfg, done=done,
                        teacher_tokens=tokens, progress=False)
    trained = capsys.readouterr().out
    assert runs["labels only"][0] == done[0].metrics and "labels only, seed 0" not in trained  # reused, not rerun
    assert trained.count("seed") == 5 and "logit KD, seed 0" in trained
    assert len({m["perplexity"] for m in runs["labels only"]}) == 3  # each seed its own weights and order
    # seed 1 from scratch gives what run_arm gives on a loader shuffled with seed 1
    again = dx.run_arm(labels, teacher, student_config, make_train_loader(train_loader.dataset, 8, seed=1),
                       val_loader, cfg, seed=1, teacher_tokens=tokens, progress=False)
    assert again.metrics == runs["labels only"][1]
    table = dx.seeds_table(runs)
    assert table.count("\n") == 3 and " ± " in table and "| labels only |     3 |" in table
    assert dx.seeds_verdict(runs, "labels only", "logit KD").endswith(("the difference exceeds the spread.",
                                                                        "the difference is within the spread."))


def test_run_seeds_shows_one_bar_over_the_runs_it_trains(setup, capsys):
    teacher, student_config, train_loader, val_loader, tokens = setup
    cfg = TrainConfig(max_steps=2, warmup_steps=1, eval_every=2, eval_batches=1)
    labels, kd = dx.standard_arms(0.9, 1.0)[:2]
    dx.run_seeds([labels, kd], [0, 1], teacher, student_config, train_loader, val_loader, cfg, teacher_tokens=tokens)
    captured = capsys.readouterr()
    assert "seed repeats: 100%" in captured.err and "4/4" in captured.err
    assert "training:" not in captured.err  # no bar per run
    assert captured.out.count("held-out perplexity") == 4


def test_make_student_copies_spread_layers(setup):
    teacher, student_config, *_ = setup
    student = dx.make_student(dx.Arm("x", init="teacher"), teacher, student_config, seed=0)
    torch.testing.assert_close(student.model.layers[1].mlp.up_proj.weight, teacher.model.layers[3].mlp.up_proj.weight)
    assert all(p.requires_grad and p.dtype == torch.float32 for p in student.parameters())
    narrow = dx.narrower_config(student_config)
    assert (narrow.hidden_size, narrow.num_attention_heads, narrow.num_key_value_heads) == (16, 2, 1)
    cut = dx.make_student(dx.Arm("y", init="teacher"), teacher, narrow, seed=0)
    torch.testing.assert_close(cut.model.embed_tokens.weight, teacher.model.embed_tokens.weight[:, :16])


def test_students_are_fp32_even_from_a_bfloat16_hub_config(setup):
    """Hub configs say dtype bfloat16 (SmolLM2's does) and transformers 5 builds in it: students must not."""
    teacher, student_config, _, val_loader, _ = setup
    hub_like = _config(layers=2)
    hub_like.dtype = torch.bfloat16
    assert next(LlamaForCausalLM._from_config(hub_like).parameters()).dtype == torch.bfloat16  # what we guard against
    assert {p.dtype for p in dx.fresh_student(hub_like, seed=0).parameters()} == {torch.float32}
    narrow = dx.narrower_config(hub_like)
    feature_loss = distill.HiddenStateDistiller([0, 3], narrow.hidden_size, teacher.config.hidden_size)
    inputs, _ = next(iter(val_loader))
    student_hidden = dx.fresh_student(narrow, seed=0)(inputs, output_hidden_states=True).hidden_states
    teacher_hidden = teacher(inputs, output_hidden_states=True).hidden_states
    assert feature_loss(student_hidden, teacher_hidden).dtype == torch.float32  # notebook 04's cell, on Colab
    copied = dx.copied_student(teacher, narrow, [0, 3])
    assert {p.dtype for p in copied.parameters()} == {torch.float32}


def test_tables_from_configs():
    table = dx.shape_table({"t": _config(), "s": _config(layers=2)})
    assert "| t " in table and f"{distill.count_parameters(LlamaForCausalLM(_config())):,}" in table


def test_first_sentence():
    assert dx.first_sentence("Once, a cat. It sat.") == "Once, a cat."
    assert dx.first_sentence("no full stop") == "no full stop"


def test_layer_choice_and_small_tables_on_the_tiny_models():
    from course_utils.ground import sources

    teacher, tokenizer = sources.load_causal_lm("tiny-llama", verbose=False)
    student_config = dx.load_config("tiny-llama-student")
    texts = dx.story_texts("tiny-stories", "validation", 20)
    _, val_loader = dx.story_loaders(tokenizer, texts, texts, context=64, batch_size=8)
    tokens = distill.teacher_top1(teacher, val_loader)
    rows = dx.layer_choice_rows(teacher, student_config, val_loader, tokens)
    table = dx.layer_choice_table(rows)
    assert table.count("\n") == 7 and "| spread" in table and "| last" in table
    figures = dx.layer_choice_figures(rows)
    kept = sorted(r["perplexity"] for r in rows if 0 in r["layers"])
    assert figures["layer0_copies"] == 3 and figures["layer0_copies_best_perplexity"] == kept[0]
    assert 1 <= figures["spread_rule_rank_among_layer0_copies"] <= 3
    assert figures["copies_without_layer0_best_perplexity"] == min(r["perplexity"] for r in rows
                                                                   if 0 not in r["layers"])
    soft = dx.softening_table(teacher, tokenizer, "Once upon a time, there was a", [1.0, 4.0])
    assert "T = 4" in soft and "all others" in soft
    tail = dx.tail_mass(teacher, tokenizer, "Once upon a time, there was a", [1.0, 4.0])
    assert 0 < tail[1.0] < tail[4.0] < 1  # a hotter softmax leaves more outside the top tokens
    assert f"{tail[4.0]:.3f}" in soft.splitlines()[-1]  # the table's "all others" column is this number
    inputs, _ = next(iter(val_loader))
    with torch.no_grad():
        grads = dx.temperature_gradient_table(torch.zeros(2, 832), teacher(inputs[:1, :2]).logits[0], [1, 4])
    assert grads.count("\n") == 3
    speed_table, speeds = dx.speed_table({"teacher": teacher}, tokenizer(["Once"], return_tensors="pt")["input_ids"],
                                         4, repeats=1)
    assert speeds["teacher"] > 0 and "1.00x" in speed_table
