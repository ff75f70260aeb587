"""scripts/gpu_check.py: wheels from several folders into one target, and the README table rendered from results."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from course_utils.reporting import gpu_results


@pytest.fixture(scope="module")
def gpu_check(load_script):
    return load_script("gpu_check")


def make_wheel(folder: Path, name: str, body: str = "VALUE = 1\n") -> Path:
    """A minimal pure-Python wheel of package ``name`` (version 1.0), with a valid RECORD."""
    files = {f"{name}/__init__.py": body.encode(),
             f"{name}-1.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
             f"{name}-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
                     f"{len(data)}\n" for path, data in files.items()) + f"{name}-1.0.dist-info/RECORD,,\n"
    files[f"{name}-1.0.dist-info/RECORD"] = record.encode()
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def test_wheels_from_several_folders_go_into_one_target(gpu_check, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "")
    make_wheel(tmp_path / "batch-01", "standin_alpha")
    make_wheel(tmp_path / "batch-02", "standin_beta")
    status = gpu_check.install_wheels([tmp_path / "batch-01", tmp_path / "batch-02"], tmp_path / "site")
    assert status["status"] == "installed" and status["wheels"] == 2
    assert {p.name for p in (tmp_path / "site").iterdir()} >= {"standin_alpha", "standin_beta"}
    assert sys.path[0] == str(tmp_path / "site")
    done = subprocess.run([sys.executable, "-c", "import standin_alpha, standin_beta; print(standin_beta.VALUE)"],
                          capture_output=True, text=True)  # PYTHONPATH now names the target for child processes
    assert done.stdout.strip() == "1", done.stderr


def test_a_broken_unsloth_wheel_is_left_out_and_the_reason_recorded(gpu_check, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    make_wheel(tmp_path / "w", "standin_gamma")
    (tmp_path / "w" / "unsloth-1.0-py3-none-any.whl").write_bytes(b"not a zip file")
    status = gpu_check.install_wheels([tmp_path / "w"], tmp_path / "site")
    assert status["status"] == "installed without Unsloth" and status["unsloth"].startswith("not installed: ")
    assert (tmp_path / "site" / "standin_gamma").is_dir()
    assert gpu_check.install_wheels([tmp_path / "empty"], tmp_path / "site")["wheels"] == 0


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
           "held-out loss": 1.5}
    results = {"mode": "gpu", "environment": {"gpu": "NVIDIA H100", "compute capability": "9.0", "driver": "580.1",
                                              "cuda": "12.8", "torch": "2.13.0", "packages": {"unsloth": "2026.10.9"}},
               "ladder": {"batch": 8, "seq_len": 1024, "steps": 10, "rows": [
                   {"name": "fp32 baseline", "tokens_per_second": 50000.0, "peak_memory_mib": 30000.0, "speedup": 1.0,
                    "note": "explicit attention"},
                   {"name": "+ torch.compile", "tokens_per_second": None, "peak_memory_mib": None, "speedup": None,
                    "note": "not run: ..."}],
                   "lecture": [{"row (lecture)": "Base", "tokens/s": "12,526", "x baseline": "1.00"}]},
               "lora_vs_qlora": {"model": "Qwen/Qwen2.5-0.5B", "steps": 30, "batch": 16, "seed": 0, "rows": [row]},
               "unsloth_vs_peft": {"model": "Qwen/Qwen2.5-0.5B", "steps": 30, "batch": 16, "seed": 0,
                                   "rows": [{"run": "Unsloth", "status": "not run: importing unsloth failed: X"}],
                                   "claims": ["Measured here: nothing to compare (X)."]},
               "notebooks": [{"notebook": "05_lora_and_qlora.ipynb", "status": "ok", "seconds": 91.0}]}
    text = " ".join(gpu_results.render(results).split())  # table cells are padded: compare words
    assert "NVIDIA H100 (compute capability 9.0), driver 580.1, CUDA 12.8" in text
    assert "| fp32 baseline | 50,000 | 30,000 | 1.00 | explicit attention |" in text
    assert "| + torch.compile | - | - | - | not run: ... |" in text
    assert "| LoRA, 16-bit base | measured on cuda | 0.012 | 2,048 | 1.500 |" in text
    assert "not run: importing unsloth failed: X" in text and "| 05_lora_and_qlora.ipynb | ok | 91 |" in text


def test_the_readme_table_is_rendered_from_the_results_file_never_typed():
    assert gpu_results.readme_section() == gpu_results.render(gpu_results.load()), (
        "README.md's 'Measured on a GPU' section differs from build/gpu/results.json: "
        "run `python scripts/gpu_check.py --render-readme`.")


def test_the_smoke_ladder_has_every_row_and_the_lectures_table(gpu_check):
    from course_utils.training import speed

    ladder = gpu_check.ladder("smoke", "cpu")
    assert [row["name"] for row in ladder["rows"]] == [name for name, _, _ in speed.RUNGS]
    tf32 = next(row for row in ladder["rows"] if row["name"] == "+ TF32 matmuls")
    assert tf32["tokens_per_second"] is None and tf32["note"].startswith("not run:")
    assert ladder["rows"][0]["tokens_per_second"] > 0 and len(ladder["lecture"]) == len(speed.LECTURE_LADDER)
