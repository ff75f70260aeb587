"""scripts/gpu_wheels.sh and gpu_wheel_plan.py: the plan of the GPU check's wheels, on wheels made here (no network)."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from course_utils.ground import paths

MB = 1_000_000


@pytest.fixture(scope="module")
def plan_module(load_script):
    return load_script("gpu_wheel_plan")


def example_set(plan_module, folder, *, big: int = 0):
    """Wheels for some of the workbook's requirements: trl needs datasets and papermill needs nbclient (both
    carried), transformers is in the GPU image, widgetsnbextension is never imported there, jupyterlab is unused."""
    make = plan_module.example_wheel
    make(folder, "trl", requires=("datasets>=3", "transformers"), payload=int(12 * MB))
    make(folder, "datasets", requires=('pyarrow; python_version >= "3.9"', 'tomli; python_version < "3.11"'),
         payload=int(25 * MB))
    make(folder, "papermill", requires=("nbclient",), payload=int(9 * MB))
    make(folder, "nbclient", payload=int(2 * MB))
    make(folder, "transformers", payload=int(1 * MB))
    make(folder, "jupyterlab", payload=int(1 * MB))
    make(folder, "ipywidgets", requires=("widgetsnbextension",))
    make(folder, "widgetsnbextension", payload=int(1 * MB))
    make(folder, "bitsandbytes", payload=big, extra_files={"bitsandbytes/libbitsandbytes_cuda128.so": int(30 * MB),
                                                           "bitsandbytes/libbitsandbytes_cuda130.so": 1000,
                                                           "bitsandbytes/libbitsandbytes_cpu.so": 1000})


def dry_run(folder, *extra, limit_mb=40):
    return subprocess.run(["bash", str(paths.REPO_ROOT / "scripts" / "gpu_wheels.sh"), "--from", str(folder),
                           "--dry-run", *extra], capture_output=True, text=True, cwd=paths.REPO_ROOT,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "LIMIT_MB": str(limit_mb)})


def test_the_dry_run_prints_batches_sizes_and_what_is_skipped(plan_module, tmp_path):
    example_set(plan_module, tmp_path / "all")
    done = dry_run(tmp_path / "all")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Wheel plan: 2 batch(es) of at most 40 MB" in out and "Dry run: no batch folder written." in out
    batches = [line for line in out.splitlines() if "/batch-" in line]
    assert len(batches) == 2 and all("OVER" not in line for line in batches)
    # largest first, each into the first batch with room: datasets 25 + trl 12 + nbclient 2, then papermill 9
    assert "build/gpu/wheels/batch-01: 5 wheels, 39.0 MB" in batches[0]
    assert "build/gpu/wheels/batch-02: 1 wheels, 9.0 MB" in batches[1]
    assert "trimmed bitsandbytes: 30.0 MB -> 0.0 MB" in out
    assert "skipped (the GPU image has it (its version is checked at run time)): " in out
    assert "transformers" in out.split("the GPU image has it")[1].splitlines()[0]
    assert "widgetsnbextension" in out.split("no front end runs there): ")[1].splitlines()[0]
    assert "jupyterlab" in out.split("nothing the GPU check runs requires it): ")[1].splitlines()[0]
    assert "torch" in out.split("the machine's torch brings it): ")[1]
    assert "calls needed: 1" in out
    assert not (paths.REPO_ROOT / "build" / "gpu" / "wheels" / "batch-03").exists()


def test_a_wheel_over_the_limit_is_refused_and_nothing_is_written(plan_module, tmp_path):
    example_set(plan_module, tmp_path / "all", big=int(41 * MB))
    done = dry_run(tmp_path / "all")
    assert done.returncode == 1
    assert "OVER THE LIMIT" in done.stdout and "REFUSED: batch 1 is over 40 MB" in done.stderr
    args = ["plan", str(tmp_path / "all"), "--out", str(tmp_path / "out")]  # not a dry run: still nothing written
    assert plan_module.main(args) == 1 and not (tmp_path / "out").exists()


def test_batches_are_written_and_the_trimmed_wheel_installs(plan_module, tmp_path):
    example_set(plan_module, tmp_path / "all")
    installed = tmp_path / "image.txt"
    installed.write_text("# the machine's pip list\ntransformers==5.17.0\nnbclient==0.10.4\n")
    assert plan_module.main(["plan", str(tmp_path / "all"), "--out", str(tmp_path / "out"), "--limit-mb", "40",
                             "--installed", str(installed)]) == 0
    written = {folder.name: sorted(w.name.split("-")[0] for w in folder.glob("*.whl"))
               for folder in (tmp_path / "out").glob("batch-*")}
    # nbclient is on the machine's list now: not carried
    assert written == {"batch-01": ["bitsandbytes", "datasets", "ipywidgets", "trl"], "batch-02": ["papermill"]}
    trimmed = next((tmp_path / "out" / "batch-01").glob("bitsandbytes-*.whl"))
    with zipfile.ZipFile(trimmed) as archive:
        names = archive.namelist()
        record = archive.read("bitsandbytes-1.0.dist-info/RECORD").decode()
    assert "bitsandbytes/libbitsandbytes_cuda130.so" in names and "bitsandbytes/libbitsandbytes_cpu.so" in names
    assert "libbitsandbytes_cuda128.so" not in " ".join(names) + record
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                           "--target", str(tmp_path / "site"), str(trimmed)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "bitsandbytes" / "libbitsandbytes_cuda130.so").exists()


def test_the_download_list_holds_the_gpu_pins_and_the_runner(plan_module):
    pins = plan_module.download_pins()
    names = {plan_module.normalize(pin.split("==")[0]) for pin in pins}
    assert {"bitsandbytes", "unsloth", "papermill", "ipykernel", "nbclient"} <= names
    assert not names & {"torch", "triton", "torchvision"}
