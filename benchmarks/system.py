"""The machine: cores, file descriptors, and what /proc says about a process."""

from __future__ import annotations

import os
import platform
import resource
from importlib.metadata import version
from typing import Any

SERVER_CORE = 0
CLIENT_CORE = 1
PACKAGES = ("fastapi", "starlette", "anyio", "uvicorn", "uvloop", "httptools", "fastapi-abort")
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def has_core(core: int) -> bool:
    return core < (os.cpu_count() or 1)


def pin(core: int) -> None:
    """Pin this process to ``core``, if the machine has it."""
    if has_core(core):
        os.sched_setaffinity(0, {core})


def raise_nofile() -> int:
    """Raise the soft limit on open files to the hard limit; return the new soft limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name may contain spaces: split after its closing parenthesis.
        fields = stat.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15; fields[0] here is field 3 (state).
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid``, from /proc/PID/statm."""
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def machine() -> dict[str, Any]:
    """What the results were measured on."""
    model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nofile_hard_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        "versions": {name: version(name) for name in PACKAGES},
    }
