"""Process-wide tuning the CLI applies before torch allocates (huge pages, glibc malloc), and the
release of a thread's OpenMP pool."""

from __future__ import annotations

import os
import platform
import threading
import time

import pytest

from stylenet.config import (
    HUGE_PAGES_ENV,
    release_openmp_pool,
    set_openmp_threads,
    tune_malloc,
    use_huge_pages,
)


def test_huge_pages_unless_the_environment_says_otherwise() -> None:
    env: dict[str, str] = {}
    use_huge_pages(env)
    assert env == {HUGE_PAGES_ENV: "1"}
    env = {HUGE_PAGES_ENV: "0"}
    use_huge_pages(env)
    assert env[HUGE_PAGES_ENV] == "0"


@pytest.mark.parametrize(
    "env", [{"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}, {"MALLOC_MMAP_THRESHOLD_": "131072"}]
)
def test_malloc_tuning_leaves_an_operators_choice_alone(env: dict[str, str]) -> None:
    assert tune_malloc(env) is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_malloc_tuning_applies_on_glibc() -> None:
    assert tune_malloc({}) is True


_FREED_STAYS = """
import os
from stylenet.config import release_free_heap, tune_malloc
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
assert tune_malloc({})
blocks = [bytearray(1 << 20) for _ in range(200)]  # 200 MB on the heap (below the mmap threshold)
full = rss_mb()
del blocks
freed = rss_mb()
assert release_free_heap()
print(full, freed, rss_mb())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc" or not os.path.exists("/proc/self/statm"), reason="glibc, /proc")
def test_release_free_heap_gives_freed_memory_back() -> None:
    """Under ``tune_malloc``'s trim threshold freed heap memory stays resident, until
    ``release_free_heap`` (run in a child: this process's heap is the other tests')."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _FREED_STAYS], capture_output=True, text=True, check=True)
    full, freed, trimmed = (float(v) for v in out.stdout.split())
    assert freed > full - 50  # glibc kept what was freed
    assert trimmed < freed - 150  # and gave it back


def _os_threads() -> set[str]:
    """The ids of the process's threads now. (Sets, not counts: a thread of an earlier test
    that ends meanwhile must not hide one that started.)"""
    return set(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_release_openmp_pool_lets_this_threads_pool_go() -> None:
    """A thread that ran a parallel torch kernel keeps an OpenMP pool until it releases it."""
    import torch

    if torch.get_num_threads() < 2 or "OpenMP" not in torch.__config__.parallel_info():
        pytest.skip("needs torch on OpenMP with 2+ threads")
    seen: dict[str, int | bool] = {}

    def work() -> None:
        alone = _os_threads()
        torch.ones(1 << 22).add_(1)  # at::parallel_for: starts this thread's pool
        pool = _os_threads() - alone
        seen["with_pool"] = len(pool)
        seen["released"] = release_openmp_pool()
        deadline = time.monotonic() + 5
        while pool & _os_threads() and time.monotonic() < deadline:  # the pool's threads exit
            time.sleep(0.01)
        seen["after"] = len(pool & _os_threads())
        seen["released_again"] = release_openmp_pool()  # no pool: nothing to do, no error

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    if not seen["released"]:
        pytest.skip("torch's OpenMP runtime here is not libgomp")
    assert seen["with_pool"] == torch.get_num_threads() - 1
    assert seen["after"] == 0
    assert seen["released_again"] is True


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_set_openmp_threads_sets_only_the_calling_threads_count() -> None:
    """One thread's passes run single-threaded (no pool at all) while the process keeps its count."""
    import torch

    if torch.get_num_threads() < 2 or "OpenMP" not in torch.__config__.parallel_info():
        pytest.skip("needs torch on OpenMP with 2+ threads")
    with pytest.raises(ValueError, match=">= 1"):
        set_openmp_threads(0)
    before = torch.get_num_threads()
    seen: dict[str, int | bool] = {}

    def work() -> None:
        alone = _os_threads()
        seen["set"] = set_openmp_threads(1)
        seen["count"] = torch.get_num_threads()
        torch.ones(1 << 22).add_(1)  # a kernel that runs on a pool of torch.get_num_threads()
        seen["pool"] = len(_os_threads() - alone)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    if not seen["set"]:
        pytest.skip("torch's OpenMP runtime here is not libgomp")
    assert seen["count"] == 1 and seen["pool"] == 0
    assert torch.get_num_threads() == before
    other: list[int] = []
    thread = threading.Thread(target=lambda: other.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert other == [before]  # a new thread starts from torch's count, not the last one set
