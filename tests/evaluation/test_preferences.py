import copy
import random

import datasets
import pytest
import torch

from course_utils.evaluation import preferences
from course_utils.finetuning import sft_data
from course_utils.ground import sources

VOCABULARY = ["cup", "bell", "park", "kite", "cold", "warm", "zo"]
ROWS = [{"prompt": f"Translate to Zorbish: row {i}.\nZorbish:", "completion": " cup park kite cold zo"} for i in range(50)]


def test_corrupt_changes_exactly_one_word_and_never_the_last():
    rng = random.Random(0)
    for _ in range(50):
        wrong = preferences.corrupt(" cup park kite cold zo", VOCABULARY, rng)
        words = wrong.split()
        assert wrong.startswith(" ") and len(words) == 5 and words[-1] == "zo"
        assert sum(a != b for a, b in zip(words, ["cup", "park", "kite", "cold", "zo"])) == 1


def test_preference_pairs_choose_the_right_answer_unless_flipped_as_noise():
    clean = preferences.preference_pairs(ROWS, VOCABULARY, seed=1)
    assert all(p["chosen"] == ROWS[0]["completion"] != p["rejected"] for p in clean)
    noisy = preferences.preference_pairs(ROWS, VOCABULARY, seed=1, noisy_share=0.5)
    flipped = sum(p["rejected"] == ROWS[0]["completion"] for p in noisy)
    assert 10 < flipped < 40
    assert preferences.preference_pairs(ROWS, VOCABULARY, seed=1) == clean  # seeded


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = sources.load_causal_lm("tiny-llama", verbose=False)
    return model.eval(), tokenizer


def test_pair_batch_puts_chosen_rows_first_and_masks_the_prompt(tiny):
    _, tokenizer = tiny
    pairs = preferences.preference_pairs(ROWS[:3], VOCABULARY, seed=0)
    batch = preferences.pair_batch(tokenizer, pairs)
    assert batch["input_ids"].shape[0] == 6
    answer = batch["input_ids"][0][batch["completion_mask"][0].bool()]
    assert tokenizer.decode(answer) == pairs[0]["chosen"] + tokenizer.eos_token
    answer = batch["input_ids"][3][batch["completion_mask"][3].bool()]
    assert tokenizer.decode(answer) == pairs[0]["rejected"] + tokenizer.eos_token


def test_the_metrics_of_the_reference_against_itself_have_no_margin(tiny):
    model, tokenizer = tiny
    pairs = preferences.preference_pairs(ROWS[:4], VOCABULARY, seed=0)
    metrics = preferences.preference_metrics(model, model, tokenizer, pairs, beta=0.1)
    assert metrics["margin"] == [0.0] * 4 and metrics["distance"] == 0.0
    assert set(metrics["prefers chosen"]) <= {0.0, 1.0}


@pytest.mark.slow
def test_the_hand_written_dpo_loss_equals_trls_dpotrainer_loss(tiny, tmp_path):
    from trl import DPOConfig, DPOTrainer

    reference, tokenizer = tiny
    policy = copy.deepcopy(reference)
    with torch.no_grad():  # move the policy away from its reference, so that the loss is not log 2
        for parameter in policy.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    pairs = preferences.preference_pairs(ROWS[:8], VOCABULARY, seed=0)
    args = DPOConfig(output_dir=str(tmp_path), beta=0.3, per_device_train_batch_size=4, max_steps=1, use_cpu=True,
                     report_to="none", save_strategy="no", **sft_data.checkpointing_option(False))
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=datasets.Dataset.from_list(pairs),
                         processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    mine = preferences.pair_batch(tokenizer, pairs[:4])
    width = mine["input_ids"].shape[1]
    for key in mine:  # the same layout, up to TRL's padding
        assert torch.equal(mine[key], batch[key][:, :width]), key
    assert not batch["completion_mask"][:, width:].any()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, batch)
        chosen, rejected = preferences.sequence_logps(policy, **{k: batch[k] for k in mine}).chunk(2)
        ref_chosen, ref_rejected = preferences.sequence_logps(reference, **{k: batch[k] for k in mine}).chunk(2)
    ours = preferences.dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=0.3)[0]
    assert abs(ours.item() - 0.6931) > 1e-3
    assert ours.item() == pytest.approx(trl_loss.item(), abs=1e-5)
