"""course_utils.finetuning.finetune_launch and scripts/finetune.py: the command line, the launch commands, the cluster files,
and (slow) a real two-rank DDP run on CPU processes whose ranks end with identical adapters."""

from __future__ import annotations

import sys

import pytest
import torch
import yaml

from course_utils.finetuning import finetune_launch


def test_arguments_default_to_the_profile():
    args = finetune_launch.parse_args([])
    assert args.profile == "tiny" and args.max_steps is None and args.load_in_4bit is None
    args = finetune_launch.parse_args(["--no-load-in-4bit", "--max-steps", "3", "--backend", "peft"])
    assert args.load_in_4bit is False and args.max_steps == 3 and args.backend == "peft"
    with pytest.raises(SystemExit):
        finetune_launch.parse_args(["--backend", "deepspeed"])


def test_world_reads_the_launcher_variables(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert finetune_launch.world() == (0, 0, 1)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert finetune_launch.world() == (3, 1, 4)


def test_launch_commands():
    single = finetune_launch.launch_command("--max-steps", "2", num_processes=1)
    assert single == [sys.executable, str(finetune_launch.SCRIPT), "--max-steps", "2"]
    accelerate = finetune_launch.launch_command("--max-steps", "2", num_processes=2)
    shown = finetune_launch.show_command(accelerate)
    assert shown.startswith("accelerate launch --multi_gpu") and "--num_processes 2 scripts/finetune.py" in shown
    configured = finetune_launch.launch_command(num_processes=4, config_file="cluster/accelerate_fsdp.yaml")
    assert "--multi_gpu" not in configured and "cluster/accelerate_fsdp.yaml" in configured
    torchrun = finetune_launch.show_command(finetune_launch.launch_command(num_processes=2, launcher="torchrun"))
    assert torchrun.startswith("torchrun --standalone --nproc_per_node=2 scripts/finetune.py")


def test_fingerprint_sees_one_changed_adapter_value():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    model[0].weight.requires_grad_(False)
    first = finetune_launch.fingerprint(model)
    assert finetune_launch.fingerprint(model) == first
    with torch.no_grad():
        model[0].weight[0, 0] += 1  # frozen: not part of the fingerprint
    assert finetune_launch.fingerprint(model) == first
    with torch.no_grad():
        model[1].bias += 1e-6
    assert finetune_launch.fingerprint(model) != first


def test_cluster_files_are_valid_and_consistent():
    files = finetune_launch.cluster_files()
    assert {"accelerate_ddp.yaml", "accelerate_fsdp.yaml", "finetune.slurm"} <= set(files)
    ddp = yaml.safe_load(files["accelerate_ddp.yaml"])
    fsdp = yaml.safe_load(files["accelerate_fsdp.yaml"])
    assert ddp["distributed_type"] == "MULTI_GPU" and fsdp["distributed_type"] == "FSDP"
    assert fsdp["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    slurm = files["finetune.slurm"]
    assert slurm.startswith("#!/bin/bash") and "#SBATCH --gpus-per-node" in slurm
    assert "accelerate launch --config_file" in slurm and "scripts/finetune.py" in slurm


def test_claims_table_never_invents_a_number():
    nan = float("nan")
    rows = [{"backend": "Unsloth", "s per step": nan, "peak above start MiB": nan},
            {"backend": "transformers + PEFT", "s per step": 0.5, "peak above start MiB": 100.0}]
    table = finetune_launch.claims_table(rows)
    assert [r["measured here"] for r in table] == ["not measured here", "not measured here"]
    rows[0].update({"s per step": 0.25, "peak above start MiB": 40.0})
    measured = [r["measured here"] for r in finetune_launch.claims_table(rows)]
    assert measured == ["2.00x faster per step", "60% less peak memory"]


def test_device_cpu_never_picks_unsloth(monkeypatch):
    """Issue: with unsloth installed and a GPU present, --backend auto must still mean PEFT on --device cpu."""
    from course_utils.finetuning import unsloth_backend

    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr(unsloth_backend, "unsloth_installed", lambda: True)
    use_unsloth, why = finetune_launch.choose_backend("auto", "cpu")
    assert not use_unsloth and "CPU" in why
    with pytest.raises(ValueError, match="CUDA GPU, not on 'cpu'"):
        finetune_launch.choose_backend("unsloth", "cpu")
    assert finetune_launch.choose_backend("peft", "cuda") == (False, "asked for transformers + PEFT")


@pytest.mark.slow
def test_two_cpu_ranks_train_identical_adapters(tmp_path):
    done = finetune_launch.run_script(tmp_path / "ddp", "--profile", "tiny", "--device", "cpu", "--max-steps", "3",
                                      num_processes=2, timeout=300)
    assert done.ok, done.tail
    report = done.report
    assert report["world_size"] == 2 and report["global batch"] == 2 * report["batch per rank"]
    assert [r["rank"] for r in report["ranks"]] == [0, 1]
    assert report["ranks agree"] and report["steps"] == 3
    assert (tmp_path / "ddp" / "adapter" / "adapter_model.safetensors").exists()


@pytest.mark.slow
def test_one_process_script_run(tmp_path):
    done = finetune_launch.run_script(tmp_path / "one", "--profile", "tiny", "--max-steps", "2", num_processes=1,
                                      timeout=300)
    assert done.ok, done.tail
    assert done.report["world_size"] == 1 and done.report["backend"] == "peft"


def _gated_hub(monkeypatch):
    """The Hub as a machine without access to the cluster profile's Llama sees it (no network: faked)."""
    from course_utils.ground import hub, sources

    monkeypatch.setattr(sources.hub, "hub_reachable", lambda timeout=2.0: True)
    asked = []

    def access_problem(repo_id, repo_type="model"):
        asked.append(repo_id)
        return f"{repo_id} is a gated repository and no Hugging Face token was found."

    monkeypatch.setattr(hub, "access_problem", access_problem)
    return asked


def test_the_gated_cluster_model_is_checked_once_before_any_rank(monkeypatch, capsys):
    asked = _gated_hub(monkeypatch)
    args = finetune_launch.parse_args(["--profile", "cluster"])
    assert finetune_launch.access_problems(args) == [
        "meta-llama/Llama-3.2-1B is a gated repository and no Hugging Face token was found."]
    with pytest.raises(SystemExit) as rank0:
        finetune_launch.require_access(args, rank=0)
    assert str(rank0.value).startswith("Cannot fine-tune: meta-llama/Llama-3.2-1B is a gated repository")
    with pytest.raises(SystemExit) as rank1:  # the other ranks exit without repeating the message
        finetune_launch.require_access(args, rank=1)
    assert rank1.value.code == 1
    monkeypatch.setattr(finetune_launch.subprocess, "run", lambda *a, **k: pytest.fail("a rank was launched"))
    done = finetune_launch.run_script("unused", "--profile", "cluster", num_processes=4)
    assert not done.ok and done.tail.startswith("Cannot fine-tune: meta-llama/Llama-3.2-1B")
    assert asked == ["meta-llama/Llama-3.2-1B"] * 4


def test_embedded_models_need_no_hub_and_the_slurm_job_checks_first(monkeypatch):
    asked = _gated_hub(monkeypatch)
    assert finetune_launch.access_problems(finetune_launch.parse_args(["--profile", "tiny"])) == []
    assert asked == []
    slurm = (finetune_launch.CLUSTER_DIR / "finetune.slurm").read_text()
    assert 0 < slurm.index("--check-access") < slurm.index("srun ")


def test_offline_and_not_cached_is_one_message(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    problems = finetune_launch.access_problems(finetune_launch.parse_args(["--profile", "cluster"]))
    assert len(problems) == 1 and "not in the local Hugging Face cache" in problems[0]
