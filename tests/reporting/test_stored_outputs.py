"""Stored outputs read cleanly on GitHub and Colab: no machine paths, no colour codes, no frozen progress bars."""

from __future__ import annotations

import logging

import nbformat
import pytest
from nb_builders import code, markdown, notebook

from course_utils.course.release import read_notebook, solution_notebooks
from course_utils.course.runner import run_notebooks
from course_utils.ground import paths
from course_utils.reporting import stored_outputs

SOLUTIONS = solution_notebooks(paths.solutions_dir())
BAR = {"model_id": "box", "version_major": 2, "version_minor": 0}


def _widget_state(left: str, done: float, total: float, right: str) -> dict:
    """Widget state as nbclient saves it for one tqdm notebook bar (an HBox of HTML, progress, HTML)."""
    return {
        "box": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_l", "IPY_MODEL_p", "IPY_MODEL_r"]}},
        "l": {"model_name": "HTMLModel", "state": {"value": left}},
        "p": {"model_name": "FloatProgressModel", "state": {"value": done, "max": total}},
        "r": {"model_name": "HTMLModel", "state": {"value": right}},
    }


def _with_bar(state: dict | None, initial_text: str = "training:   0%|          | 0/80 [00:00<?, ?step/s]"):
    nb = notebook([markdown("# 01 · Bars"), code("train()")])
    nb.cells[1].outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="before\n"),
        nbformat.v4.new_output("display_data", data={"text/plain": initial_text, stored_outputs.WIDGET_VIEW: BAR}),
    ]
    if state is not None:
        nb.metadata["widgets"] = {stored_outputs.WIDGET_STATE: {"state": state}}
    return nb


def test_a_settled_bar_keeps_its_final_line_as_plain_text():
    state = _widget_state("training:\u2007100%", 80, 80, "\u200780/80\u2007[00:13&lt;00:00,\u20073.52step/s]")
    nb = _with_bar(state)
    assert stored_outputs.output_problems(nb) == [
        "cell 1: a progress bar stored as a widget, frozen at 'training:   0%|          | 0/80 [00:00<?, ?step/s]'"]
    assert stored_outputs.settle_progress_bars(nb) == 1
    before, bar = nb.cells[1].outputs
    assert before["text"] == "before\n"
    assert bar["data"] == {"text/plain": "training: 100%|██████████| 80/80 [00:13<00:00, 3.52step/s]"}
    assert stored_outputs.output_problems(nb) == []


def test_an_interrupted_bar_shows_how_far_it_got_and_a_bar_without_total_its_count():
    half = _widget_state("training:\u200750%", 40, 80, "\u200740/80\u2007[00:06&lt;00:06]")
    assert stored_outputs.final_progress_line(half, "box") == "training: 50%|█████     | 40/80 [00:06<00:06]"
    counted = _widget_state("reading:\u2007", 1, 1, "\u2007600\u2007[00:01,\u2007500it/s]")
    assert stored_outputs.final_progress_line(counted, "box") == "reading:  600 [00:01, 500it/s]"


def test_a_bar_without_saved_state_is_dropped_and_other_widgets_stay():
    nb = _with_bar(None)
    assert stored_outputs.settle_progress_bars(nb) == 1
    assert [o["output_type"] for o in nb.cells[1].outputs] == ["stream"]
    slider = _with_bar({"box": {"model_name": "IntSliderModel", "state": {"value": 3}}}, "IntSlider(value=3)")
    assert stored_outputs.settle_progress_bars(slider) == 0
    assert len(slider.cells[1].outputs) == 2 and stored_outputs.output_problems(slider) == []


def test_machine_paths_and_colour_codes_are_found_and_workbook_paths_read_relative():
    nb = notebook([code("x")])
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stderr", text=(
        "\x1b[1mREPORT\x1b[0m from: /home/ana/llm-workbook/data/models/tiny-llama\n"
        "see https://huggingface.co/docs/work/tmp/x and data/models/tiny-llama\n"))]
    assert stored_outputs.output_problems(nb) == [
        "cell 0: terminal colour codes in 'REPORT from: /home/ana/llm-workbook/data/models/tiny-llama\\ns'",
        "cell 0: machine path '/home/ana/llm-workbook/data/models/tiny-llama'"]
    inside = f"from: {paths.REPO_ROOT / 'data' / 'models'} and {paths.REPO_ROOT}"
    assert stored_outputs.repo_relative(inside) == "from: data/models and ."
    assert stored_outputs.strip_ansi("\x1b[1mbold\x1b[0m \x1b[31;1mred\x1b[0m") == "bold red"


def test_transformers_load_report_reaches_the_page_without_colour_codes_or_machine_paths():
    from transformers import AutoModel

    import course_utils  # noqa: F401 - importing the package installs the filter

    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("transformers.modeling_utils")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)  # the report is a warning (another test may have silenced transformers)
    try:  # the base model of a causal-LM checkpoint: the report lists lm_head.weight as unexpected
        AutoModel.from_pretrained(paths.data_dir() / "models" / "tiny-llama")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    report = next(message for message in records if "LOAD REPORT" in message)
    assert "LlamaModel LOAD REPORT from: data/models/tiny-llama" in report and "lm_head.weight" in report
    assert "\x1b" not in report and str(paths.REPO_ROOT) not in report


@pytest.mark.slow
def test_the_runner_stores_the_final_line_of_every_progress_bar(tmp_path):
    nb = notebook([markdown("# 01 · Bars"), code('PROFILE = "auto"', tags=("parameters",)),
                   code("from tqdm.auto import tqdm\nfor _ in tqdm(range(7), desc='counting'):\n    pass")])
    nbformat.write(nb, tmp_path / "01_bars.ipynb")
    (result,) = run_notebooks([tmp_path / "01_bars.ipynb"], build_dir=tmp_path / "build", verbose=False)
    executed = read_notebook(tmp_path / "build" / "executed" / "01_bars.ipynb")
    assert result.ok and stored_outputs.output_problems(executed) == []
    (bar,) = executed.cells[-1].outputs
    assert bar["data"]["text/plain"].startswith("counting: 100%|██████████| 7/7 [")


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.name for p in SOLUTIONS])
def test_stored_outputs_of_the_solution_notebooks_are_clean(path):
    problems = stored_outputs.output_problems(read_notebook(path))
    assert not problems, (f"{path.name}: re-execute it with `python -m course_utils run --only {path.name[:2]} "
                          "--update-solutions`, or fix the cell:\n" + "\n".join(problems))


def test_a_table_renders_as_markdown_in_a_notebook_and_prints_as_plain_text():
    from IPython.core.formatters import DisplayFormatter

    from course_utils.reporting.tables import markdown_table

    table = markdown_table(["model", "parameters"], [["tiny", 942720]])
    data, _ = DisplayFormatter().format(table)
    assert data == {"text/plain": str(table), "text/markdown": str(table)}  # nbval compares the plain form
    assert str(table).splitlines()[2] == "| tiny  |    942,720 |"


def test_what_changes_on_every_run_or_cannot_be_shown_is_found():
    nb = notebook([code("x")])
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text=(
        "sample: 'loreen\x07 apple\ufffd'\nrunning in process (pid 10945)\nweight at 0x7f55fb127fa8\n"
        "files go to build/work/05_lora_and_qlora/run_sgugdryd\n"
        "Failed to load CPU gemm_4bit_forward. Please make sure you already `pip install kernels`\n")),
        nbformat.v4.new_output("display_data", data={"text/plain": stored_outputs.HTML_FALLBACK,
                                                     "text/html": "<table><tr><td>1</td></tr></table>"})]
    problems = "\n".join(stored_outputs.output_problems(nb))
    for kind in ("control character '\\x07'", "replacement character", "process id 'pid 10945'",
                 "memory address '0x7f55fb127fa8'", "random folder name 'run_sgugdryd'", "'pip install kernels'",
                 "an HTML display stored as '<IPython.core.display.HTML object>'"):
        assert kind in problems
    clean = notebook([code("x")])
    clean.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text=(
        "files go to build/work/05_lora_and_qlora/<run>; lora_adapter, checkpoint-8, tiny-llama-student\n"
        "same address (data_ptr): True; 16,777,216 parameters\n"))]
    assert stored_outputs.output_problems(clean) == []


def test_model_text_is_made_readable_and_the_trainer_table_gets_its_text():
    assert stored_outputs.readable("a\x07b\ufffdc\x0cd\te\n") == "a\u2407b\u25a1c\u240cd\te\n"
    trainer_html = ("<div><progress value='150' max='150'></progress>\n [150/150 00:16, Epoch 3/4]\n</div>"
                    "<table><thead><tr><th>Step</th><th>Training Loss</th></tr></thead>"
                    "<tbody><tr><td>15</td><td>7.844548</td></tr></tbody></table><p>")
    evaluation_html = "<div><progress value='1' max='1'></progress>\n [1/1 : < :]\n</div>"
    nb = notebook([code("trainer.train()")])
    nb.cells[0].outputs = [nbformat.v4.new_output("display_data", data={"text/plain": stored_outputs.HTML_FALLBACK,
                                                                         "text/html": markup})
                           for markup in (trainer_html, evaluation_html)]
    assert stored_outputs.trainer_tables_as_text(nb) == 2
    texts = [output["data"]["text/plain"] for output in nb.cells[0].outputs]
    assert texts == ["[150/150 00:16, Epoch 3/4]\n| Step | Training Loss |\n| 15 | 7.844548 |", "[1/1]"]
    assert stored_outputs.output_problems(nb) == []


@pytest.mark.slow
def test_the_workbooks_own_bars_settle_to_one_line_each(tmp_path):
    """benchmark_reads' bar, and a bar that prints a line per step as run_seeds does: one settled line each."""
    weights = tmp_path / "w.safetensors"
    make = (f"import torch\nfrom safetensors.torch import save_file\nsave_file({{'w': torch.zeros(4, 4)}}, {str(weights)!r})\n"
            f"from course_utils.storage import safetensors_io\nrows = safetensors_io.benchmark_reads({str(weights)!r}, 2)")
    writes = ("from tqdm.auto import tqdm\nwith tqdm(total=3, desc='seed repeats', unit='run') as bar:\n"
              "    for i in range(3):\n        bar.write(f'run {i} done')\n        bar.update()")
    nb = notebook([markdown("# 01 · Bars"), code('PROFILE = "auto"', tags=("parameters",)), code(make), code(writes)])
    nbformat.write(nb, tmp_path / "01_bars.ipynb")
    (result,) = run_notebooks([tmp_path / "01_bars.ipynb"], build_dir=tmp_path / "build", verbose=False)
    executed = read_notebook(tmp_path / "build" / "executed" / "01_bars.ipynb")
    assert result.ok and stored_outputs.output_problems(executed) == []
    timing, writing = executed.cells[-2], executed.cells[-1]  # (papermill inserts its parameters cell above)
    bars = [out["data"]["text/plain"] for out in timing.outputs if out.get("output_type") == "display_data"]
    assert len(bars) == 1 and bars[0].startswith("timing reads of w.safetensors: 100%|██████████| 5/5 [")
    outputs = writing.outputs
    settled = [out for out in outputs if out.get("output_type") == "display_data"]
    assert len(settled) == 1 and settled[0]["data"]["text/plain"].startswith("seed repeats: 100%|██████████| 3/3 [")
    assert "".join(out.get("text", "") for out in outputs if out.get("output_type") == "stream") == (
        "run 0 done\nrun 1 done\nrun 2 done\n")
