"""CUDA-graph replay for an inference engine: one launch per image instead of ~100.

A stylization generator at 1024² runs in a few milliseconds on a current GPU, and the engine
issues about a hundred kernels (convolutions, normalizations, ReLU-into-padding copies) for
it. Launched one by one from Python, their launch cost is a large share of that time.
``GraphedEngine`` captures the whole forward pass once per input shape into a CUDA graph and
replays it: the input is copied into the graph's static buffer, the graph runs, and the
output is cloned out of its static buffer.

Graphs are kept per (shape, dtype) in a small LRU (each holds its own activation memory).
CPU tensors and images above ``max_pixels`` (``MAX_GRAPH_PIXELS``: there the kernels
dominate the launches, and a graph would hold gigabytes) run the wrapped engine directly.
On a machine without CUDA this module is never used: ``wrap_for_device`` returns the engine
unchanged.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

import torch
from torch import nn

log = logging.getLogger(__name__)

#: Graphs kept at once; each holds its activations (~0.4 GB for a 1024² image in fp16).
MAX_GRAPHS = 8
#: Larger images run without a graph: their kernels dominate the launches (2048² took 12 ms with
#: or without one on an H100), and each graph would hold gigabytes of activations.
MAX_GRAPH_PIXELS = 4_200_000
#: Warm-up passes on a side stream before capture (cuDNN picks and caches its algorithms).
WARMUP_RUNS = 2


class _Captured:
    def __init__(self, graph: torch.cuda.CUDAGraph, inp: torch.Tensor, out: torch.Tensor) -> None:
        self.graph, self.inp, self.out = graph, inp, out


class GraphedEngine(nn.Module):
    """``engine`` with each input shape's forward pass captured once and replayed."""

    def __init__(
        self, engine: nn.Module, max_graphs: int = MAX_GRAPHS, max_pixels: int | None = MAX_GRAPH_PIXELS
    ) -> None:
        super().__init__()
        self.engine = engine
        self.max_graphs = max_graphs
        self.max_pixels = max_pixels
        self.graphs: OrderedDict[tuple[tuple[int, ...], torch.dtype], _Captured] = OrderedDict()
        self.captures = 0
        # a graph's input and output buffers are shared state: one replay at a time
        self._lock = threading.Lock()
        # the attributes the worker and benchmarks read off an engine
        for attr in ("arch", "precision", "probe_psnr_db", "dtype", "device"):
            if hasattr(engine, attr):
                setattr(self, attr, getattr(engine, attr))

    def _capture(self, x: torch.Tensor) -> _Captured:
        inp = x.detach().clone()
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(WARMUP_RUNS):
                self.engine(inp)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            out = self.engine(inp)
        self.captures += 1
        log.info("captured a CUDA graph for %s (%d kept)", tuple(x.shape), len(self.graphs) + 1)
        return _Captured(graph, inp, out)

    def _graphable(self, x: torch.Tensor) -> bool:
        if x.device.type != "cuda":
            return False
        return self.max_pixels is None or x.shape[-2] * x.shape[-1] <= self.max_pixels

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._graphable(x):
            return self.engine(x)
        key = (tuple(x.shape), x.dtype)
        with self._lock:
            captured = self.graphs.get(key)
            if captured is None:
                while len(self.graphs) >= self.max_graphs:
                    self.graphs.popitem(last=False)
                captured = self.graphs[key] = self._capture(x)
            else:
                self.graphs.move_to_end(key)
            captured.inp.copy_(x)
            captured.graph.replay()
            return captured.out.clone()


def wrap_for_device(engine: nn.Module, device: torch.device | str) -> nn.Module:
    """``GraphedEngine(engine)`` on CUDA devices; ``engine`` itself everywhere else."""
    return GraphedEngine(engine) if torch.device(device).type == "cuda" else engine
