"""What a notebook's stored outputs may hold, and the clean-up that makes them so.

Stored outputs are what a reader sees on GitHub, nbviewer or Colab before running anything. Noise there: absolute
paths of the machine that ran the notebook, terminal colour codes (``ESC[1m``), control characters and the
replacement character that decoded model text can hold, process ids, memory addresses and random folder names
(different on every run), the Trainer's tables stored as ``<IPython.core.display.HTML object>`` for every reader
that shows plain text, library hints that ask for a package the lesson does not use, and progress bars. A tqdm bar in a notebook is a widget: its live state is not part of the output, whose text
fallback was written when the bar started, so every stored bar reads "0%". :func:`settle_progress_bars` replaces
each one by the final line it showed, read from the widget state that nbclient (papermill) saves in the executed
notebook; :func:`output_problems` finds what is left. No imports beyond the standard library: ``course_utils``
imports this module when it starts (the log filter), and that must stay light.
"""

from __future__ import annotations

import html
import logging
import re
from html.parser import HTMLParser
from typing import Any

from course_utils.ground import paths

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# An absolute path of the machine: a Unix home, temporary or mount folder, or a Windows drive.
MACHINE_PATH = re.compile(
    r"(?<![\w.~-])(?:/(?:tmp|home|Users|root|work|var|private|content|opt|mnt|srv|scratch|usr)/[^\s'\"]*"
    r"|[A-Za-z]:\\[^\s'\"]*)"
)
# Control characters other than tab, newline and carriage return (colour codes are found on their own).
CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f]")
REPLACEMENT_CHARACTER = "\ufffd"
MEMORY_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{8,}\b")
PROCESS_ID = re.compile(r"\b(?:pid|process id)\b\s*[:=]?\s*\d+", re.IGNORECASE)
# A folder named by tempfile.mkdtemp: its default prefix "tmp" or the workbook's "run_", then 8 random characters.
RANDOM_FOLDER = re.compile(r"(?<![^/\\\s'\"])(?:tmp|run_)[a-z0-9_]{8}(?=$|[/\\\s'\"])")
HTML_FALLBACK = "<IPython.core.display.HTML object>"
# bitsandbytes on an AVX-512 BF16 CPU, when imported before course_utils could filter it (course_utils/__init__.py).
LIBRARY_HINTS = ("pip install kernels",)
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
# Model text and the Trainer's tables


def readable(text: str) -> str:
    """``text`` as a page can show it: control characters as their Unicode pictures (BEL as ␇), and each
    replacement character, which a tokenizer writes for bytes that are not a whole character, as ``□``.

    An untrained model samples byte tokens at random, so its text holds both; printed raw, a bell rings in the
    terminal and the page stores an invisible character.
    """
    text = CONTROL_CHARACTER.sub(lambda m: chr(0x2400 + ord(m.group(0)) if m.group(0) != "\x7f" else 0x2421), text)
    return text.replace(REPLACEMENT_CHARACTER, "\u25a1")


class _HtmlText(HTMLParser):
    """The text of the Trainer's HTML display: the progress line, then each table as markdown rows."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self._text: list[str] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.lines.append("| " + " | ".join(self._row) + " |")
            self._row = None
        elif tag == "div":
            line = " ".join("".join(self._text).split())
            # transformers' evaluation bar has no times: "[1/1 : < :]"
            line = re.sub(r"\s*:\s*<\s*:\s*(?=\])", "", line)
            if line:
                self.lines.append(line)
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        elif self._row is None:
            self._text.append(data)


def html_as_text(markup: str) -> str:
    """Plain text for an HTML display of progress lines and tables (what transformers' notebook callback shows)."""
    parser = _HtmlText()
    parser.feed(markup)
    parser.close()
    return "\n".join(parser.lines)


def trainer_tables_as_text(nb: Any) -> int:
    """Give every HTML display stored as ``<IPython.core.display.HTML object>`` its text as ``text/plain``.

    transformers' ``NotebookProgressCallback`` displays the Trainer's progress and loss table as HTML only, so a
    reader that shows plain text (a terminal, nbval, a diff, the HTML's fallback) sees the object's name instead of
    the losses. Returns how many displays were given their text.
    """
    changed = 0
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            data = output.get("data", {})
            if _as_text(data.get("text/plain", "")) == HTML_FALLBACK and "text/html" in data:
                text = html_as_text(_as_text(data["text/html"]))
                if text:
                    data["text/plain"] = text
                    changed += 1
    return changed


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
    """Everything of the module's list found in the stored outputs of ``nb``, one line each."""
    problems = []
    for index, cell in enumerate(nb.get("cells", [])):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            if is_frozen_progress_bar(output):
                text = _as_text(output["data"]["text/plain"])
                problems.append(f"cell {index}: a progress bar stored as a widget, frozen at {text[:60]!r}")
            if _as_text(output.get("data", {}).get("text/plain", "")) == HTML_FALLBACK:
                problems.append(f"cell {index}: an HTML display stored as {HTML_FALLBACK!r} for plain-text readers "
                                "(the runner writes its text: trainer_tables_as_text)")
            for text in _output_texts(output):
                problems += [f"cell {index}: {problem}" for problem in text_problems(text)]
    return problems


def text_problems(text: str) -> list[str]:
    """What in one output text a reader should not see (see the module's list)."""
    problems = []
    if ANSI_ESCAPE.search(text):
        problems.append(f"terminal colour codes in {strip_ansi(text)[:60]!r}")
    text = strip_ansi(text)
    for match in CONTROL_CHARACTER.finditer(text):
        problems.append(f"control character {match.group(0)!r} in {_around(text, match.start())!r} "
                        "(show model text through stored_outputs.readable)")
    if REPLACEMENT_CHARACTER in text:
        problems.append(f"replacement character in {_around(text, text.index(REPLACEMENT_CHARACTER))!r} "
                        "(show model text through stored_outputs.readable)")
    problems += [f"memory address {m.group(0)!r}: it changes on every run" for m in MEMORY_ADDRESS.finditer(text)]
    problems += [f"process id {m.group(0)!r}: it changes on every run" for m in PROCESS_ID.finditer(text)]
    problems += [f"machine path {m.group(0)[:80]!r}" for m in MACHINE_PATH.finditer(text)]
    problems += [f"random folder name {m.group(0)!r}: print the folder it is in" for m in RANDOM_FOLDER.finditer(text)]
    problems += [f"a library's hint {hint!r} in {_around(text, text.index(hint))!r}: keep it out of the lesson"
                 for hint in LIBRARY_HINTS if hint in text]
    return problems


def _around(text: str, at: int, width: int = 30) -> str:
    return text[max(0, at - width): at + width]
