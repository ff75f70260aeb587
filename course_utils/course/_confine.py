"""The first process of a box (:mod:`course_utils.course.sandbox`): set the limits, give up root, then become the command.

Usage: ``python -m course_utils.course._confine SPEC -- COMMAND...``. SPEC, a JSON object, holds ``memory_bytes`` (address space per
process), ``file_bytes`` (the largest file any process may write; its output too), ``processes`` (the most
processes and threads of the box's user; None: no limit) and ``uid`` (None, or the user id to switch to when started
as root). Core dumps are switched off. Nothing here is imported by student code: it runs before any of it.
"""

from __future__ import annotations

import json
import os
import sys


def apply(spec: dict) -> None:
    """Set the limits of ``spec`` on this process (inherited by everything it starts), then drop to its user."""
    import resource

    limits = [(resource.RLIMIT_CORE, 0), (resource.RLIMIT_FSIZE, spec.get("file_bytes"))]
    if sys.platform != "darwin":  # macOS refuses an address-space limit
        limits.append((resource.RLIMIT_AS, spec.get("memory_bytes")))
    if spec.get("processes") is not None:
        limits.append((resource.RLIMIT_NPROC, spec["processes"]))
    for kind, value in limits:
        if value is not None:
            resource.setrlimit(kind, (value, value))
    uid = spec.get("uid")
    if uid is not None and os.geteuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)  # also drops the two capabilities bubblewrap left for this
        if os.geteuid() == 0 or os.getuid() == 0:
            raise SystemExit("the box could not give up root")


def main(argv: list[str] | None = None) -> int:
    """Apply the spec, then exec the command after ``--``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] != "--":
        print("usage: python -m course_utils.course._confine SPEC -- COMMAND...", file=sys.stderr)
        return 2
    apply(json.loads(args[0]))
    os.execv(args[2], args[2:])
    return 127  # pragma: no cover - execv does not return


if __name__ == "__main__":
    sys.exit(main())
