"""What a notebook's stored outputs may hold, and the clean-up that makes them so.

Stored outputs are what a reader sees on GitHub, nbviewer or Colab before running anything. Three things read as
noise there: absolute paths of the machine that ran the notebook, terminal colour codes (``ESC[1m``), and
progress bars. A tqdm bar in a notebook is a widget: its live state is not part of the output, whose text
fallback was written when the bar started, so every stored bar reads "0%". :func:`settle_progress_bars` replaces
each one by the final line it showed, read from the widget state that nbclient (papermill) saves in the executed
notebook; :func:`output_problems` finds what is left. No imports beyond the standard library: ``course_utils``
imports this module when it starts (the log filter), and that must stay light.
"""

from __future__ import annotations

import html
import logging
import re
from typing import Any

from course_utils.ground import paths

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# An absolute path of the machine: a Unix home, temporary or mount folder, or a Windows drive.
MACHINE_PATH = re.compile(
    r"(?<![\w.~-])(?:/(?:tmp|home|Users|root|work|var|private|content|opt|mnt|srv|scratch|usr)/[^\s'\"]*"
    r"|[A-Za-z]:\\[^\s'\"]*)"
)
# tqdm's meter, e.g. "| 0/80 [00:00<?, ?step/s]" or "0 examples [00:00, ? examples/s]".
PROGRESS_METER = re.compile(r"\[\d+:\d\d(?::\d\d)?(?:<[^\]]*)?(?:,[^\]]*)?\]")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
BAR_WIDTH = 10


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour and cursor codes."""
    return ANSI_ESCAPE.sub("", text)


def repo_relative(text: str) -> str:
    """``text`` with the workbook's absolute location removed, so that its paths read relative to the workbook."""
    root = str(paths.REPO_ROOT)
    return text.replace(root + "/", "").replace(root, ".")


class NotebookReadableLog(logging.Filter):
    """Rewrites a log record for a notebook page: no colour codes, paths relative to the workbook.

    transformers' load report (``LOAD REPORT from: <path>``) writes bold codes even when its output is not a
    terminal, and names the checkpoint by its absolute path; the report itself is worth reading, so it stays.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = repo_relative(strip_ansi(message))
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


# The loggers that call transformers' load report (modeling_utils for from_pretrained, the PEFT integration for
# load_adapter, modeling_layers for multi-token-prediction heads).
LOAD_REPORT_LOGGERS = ("transformers.modeling_utils", "transformers.integrations.peft", "transformers.modeling_layers")


def install_log_filter() -> None:
    """Attach :class:`NotebookReadableLog` to the loggers of transformers' load report (once)."""
    for name in LOAD_REPORT_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, NotebookReadableLog) for f in logger.filters):
            logger.addFilter(NotebookReadableLog())


# ---------------------------------------------------------------------------------------------------------------
# Progress bars


def _widget_text(value: str) -> str:
    # tqdm.notebook writes its text as HTML, with figure spaces (U+2007) for alignment.
    return html.unescape(value).replace("\u2007", " ")


def final_progress_line(state: dict[str, Any], model_id: str) -> str | None:
    """The last line a tqdm notebook bar showed, rebuilt from saved widget state; None if it is not such a bar.

    A tqdm bar is an HBox of three widgets: the description and percentage, the bar, the counts and rates.
    """
    box = state.get(model_id, {})
    children = box.get("state", {}).get("children", []) if box.get("model_name") == "HBoxModel" else []
    models = [state.get(str(child).removeprefix("IPY_MODEL_"), {}) for child in children]
    names = [m.get("model_name") for m in models]
    if len(models) != 3 or names[0] != "HTMLModel" or names[2] != "HTMLModel" or "Progress" not in str(names[1]):
        return None
    left, right = (_widget_text(str(m.get("state", {}).get("value", ""))) for m in (models[0], models[2]))
    bar = models[1].get("state", {})
    total, done = float(bar.get("max") or 0), float(bar.get("value") or 0)
    if left.rstrip().endswith("%") and total > 0:  # a known total: draw the bar as tqdm does in a terminal
        filled = min(BAR_WIDTH, round(BAR_WIDTH * done / total))
        return f"{left}|{'█' * filled}{' ' * (BAR_WIDTH - filled)}|{right}"
    return f"{left}{right}".strip()


def settle_progress_bars(nb: Any) -> int:
    """Replace every tqdm widget output of ``nb`` by a plain-text output of its final line; returns how many.

    Reads the widget state that nbclient stores in ``nb.metadata.widgets``. A bar without saved state is dropped
    when its text is a progress meter (it would read "0%" forever); other widgets (sliders, ``interact``) stay.
    """
    state = nb.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    replaced = 0
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        outputs = []
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(WIDGET_VIEW)
            if view is None:
                outputs.append(output)
                continue
            line = final_progress_line(state, view.get("model_id", ""))
            if line is None and is_frozen_progress_bar(output):
                replaced += 1
                continue
            if line is None:
                outputs.append(output)
                continue
            outputs.append(type(output)({"output_type": "display_data", "metadata": {},
                                         "data": {"text/plain": line}}))
            replaced += 1
        cell["outputs"] = outputs
    return replaced


def is_frozen_progress_bar(output: dict[str, Any]) -> bool:
    """The output is a progress-bar widget, whose stored text shows only how it started."""
    data = output.get("data", {})
    return WIDGET_VIEW in data and bool(PROGRESS_METER.search(_as_text(data.get("text/plain", ""))))


# ---------------------------------------------------------------------------------------------------------------
# Finding what is left


def _as_text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _output_texts(output: dict[str, Any]) -> list[str]:
    texts = [_as_text(output.get("text", ""))]
    texts += [_as_text(v) for k, v in output.get("data", {}).items() if not k.startswith("image/")]
    texts += [_as_text(line) for line in output.get("traceback", [])]
    return texts


def output_problems(nb: Any) -> list[str]:
    """Every machine path, terminal code and frozen progress bar in the stored outputs of ``nb``, one line each."""
    problems = []
    for index, cell in enumerate(nb.get("cells", [])):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            if is_frozen_progress_bar(output):
                text = _as_text(output["data"]["text/plain"])
                problems.append(f"cell {index}: a progress bar stored as a widget, frozen at {text[:60]!r}")
            for text in _output_texts(output):
                if ANSI_ESCAPE.search(text):
                    problems.append(f"cell {index}: terminal colour codes in {strip_ansi(text)[:60]!r}")
                problems += [f"cell {index}: machine path {m.group(0)[:80]!r}" for m in MACHINE_PATH.finditer(text)]
    return problems
