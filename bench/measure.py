"""Run a command in a fresh process and measure it: wall seconds, peak RSS, output."""

from __future__ import annotations

import resource
import subprocess
import time
from pathlib import Path


def _high_water(pid: int) -> int:
    """The process's peak RSS so far (VmHWM), in bytes; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def measure(cmd: list[str], env: dict[str, str], out_dir: Path) -> tuple[float, int, str]:
    """Wall seconds, the process's peak RSS in bytes, and its standard output.

    The peak is the kernel's high-water mark of the process's own memory (VmHWM), read every
    50 ms until it exits: `ru_maxrss` would also count the parent's memory at fork. Output goes
    to files, not pipes: a pipe nobody reads would stall a chatty child.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = out_dir / "stdout.txt", out_dir / "stderr.txt"
    start = time.perf_counter()
    peak = 0
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        while proc.poll() is None:
            peak = max(peak, _high_water(proc.pid))
            time.sleep(0.05)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[2:4])} failed:\n{err_path.read_text()[-3000:]}")
    return seconds, peak, out_path.read_text()


def measure_cpu(
    cmd: list[str], env: dict[str, str], out_dir: Path
) -> tuple[float, float, int, str]:
    """CPU seconds (user + sys, every thread of the process), wall seconds, peak RSS in bytes
    and standard output of `cmd` in a fresh process. CPU seconds are far steadier than wall
    time on a shared machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, peak, out = measure(cmd, env, out_dir)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, peak, out


RESULTS = Path(__file__).resolve().parent / "results.md"


def write_section(name: str, text: str) -> None:
    """Replace this benchmark's section of bench/results.md (each bench owns one), keeping the
    others: `make bench` runs them one after another into one file."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{text.rstrip()}\n{end}\n"
    current = RESULTS.read_text() if RESULTS.exists() else ""
    if start in current and end in current:
        before, rest = current.split(start, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        RESULTS.write_text(before + block + ("\n" + after if after else ""))
    else:
        RESULTS.write_text((current.rstrip() + "\n\n" if current.strip() else "") + block)
    print(f"wrote the {name} section of {RESULTS}")
