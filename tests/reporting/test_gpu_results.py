"""course_utils.reporting.gpu_results: the README's GPU section is rendered from results.json, never typed."""

from __future__ import annotations

from course_utils.reporting import gpu_results


def test_without_a_gpu_measurement_the_readme_says_so(tmp_path):
    text = gpu_results.render(None)
    assert text.startswith("No GPU measurement has been made yet")
    assert gpu_results.render({"mode": "smoke"}) == text  # a CPU smoke run checks the script, not a GPU
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{gpu_results.START}\nold\n{gpu_results.END}\nafter\n")
    assert gpu_results.update_readme(readme, None) and gpu_results.readme_section(readme) == text
    assert not gpu_results.update_readme(readme, None)
    assert readme.read_text().endswith(f"{gpu_results.END}\nafter\n")


def test_gpu_results_render_every_table():
    row = {"run": "LoRA, 16-bit base", "status": "measured on cuda", "seconds per step": 0.0123, "peak MiB": 2048.0,
           "held-out loss": 1.5, "tokens per second": 123456.0}
    meta = {"model": "Qwen/Qwen2.5-0.5B", "steps": 30, "batch": 16, "seed": 0}
    results = {"mode": "gpu", "environment": {"gpu": "NVIDIA H100", "compute capability": "9.0", "driver": "580.1",
                                              "cuda": "12.8", "torch": "2.13.0", "packages": {"unsloth": "2026.10.9"}},
               "ladder": {"batch": 8, "seq_len": 1024, "steps": 10, "rows": [
                   {"name": "fp32 baseline", "tokens_per_second": 50000.0, "peak_memory_mib": 30000.0, "speedup": 1.0,
                    "note": "explicit attention"},
                   {"name": "+ torch.compile", "tokens_per_second": None, "peak_memory_mib": None, "speedup": None,
                    "note": "not run: ..."}],
                   "lecture": [{"row (lecture)": "Base", "tokens/s": "12,526", "x baseline": "1.00"}]},
               "finetune": {"status": "done",
                            "lora_vs_qlora": {**meta, "rows": [row]},
                            "t4_shaped": {**meta, "rows": [{**row, "run": "T4-shaped LoRA"}],
                                          "verdict": "Fits a free T4: yes, measured: ..."},
                            "unsloth_vs_peft": {**meta, "claims": ["Measured here: nothing to compare (X)."],
                                                "rows": [{"run": "Unsloth",
                                                          "status": "not run: importing unsloth failed: X"}]}},
               "notebooks": {"status": "done",
                             "rows": [{"notebook": "05_lora_and_qlora.ipynb", "status": "ok", "seconds": 91.0}]}}
    text = " ".join(gpu_results.render(results).split())  # table cells are padded: compare words
    assert "NVIDIA H100 (compute capability 9.0), driver 580.1, CUDA 12.8" in text
    assert "| fp32 baseline | 50,000 | 30,000 | 1.00 | explicit attention |" in text
    assert "| + torch.compile | - | - | - | not run: ... |" in text
    assert "| LoRA, 16-bit base | measured on cuda | 0.012 | 123,456 | 2,048 | 1.500 |" in text
    assert "| T4-shaped LoRA | measured on cuda |" in text and "Fits a free T4: yes, measured: ..." in text
    assert "not run: importing unsloth failed: X" in text and "| 05_lora_and_qlora.ipynb | ok | 91 |" in text


def test_the_readme_table_is_rendered_from_the_results_file_never_typed():
    assert gpu_results.readme_section() == gpu_results.render(gpu_results.load()), (
        "README.md's 'Measured on a GPU' section differs from build/gpu/results.json: "
        "run `python scripts/gpu_check.py --render-readme`.")


def test_a_run_stopped_during_a_section_renders_what_it_holds():
    results = {"mode": "gpu", "environment": {"gpu": "G", "compute capability": "9.0", "driver": "d", "cuda": "13.0",
                                              "torch": "2.11.0", "packages": {}},
               "ladder": {"status": "not run: the time budget (400 s, --budget-s) was spent"},
               "finetune": {"status": "interrupted: the run was stopped during this section",
                            "lora_vs_qlora": {"model": "M", "steps": 20, "batch": 16, "seed": 0, "rows": [
                                {"run": "LoRA, unquantized base", "status": "failed: OutOfMemoryError"}]}}}
    text = " ".join(gpu_results.render(results).split())
    assert "Speed ladder: not run: the time budget (400 s, --budget-s) was spent." in text
    assert "| LoRA, unquantized base | failed: OutOfMemoryError | - | - | - | - |" in text
    assert "Fine-tuning section: interrupted: the run was stopped during this section." in text
