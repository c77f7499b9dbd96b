"""Run a command in a fresh process and measure it: wall seconds, peak RSS, output."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path


def measure(cmd: list[str], env: dict[str, str], out_dir: Path) -> tuple[float, int, str]:
    """Wall seconds, the process's peak RSS in bytes, and its standard output.

    Output goes to files, not pipes: a pipe nobody reads would stall a chatty child.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = out_dir / "stdout.txt", out_dir / "stderr.txt"
    start = time.perf_counter()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd[2:4])} failed:\n{err_path.read_text()[-3000:]}")
    return seconds, usage.ru_maxrss * 1024, out_path.read_text()
