"""The README's notebook table: rendered from make run's summary and the GPU results, never typed."""

from __future__ import annotations

import re

from course_utils.course import readme_notebooks
from course_utils.course.release import solution_notebooks
from course_utils.ground import paths

NOTEBOOKS = solution_notebooks()
SUMMARY = {"machine": {"cpus": 2, "python": "3.11.7", "torch": "2.13.0+cpu", "platform": "Linux"},
           "results": [{"notebook": NOTEBOOKS[0].name, "status": "ok", "seconds": 12.4},
                       {"notebook": NOTEBOOKS[1].name, "status": "failed", "seconds": 3.0}]}


def _row(table: str, name: str) -> list[str]:
    line = next(line for line in table.splitlines() if f"(notebooks/{name})" in line.split(" | ")[1])
    return [cell.strip() for cell in line.strip("|").split(" | ")]


def test_each_row_has_its_badge_its_needs_and_the_measured_times():
    table = readme_notebooks.render(SUMMARY, None, NOTEBOOKS)
    first, second, third = (_row(table, nb.name) for nb in NOTEBOOKS[:3])
    assert first[2] == (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
                        f"(https://colab.research.google.com/github/llm-workbook/llm-workbook/blob/main/notebooks/"
                        f"{NOTEBOOKS[0].name})")  # students open notebooks/, not solutions/
    assert first[4:] == ["12 s", readme_notebooks.NOT_MEASURED]
    assert second[4] == "failed (no time)" and third[4] == "not run yet"
    assert "(notebooks/00_your_machine.ipynb)" in second[3]  # its Builds on line, linked from the README
    assert "2 CPUs, Python 3.11.7, torch 2.13.0+cpu" in table and "No GPU run exists yet" in table


def test_a_gpu_run_fills_the_gpu_column_where_it_measured():
    gpu = {"mode": "gpu", "environment": {"gpu": "Tesla T4"},
           "notebooks": [{"notebook": NOTEBOOKS[0].name, "status": "ok", "seconds": 61.0},
                         {"notebook": NOTEBOOKS[1].name, "status": "failed at cell 3: boom"}]}
    table = readme_notebooks.render(SUMMARY, gpu, NOTEBOOKS)
    assert _row(table, NOTEBOOKS[0].name)[5] == "61 s on Tesla T4 (`make gpu-check`'s parameters)"
    assert _row(table, NOTEBOOKS[1].name)[5] == readme_notebooks.NOT_MEASURED
    smoke = {**gpu, "mode": "smoke"}  # a CPU smoke run measures no GPU
    assert _row(readme_notebooks.render(SUMMARY, smoke, NOTEBOOKS), NOTEBOOKS[0].name)[5] == readme_notebooks.NOT_MEASURED


def test_update_readme_replaces_only_the_text_between_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{readme_notebooks.START}\nold\n{readme_notebooks.END}\nafter\n", encoding="utf-8")
    assert readme_notebooks.update_readme(readme, SUMMARY, {}, NOTEBOOKS)
    text = readme.read_text(encoding="utf-8")
    assert text.startswith(f"before\n{readme_notebooks.START}\n|") and text.endswith(f"{readme_notebooks.END}\nafter\n")
    assert not readme_notebooks.update_readme(readme, SUMMARY, {}, NOTEBOOKS)  # rendering twice changes nothing


def test_the_readme_holds_a_rendered_row_per_notebook():
    section = readme_notebooks.readme_section(paths.REPO_ROOT / "README.md")
    for notebook in NOTEBOOKS:
        row = _row(section, notebook.name)
        assert f"/notebooks/{notebook.name})" in row[2]
        assert re.fullmatch(r"\d+ s|not run yet|\w+ \(no time\)", row[4]), row[4]
        assert row[5] == readme_notebooks.NOT_MEASURED or " on " in row[5]


def test_the_troubleshooting_section_has_every_anchor_the_report_points_to():
    from course_utils.course import env

    text = (paths.REPO_ROOT / "README.md").read_text(encoding="utf-8")
    anchors = {re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
               for heading in re.findall(r"^#{2,3} (.+)$", text, flags=re.M)}
    for topic in ("troubleshooting", env.INSTALL_TOPIC, "working-offline", "out-of-memory-on-a-t4",
                  "bitsandbytes-and-cuda", "apple-silicon-mps"):
        assert topic in anchors, topic
    line = str(env.Requirement("peft >= 0.17", "FAIL", "not installed", "pip install peft", env.INSTALL_TOPIC))
    assert line.endswith(f"more: https://github.com/llm-workbook/llm-workbook/blob/main/README.md#{env.INSTALL_TOPIC}")
