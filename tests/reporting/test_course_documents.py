"""The course documents are named by their titles everywhere a student or instructor reads, never by file number."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from course_utils.course.release import read_notebook
from course_utils.ground import paths
from course_utils.reporting import course_documents

# "seed 002", "Seed 000", "seeds 003, 004": the documents' file numbers, meaningless to a student.
FILE_NUMBER = re.compile(r"\b[Ss]eeds? 0\d\d\b|\bseed documents?\b")


def _student_facing_files() -> list[Path]:
    root = paths.REPO_ROOT
    return sorted([*root.glob("solutions/*.ipynb"), *root.glob("notebooks/*.ipynb"), root / "README.md",
                   *root.glob("docs/**/*.md"), *root.glob("*/README.md"), *root.glob("course_utils/**/*.py")])


def _texts(path: Path) -> list[tuple[str, str]]:
    """(where, text) pairs: each cell's source and outputs for a notebook, the whole file otherwise."""
    if path.suffix != ".ipynb":
        return [(path.name, path.read_text(encoding="utf-8"))]
    texts = []
    for index, cell in enumerate(read_notebook(path).cells):
        texts.append((f"cell {index}", cell.source))
        for output in cell.get("outputs", []):
            texts.append((f"cell {index} output", str(output.get("text", "")) + str(output.get("data", {}))))
    return texts


def test_cite_names_documents_by_their_labels():
    assert course_documents.cite(course_documents.MODULE_NOTEBOOK, course_documents.WORKSHOP_GUIDE) == (
        "LLM module notebook, workshop guide")
    with pytest.raises(ValueError, match="seed 004"):
        course_documents.cite("seed 004")


def test_the_scan_finds_file_numbers():
    assert FILE_NUMBER.findall("as seed 000 says; Seeds 003, 004 agree; the seed documents") == [
        "seed 000", "Seeds 003", "seed documents"]
    assert not FILE_NUMBER.search("SEED = 0  # one seed for every run; seeds=(0, 1); seed 0 and seed 12")


@pytest.mark.parametrize("path", _student_facing_files(), ids=lambda p: str(p.relative_to(paths.REPO_ROOT)))
def test_no_student_facing_text_names_a_document_by_its_file_number(path):
    found = [f"{where}: {match.group(0)!r}" for where, text in _texts(path) for match in FILE_NUMBER.finditer(text)]
    assert not found, (f"{path.name} names course documents by file number; use their titles "
                       "(the labels of course_utils/reporting/course_documents.py):\n" + "\n".join(found))
