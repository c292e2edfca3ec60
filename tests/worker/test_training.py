"""worker.training: which failures are the style store's (``store_unwritable``)."""

from __future__ import annotations

import errno
from pathlib import Path

from worker.training import store_write_problem


def test_a_refused_write_in_the_store_is_the_stores(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    full = OSError(errno.ENOSPC, "No space left on device", str(root / ".work" / "job" / "checkpoint.pt"))
    assert store_write_problem(root, full) == str(full)
    read_only = OSError(errno.EROFS, "Read-only file system")  # no file name: the store's, as it is the job's
    assert store_write_problem(root, read_only) == str(read_only)
    assert not list((root / ".work").glob(".probe-*"))


def test_other_failures_are_not_the_stores_while_it_takes_writes(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    elsewhere = OSError(errno.EACCES, "Permission denied", str(tmp_path / "photos" / "a.jpg"))
    assert store_write_problem(root, elsewhere) is None
    assert store_write_problem(root, OSError("cannot identify image file")) is None  # PIL's, errno None
    assert store_write_problem(root, RuntimeError("a bug")) is None
    assert not list((root / ".work").glob(".probe-*"))  # the probe file is gone


def test_a_store_that_takes_no_file_now_is_the_cause(tmp_path: Path) -> None:
    """torch.save reports a failed write as a RuntimeError with no path: the probe decides."""
    root = tmp_path / "store"
    root.mkdir()
    (root / ".work").write_text("not a folder")  # nothing can be created in the work area
    problem = store_write_problem(root, RuntimeError("PytorchStreamWriter failed writing file data/0"))
    assert problem is not None and "PytorchStreamWriter" in problem
