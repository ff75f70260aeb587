"""course_utils.course.env: the environment report, which never crashes and gives every FAIL its fix."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from course_utils.course import env
from course_utils.ground import profiles


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Never probe the network from a test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# --- versions ----------------------------------------------------------------------------------------------------


@given(st.tuples(st.integers(0, 30), st.integers(0, 30)), st.tuples(st.integers(0, 30), st.integers(0, 30)))
def test_version_comparison_is_numeric(installed, minimum):
    as_text = ".".join
    assert env.version_at_least(as_text(map(str, installed)), as_text(map(str, minimum))) == (installed >= minimum)


def test_version_with_local_tag():
    assert env.version_at_least("2.13.0+cpu", "2.4")
    assert not env.version_at_least("0.9.1", "0.17")


# --- check_package -----------------------------------------------------------------------------------------------


def test_missing_package_fails_with_install_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "trl", None)  # makes `import trl` fail as if it were not installed
    result = env.check_package("trl", "trl", "0.20")
    assert result.status == "FAIL" and result.detail == "not installed"
    assert "pip install 'trl>=0.20'" in result.fix


def test_too_old_package_fails_with_upgrade_fix():
    result = env.check_package("pytest", "pytest", "999.0")
    assert result.status == "FAIL" and "too old" in result.detail
    assert "pip install -U 'pytest>=999.0'" in result.fix


def test_broken_package_fails_with_its_error(tmp_path, monkeypatch):
    (tmp_path / "brokenpkg_for_test").mkdir()
    (tmp_path / "brokenpkg_for_test" / "__init__.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = env.check_package("brokenpkg_for_test", "brokenpkg_for_test", None, import_it=True)
    assert result.status == "FAIL" and "RuntimeError: boom" in result.detail
    assert "--force-reinstall" in result.fix


def test_installed_package_ok():
    result = env.check_package("numpy", "numpy", "1.0", import_it=True)
    assert result.status == "OK" and result.detail == np.__version__


# --- environment_report ------------------------------------------------------------------------------------------


def _by_name(report, prefix):
    return [r for r in report if r.name.startswith(prefix)]


def test_report_with_a_missing_package_prints_the_fix(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "peft", None)
    report = env.environment_report()
    (peft,) = _by_name(report, "peft")
    assert peft.status == "FAIL"
    printed = capsys.readouterr().out
    assert "[FAIL] peft >= 0.17: not installed" in printed
    assert "fix: run `pip install 'peft>=0.17'`" in printed
    assert "requirement(s) failed" in printed


def test_report_survives_without_torch(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)
    report = env.environment_report(print_report=True)
    assert _by_name(report, "torch")[0].status == "FAIL"
    assert _by_name(report, "device")[0].status == "FAIL"
    assert all(r.fix for r in report if r.status == "FAIL")
    assert "[FAIL] torch" in capsys.readouterr().out


def test_report_lines_have_known_statuses(no_gpu):
    report = env.environment_report(print_report=False)
    assert {r.status for r in report} <= {"OK", "FAIL", "WARN", "INFO"}
    names = [r.name for r in report]
    for expected in ("Python", "torch", "trl", "embedded models", "embedded datasets", "device",
                     "precision", "system RAM", "Hugging Face Hub", "HF token", "Colab"):
        assert any(name.startswith(expected) for name in names), expected
    assert not any(name.startswith("papermill") for name in names), "a student's runtime does not need papermill"
    assert not any(name.startswith("unsloth") for name in names), "unsloth is reported only when a GPU exists"


def test_report_embedded_data(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    report = env.environment_report(print_report=False)
    models, datasets = _by_name(report, "embedded models")[0], _by_name(report, "embedded datasets")[0]
    assert models.status == datasets.status == "FAIL" and "make data" in models.fix
    tiny = profiles.PROFILES["tiny"]
    for name in tiny.models.values():
        (tmp_path / "models" / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "models" / name / "config.json").write_text("{}")
    for name in tiny.datasets.values():
        (tmp_path / "datasets" / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "datasets" / name / "train.jsonl").write_text("{}\n")
    report = env.environment_report(print_report=False)
    assert _by_name(report, "embedded models")[0].status == "OK"
    assert _by_name(report, "embedded datasets")[0].status == "OK"


def test_report_never_prints_the_token(monkeypatch, capsys):
    secret = "hf_" + "x" * 34
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    report = env.environment_report()
    assert _by_name(report, "HF token")[0].detail.startswith("present")
    assert _by_name(report, "Hugging Face Hub")[0].detail.startswith("offline")
    assert secret not in capsys.readouterr().out


def test_report_survives_a_crashing_check(monkeypatch):
    def boom():
        raise RuntimeError("driver exploded")

    monkeypatch.setattr(env, "pick_device", boom)
    report = env.environment_report(print_report=False)
    (device,) = _by_name(report, "device")
    assert device.status == "FAIL" and "driver exploded" in device.detail and device.fix


def test_profile_plan_reports_missing_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = env.profile_plan(profiles.PROFILES["tiny"])
    assert {row["role"] for row in rows} == set(profiles.MODEL_ROLES) | set(profiles.DATASET_ROLES)
    assert all(row["loads from"].startswith("NOT AVAILABLE") for row in rows)
