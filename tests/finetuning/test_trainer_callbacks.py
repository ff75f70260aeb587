"""course_utils.finetuning.trainer_callbacks around TRL's SFTTrainer: what the meter records, checkpoints written per epoch
(save_total_limit deleting the older one), and a resumed run continuing with the same losses as an uninterrupted one."""

from __future__ import annotations

import json
import math

import pytest
import torch

from course_utils.finetuning import sft_data, trainer_callbacks
from course_utils.ground import sources

TARGETS = ["q_proj", "v_proj"]


@pytest.fixture(scope="module")
def tokenizer():
    return sources.load_tokenizer("tiny-llama")


@pytest.fixture(scope="module")
def train_rows():
    return sft_data.sft_rows(sources.load_text_dataset("zorbish", "train").select(range(32)), chat=False)


def make_trainer(tokenizer, rows, output_dir, callbacks=(), **overrides):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(sources.resolve_model("tiny-llama").location, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, task_type="CAUSAL_LM"))
    settings = dict(output_dir=str(output_dir), per_device_train_batch_size=8, learning_rate=5e-3, logging_steps=1,
                    bf16=False, **sft_data.checkpointing_option(False), use_cpu=True, report_to="none", seed=0,
                    completion_only_loss=True, disable_tqdm=True, save_strategy="no")
    trainer = SFTTrainer(model=model, args=SFTConfig(**{**settings, **overrides}), train_dataset=rows,
                         processing_class=tokenizer, callbacks=list(callbacks))
    trainer.remove_callback(PrinterCallback)
    return trainer


def test_the_meter_times_every_step_and_measures_the_peak(tokenizer, train_rows, tmp_path):
    meter = trainer_callbacks.TrainingMeter()
    trainer = make_trainer(tokenizer, train_rows, tmp_path, [meter], max_steps=4)
    trainer.train()
    assert meter.steps == 4 and len(meter.step_seconds) == 4
    assert meter.seconds >= sum(meter.step_seconds) > 0 and meter.cpu_seconds > 0
    assert meter.seconds_per_step == pytest.approx(sum(meter.step_seconds[1:]) / 3)
    assert meter.peak is not None and meter.peak.peak_bytes > 0 and "resident" in meter.peak.method
    assert "4 steps" in meter.summary()
    losses = trainer_callbacks.losses(trainer.state.log_history)
    assert list(losses) == [1, 2, 3, 4] and all(math.isfinite(v) for v in losses.values())
    figure = trainer_callbacks.plot_runs({"LoRA": trainer.state.log_history})
    (ax,) = figure.axes
    (line,) = ax.get_lines()  # one training curve, one point per logged step, the losses logged
    assert list(line.get_xdata()) == list(losses) and list(line.get_ydata()) == list(losses.values())
    assert ax.get_yscale() == "log" and "LoRA: training loss" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert meter.tokens_per_second is None and meter.step_tokens == [0] * 4  # the Trainer counted no tokens


def test_the_meter_reports_tokens_per_second_where_the_trainer_counts_them(tokenizer, train_rows, tmp_path):
    meter = trainer_callbacks.TrainingMeter()
    trainer = make_trainer(tokenizer, train_rows, tmp_path, [meter], max_steps=3,
                           include_num_input_tokens_seen="non_padding")
    trainer.train()
    assert len(meter.step_tokens) == 3 and all(n > 0 for n in meter.step_tokens)
    assert sum(meter.step_tokens) == trainer.state.num_input_tokens_seen
    assert meter.tokens_per_second == pytest.approx(sum(meter.step_tokens[1:]) / sum(meter.step_seconds[1:]))


def test_epoch_checkpoints_and_a_resumed_run(tokenizer, train_rows, tmp_path):
    epochs = dict(num_train_epochs=2, save_strategy="epoch", save_total_limit=1)  # 32 rows / 8 = 4 steps an epoch
    log = trainer_callbacks.CheckpointLog()
    whole = make_trainer(tokenizer, train_rows, tmp_path / "whole", [log], **epochs)
    whole.train()
    assert [s["checkpoint folders now"] for s in log.saves] == ["checkpoint-4", "checkpoint-8"]  # 4 was deleted
    assert sorted(p.name for p in (tmp_path / "whole").glob("checkpoint-*")) == ["checkpoint-8"]
    inside = {p.name for p in (tmp_path / "whole" / "checkpoint-8").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "optimizer.pt", "scheduler.pt", "rng_state.pth",
            "trainer_state.json"} <= inside
    assert json.loads((tmp_path / "whole" / "checkpoint-8" / "trainer_state.json").read_text())["global_step"] == 8

    cut = make_trainer(tokenizer, train_rows, tmp_path / "cut", [trainer_callbacks.StopAfterEpochs(1)], **epochs)
    cut.train()
    assert sorted(p.name for p in (tmp_path / "cut").glob("checkpoint-*")) == ["checkpoint-4"]
    resumed = make_trainer(tokenizer, train_rows, tmp_path / "cut", **epochs)
    resumed.train(resume_from_checkpoint=str(tmp_path / "cut" / "checkpoint-4"))
    expected = trainer_callbacks.losses(whole.state.log_history)
    got = trainer_callbacks.losses(resumed.state.log_history)
    assert list(got) == list(range(1, 9))
    for step in range(5, 9):
        assert got[step] == pytest.approx(expected[step], rel=1e-5), step
    table = trainer_callbacks.compare_losses(whole.state.log_history, resumed.state.log_history, range(5, 9))
    assert [row["equal"] for row in table] == ["yes"] * 4
    contents = {row["file"]: row["holds"] for row in trainer_callbacks.checkpoint_contents(tmp_path / "whole" / "checkpoint-8")}
    assert "AdamW" in contents["optimizer.pt"] and "tokenizer" in contents["tokenizer.json"]
    other = trainer_callbacks.compare_losses(whole.state.log_history, cut.state.log_history, [4, 5])
    assert [row["equal"] for row in other] == ["yes", "NO"]  # the cut run has no step 5
