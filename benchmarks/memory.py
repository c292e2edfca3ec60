"""The peak memory of the benchmark's own process."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB: ``VmHWM`` of ``/proc/self/status`` where there
    is one, else ``ru_maxrss``. A child started from a large parent reports the parent's size as
    its ``ru_maxrss`` (Linux carries it over across fork and exec: a 10 MB child of a 630 MB
    parent read 630), so small measurements would show the benchmark's own footprint."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
