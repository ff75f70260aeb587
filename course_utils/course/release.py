"""Build the student notebooks in ``notebooks/`` from the instructor notebooks in ``solutions/``.

The markers follow nbgrader's conventions (see ``solutions/README.md``): ``### BEGIN SOLUTION`` ...
``### END SOLUTION`` becomes ``# YOUR CODE HERE`` + ``raise NotImplementedError()``, ``### BEGIN HIDDEN TESTS`` ...
``### END HIDDEN TESTS`` disappears, outputs and Colab metadata are cleared and the Colab badge moves from
``/solutions/`` to ``/notebooks/``. The result is byte-for-byte deterministic, so CI can regenerate and compare.
"""

from __future__ import annotations

import ast
import copy
import re
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode

from course_utils.course import colab_runtime, project
from course_utils.ground import paths
from course_utils.reporting.claims import claim_problems

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
BEGIN_HIDDEN = "### BEGIN HIDDEN TESTS"
END_HIDDEN = "### END HIDDEN TESTS"
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
ANSWER_STUB = "YOUR ANSWER HERE"
RAISES_TAG = "raises-exception"  # Jupyter's tag for a cell allowed to fail

NOTEBOOK_NAME = re.compile(r"^(?P<number>\d{2})_[a-z0-9][a-z0-9_]*\.ipynb$")
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
COLAB_BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
# A line that looks like a marker but is not exactly one: a typo here would leak a solution, so it is an error.
_NEAR_MARKER = re.compile(r"^\s*#+\s*(BEGIN|END)\s+(SOLUTION|HIDDEN\s+TESTS?)\b", re.IGNORECASE)
_COLAB_SOLUTIONS_LINK = re.compile(r"(https://colab\.research\.google\.com/github/[^\s)\"'<>]*?)/solutions/")
_HF_TOKEN = re.compile(r"hf_[A-Za-z0-9]{30,}")
# nbval's comment markers (# NBVAL_CHECK_OUTPUT, # NBVAL_SKIP, ...) tell the test run what to compare; to a student
# they mean nothing, so the release drops them.
_NBVAL_MARKER = re.compile(r"^[ \t]*#[ \t]*NBVAL_[A-Z_]+[ \t]*$")
_EXTRAS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# Metadata that only describes one run or one editor (Colab, papermill, Jupyter timings): never released.
_NOTEBOOK_METADATA_DROPPED = ("colab", "accelerator", "gpuClass", "widgets", "papermill", "execution")
_CELL_METADATA_DROPPED = (
    "colab",
    "executionInfo",
    "outputId",
    "id",
    "papermill",
    "execution",
    "ExecuteTime",
    "scrolled",
    "collapsed",
)


class MarkerError(ValueError):
    """Solution or hidden-test markers in a cell are unbalanced, nested or misspelled."""


class ReleaseError(RuntimeError):
    """A solution notebook breaks the authoring conventions, so no student version is written."""


# ---------------------------------------------------------------------------------------------------------------
# Repository settings and the setup cell


def repo_settings(pyproject: Path | None = None) -> dict[str, str]:
    """The ``[tool.course_utils]`` table of ``pyproject.toml`` (``github_repo``, ``branch``)."""
    table = project.tool_settings(pyproject)
    settings = {"github_repo": table.get("github_repo", ""), "branch": table.get("branch", "main")}
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", settings["github_repo"]):
        raise ValueError(
            f'{pyproject or project.PYPROJECT}: set [tool.course_utils] github_repo = "owner/name" '
            f'(got {settings["github_repo"]!r}).'
        )
    return settings


_SETUP_TEMPLATE = """\
# Setup: on Google Colab, fetch the workbook and install its helper package, keeping Colab's kernel and torch.
# Anywhere else (your machine, JupyterHub, CI) this cell does nothing.
import os
import subprocess
import sys

if "google.colab" in sys.modules:
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    WORKBOOK_DIR = "/content/llm-workbook"
    WORKBOOK_GIT = "https://github.com/{repo}.git"
    WORKBOOK_BRANCH = "{branch}"
    WORKBOOK_EXTRAS = "{extras}"
    if not os.path.isdir(WORKBOOK_DIR):
        clone = ["git", "clone", "--depth", "1", "--branch", WORKBOOK_BRANCH, WORKBOOK_GIT, WORKBOOK_DIR]
        subprocess.run(clone, check=True)

    def installed(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    # Pin the running kernel's packages and Colab's torch family: replacing them under a live kernel breaks it.
    keep = [f"{{name}}=={{installed(name)}}" for name in (
        {keep}) if installed(name)]
    with open("/tmp/keep_colab.txt", "w") as pins:
        pins.write("\\n".join(keep) + "\\n")
    tested = WORKBOOK_DIR + "/constraints/colab.txt"  # the versions tested on Colab's published runtime
    if "gpu" in WORKBOOK_EXTRAS:
        from packaging.specifiers import SpecifierSet

        with open(WORKBOOK_DIR + "/constraints/colab-gpu.txt") as gpu_pins:
            unsloth_torch = next(line.split(":", 1)[1].strip() for line in gpu_pins
                                 if line.startswith("# unsloth torch:"))
        colab_torch = (installed("torch") or "0").split("+")[0]
        if colab_torch in SpecifierSet(unsloth_torch):
            tested = WORKBOOK_DIR + "/constraints/colab-gpu.txt"
        else:
            print(f"Colab's torch {{colab_torch}} is outside Unsloth's range (torch{{unsloth_torch}}): installing without "
                  "Unsloth, so this notebook takes its PEFT path.")
            WORKBOOK_EXTRAS = ""
    # What this session has already imported: if the install changes one of them, only a restart loads it.
    loaded = {{dist: installed(dist) for module, dists in packages_distributions().items()
              if module in sys.modules for dist in dists}}
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-c", "/tmp/keep_colab.txt", "-c", tested,
                    "-e", WORKBOOK_DIR + WORKBOOK_EXTRAS], check=True)
    changed = [f"{{dist}} {{old}} -> {{installed(dist)}}" for dist, old in loaded.items() if installed(dist) != old]
    if changed and not os.path.exists("/tmp/llm-workbook-restarted"):
        open("/tmp/llm-workbook-restarted", "w").close()  # restart once: after it the install changes nothing
        print(f"The install upgraded {{', '.join(changed)}}, already imported by this session: restarting the "
              "runtime once. When it is back, run this cell again.")
        from IPython import get_ipython

        get_ipython().kernel.do_shutdown(restart=True)  # Colab reconnects to the restarted runtime
    elif changed:
        print(f"Still changed after the restart: {{', '.join(changed)}}. If a cell fails, Runtime > Restart session.")
    if WORKBOOK_DIR not in sys.path:
        sys.path.insert(0, WORKBOOK_DIR)
    os.chdir(WORKBOOK_DIR)"""

# The names the setup cell pins to the installed versions: the kernel's own stack and Colab's torch family.
SETUP_KEEP = colab_runtime.KERNEL + colab_runtime.TORCH

# What Colab reads to open a notebook on a GPU runtime (Runtime > Change runtime type writes the same keys).
COLAB_GPU_METADATA = {"accelerator": "GPU", "colab": {"gpuType": "T4", "provenance": []}}


def setup_cell_source(extras: tuple[str, ...] = ()) -> str:
    """The canonical setup cell: on Colab it clones and installs the workbook, keeping Colab's kernel and torch."""
    for extra in extras:
        if not _EXTRAS_NAME.match(extra):
            raise ValueError(
                f"Invalid extra {extra!r}: use the name of an [project.optional-dependencies] group."
            )
    settings = repo_settings()
    extras_text = f"[{','.join(extras)}]" if extras else ""
    keep = textwrap.fill(", ".join(f'"{name}"' for name in SETUP_KEEP), 100, subsequent_indent=" " * 8)
    return _SETUP_TEMPLATE.format(repo=settings["github_repo"], branch=settings["branch"], extras=extras_text,
                                  keep=keep)


def _setup_extras(source: str) -> tuple[str, ...]:
    """The extras a setup cell installs (``WORKBOOK_EXTRAS = "[gpu]"``), to compare it with the canonical one."""
    match = re.search(r'WORKBOOK_EXTRAS = "\[([^\]]*)\]"', source)
    return tuple(match.group(1).split(",")) if match else ()


def badge_url(notebook_name: str, folder: str = "solutions") -> str:
    """The Colab link of a notebook in this repository (``folder`` is ``solutions`` or ``notebooks``)."""
    settings = repo_settings()
    return (
        f"https://colab.research.google.com/github/{settings['github_repo']}/blob/{settings['branch']}"
        f"/{folder}/{notebook_name}"
    )


# ---------------------------------------------------------------------------------------------------------------
# Markers


@dataclass(frozen=True)
class Region:
    """A marked region of a cell's source: lines ``begin``..``end`` (0-based, inclusive of both markers)."""

    kind: str  # "solution" or "hidden"
    begin: int
    end: int
    indent: str


_MARKERS = {
    BEGIN_SOLUTION: ("solution", True),
    END_SOLUTION: ("solution", False),
    BEGIN_HIDDEN: ("hidden", True),
    END_HIDDEN: ("hidden", False),
}
_MARKER_TEXT = {
    ("solution", True): BEGIN_SOLUTION,
    ("solution", False): END_SOLUTION,
    ("hidden", True): BEGIN_HIDDEN,
    ("hidden", False): END_HIDDEN,
}


def find_regions(source: str) -> list[Region]:
    """The marked regions of ``source``; raises MarkerError for unbalanced, nested or misspelled markers."""
    regions: list[Region] = []
    open_kind, open_line, open_indent = None, -1, ""
    for number, line in enumerate(source.split("\n")):
        marker = _MARKERS.get(line.strip())
        if marker is None:
            if _NEAR_MARKER.match(line):
                raise MarkerError(
                    f"line {number + 1}: {line.strip()!r} looks like a marker but is not one; write "
                    f"exactly {BEGIN_SOLUTION!r}, {END_SOLUTION!r}, {BEGIN_HIDDEN!r} or {END_HIDDEN!r}."
                )
            continue
        kind, is_begin = marker
        if is_begin:
            if open_kind is not None:
                raise MarkerError(
                    f"line {number + 1}: {line.strip()!r} inside the region opened on line "
                    f"{open_line + 1}; close it with {_MARKER_TEXT[(open_kind, False)]!r} first "
                    "(regions cannot be nested)."
                )
            open_kind, open_line, open_indent = kind, number, line[: len(line) - len(line.lstrip())]
        else:
            if open_kind != kind:
                raise MarkerError(
                    f"line {number + 1}: {line.strip()!r} without a matching "
                    f"{_MARKER_TEXT[(kind, True)]!r} before it; add or remove a marker."
                )
            regions.append(Region(kind, open_line, number, open_indent))
            open_kind = None
    if open_kind is not None:
        raise MarkerError(
            f"line {open_line + 1}: {_MARKER_TEXT[(open_kind, True)]!r} is never closed; add "
            f"{_MARKER_TEXT[(open_kind, False)]!r} after the region."
        )
    return regions


def student_source(source: str, cell_type: str = "code") -> str:
    """``source`` with solution regions replaced by the stub and hidden-test regions removed.

    nbgrader's own preprocessors do it (``ClearSolutions``, ``ClearHiddenTests``), so the student version is what
    ``nbgrader generate_assignment`` would write; ``tests/course/test_nbgrader.py`` checks the two agree.
    """
    if not find_regions(source):
        return source
    return _nbgrader_cleared(source, cell_type, solutions=True)


def _nbgrader_cleared(source: str, cell_type: str, *, solutions: bool) -> str:
    from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions

    cell = nbformat.v4.new_code_cell(source) if cell_type == "code" else nbformat.v4.new_markdown_cell(source)
    nb = nbformat.v4.new_notebook(cells=[cell])
    resources: dict[str, Any] = {}
    if solutions:  # the stubs are nbgrader's defaults, the same as CODE_STUB and ANSWER_STUB
        nb, resources = ClearSolutions(enforce_metadata=False).preprocess(nb, resources)
    nb, _ = ClearHiddenTests(enforce_metadata=False).preprocess(nb, resources)
    # nbgrader keeps the blank lines a region at the end of a cell leaves behind; a released cell ends with code.
    lines = nb.cells[0].source.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines)


def without_nbval_markers(source: str) -> str:
    """``source`` without nbval's marker comments (lines such as ``# NBVAL_CHECK_OUTPUT``)."""
    return "\n".join(line for line in source.split("\n") if not _NBVAL_MARKER.match(line))


def visible_source(source: str) -> str:
    """``source`` without its hidden-test regions (solution regions are left alone), by nbgrader's ClearHiddenTests."""
    if not any(region.kind == "hidden" for region in find_regions(source)):
        return source
    return _nbgrader_cleared(source, "code", solutions=False)


# ---------------------------------------------------------------------------------------------------------------
# Student notebooks


def nbgrader_meta(cell: NotebookNode) -> dict[str, Any]:
    """The cell's ``nbgrader`` metadata (empty when it has none)."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta if isinstance(meta, dict) else {}


def cell_tags(cell: NotebookNode) -> list[str]:
    """The cell's tags."""
    return list(cell.get("metadata", {}).get("tags", []))


def make_student_notebook(nb: NotebookNode) -> NotebookNode:
    """The student version of a solution notebook: stubs for solutions, no hidden tests, no outputs, no Colab state."""
    from nbgrader.preprocessors import ClearOutput

    student, _ = ClearOutput().preprocess(copy.deepcopy(nb), {})  # outputs and execution counts, as nbgrader clears them
    for key in _NOTEBOOK_METADATA_DROPPED:
        student.metadata.pop(key, None)
    student.metadata.update(copy.deepcopy(COLAB_GPU_METADATA))
    if isinstance(student.metadata.get("language_info"), dict):
        student.metadata["language_info"].pop("version", None)  # the author's Python version is noise
    for index, cell in enumerate(student.cells):
        try:
            cell.source = student_source(cell.source, cell.cell_type)
        except MarkerError as exc:
            raise MarkerError(f"cell {index} ({_cell_label(cell)}): {exc}") from None
        for key in _CELL_METADATA_DROPPED:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.source = without_nbval_markers(cell.source)
            meta = nbgrader_meta(cell)
            if meta.get("grade") and not meta.get("solution") and RAISES_TAG not in cell_tags(cell):
                # An unsolved exercise fails its check; with this tag "Run All", papermill and nbclient go on.
                cell.metadata["tags"] = [*cell_tags(cell), RAISES_TAG]
        if cell.cell_type == "markdown":
            cell.source = _COLAB_SOLUTIONS_LINK.sub(r"\1/notebooks/", cell.source)
    return student


def _cell_label(cell: NotebookNode) -> str:
    first = next((line.strip() for line in cell.source.split("\n") if line.strip()), "")
    return f"{cell.cell_type}, starts {first[:60]!r}"


def notebook_text(nb: NotebookNode) -> str:
    """The stable on-disk form of a notebook (nbformat's sorted keys, 1-space indent, trailing newline)."""
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


def write_notebook(nb: NotebookNode, path: Path) -> bool:
    """Write ``nb`` to ``path`` in the stable form; returns False (and writes nothing) when it is unchanged."""
    text = notebook_text(nb)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="\n")
    return True


def read_notebook(path: Path) -> NotebookNode:
    """Read a notebook as nbformat v4."""
    with open(path, encoding="utf-8") as handle:
        return nbformat.read(handle, as_version=4)


# ---------------------------------------------------------------------------------------------------------------
# Validation


def validate_solution_notebook(nb: NotebookNode, path: Path | str) -> list[str]:
    """Every way ``nb`` (read from ``path``) breaks the conventions of ``solutions/README.md``; empty when fine."""
    path = Path(path)
    problems: list[str] = []
    name_match = NOTEBOOK_NAME.match(path.name)
    if not name_match:
        problems.append(
            f"file name {path.name!r}: name it NN_short_name.ipynb (two digits, lower-case snake case)."
        )
    number = name_match.group("number") if name_match else None
    cells = nb.cells
    if len(cells) < 4:
        return problems + [
            f"only {len(cells)} cells: a notebook starts with title, setup, parameters and imports."
        ]
    problems += _check_title(cells[0], path.name, number)
    problems += _check_setup(cells[1])
    problems += _check_parameters(cells[2])
    problems += _check_imports(cells)
    problems += _check_ids(cells)
    problems += _check_markers(cells)
    problems += _check_exercises(cells, number)
    problems += _check_rubrics(cells)
    problems += _check_secrets(cells)
    problems += _check_colab_runtime(nb)
    problems += _check_modules_line(nb)
    problems += claim_problems(nb)
    problems += _check_builds_on(cells[0])
    # The notebooks beside it, when it is read from its folder (links point at those files).
    siblings = sorted(item.name for item in path.parent.glob(NOTEBOOK_GLOB)) if path.is_file() else []
    problems += _check_cross_references(cells, siblings)
    problems += _check_next_link(cells, path.name, siblings)
    return problems


# ---------------------------------------------------------------------------------------------------------------
# Links between the notebooks: relative to the sibling file, which works on GitHub and in Jupyter alike, and in
# notebooks/ as in solutions/ (the release copies the markdown as it is).

BUILDS_ON_PREFIX = "Builds on: "  # the title cell's line saying what a notebook needs from the ones before
NEXT_PREFIX = "**Next:** "
_MENTION = re.compile(r"\b[Nn]otebook (\d{2})\b")
_LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]*)\)")
_CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)


def sibling_for(number: str, siblings: Iterable[str]) -> str | None:
    """The file name of notebook ``number`` (``"05"``) among ``siblings``, or None."""
    return next((name for name in siblings if name.startswith(f"{number}_")), None)


def _check_builds_on(cell: NotebookNode) -> list[str]:
    if not any(line.startswith(BUILDS_ON_PREFIX) for line in cell.source.split("\n")):
        return [f"cell 0: say what this notebook needs from the ones before in a line '{BUILDS_ON_PREFIX}...' "
                "(links to the notebooks, or 'nothing')."]
    return []


def _check_cross_references(cells: list[NotebookNode], siblings: list[str]) -> list[str]:
    """Every "notebook NN" in markdown is a link to that notebook's file, and every such link points at it."""
    problems = []
    for index, cell in enumerate(cells):
        if cell.cell_type != "markdown":
            continue
        text = _CODE.sub("", cell.source)
        for label, target in _LINK.findall(text):
            for number in _MENTION.findall(label):
                wanted = sibling_for(number, siblings) or f"{number}_....ipynb"
                if target != wanted:
                    problems.append(f"cell {index}: the link [{label}]({target}) should point at {wanted}.")
        for match in _MENTION.finditer(_LINK.sub("", text)):
            wanted = sibling_for(match.group(1), siblings) or f"{match.group(1)}_....ipynb"
            problems.append(f"cell {index}: make {match.group(0)!r} a link: [{match.group(0)}]({wanted}).")
    return problems


def _check_next_link(cells: list[NotebookNode], name: str, siblings: list[str]) -> list[str]:
    following = [item for item in siblings if item > name]
    if not following:
        return []
    last = cells[-1]
    lines = last.source.split("\n") if last.cell_type == "markdown" else []
    if not any(line.startswith(NEXT_PREFIX) and f"]({following[0]})" in line for line in lines):
        return [f"last cell: end the notebook with a markdown cell holding the line "
                f"'{NEXT_PREFIX}[{following[0][:2]} · its title]({following[0]})'."]
    return []


def _check_colab_runtime(nb: NotebookNode) -> list[str]:
    colab = nb.metadata.get("colab", {})
    if nb.metadata.get("accelerator") != "GPU" or not colab.get("gpuType"):
        return ["notebook metadata: Colab would open it on a CPU runtime; add release.COLAB_GPU_METADATA "
                '(accelerator "GPU", colab.gpuType) to the notebook metadata.']
    return []


def _check_title(cell: NotebookNode, name: str, number: str | None) -> list[str]:
    problems = []
    first_line = cell.source.split("\n", 1)[0]
    title = re.compile(rf"# {re.escape(number)}\b" if number else r"# \d{2}\b")
    if cell.cell_type != "markdown" or not title.match(first_line):
        problems.append(
            f"cell 0: start with a markdown title '# {number or 'NN'} · Title' (found {first_line[:60]!r})."
        )
    url = badge_url(name)
    if COLAB_BADGE_IMAGE not in cell.source or f"({url})" not in cell.source:
        problems.append(f"cell 0: add the Colab badge [![Open In Colab]({COLAB_BADGE_IMAGE})]({url}).")
    return problems


MODULES_PREFIX = "Helpers it uses (`course_utils`): "


def imported_modules(nb: NotebookNode) -> list[str]:
    """``group.module`` of each ``course_utils`` module the notebook's imports cell brings in, in import order."""
    modules: list[str] = []
    for cell in nb.cells:
        if cell.cell_type != "code" or "imports" not in cell_tags(cell):
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("course_utils."):
                continue
            group = node.module.removeprefix("course_utils.")
            names = [group] if "." in group else [f"{group}.{alias.name}" for alias in node.names]
            modules += [name for name in names if name not in modules]
    return modules


def modules_line(nb: NotebookNode) -> str:
    """The title cell's line that names the helper modules the notebook imports."""
    return MODULES_PREFIX + ", ".join(f"`{name}`" for name in imported_modules(nb))


def _check_modules_line(nb: NotebookNode) -> list[str]:
    expected = modules_line(nb)
    if imported_modules(nb) and expected not in nb.cells[0].source.split("\n"):
        return [f"cell 0: list the helpers the imports cell uses; add (or replace) the line: {expected}"]
    return []


def _check_setup(cell: NotebookNode) -> list[str]:
    expected = setup_cell_source(_setup_extras(cell.source))
    if cell.cell_type != "code" or cell.source.strip() != expected.strip():
        return [
            "cell 1: must be the canonical setup cell; paste course_utils.course.release.setup_cell_source() "
            "(or setup_cell_source(('gpu',)) for the extras variant)."
        ]
    return []


def _check_parameters(cell: NotebookNode) -> list[str]:
    if cell.cell_type != "code" or "parameters" not in cell_tags(cell):
        return ["cell 2: must be a code cell tagged 'parameters' (papermill's tag) holding every knob."]
    try:
        statements = ast.parse(cell.source).body
    except SyntaxError as exc:
        return [f"cell 2 (parameters): syntax error on line {exc.lineno}: {exc.msg}."]
    problems = []
    first = statements[0] if statements else None
    if not (
        isinstance(first, ast.Assign)
        and len(first.targets) == 1
        and isinstance(first.targets[0], ast.Name)
        and first.targets[0].id == "PROFILE"
        and isinstance(first.value, ast.Constant)
        and first.value.value == "auto"
    ):
        problems.append('cell 2 (parameters): the first statement must be PROFILE = "auto".')
    for statement in statements:
        if not (
            isinstance(statement, (ast.Assign, ast.AnnAssign))
            and statement.value is not None
            and _is_literal(statement.value)
        ):
            problems.append(
                f"cell 2 (parameters): line {statement.lineno} is not a `NAME = literal` assignment; "
                "papermill can only override plain literals (use None for 'the profile's default')."
            )
    return problems


def _is_literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def _check_imports(cells: list[NotebookNode]) -> list[str]:
    problems = []
    if cells[3].cell_type != "code" or "imports" not in cell_tags(cells[3]):
        problems.append(
            "cell 3: must be a code cell tagged 'imports' (the exercise checker runs it on its own)."
        )
    for index, cell in enumerate(cells):
        if cell.cell_type != "code" or "imports" not in cell_tags(cell):
            continue
        try:
            statements = ast.parse(cell.source).body
        except SyntaxError as exc:
            problems.append(f"cell {index} (imports): syntax error on line {exc.lineno}: {exc.msg}.")
            continue
        for statement in statements:
            if not isinstance(statement, (ast.Import, ast.ImportFrom)):
                problems.append(
                    f"cell {index} (imports): line {statement.lineno} is not an import; keep this cell "
                    "to imports only and move the rest to a later cell."
                )
    return problems


def _check_ids(cells: list[NotebookNode]) -> list[str]:
    seen: set[str] = set()
    problems = []
    for index, cell in enumerate(cells):
        cell_id = cell.get("id")
        if not cell_id:
            problems.append(
                f"cell {index}: has no cell id; save the notebook with nbformat >= 4.5 (Jupyter does)."
            )
        elif cell_id in seen:
            problems.append(f"cell {index}: cell id {cell_id!r} is used twice; give the copy a new id.")
        seen.add(cell_id)
    return problems


def _check_markers(cells: list[NotebookNode]) -> list[str]:
    problems = []
    for index, cell in enumerate(cells):
        try:
            regions = find_regions(cell.source)
        except MarkerError as exc:
            problems.append(f"cell {index}: {exc}")
            continue
        meta = nbgrader_meta(cell)
        kinds = {region.kind for region in regions}
        if "solution" in kinds and not meta.get("solution"):
            problems.append(
                f"cell {index}: has solution markers but no nbgrader solution metadata; mark it as a "
                "solution cell (see solutions/README.md) or remove the markers."
            )
        if "hidden" in kinds and not meta.get("grade"):
            problems.append(f"cell {index}: hidden tests belong in a check cell (nbgrader grade: true).")
        if meta.get("solution") and "solution" not in kinds:
            problems.append(
                f"cell {index}: solution cell without {BEGIN_SOLUTION!r} ... {END_SOLUTION!r}; mark "
                "the part the student writes."
            )
    return problems


def _check_exercises(cells: list[NotebookNode], number: str | None) -> list[str]:
    problems = []
    grade_ids: dict[str, int] = {}
    prefix = f"nb{number}-" if number else "nb"

    def check_grade_id(index: int, meta: dict[str, Any]) -> None:
        grade_id = meta.get("grade_id")
        if not isinstance(grade_id, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", grade_id):
            problems.append(
                f"cell {index}: nbgrader grade_id {grade_id!r} must be lower-case letters, digits, "
                f"'-' or '_', e.g. '{prefix}parse-header'."
            )
            return
        if not grade_id.startswith(prefix):
            problems.append(
                f"cell {index}: grade_id {grade_id!r} must start with {prefix!r} (unique across notebooks)."
            )
        if grade_id in grade_ids:
            problems.append(
                f"cell {index}: grade_id {grade_id!r} is already used by cell {grade_ids[grade_id]}."
            )
        grade_ids.setdefault(grade_id, index)

    for index, cell in enumerate(cells):
        meta = nbgrader_meta(cell)
        if meta.get("task"):
            check_grade_id(index, meta)
            problems += _check_task(index, cell, meta)
            continue
        if not meta.get("solution"):
            if meta.get("grade") and (index == 0 or not nbgrader_meta(cells[index - 1]).get("solution")):
                check_grade_id(index, meta)
                problems.append(
                    f"cell {index}: check cell {meta.get('grade_id')!r} does not follow a solution cell."
                )
            continue
        check_grade_id(index, meta)
        if cell.cell_type != "code":
            problems += _check_written_answer(index, meta)  # graded by hand: it has no check cell
            continue
        if meta.get("grade") or meta.get("locked"):
            problems.append(
                f"cell {index}: a solution cell has grade: false and locked: false (points go on the "
                "check cell; a written answer graded by hand is a markdown cell)."
            )
        check = cells[index + 1] if index + 1 < len(cells) else None
        check_meta = nbgrader_meta(check) if check is not None else {}
        if (
            check is None
            or check.cell_type != "code"
            or not check_meta.get("grade")
            or check_meta.get("solution")
        ):
            problems.append(
                f"cell {index}: solution {meta.get('grade_id')!r} must be directly followed by its check "
                "cell (code, nbgrader grade: true, solution: false)."
            )
            continue
        check_grade_id(index + 1, check_meta)
        if RAISES_TAG in cell_tags(check):
            problems.append(
                f"cell {index + 1}: remove the {RAISES_TAG!r} tag; a check must pass on the solution "
                "(the release adds the tag to the student's copy)."
            )
        points = check_meta.get("points")
        if isinstance(points, bool) or not isinstance(points, (int, float)) or points <= 0:
            problems.append(f"cell {index + 1}: check cell needs nbgrader points > 0 (found {points!r}).")
    return problems + _check_nbgrader_schema(cells)


def _check_nbgrader_schema(cells: list[NotebookNode]) -> list[str]:
    """nbgrader's own validator on every cell with nbgrader metadata: schema version, keys, points, cell types."""
    from nbformat import ValidationError as SchemaError  # jsonschema's, which nbgrader's validator raises too
    from nbgrader.nbgraderformat import (
        MetadataValidator,
        SchemaTooNewError,
        SchemaTooOldError,
        ValidationError,
    )

    validator, problems = MetadataValidator(), []
    for index, cell in enumerate(cells):
        if "nbgrader" not in cell.get("metadata", {}):
            continue
        try:
            validator.validate_cell(copy.deepcopy(cell))
        except (ValidationError, SchemaTooOldError, SchemaTooNewError, SchemaError) as exc:
            problems.append(f"cell {index}: nbgrader's metadata validator: {str(exc).splitlines()[0]}")
    return problems


def _points_problem(meta: dict[str, Any]) -> bool:
    points = meta.get("points")
    return isinstance(points, bool) or not isinstance(points, (int, float)) or points <= 0


def _check_written_answer(index: int, meta: dict[str, Any]) -> list[str]:
    """A markdown solution cell is a written answer graded by hand (nbgrader's "manually graded answer")."""
    problems = []
    if not meta.get("grade") or meta.get("locked") or meta.get("task"):
        problems.append(
            f"cell {index}: a written answer (markdown solution cell) has grade: true, locked: false and task: "
            "false, nbgrader's manually graded answer."
        )
    if _points_problem(meta):
        problems.append(f"cell {index}: a written answer needs nbgrader points > 0 (found {meta.get('points')!r}).")
    return problems


def _check_task(index: int, cell: NotebookNode, meta: dict[str, Any]) -> list[str]:
    """A task cell (nbgrader's "manually graded task"): read-only markdown with points, graded by hand."""
    problems = []
    if cell.cell_type != "markdown" or meta.get("grade") or meta.get("solution") or not meta.get("locked"):
        problems.append(
            f"cell {index}: a task cell is markdown with task: true, grade: false, solution: false and "
            "locked: true (students answer in the cells after it)."
        )
    if _points_problem(meta):
        problems.append(f"cell {index}: a task cell needs nbgrader points > 0 (found {meta.get('points')!r}).")
    return problems


# A rubric line outside a solution region would be released to the students.
_RUBRIC_LINE = re.compile(r"^[\s*_#>|-]*rubric\b", re.IGNORECASE)


def _check_rubrics(cells: list[NotebookNode]) -> list[str]:
    problems = []
    for index, cell in enumerate(cells):
        try:
            visible = student_source(cell.source, cell.cell_type)
        except MarkerError:
            continue  # reported by _check_markers
        if any(_RUBRIC_LINE.match(line) for line in visible.split("\n")):
            problems.append(
                f"cell {index}: a rubric outside {BEGIN_SOLUTION!r} ... {END_SOLUTION!r} would be released to "
                "students; put it inside the written answer's solution region."
            )
    return problems


def _check_secrets(cells: list[NotebookNode]) -> list[str]:
    problems = []
    for index, cell in enumerate(cells):
        texts = [("source", cell.source)]
        texts += [("output", text) for output in cell.get("outputs", []) for text in _output_texts(output)]
        for where, text in texts:
            match = _HF_TOKEN.search(text)
            if match:
                problems.append(
                    f"cell {index}: its {where} contains what looks like a Hugging Face token "
                    f"({match.group()[:6]}...); remove it and revoke the token."
                )
                break
    return problems


def _output_texts(output: NotebookNode) -> Iterable[str]:
    for key in ("text", "evalue"):
        if key in output:
            yield _joined(output[key])
    yield from (_joined(line) for line in output.get("traceback", []))
    for value in output.get("data", {}).values():
        if isinstance(value, (str, list)):
            yield _joined(value)


def _joined(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


# ---------------------------------------------------------------------------------------------------------------
# Release


def solution_notebooks(solutions_dir: Path | None = None) -> list[Path]:
    """The solution notebooks ``NN_*.ipynb``, in order."""
    folder = Path(solutions_dir) if solutions_dir is not None else paths.solutions_dir()
    return sorted(folder.glob(NOTEBOOK_GLOB)) if folder.is_dir() else []


def release(
    solutions_dir: Path | None = None, notebooks_dir: Path | None = None, *, check: bool = False
) -> list[Path]:
    """Write ``notebooks/`` from ``solutions/``; returns the files written or removed (with check: those out of sync)."""
    solutions = Path(solutions_dir) if solutions_dir is not None else paths.solutions_dir()
    notebooks = Path(notebooks_dir) if notebooks_dir is not None else paths.notebooks_dir()
    sources = solution_notebooks(solutions)
    students: dict[Path, str] = {}
    problems: list[str] = []
    for source in sources:
        nb = read_notebook(source)
        found = validate_solution_notebook(nb, source)
        if found:
            problems += [f"{source.name}: {problem}" for problem in found]
            continue
        students[notebooks / source.name] = notebook_text(make_student_notebook(nb))
    if problems:
        raise ReleaseError("Cannot release: fix these solution notebooks first:\n  " + "\n  ".join(problems))
    changed = [
        target
        for target, text in students.items()
        if not target.exists() or target.read_text(encoding="utf-8") != text
    ]
    stale = [
        old
        for old in (sorted(notebooks.glob(NOTEBOOK_GLOB)) if notebooks.is_dir() else [])
        if old not in students
    ]
    if not check:
        for target in changed:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(students[target], encoding="utf-8", newline="\n")
        for old in stale:
            old.unlink()
    return changed + stale
