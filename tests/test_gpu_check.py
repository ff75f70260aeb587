"""scripts/gpu_check.py: wheels from several folders into one target, and the README table rendered from results."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest


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


def test_the_smoke_ladder_has_every_row_and_the_lectures_table(gpu_check):
    from course_utils.training import speed

    ladder = gpu_check.ladder("smoke", "cpu")
    assert [row["name"] for row in ladder["rows"]] == [name for name, _, _ in speed.RUNGS]
    tf32 = next(row for row in ladder["rows"] if row["name"] == "+ TF32 matmuls")
    assert tf32["tokens_per_second"] is None and tf32["note"].startswith("not run:")
    assert ladder["rows"][0]["tokens_per_second"] > 0 and len(ladder["lecture"]) == len(speed.LECTURE_LADDER)
