"""run_generator from several threads (the embedded mode's stylize threads)."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from torch import nn

from stylenet import inference
from stylenet.inference import run_generator


class Overlap(nn.Module):
    """Identity that records how many calls were inside it at once."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = 0
        self.most = 0
        self.lock = threading.Lock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
        time.sleep(0.3)
        with self.lock:
            self.inside -= 1
        return x


def _concurrently(generator: nn.Module, x: torch.Tensor, threads: int = 3) -> None:
    workers = [threading.Thread(target=run_generator, args=(generator, x)) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()


def test_small_images_run_concurrently_and_large_ones_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inference, "EXCLUSIVE_PIXELS", 32 * 32)
    small = Overlap()
    _concurrently(small, torch.zeros(1, 3, 32, 32))  # at the limit: not above it
    assert small.most > 1
    large = Overlap()
    _concurrently(large, torch.zeros(1, 3, 32, 33))
    assert large.most == 1
    batch = Overlap()  # the pixels of a whole batch count
    _concurrently(batch, torch.zeros(2, 3, 32, 32))
    assert batch.most == 1
