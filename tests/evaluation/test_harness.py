import os

import datasets
import pytest

from course_utils.evaluation import harness, scoring
from course_utils.ground import paths, sources


def test_the_task_configs_point_at_files_in_data():
    configs = harness.task_configs()
    assert [c["task"] for c in configs] == list(harness.TASKS)
    for config in configs:
        for path in config["dataset_kwargs"]["data_files"].values():
            assert path.startswith(str(paths.data_dir())) and os.path.exists(path)
    assert callable(configs[1]["process_docs"])


def test_with_choices_is_seeded_and_holds_the_right_answer_once():
    docs = datasets.Dataset.from_list([{"completion": f" w{i} zo"} for i in range(10)])
    first, again = harness.with_choices(docs), harness.with_choices(docs)
    assert first["choices"] == again["choices"] and first["gold"] == again["gold"]
    for row in first:
        assert len(row["choices"]) == harness.CHOICES and row["choices"].count(row["completion"]) == 1
        assert row["choices"][row["gold"]] == row["completion"]
    assert len(set(first["gold"])) > 1  # the right answer is not always in the same slot


def test_results_rows_and_the_wide_table():
    results = {"results": {"t": {"alias": "t", "acc,none": 0.5, "acc_stderr,none": 0.1, "sample_len": 4,
                                 "bits_per_byte,none": 0.2, "bits_per_byte_stderr,none": "N/A"}}}
    rows = harness.results_rows("m", results)
    assert {"model": "m", "task": "t", "metric": "acc", "value": 0.5, "stderr": 0.1} in rows
    assert {"model": "m", "task": "t", "metric": "bits_per_byte", "value": 0.2, "stderr": None} in rows
    wide = harness.wide_table([r for r in rows if r["metric"] != "sample_len"])
    assert wide == [{"model": "m", "t acc": "0.500 ± 0.100", "t bits_per_byte": "0.200"}]


@pytest.mark.slow
def test_lm_eval_scores_the_choices_as_continuation_logprob_does(monkeypatch, capsys):
    import lm_eval
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = sources.resolve_model("tiny-llama").location
    with harness.quiet_progress():
        result = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={path},dtype=float32,max_length=256",
                                         tasks=harness.task_configs(["zorbish_choice"]), limit=3, device="cpu",
                                         task_manager=TaskManager(include_defaults=False), log_samples=True,
                                         verbosity="ERROR")
    assert "requests" not in capsys.readouterr().err  # no progress bar
    model, tokenizer = sources.load_causal_lm("tiny-llama", verbose=False)
    items = harness.with_choices(sources.load_text_dataset("zorbish")["test"]).select(range(3))
    theirs = harness.choice_loglikelihoods(result["samples"]["zorbish_choice"])
    for row, scores in zip(items, theirs):
        ours = [scoring.continuation_logprob(model, tokenizer, row["prompt"], choice) for choice in row["choices"]]
        assert ours == pytest.approx(scores, abs=1e-3)
    accuracy = harness.per_item(result["samples"]["zorbish_choice"], "acc")
    assert len(accuracy) == 3 and set(accuracy) <= {0.0, 1.0}
