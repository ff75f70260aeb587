"""Execute notebooks with papermill and summarise the run: status, time, failing cell and key figures.

``python -m course_utils run`` calls :func:`run_notebooks` on every solution notebook. Each notebook runs in its own
kernel, in the repository root, with the profile as a papermill parameter; a failing notebook never stops the
others. The summary goes to ``build/summary.json`` and ``build/summary.md``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nbformat import NotebookNode

from course_utils.course.release import cell_tags, read_notebook, write_notebook
from course_utils.ground import paths
from course_utils.reporting import claims
from course_utils.reporting.key_figures import FIGURES_ENV
from course_utils.reporting.stored_outputs import settle_progress_bars, trainer_tables_as_text

PAPERMILL_TAGS = ("injected-parameters", "papermill-error-cell-tag")


@dataclass(frozen=True)
class FailedCell:
    """Where a notebook stopped: the cell's index in the source notebook and its first source line."""

    index: int
    first_line: str

    def __str__(self) -> str:
        return f"cell {self.index}: {self.first_line}"


@dataclass(frozen=True)
class RunResult:
    """How one notebook ran."""

    notebook: Path
    status: str  # "ok" or "failed"
    seconds: float
    failed_cell: FailedCell | None = None
    error: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    failed_claims: list[str] = field(default_factory=list)  # markdown claims these figures contradict (claims.py)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def run_notebooks(
    notebooks: list[Path],
    *,
    profile: str = "tiny",
    out_dir: Path | None = None,
    cell_timeout: float = 600,
    parameters: Mapping[str, Any] | None = None,
    update_solutions: bool = False,
    build_dir: Path | None = None,
    cwd: Path | None = None,
    verbose: bool = True,
) -> list[RunResult]:
    """Execute each notebook with papermill, write the summary under ``build_dir`` and return the results."""
    build = Path(build_dir) if build_dir is not None else paths.build_dir()
    executed_dir = Path(out_dir) if out_dir is not None else build / "executed"
    results = []
    for notebook in notebooks:
        notebook = Path(notebook)
        if verbose:
            print(f"running {notebook.name} (profile {profile}) ...", flush=True)
        result = run_notebook(
            notebook,
            profile=profile,
            output=executed_dir / notebook.name,
            figures_file=build / "figures" / f"{notebook.stem}.json",
            cell_timeout=cell_timeout,
            parameters=parameters,
            cwd=cwd,
        )
        if result.ok and update_solutions:
            copy_outputs(executed_dir / notebook.name, notebook)
        if verbose:
            print(
                f"  {result.status} in {result.seconds:.1f} s"
                + (f" at {result.failed_cell}: {result.error}" if not result.ok else ""),
                flush=True,
            )
        results.append(result)
    markdown = write_summary(results, build, profile=profile)
    if verbose:
        print(markdown)
    return results


def run_notebook(
    notebook: Path,
    *,
    profile: str,
    output: Path,
    figures_file: Path,
    cell_timeout: float = 600,
    parameters: Mapping[str, Any] | None = None,
    cwd: Path | None = None,
    kernel_name: str = "python3",
) -> RunResult:
    """Execute one notebook into ``output``; its figures go to ``figures_file``. Never raises for a failing cell."""
    import papermill

    output.parent.mkdir(parents=True, exist_ok=True)
    figures_file.parent.mkdir(parents=True, exist_ok=True)
    figures_file.unlink(missing_ok=True)
    output.unlink(missing_ok=True)
    env = {
        FIGURES_ENV: str(figures_file.resolve()),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(paths.REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    if profile == "tiny":
        env["HF_HUB_OFFLINE"] = "1"
    start = time.perf_counter()
    error: BaseException | None = None
    with environ(env):
        try:
            papermill.execute_notebook(
                str(notebook),
                str(output),
                parameters={"PROFILE": profile, **(parameters or {})},
                language="python",
                kernel_name=kernel_name,
                cwd=str(cwd or paths.REPO_ROOT),
                progress_bar=False,
                execution_timeout=cell_timeout,
            )
        except Exception as exc:  # noqa: BLE001 - any failure is reported, and the next notebook runs
            error = exc
    seconds = time.perf_counter() - start
    if output.exists():  # progress bars are widgets while the kernel runs; stored, each keeps its final line
        executed = read_notebook(output)
        if settle_progress_bars(executed) + trainer_tables_as_text(executed):
            write_notebook(executed, output)
    figures = _read_figures(figures_file)
    if error is None:
        wrong = [str(failure) for failure in claims.failed_claims(notebook, figures, profile=profile)]
        return RunResult(notebook, "ok", seconds, figures=figures, failed_claims=wrong)
    failed_cell, message = _locate_failure(notebook, output, error, cell_timeout)
    return RunResult(notebook, "failed", seconds, failed_cell, message, figures)


@contextlib.contextmanager
def environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the kernel the block starts, then put the old values back."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _read_figures(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (OSError, ValueError):
        return {}


def _locate_failure(
    notebook: Path, output: Path, error: BaseException, cell_timeout: float
) -> tuple[FailedCell | None, str]:
    """The failing cell (index in the source notebook) and ``ename: evalue``.

    A cell that raised comes as papermill's ``PapermillExecutionError``, which names the cell by its index in the
    executed notebook (papermill's injected-parameters cell included). A timeout or a dead kernel leaves no error
    output: then the last cell the executed notebook shows started is the one.
    """
    from papermill.exceptions import PapermillExecutionError

    if isinstance(error, PapermillExecutionError):
        message = f"{error.ename}: {error.evalue}"
    elif type(error).__name__ == "CellTimeoutError":
        message = f"CellTimeoutError: a cell ran longer than {cell_timeout:g} s"
    else:
        message = f"{type(error).__name__}: {_first_line(str(error))}"
    try:
        source_ids = {cell.get("id"): index for index, cell in enumerate(read_notebook(notebook).cells)}
        executed = read_notebook(output).cells if output.exists() else []
    except Exception:  # noqa: BLE001 - an unreadable notebook still gets its error reported
        return None, message
    if isinstance(error, PapermillExecutionError):
        # its index counts the cells as they ran, before papermill put its error banner at the top
        ran = [cell for cell in executed if "papermill-error-cell-tag" not in cell_tags(cell)]
        if 0 <= error.cell_index < len(ran):
            return _failed_cell(ran[error.cell_index], source_ids), message
    started = [cell for cell in executed if cell.cell_type == "code" and not set(cell_tags(cell)) & set(PAPERMILL_TAGS)
               and cell.get("metadata", {}).get("papermill", {}).get("start_time")]
    return (_failed_cell(started[-1], source_ids) if started else None), message


def _failed_cell(cell: NotebookNode, source_ids: dict[str | None, int]) -> FailedCell:
    return FailedCell(source_ids.get(cell.get("id"), -1), _first_line(cell.source))


def _first_line(text: str, limit: int = 100) -> str:
    line = next((line.strip() for line in text.split("\n") if line.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------------------------
# Copying outputs back into solutions/


def copy_outputs(executed_path: Path, solution_path: Path) -> int:
    """Copy outputs and execution counts of an executed notebook into the solution's cells (matched by cell id).

    Papermill's injected-parameters cell and its metadata are left behind, and execution counts are renumbered
    1, 2, 3... as if the solution had been run on its own. Returns the number of code cells updated.
    """
    executed = read_notebook(executed_path)
    solution = read_notebook(solution_path)
    by_id = {
        cell.get("id"): cell
        for cell in executed.cells
        if cell.cell_type == "code" and not set(cell_tags(cell)) & set(PAPERMILL_TAGS)
    }
    code_cells = [cell for cell in solution.cells if cell.cell_type == "code"]
    if code_cells and not any(cell.get("id") in by_id for cell in code_cells):
        raise ValueError(
            f"No cell of {executed_path} matches {solution_path} by cell id; were they saved without "
            "cell ids (nbformat < 4.5)? Re-save the solution with Jupyter and run again."
        )
    renumber: dict[int, int] = {}
    updated = 0
    for cell in code_cells:
        run = by_id.get(cell.get("id"))
        if run is None:
            continue
        count = run.get("execution_count")
        if count is not None:
            renumber[count] = len(renumber) + 1
        outputs = json.loads(json.dumps(run.get("outputs", [])))  # plain copies, no shared nodes
        for out in outputs:
            if "execution_count" in out and out["execution_count"] is not None:
                out["execution_count"] = renumber.get(out["execution_count"], out["execution_count"])
        cell.outputs = [NotebookNode(out) for out in outputs]
        cell.execution_count = renumber.get(count) if count is not None else None
        updated += 1
    write_notebook(solution, solution_path)
    return updated


# ---------------------------------------------------------------------------------------------------------------
# Summary


def machine_info() -> dict[str, Any]:
    """The machine the notebooks ran on: CPU count, Python, torch version and the device torch would use."""
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["device"] = f"cuda ({torch.cuda.get_device_name(0)})"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            info["device"] = "mps"
        else:
            info["device"] = "cpu"
    except ImportError:
        info["torch"], info["device"] = "not installed", "cpu"
    return info


def write_summary(results: list[RunResult], build_dir: Path, *, profile: str = "tiny") -> str:
    """Write ``summary.json`` and ``summary.md`` into ``build_dir``; returns the markdown."""
    build_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    payload = {
        "profile": profile,
        "machine": machine,
        "results": [_result_json(result) for result in results],
    }
    (build_dir / "summary.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    markdown = summary_markdown(results, machine, profile)
    (build_dir / "summary.md").write_text(markdown, encoding="utf-8")
    return markdown


def _result_json(result: RunResult) -> dict[str, Any]:
    data = asdict(result)
    data["notebook"] = result.notebook.name
    data["seconds"] = round(result.seconds, 2)
    return data


def summary_markdown(results: list[RunResult], machine: Mapping[str, Any], profile: str) -> str:
    """The run summary as markdown: a header naming the machine, a table, then the failures."""
    failed = [result for result in results if not result.ok]
    lines = [
        f"# Notebook run: profile {profile}",
        "",
        f"Machine: {machine.get('cpus')} CPUs, Python {machine.get('python')}, torch {machine.get('torch')}, "
        f"device {machine.get('device')} ({machine.get('platform')}).",
        f"Result: {len(results) - len(failed)} of {len(results)} notebooks ran; total "
        f"{sum(result.seconds for result in results):.1f} s.",
        "",
        "| notebook | status | seconds | key figures |",
        "| --- | --- | ---: | --- |",
    ]
    for result in results:
        figures = "; ".join(_format_figure(name, figure) for name, figure in result.figures.items())
        lines.append(
            f"| {result.notebook.name} | {result.status} | {result.seconds:.1f} | {_cell_text(figures)} |"
        )
    if failed:
        lines += ["", "## Failures"]
        for result in failed:
            where = (
                f"cell {result.failed_cell.index}: `{result.failed_cell.first_line}`"
                if result.failed_cell
                else ("before any cell ran")
            )
            lines += ["", f"### {result.notebook.name}, {where}", "", "```", result.error, "```"]
    contradicted = [text for result in results for text in result.failed_claims]
    lines += ["", f"Markdown claims this run's figures contradict: {len(contradicted)}."]
    if contradicted:
        lines += ["", "## Claims the figures contradict", "", "```", *contradicted, "```"]
    return "\n".join(lines) + "\n"


def _format_figure(name: str, figure: Any) -> str:
    value, unit = (figure.get("value"), figure.get("unit", "")) if isinstance(figure, dict) else (figure, "")
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return f"{name} = {text}{' ' + unit if unit else ''}"


def _cell_text(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
