"""Process-wide tuning the CLI applies before torch allocates: huge pages and glibc malloc."""

from __future__ import annotations

import platform

import pytest

from stylenet.config import HUGE_PAGES_ENV, tune_malloc, use_huge_pages


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
