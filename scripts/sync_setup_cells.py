"""Rewrite cell 1 (the setup cell) of every solutions/*.ipynb from release.setup_cell_source(), sources only.

The extras each notebook installs are kept (notebook 06: ``[gpu]``); outputs and metadata are left as they are.

    python scripts/sync_setup_cells.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from course_utils.course import release  # noqa: E402


def main() -> int:
    for path in release.solution_notebooks():
        nb = release.read_notebook(path)
        source = release.setup_cell_source(release._setup_extras(nb.cells[1].source))
        if nb.cells[1].source != source:
            nb.cells[1].source = source
            release.write_notebook(nb, path)
            print(f"updated the setup cell of {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
