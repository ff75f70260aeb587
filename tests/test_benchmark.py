"""scripts/benchmark.py: each time against its goal, and each notebook's share of `make test` from the JUnit report."""

from __future__ import annotations


def test_a_time_meets_its_goal_or_says_by_how_much_it_misses(load_script):
    benchmark = load_script("benchmark")
    assert benchmark.verdict(420.4, 600) == "met (under 600 s)"
    assert benchmark.verdict(714.2, 600) == "**not met**: 114 s over 600 s"
    assert benchmark.verdict(12, None) == ""


def test_each_notebooks_time_under_nbval_is_summed_from_the_junit_report(load_script, tmp_path):
    benchmark = load_script("benchmark")
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="solutions.00_your_machine.ipynb" name="Cell 0" time="2.5"/>'
        '<testcase classname="solutions.00_your_machine.ipynb" name="after the run" time="0.5"/>'
        '<testcase classname="solutions.05_lora_and_qlora.ipynb" name="Cell 3" time="40"/>'
        '<testcase classname="tests.course.test_runner" name="test_x" time="9"/>'
        "</testsuite></testsuites>")
    assert benchmark.nbval_seconds(junit) == {"00_your_machine": 3.0, "05_lora_and_qlora": 40.0}
    assert benchmark.nbval_seconds(tmp_path / "missing.xml") == {}


def test_the_readme_block_names_every_goal(load_script):
    benchmark = load_script("benchmark")
    block = benchmark.render("Measured here:", [("`make test`", 650, 0, 600), ("`make run`", 170, 0, 180)],
                             [{"notebook": "04_knowledge_distillation.ipynb", "seconds": 75, "status": "ok"}],
                             {"04_knowledge_distillation": 90})
    assert block.startswith(benchmark.START) and block.endswith(benchmark.END)
    assert "| `make test` | 650 | ok | **not met**: 50 s over 600 s |" in block
    assert "| `make run` | 170 | ok | met (under 180 s) |" in block
    assert "| 04_knowledge_distillation | 75 | ok | 90 | **not met**: 15 s over 60 s |" in block
