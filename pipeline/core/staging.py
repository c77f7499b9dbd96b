"""Local staging a run writes before publishing, and the leftovers of runs that died.

Every temporary name a run makes carries its host and process id (`cdr-<kind>-<host>-<pid>-…`
for staging folders and files, `.tmp-<host>-<pid>-…` for objects being written into a folder
store). A run killed with `kill -9` cannot clean up after itself, so the next run does: whatever
belongs to a process of this host that no longer exists, or is older than `STALE_AFTER`
(another host's, which cannot be asked), is removed and counted.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

#: a temporary left by another host is removed once this old (no live write takes so long)
STALE_AFTER = dt.timedelta(hours=6)
KINDS = ("ingest", "stage", "bronze", "unpack")


def host() -> str:
    """This host's name as runs tag what they make: `CDR_HOST` (a container's stable name),
    else the system's host name; `-` is written `_` (it separates the tag's parts)."""
    return (os.environ.get("CDR_HOST") or socket.gethostname()).replace("-", "_") or "host"


_host = host


def owner_tag() -> str:
    """`<host>-<pid>-`: who made a temporary name."""
    return f"{_host()}-{os.getpid()}-"


def prefix(kind: str) -> str:
    """The prefix of this process's local staging of `kind` (one of KINDS)."""
    assert kind in KINDS
    return f"cdr-{kind}-{owner_tag()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """A process killed (`kill -9`) that its parent has not reaped yet: it is gone, though
    its PID still answers a signal. Read from `/proc`; elsewhere it counts as alive."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rpartition(")")[2].split()
    return bool(fields) and fields[0] == "Z"


def dead_here(tag: str) -> bool:
    """Whether an owner tag (`<host>-<pid>-…`) names a process of this host that is gone."""
    host, _, rest = tag.partition("-")
    pid, _, _ = rest.partition("-")
    return host == _host() and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid))


def is_stale(name: str, after: str, modified: float, older_than: dt.timedelta) -> bool:
    """Whether a temporary named `<after><host>-<pid>-…` belongs to a run that is gone."""
    host, _, rest = name[len(after) :].partition("-")
    pid, _, _ = rest.partition("-")
    if host == _host() and pid.isdigit() and int(pid) != os.getpid():
        return not _alive(int(pid))
    if host == _host() and pid == str(os.getpid()):
        return False
    return time.time() - modified > older_than.total_seconds()


def leftovers(root: Path | None = None, older_than: dt.timedelta = STALE_AFTER) -> list[Path]:
    """Staging folders and files of runs that are gone, in the temporary folder."""
    base = Path(root or tempfile.gettempdir())
    found = []
    for kind in KINDS:
        for path in base.glob(f"cdr-{kind}-*"):
            try:
                modified = path.lstat().st_mtime
            except FileNotFoundError:
                continue
            if is_stale(path.name, f"cdr-{kind}-", modified, older_than):
                found.append(path)
    return sorted(found)


def sweep(root: Path | None = None, older_than: dt.timedelta = STALE_AFTER) -> int:
    """Remove the staging of runs that are gone; how many folders and files were removed."""
    removed = 0
    for path in leftovers(root, older_than):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed += not path.exists()
    return removed
