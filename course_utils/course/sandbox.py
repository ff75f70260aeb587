"""The box a student's code runs in when it is graded: bubblewrap on Linux, or nothing when the instructor says so.

:func:`find_sandbox` looks for bubblewrap (``bwrap``, Debian's and Ubuntu's ``bubblewrap`` package) and tries it
once. Every process of a submission is then started by :meth:`Sandbox.popen` inside a box of its own:

* its own mount namespace with a read-only root: the system folders (``/usr``, the libraries), the Python
  installation and the workbook are mounted read-only; the workbook's ``build/``, ``solutions/`` and ``.git``, the
  submissions and the grades are not there at all (:attr:`Sandbox.hidden`);
* its own empty home and ``/tmp`` (memory-backed, at most :attr:`Limits.tmpfs_bytes` each), and only the folders the
  grader names writable (the submission's working folder), the submission itself read-only;
* no network (its own network namespace has only a loopback device, which the Jupyter kernel needs), its own process
  ids (when the grader kills the box, every process in it dies), no capabilities;
* its own host name, ``sandbox``, which its own ``/etc/hosts`` maps to the loopback address: a launcher that
  connects its processes through the machine's name (``torch.distributed.run --standalone`` does) must find it,
  or its ranks wait for a name that never resolves;
* resource limits set by :mod:`course_utils.course._confine` inside the box before any student code runs: address space per
  process, number of processes (threads count too), size of each file written (output included), no core dumps.

Where the grader runs as root (a CI container), the box cannot use a user namespace for the process limit (the kernel
exempts root), so bubblewrap runs privileged with only the capability to change user, and :mod:`course_utils.course._confine`
drops to an unused user id of the box's own before student code runs. Elsewhere bubblewrap runs unprivileged, in a
user namespace. The wall-clock limit stays the grader's (``--timeout``, ``--check-timeout``).

:func:`unconfined` is the explicit alternative (``--no-sandbox``): the limits on memory, file size and core dumps
still apply on POSIX systems, but the code runs as the instructor's user, with their files and network.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from course_utils.course.memory_watch import MemoryWatch, size_text
from course_utils.ground import paths

HOME = "/home/student"  # the box's own empty home
HOSTNAME = "sandbox"  # the box's own host name, resolved by its own /etc/hosts
HOSTS = f"127.0.0.1\tlocalhost {HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
FIRST_BOX_UID = 100_000  # as root, each box runs as its own unused user id from here on
BOX_UIDS = 60_000
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/alternatives",
                 "/etc/nsswitch.conf", "/etc/fonts", "/etc/mime.types")
# All the processes of one box together (see Limits). Measured: the peak of the summed RSS of each notebook's whole
# run (papermill, its kernel and what the kernel starts) on the tiny profile, sampled every 0.1 s, was at most
# 2.3 GiB (06, whose launch runs two ranks; 03 with its DDP launch 1.7 GiB; the others under 1 GiB). The limit
# leaves room for other CPUs and library versions and a student's own variations, and stays far below a
# machine's memory when the grader runs two submissions at once.
TOTAL_MEMORY_BYTES = 4 * 2**30
_boxes = itertools.count()
_boxes_lock = threading.Lock()

# The same words `make setup` prints where bwrap is missing (tests/test_sandbox_required.py compares them).
INSTALL_BUBBLEWRAP = ("Debian/Ubuntu: sudo apt-get install bubblewrap; Fedora: sudo dnf install bubblewrap; "
                      "Arch: sudo pacman -S bubblewrap")


@dataclass(frozen=True)
class Limits:
    """What one submission's processes may use. ``memory_bytes`` is per process (address space).

    ``total_memory_bytes`` bounds the resident memory of all the processes of one box together (the notebook's
    run, or one exercise's check), watched by :class:`course_utils.course.memory_watch.MemoryWatch`.
    """

    memory_bytes: int = 6 * 2**30
    total_memory_bytes: int = TOTAL_MEMORY_BYTES
    processes: int = 512  # threads count: a kernel with torch runs dozens
    file_bytes: int = 512 * 2**20  # each file written, stdout and stderr included
    tmpfs_bytes: int = 512 * 2**20  # the box's home, /tmp and /dev/shm, each

    def describe(self) -> str:
        """The limits in a few words."""
        return (f"{size_text(self.memory_bytes)} of memory per process and {size_text(self.total_memory_bytes)} for all "
                f"together, {self.processes} processes, files up to {size_text(self.file_bytes)}")


@dataclass(frozen=True)
class Sandbox:
    """How a submission's processes are started: inside bubblewrap (``tool``), or unconfined (``tool`` is None).

    ``reason`` says why there is no box (or, with one, is empty); ``hidden`` are folders of the workbook that the box
    must not see; ``privileged`` is true when the grader runs as root (see the module's docstring).
    """

    tool: str | None
    reason: str = ""
    limits: Limits = field(default_factory=Limits)
    hidden: tuple[Path, ...] = ()
    privileged: bool = False
    features: frozenset[str] = frozenset()
    folder: Path | None = None  # the submission's own folder: writable in every box it gets

    @property
    def confined(self) -> bool:
        return self.tool is not None

    def describe(self) -> str:
        """One line for the grader's output and the gradebook: what confines the submissions, or that nothing does."""
        if self.confined:
            return (f"bubblewrap: own home and /tmp, workbook and submission read-only, no network, "
                    f"{self.limits.describe()}")
        return f"none ({self.reason})"

    def label(self) -> str:
        """A few words for the gradebook's ``sandbox`` column."""
        return "bubblewrap" if self.confined else f"none ({self.reason})"

    def explain(self, message: str) -> str:
        """``message`` with a sentence on the box when an error in it is the box's doing (a read-only file, ...)."""
        if not self.confined:
            return message
        for errno_text, why in _BOX_ERRORS:
            if errno_text in message:
                return f"{message}\n\nThe grader runs your code in a sandbox: {why}"
        return message

    def memory_watch(self) -> MemoryWatch:
        """A watch for one box's processes, all together, against :attr:`Limits.total_memory_bytes`."""
        return MemoryWatch(self.limits.total_memory_bytes)

    def with_hidden(self, folders: Iterable[Path]) -> Sandbox:
        """The same sandbox, hiding ``folders`` too (those inside the workbook; others are never mounted)."""
        return dataclasses.replace(self, hidden=(*self.hidden, *(Path(folder).resolve() for folder in folders)))

    def within(self, folder: Path) -> Sandbox:
        """The same sandbox for one submission, whose every box may write in ``folder`` (and nowhere else)."""
        return dataclasses.replace(self, folder=Path(folder).resolve())

    def popen(self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], writable: Sequence[Path] = (),
              readonly: Sequence[Path] = (), **kwargs) -> subprocess.Popen:
        """Start ``argv`` in a new box (or unconfined) with ``writable`` folders and ``readonly`` files or folders.

        ``kwargs`` go to :class:`subprocess.Popen` (stdout, stderr...); the process gets its own session, no stdin.
        """
        writable = _outermost([*writable, *([self.folder] if self.folder else [])])
        uid = _next_box_uid() if self.confined and self.privileged else None
        if uid is not None:
            for folder in writable:
                _chown_tree(folder, uid)
        command = self.command(argv, cwd=cwd, writable=writable, readonly=readonly, uid=uid)
        return subprocess.Popen(command, cwd=cwd, env=self.environment(env), stdin=subprocess.DEVNULL,
                                start_new_session=os.name == "posix", **kwargs)

    def environment(self, env: Mapping[str, str]) -> dict[str, str]:
        """``env`` as the box's processes see it: its own home and temporary folder, no session bus or display."""
        env = dict(env)
        package = str(paths.REPO_ROOT)  # course_utils.course._confine must import, whatever PYTHONPATH was
        env["PYTHONPATH"] = os.pathsep.join([package, *(p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                        if p and p != package)])
        if not self.confined:
            return env
        inside = {name: value for name, value in env.items()
                  if name not in ("XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS", "DISPLAY", "WAYLAND_DISPLAY",
                                  "SSH_AUTH_SOCK", "XAUTHORITY")}
        inside.update(HOME=HOME, TMPDIR="/tmp", USER="student", LOGNAME="student")
        return inside

    def command(self, argv: Sequence[str], *, cwd: Path, writable: Sequence[Path] = (),
                readonly: Sequence[Path] = (), uid: int | None = None) -> list[str]:
        """The command line that runs ``argv`` in the box (or only under :mod:`course_utils.course._confine`)."""
        confine = self._confine(argv, uid)
        if not self.confined:
            return confine if os.name == "posix" else list(argv)
        args = [self.tool, "--die-with-parent", "--new-session", "--unshare-ipc", "--unshare-pid", "--unshare-net",
                "--unshare-uts", "--hostname", HOSTNAME, "--unshare-cgroup-try"]
        if self.privileged:
            args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]  # for _confine, which drops them
        else:
            args += ["--unshare-user", "--cap-drop", "ALL"]
            args += ["--disable-userns"] if "--disable-userns" in self.features else []
        tree = _Tree()
        for folder in _SYSTEM_DIRS:
            if os.path.islink(folder):
                args += ["--symlink", os.readlink(folder), folder]
            elif os.path.isdir(folder):
                args += tree.mount("--ro-bind", Path(folder))
        for item in _SYSTEM_FILES:
            if os.path.exists(item):
                args += tree.mount("--ro-bind", Path(item), cover=True)
        args += tree.parents(Path("/etc/hosts")) + ["--ro-bind", str(_hosts_file()), "/etc/hosts"]
        args += ["--proc", "/proc", "--dev", "/dev"]
        tree.made.update([Path("/proc"), Path("/dev")])
        for folder in ("/dev/shm", "/tmp", HOME):
            args += [*tree.parents(Path(folder)), "--perms", "1777", *self._size(), "--tmpfs", folder]
            tree.made.add(Path(folder))
        repo, needed = paths.REPO_ROOT.resolve(), [paths.PACKAGE_DIR, paths.data_dir(), *_python_folders()]
        for folder in [repo, *needed]:
            if folder.exists():
                args += tree.mount("--ro-bind", folder.resolve())
        hidden = [folder for folder in self.hidden if folder.is_dir() and folder.is_relative_to(repo)
                  and not any(Path(need).resolve().is_relative_to(folder) for need in needed)]
        for folder in hidden:  # an empty folder in its place; made read-only once the writable ones are in
            args += ["--tmpfs", str(folder)]
            tree.hidden.append(folder)
        for folder in writable:
            args += tree.mount("--bind", Path(folder).resolve(), cover=True)
        for item in readonly:
            args += tree.mount("--ro-bind", Path(item).resolve(), cover=True)
        for folder in hidden:
            args += ["--remount-ro", str(folder)]
        args += ["--remount-ro", "/", "--chdir", str(Path(cwd).resolve()), "--", *confine]
        return args

    def _confine(self, argv: Sequence[str], uid: int | None) -> list[str]:
        spec = {"memory_bytes": self.limits.memory_bytes, "file_bytes": self.limits.file_bytes,
                "processes": self.limits.processes if self.confined else None, "uid": uid}
        return [sys.executable, "-m", "course_utils.course._confine", json.dumps(spec), "--", *argv]

    def _size(self) -> list[str]:
        return ["--size", str(self.limits.tmpfs_bytes)] if "--size" in self.features else []



@dataclass
class _Tree:
    """What exists inside a box being described: host folders bound whole, folders made, hidden (empty) folders."""

    binds: list[Path] = field(default_factory=list)
    made: set[Path] = field(default_factory=set)
    hidden: list[Path] = field(default_factory=list)

    def exists(self, path: Path) -> bool:
        """Whether ``path`` is already there: made, or inside a bound host folder (and not inside a hidden one)."""
        if path in self.made or path in self.hidden:
            return True
        return any(path.is_relative_to(bound) for bound in self.binds) and not any(
            path.is_relative_to(gone) for gone in self.hidden)

    def mount(self, kind: str, source: Path, cover: bool = False) -> list[str]:
        """Bind ``source`` at its own path, making its missing parents first (bubblewrap would make them 0700).

        A folder already visible through a bound folder above it is skipped, unless ``cover`` (a writable folder
        inside a read-only one, a read-only file inside a writable folder).
        """
        if not cover and self.exists(source):
            return []
        args = self.parents(source)
        self.binds.append(source)
        return [*args, kind, str(source), str(source)]

    def parents(self, path: Path) -> list[str]:
        """The arguments that make the missing parents of ``path``, readable by everyone."""
        args = []
        for parent in reversed(path.parents):
            if parent != Path("/") and not self.exists(parent):
                args += ["--perms", "0755", "--dir", str(parent)]
                self.made.add(parent)
        return args


def start_process(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], sandbox: Sandbox | None,
                  writable: Sequence[Path] = (), readonly: Sequence[Path] = (), **kwargs) -> subprocess.Popen:
    """Start a process of student code: in ``sandbox`` when there is one, else as a plain subprocess."""
    if sandbox is not None:
        return sandbox.popen(argv, cwd=cwd, env=env, writable=writable, readonly=readonly, **kwargs)
    return subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
                            start_new_session=os.name == "posix", **kwargs)


_BOX_ERRORS = (
    ("[Errno 30]", "files outside its own folder are read-only."),
    ("[Errno 13]", "files outside its own folder are read-only."),
    ("[Errno 101]", "it has no network."),
    ("[Errno 11] Resource temporarily unavailable", "it may start a limited number of processes."),
    ("MemoryError", "each process may use a limited amount of memory."),
    ("[Errno 27]", "each file it writes, its output included, has a size limit."),
)


def find_sandbox(limits: Limits | None = None) -> Sandbox:
    """bubblewrap, tried once; or an unconfined :class:`Sandbox` whose ``reason`` says why it cannot be used."""
    limits = limits or Limits()
    if not sys.platform.startswith("linux"):
        return unconfined(f"the sandbox needs Linux (bubblewrap); this is {sys.platform}", limits)
    tool = shutil.which("bwrap")
    if tool is None:
        return unconfined(f"bubblewrap is not installed ({INSTALL_BUBBLEWRAP})", limits)
    try:
        usage = subprocess.run([tool, "--help"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return unconfined(f"bubblewrap does not start: {exc}", limits)
    features = frozenset(flag for flag in ("--size", "--disable-userns") if flag in usage.stdout + usage.stderr)
    box = Sandbox(tool, "", limits, privileged=os.geteuid() == 0, features=features)
    problem = _try(box)
    return unconfined(f"bubblewrap is installed but cannot make a box here: {problem}", limits) if problem else box


def unconfined(reason: str, limits: Limits | None = None) -> Sandbox:
    """No box: student code runs as the grader's user (only memory, file size and time are limited)."""
    return Sandbox(None, reason, limits or Limits())


def _try(box: Sandbox) -> str:
    """Run Python in a box once: "" when it works, else what went wrong (bubblewrap's own words)."""
    with tempfile.TemporaryDirectory(prefix="sandbox-probe-") as folder:
        probe = box.popen([sys.executable, "-c", "import course_utils"], cwd=Path(folder), env=os.environ,
                          writable=[Path(folder)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            output, _ = probe.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            probe.kill()
            return "a test run did not finish in 60 s"
    lines = output.strip().splitlines()
    return "" if probe.returncode == 0 else (lines[-1] if lines else f"exit status {probe.returncode}")


def _outermost(folders: Iterable[Path]) -> list[Path]:
    """``folders`` without those inside another one of them."""
    resolved = sorted({Path(folder).resolve() for folder in folders}, key=lambda path: len(path.parts))
    kept: list[Path] = []
    for folder in resolved:
        if not any(folder.is_relative_to(outer) for outer in kept):
            kept.append(folder)
    return kept


def _python_folders() -> list[Path]:
    """The folders this Python needs: its installation, its virtual environment and every folder on sys.path."""
    candidates = [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable)),
                  *sys.path]
    found = []
    for item in candidates:
        if item and os.path.exists(item):
            path = Path(item).resolve()
            found.append(path if path.is_dir() else path.parent)
    return sorted(set(found), key=lambda path: len(path.parts))


@functools.cache
def _hosts_file() -> Path:
    """The box's /etc/hosts (:data:`HOSTS`), written once per grader process in a folder of its own."""
    folder = tempfile.mkdtemp(prefix="sandbox-etc-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = Path(folder) / "hosts"
    path.write_text(HOSTS, encoding="utf-8")
    path.chmod(0o644)  # read by the box's own user
    return path


def _next_box_uid() -> int:
    with _boxes_lock:
        number = next(_boxes)
    return FIRST_BOX_UID + (os.getpid() * 64 + number) % BOX_UIDS


def _chown_tree(folder: Path, uid: int) -> None:
    """Give ``folder`` and everything in it to the box's user (root only), so that the box can write there."""
    os.chown(folder, uid, uid)
    for root, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), uid, uid, follow_symlinks=False)


