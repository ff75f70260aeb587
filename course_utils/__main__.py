"""The instructors' and CI's command line: ``python -m course_utils {release,run,grade,report,data,...}``.

Subcommands import their modules only when they run, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

DESCRIPTION = "Release, run, check and grade the llm-workbook notebooks."


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for all subcommands."""
    parser = argparse.ArgumentParser(prog="python -m course_utils", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    release = commands.add_parser("release", help="write notebooks/ from solutions/ (student versions)")
    release.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if notebooks/ is out of sync"
    )

    run = commands.add_parser(
        "run", help="execute the solution notebooks with papermill and write build/summary.md"
    )
    run.add_argument(
        "notebooks", nargs="*", type=Path, help="notebook files to run (default: every solutions/NN_*)"
    )
    run.add_argument(
        "--profile",
        default="tiny",
        choices=("tiny", "colab", "cluster", "auto"),
        help="the PROFILE parameter (default: tiny)",
    )
    run.add_argument(
        "--only",
        nargs="+",
        metavar="NN",
        default=None,
        help="run only these solution notebooks, by number or name prefix (e.g. --only 01 03)",
    )
    run.add_argument(
        "--update-solutions",
        action="store_true",
        help="copy the outputs of notebooks that ran into solutions/ (commit them)",
    )
    run.add_argument(
        "--cell-timeout", type=float, default=600, metavar="S", help="seconds per cell (default: 600)"
    )
    run.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another papermill parameter (a Python literal, else a string); repeatable",
    )

    grade = commands.add_parser(
        "grade",
        help="grade a folder of submissions: gradebook CSV and a feedback file per student",
        description="Run each submitted notebook (papermill, tiny profile, its own folder and time limit, in a "
        "sandbox), grade each exercise with the solution's checks and hidden tests, and write gradebook.csv, "
        "feedback/ and executed/ (and manual/, to mark written answers by hand). After marking: `python -m "
        "course_utils grade merge-manual OUT_DIR [MARKS.csv]` merges the marks into the gradebook and the feedback.",
    )
    grade.add_argument(
        "assignment", help="the solution notebook: number (00), name (00_your_machine) or a path to it"
    )
    grade.add_argument(
        "submissions",
        type=Path,
        help="folder holding one .ipynb per student (id = file name) or one folder per student (id = folder name)",
    )
    grade.add_argument(
        "--out", type=Path, default=None, help="output folder (default: build/grades/<assignment>/)"
    )
    grade.add_argument(
        "--timeout", type=float, default=300, metavar="S", help="seconds to run one whole notebook (default: 300)"
    )
    grade.add_argument(
        "--check-timeout", type=float, default=60, metavar="S", help="seconds per exercise check (default: 60)"
    )
    grade.add_argument("--jobs", type=int, default=1, metavar="N", help="submissions graded at once (default: 1)")
    grade.add_argument(
        "--skip-run", action="store_true", help="grade the exercises only; do not run the whole notebooks"
    )
    grade.add_argument(
        "--hide-hidden-tests",
        action="store_true",
        help="feedback says that a hidden test failed, not which one (e.g. before a resubmission deadline)",
    )
    grade.add_argument(
        "--no-sandbox",
        action="store_true",
        help="run student code without a sandbox, as your own user (by default it runs in bubblewrap on Linux, "
        "and grading refuses to start without it)",
    )

    standins = commands.add_parser(
        "hub-standins",
        help="write hub-shaped stand-ins of the colab profile's models and datasets into an HF cache folder",
        description="Write into DIR (use it as HF_HOME, with HF_HUB_OFFLINE=1) a snapshot under the real hub id of "
        "every model and dataset the colab profile names: real config values, random weights, a tokenizer of the "
        "same kind, a few hundred rows of the embedded corpora.",
    )
    standins.add_argument("dir", type=Path, help="the folder to use as HF_HOME")
    standins.add_argument("--model", action="append", default=None, metavar="HUB_ID",
                          help="only this model (repeatable; default: every one the colab profile names)")
    standins.add_argument("--dataset", action="append", default=None, metavar="HUB_ID",
                          help="only this dataset (repeatable; default: every one the colab profile names)")

    colab = commands.add_parser("colab-runtime", help="rewrite constraints/colab-runtime.txt (and README's paragraph on it) from a clone of "
                                "googlecolab/backend-info (Colab's published package list)")
    colab.add_argument("checkout", type=Path, help="a clone (or bare git dir) of googlecolab/backend-info")

    rehearse = commands.add_parser(
        "rehearse",
        help="rehearse the colab profile on this CPU: stand-ins in a temporary HF_HOME, every notebook run",
        description="Build the hub stand-ins in a temporary HF_HOME and execute the solution notebooks with "
        "papermill on PROFILE='colab', DEVICE='cpu' and the smallest step counts; results under build/colab/.",
    )
    rehearse.add_argument("--only", nargs="+", metavar="NN", default=None,
                          help="run only these solution notebooks, by number or name prefix")
    rehearse.add_argument("--hf-home", type=Path, default=None,
                          help="build the stand-ins here and keep them (default: a temporary folder)")
    rehearse.add_argument("--cell-timeout", type=float, default=900, metavar="S",
                          help="seconds per cell (default: 900)")

    commands.add_parser("report", help="print the environment report ([OK]/[FAIL] per check)")
    commands.add_parser("data", help="rebuild data/ (corpora, tokenizer, tiny checkpoints)")
    commands.add_parser("readme-notebooks", help="render README.md's notebook table (times from build/summary.json "
                        "of `make run`, GPU times from build/gpu/results.json)")
    environment = commands.add_parser("environment-yml", help="write environment.yml from pyproject.toml")
    environment.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if environment.yml is out of date"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["grade", "merge-manual"]:
        return _merge_manual(argv[2:])
    args = build_parser().parse_args(argv)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "release": _release,
        "run": _run,
        "grade": _grade,
        "report": _report,
        "data": _data,
        "hub-standins": _hub_standins,
        "rehearse": _rehearse,
        "colab-runtime": _colab_runtime,
        "environment-yml": _environment_yml,
        "readme-notebooks": _readme_notebooks,
    }
    try:
        return handlers[args.command](args)
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if exc.name not in _DEV_MODULES:
            raise
        print(f"error: `python -m course_utils {args.command}` needs {exc.name}, from the workbook's dev extra: "
              "run `pip install -e '.[dev]'` in the workbook's folder (a notebook alone does not need it).",
              file=sys.stderr)
        return 2


# Modules of the dev extra (pyproject.toml) that the instructors' commands import.
_DEV_MODULES = {"nbformat", "papermill", "nbgrader", "ipykernel"}


class _UsageError(Exception):
    """A problem the user fixes by changing the command or the files it reads."""


def _readme_notebooks(args: argparse.Namespace) -> int:
    from course_utils.course import readme_notebooks

    changed = readme_notebooks.update_readme()
    print(readme_notebooks.readme_section())
    print("README.md updated." if changed else "README.md was already up to date.")
    return 0


def _release(args: argparse.Namespace) -> int:
    from course_utils.course.release import MarkerError, ReleaseError, release
    from course_utils.ground import paths

    try:
        files = release(check=args.check)
    except (ReleaseError, MarkerError) as exc:
        print(exc, file=sys.stderr)
        return 1
    root = paths.REPO_ROOT
    shown = [str(path.relative_to(root)) if path.is_relative_to(root) else str(path) for path in files]
    if args.check:
        if shown:
            print(
                "notebooks/ is out of sync with solutions/:\n  "
                + "\n  ".join(shown)
                + "\nRun `python -m course_utils release` and commit the result.",
                file=sys.stderr,
            )
            return 1
        print("notebooks/ is in sync with solutions/.")
        return 0
    print(
        "\n".join(f"wrote {name}" if Path(root, name).exists() else f"removed {name}" for name in shown)
        or "notebooks/ was already up to date."
    )
    return 0


def _selected_notebooks(given: list[Path], only: list[str] | None) -> list[Path]:
    from course_utils.course.release import solution_notebooks

    notebooks = list(given) or solution_notebooks()
    if only:
        notebooks = [nb for nb in notebooks if any(nb.name.startswith(prefix) for prefix in only)]
    if not notebooks:
        raise _UsageError(
            "no notebook to run: solutions/ has no NN_*.ipynb" + (f" matching --only {' '.join(only)}" if only else "")
        )
    return notebooks


def _run(args: argparse.Namespace) -> int:
    from course_utils.course.runner import run_notebooks

    notebooks = _selected_notebooks(args.notebooks, args.only)
    missing = [str(nb) for nb in notebooks if not nb.exists()]
    if missing:
        raise _UsageError(f"not found: {', '.join(missing)}")
    results = run_notebooks(
        notebooks,
        profile=args.profile,
        cell_timeout=args.cell_timeout,
        parameters=_parameters(args.param),
        update_solutions=args.update_solutions,
    )
    return 0 if all(result.ok for result in results) else 1


def _parameters(pairs: list[str]) -> dict[str, Any]:
    parameters: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.isidentifier():
            raise _UsageError(f"--param {pair!r}: write NAME=VALUE, e.g. --param MAX_STEPS=20")
        try:
            parameters[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            parameters[name] = text
    return parameters


def _grade(args: argparse.Namespace) -> int:
    from course_utils.course.grading import GradingError, grade_submissions, resolve_assignment
    from course_utils.ground import paths

    try:
        assignment = resolve_assignment(args.assignment)
        out = args.out if args.out is not None else paths.build_dir() / "grades" / assignment.stem
        grade_submissions(
            assignment,
            args.submissions,
            out,
            timeout=args.timeout,
            check_timeout=args.check_timeout,
            run=not args.skip_run,
            jobs=args.jobs,
            reveal_hidden=not args.hide_hidden_tests,
            sandbox=not args.no_sandbox,
        )
    except GradingError as exc:
        raise _UsageError(str(exc)) from None
    return 0


def merge_manual_parser() -> argparse.ArgumentParser:
    """The parser of ``grade merge-manual``."""
    parser = argparse.ArgumentParser(
        prog="python -m course_utils grade merge-manual",
        description="Merge the marks of the written answers (a filled-in manual/marks.csv) into the gradebook and "
        "the feedback files of a graded folder. Automatic points are left as they are; run it again after "
        "changing a mark.",
    )
    parser.add_argument("out", type=Path, help="the folder `grade` wrote (holding gradebook.csv and manual/)")
    parser.add_argument("marks", type=Path, nargs="?", default=None,
                        help="the filled-in marks file (default: OUT/manual/marks.csv)")
    return parser


def _merge_manual(argv: list[str]) -> int:
    from course_utils.course.manual_grading import MarkingError, merge_marks

    args = merge_manual_parser().parse_args(argv)
    try:
        merged, unmarked = merge_marks(args.out, args.marks)
    except (MarkingError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"merged {merged} marks into {args.out / 'gradebook.csv'} and the feedback files"
          + (f"; {unmarked} written answers are not marked yet" if unmarked else ""))
    return 0


def _report(args: argparse.Namespace) -> int:
    from course_utils.course.env import environment_report

    report = environment_report(print_report=True)
    return 0 if all(requirement.ok for requirement in report) else 1


def _hub_standins(args: argparse.Namespace) -> int:
    from course_utils.course.hub_standins import build_standins

    try:
        build_standins(args.dir, models=args.model, datasets=args.dataset)
    except KeyError as exc:
        raise _UsageError(str(exc.args[0])) from None
    print(f"stand-ins written to {args.dir}: use them with HF_HOME={args.dir} HF_HUB_OFFLINE=1")
    return 0


def _colab_runtime(args: argparse.Namespace) -> int:
    from course_utils.course.colab_runtime import RUNTIME_FILE, refresh, update_readme

    runtime = refresh(args.checkout)
    update_readme(runtime)
    print(f"wrote {RUNTIME_FILE.name}: Python {runtime.python}, {len(runtime.packages)} packages, "
          f"commit {runtime.commit[:12]} of {runtime.date}")
    return 0


def _rehearse(args: argparse.Namespace) -> int:
    from course_utils.course.colab_rehearsal import notebook_key, rehearse_on_colab_versions

    selected = _selected_notebooks([], args.only)  # an --only that names no notebook is a usage error
    only = [notebook_key(notebook) for notebook in selected] if args.only else None
    results = rehearse_on_colab_versions(only, hf_home=args.hf_home, cell_timeout=args.cell_timeout)
    return 0 if all(result.ok for result in results) else 1


def _data(args: argparse.Namespace) -> int:
    from course_utils.data_build import build_all

    build_all()
    return 0


def _environment_yml(args: argparse.Namespace) -> int:
    from course_utils.course import project
    from course_utils.ground import paths

    path = paths.REPO_ROOT / "environment.yml"
    wanted = project.environment_yml()
    if args.check:
        if not path.exists() or path.read_text(encoding="utf-8") != wanted:
            print("environment.yml is out of date: run `python -m course_utils environment-yml`.", file=sys.stderr)
            return 1
        print("environment.yml matches pyproject.toml.")
        return 0
    path.write_text(wanted, encoding="utf-8")
    print(f"wrote {path.relative_to(paths.REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
