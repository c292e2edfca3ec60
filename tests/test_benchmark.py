"""The inference benchmark runs end to end (tiny sizes) and writes what it prints."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest

from benchmarks import inference


def test_benchmark_writes_a_row_per_path_with_psnr_and_speed(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    paths = ["eager", "worker"]
    if importlib.util.find_spec("onnxruntime") is not None:
        paths.insert(1, "onnxruntime")
    out = tmp_path / "bench.json"
    argv = ["--sizes", "32", "--archs", "johnson", "--paths", ",".join(paths), "--runs", "1", "--out", str(out)]
    assert inference.main(argv) == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [r["path"] for r in rows] == paths
    assert all("error" not in r and r["median_ms"] > 0 and r["peak_rss_mb"] > 0 for r in rows)
    assert rows[0]["gflop"] > 0
    worker = rows[-1]
    assert worker["psnr_db"] >= 40.0 and worker["engine"] == "JohnsonEngine"
    assert result["machine"]["torch"] and result["command"].startswith("python benchmarks/inference.py")
    assert "| johnson | 32² | worker" in capsys.readouterr().out


def test_a_trained_ulyanov_style_can_stand_in_for_the_untrained_net(tmp_path: Path) -> None:
    """``--ulyanov-model``: the artifact and config of a published Ulyanov style folder."""
    import pytest
    import torch

    from stylenet.config import GeneratorConfig
    from stylenet.export import export_generator
    from stylenet.generator import build_generator

    style = tmp_path / "style"
    style.mkdir()
    config = GeneratorConfig(arch="ulyanov", norm="instance", scales=3, channels_per_scale=4)
    torch.manual_seed(1)
    export_generator(build_generator(config).eval(), style / "generator.ts")
    (style / "manifest.json").write_text(json.dumps({"generator": config.to_dict()}))
    folders = inference.prepare_models(tmp_path / "work", ["ulyanov"], style)
    assert json.loads((folders["ulyanov"] / "generator.json").read_text())["scales"] == 3
    assert (folders["ulyanov"] / "generator.ts").read_bytes() == (style / "generator.ts").read_bytes()
    with pytest.raises(SystemExit, match="johnson generator, not ulyanov"):
        inference.prepare_models(tmp_path / "work2", ["ulyanov"], inference.SHIPPED)
    assert inference.ulyanov_source("untrained") is None  # --ulyanov-model untrained: the seeded net
    untrained = inference.prepare_models(tmp_path / "work3", ["ulyanov"], None)["ulyanov"]
    assert json.loads((untrained / "generator.json").read_text())["scales"] == 6


def test_onnx_runtime_is_measured_without_its_export(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The export traced a whole pass in the process measured: ONNX Runtime's peak RSS was the
    export's. It runs in a process of its own now, before the one measured."""
    pytest.importorskip("onnxruntime")
    steps: list[str] = []
    real = inference.run_child

    def spy(args, arch, path, size, folder, out):  # type: ignore[no-untyped-def]
        steps.append(path)
        return real(args, arch, path, size, folder, out)

    monkeypatch.setattr(inference, "run_child", spy)
    out = tmp_path / "ort.json"
    argv = ["--sizes", "32", "--archs", "johnson", "--paths", "onnxruntime", "--runs", "1", "--out", str(out)]
    assert inference.main(argv) == 0
    assert steps == ["onnxruntime", inference.ONNX_EXPORT]  # the export, its own child, first
    (row,) = json.loads(out.read_text())["rows"]
    assert "error" not in row and row["peak_rss_mb"] > 0


@pytest.mark.parametrize(
    ("script", "argv", "message"),
    [
        ("inference", ["--sizes", "0"], "--sizes: expected a positive integer, got '0'"),
        ("inference", ["--archs", "foo"], "--archs: expected some of johnson, ulyanov"),
        ("inference", ["--precision", "fp16"], "--precision fp16 is for CUDA devices"),
        ("inference", ["--precision", "bogus"], "invalid choice: 'bogus'"),
        ("service", ["--env", "FOO"], "--env: expected KEY=VALUE, got 'FOO'"),
        ("service", ["--requests", "0"], "--requests: expected a positive integer"),
        ("large", ["--styles", "nosuch"], "no shipped style 'nosuch'"),
        ("winograd", ["--channels", "48"], "--channels 48: a multiple of 32"),
        ("targets", ["--precision", "fp16"], "--precision fp16 is for CUDA devices"),
    ],
)
def test_bad_arguments_are_one_line_before_anything_runs(script: str, argv: list[str], message: str, capsys) -> None:  # type: ignore[no-untyped-def]
    import importlib

    module = importlib.import_module(f"benchmarks.{script}")
    with pytest.raises(SystemExit) as exited:
        module.main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "Traceback" not in "\n".join(err)


def test_sensitivity_prints_a_row_per_size(capsys) -> None:  # type: ignore[no-untyped-def]
    from benchmarks import sensitivity

    for image in ("enlarged", "mosaic"):
        assert sensitivity.main(["--sizes", "32,48", "--image", image]) == 0
        out = capsys.readouterr().out.splitlines()
        rows = [line for line in out if line.startswith("| 32²") or line.startswith("| 48²")]
        assert len(rows) == 2
        for row in rows:
            moved, tiled, worker = (float(row.split("|")[k]) for k in (2, 4, 5))
            assert 20 < moved < 999 and tiled > 40 and worker > 30  # noise moves the output; tiling does not
    # a uniform grey: a thousandth of a grey level moves even float32's output by far more
    assert sensitivity.main(["--sizes", "32", "--image", "flat", "--noise", "0.001"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| 32²"))
    assert float(row.split("|")[2]) < 30


def test_profile_lists_the_convolutions(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from benchmarks import op_profile

    out = tmp_path / "ops.json"
    assert op_profile.main(["--sizes", "32", "--path", "worker", "--out", str(out)]) == 0
    assert "| 32² | aten::mkldnn_convolution |" in capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert any(r["op"] == "aten::mkldnn_convolution" and 0 < r["share"] <= 1 for r in rows)


def test_cpu_variants_times_each_engine_option_against_the_default(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    from benchmarks import cpu_variants

    out = tmp_path / "variants.json"
    assert cpu_variants.main(["--sizes", "32", "--rounds", "2", "--precision", "fp32", "--out", str(out)]) == 0
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| 32²")]
    names = [row[2].strip() for row in rows]
    assert names[:2] == ["default", "no-shifted-phases"] and names[2] in ("winograd", "no-winograd")
    from stylenet import native

    if native.library() is not None:  # the choices of winograd.choose undone for a pass
        assert {"no-f8", "no-f6r5"} <= set(names)
    assert all(float(row[6]) > 60 for row in rows)  # float32 every way: far beyond the 40 dB bound
    saved = json.loads(out.read_text())
    assert saved["dtype"] == "float32" and saved["machine"]["cpu_capability"]
    assert len(saved["results"]["32"]["default"]["runs_ms"]) == 2


def test_winograd_benchmark_times_each_way_and_matches_the_direct_convolution(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """One 3x3 convolution direct and by F(2x2) / F(4x4), torch's sums and (where the native
    kernels build) F(2x2) .. F(8x8), the whole convolution in C with its packed kernel."""
    from benchmarks import winograd as bench
    from stylenet import native

    out = tmp_path / "winograd.json"
    argv = ["--sizes", "8,16", "--channels", "32", "--runs", "1", "--rounds", "1", "--out", str(out)]
    assert bench.main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    fused = {"F2 native", "F4 native", "F6 native", "F8 native"}
    ways = {"direct", "F2", "F4"} | (fused if native.library() is not None else set())
    assert [r["side"] for r in rows] == [8, 16] and all(set(r["best_ms"]) == ways for r in rows)
    assert all(diff < 1e-3 for r in rows for diff in r["max_diff"].values())
    assert "| 16² |" in capsys.readouterr().out


def test_no_benchmark_script_shadows_a_standard_module() -> None:
    # `python benchmarks/x.py` puts benchmarks/ first on sys.path: a benchmarks/profile.py once
    # replaced the standard `profile` and broke torch's imports in every benchmark
    import sys

    names = {p.stem for p in Path(inference.__file__).parent.glob("*.py")}
    assert not names & set(sys.stdlib_module_names)


def test_service_benchmark_measures_the_generator_alone() -> None:
    from benchmarks import service

    # a fresh process set up like `instyle serve`, two threads back to back on a small photo
    for split in (False, True):  # all of torch's threads each, or split between the two
        rate, cpu_ms = service.generator_alone(64, "starry-night", 2, 0.5, {"INSTYLE_PRECISION": "fp32"}, split)
        assert 1.0 < rate < 10_000.0 and 0.0 < cpu_ms < 10_000.0
    # as the embedded mode's stylize processes: two processes, one thread each, measured together
    rate, cpu_ms = service.generator_alone_processes(64, "starry-night", 2, 0.5, {"INSTYLE_PRECISION": "fp32"})
    assert 1.0 < rate < 10_000.0 and 0.0 < cpu_ms < 10_000.0
    assert service.shares_threads({})
    assert not service.shares_threads({"INSTYLE_SHARE_THREADS": "false"})
    assert not service.shares_threads({"INSTYLE_STYLIZE_THREADS": "1"})


def test_service_benchmark_labels_the_workers_as_the_server_ran_them() -> None:
    from benchmarks import service

    line = (
        "instyle (embedded mode, private redis-server 7.0.15 on /tmp/r/redis.sock, 1 stylize processes) on http://h:1"
    )
    assert service.served_kind(line) == "processes"
    assert service.served_kind("instyle (embedded mode, fakeredis, 2 stylize threads) on http://h:1") == "threads"
    assert service.served_kind("instyle on http://h:1") == "workers"


def test_service_benchmark_compares_each_round_with_the_limit_around_it() -> None:
    """Rounds of throughput runs, the generator alone measured before, between and after them:
    each round's limit is the best way's mean of the two measurements on either side of it."""
    from benchmarks import service

    alone = [
        {"all": (10.0, 200.0), "split": (12.0, 160.0)},
        {"all": (11.0, 190.0), "split": (8.0, 170.0)},  # the host slowed down for "split"
        {"all": (9.0, 210.0), "split": (14.0, 150.0)},
    ]
    assert service.round_limits(alone) == [10.5, 11.0]  # round 1: max(10.5, 10.0); round 2: max(10.0, 11.0)
    assert service._mean_alone(alone, "split") == (34.0 / 3, 160.0)
    runs = [
        {"clients": 8, "ratio": 0.8},
        {"clients": 16, "ratio": 0.7},
        {"clients": 8, "ratio": 0.9},
        {"clients": 8, "ratio": 0.85},
    ]
    assert service.median_ratio(runs, 8) == 0.85 and service.median_ratio(runs, 16) == 0.7


def test_service_benchmark_reads_a_process_cpu_time() -> None:
    import os
    import time

    from benchmarks import service

    before = service.cpu_seconds(os.getpid())
    if before is None:
        import pytest

        pytest.skip("no /proc here")
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:  # burn 0.2 s of CPU
        pass
    after = service.cpu_seconds(os.getpid())
    assert after is not None and after - before >= 0.1


def test_service_benchmark_cpu_reading_counts_live_child_processes() -> None:
    """Embedded mode's redis-server is a child of the server: its CPU is the service's too."""
    import os
    import subprocess
    import sys
    import time

    import pytest

    from benchmarks import service

    before = service.cpu_seconds(os.getpid())
    if before is None:
        pytest.skip("no /proc here")
    burn = (
        "import time\nt = time.process_time() + 0.3\nwhile time.process_time() < t: pass\n"
        "print(flush=True)\ntime.sleep(30)"
    )
    with subprocess.Popen([sys.executable, "-c", burn], stdout=subprocess.PIPE) as child:
        try:
            assert child.stdout is not None and child.stdout.readline()  # it has burnt its 0.3 s
            start = time.process_time()
            after = service.cpu_seconds(os.getpid())
            own = time.process_time() - start
            assert after is not None and after - before - own >= 0.25
        finally:
            child.kill()


def test_large_photo_benchmark_runs_the_stylize_path_tiled(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from benchmarks import large

    out = tmp_path / "large.json"
    rc = large.main(["--styles", "starry-night", "--sizes", "96", "--tile-megapixels", "0.001", "--out", str(out)])
    assert rc == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["style"] == "starry-night@1" and row["size"] == 96 and row["tiled"] is True
    assert row["peak_rss_mb"] >= row["loaded_rss_mb"] > 0 and row["stylize_s"] >= row["model_s"] > 0
    assert row["output_bytes"] > 0
    assert "| starry-night@1 | 96² |" in capsys.readouterr().out


def test_peak_memory_is_the_process_own_not_its_parents() -> None:
    """A child reads its own peak, not the benchmark parent's (``ru_maxrss`` would give that)."""
    import resource
    import subprocess
    import sys

    ballast = bytearray(200 << 20)  # this process: at least 200 MB resident
    ballast[::4096] = b"x" * len(ballast[::4096])
    code = "from benchmarks.memory import peak_rss_mb; print(peak_rss_mb())"
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True)
    child_mb = float(out.stdout)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 > 200
    assert 1 < child_mb < 100


def test_service_cost_groups_the_server_threads_by_name() -> None:
    from benchmarks import service_cost

    assert service_cost.group("MainThread") == "event loop"
    assert service_cost.group("instyle-worker-stylize-1a2b3c4d") == "stylize threads"
    assert service_cost.group("AnyIO worker thread") == "thread pool"
    assert service_cost.group("instyle-worker-train-1a2b3c4d") == "other worker threads"
    assert service_cost.group("instyle-job-watchdog") == "other Python threads"


def test_service_cost_snapshot_counts_a_thread_that_ended_apart() -> None:
    """CPU burnt by a thread that ends between two snapshots is the process's, in no live group."""
    import threading
    import time

    import pytest

    from benchmarks import service_cost

    if not Path("/proc/self/task").is_dir():
        pytest.skip("no /proc here")

    def burn(seconds: float) -> None:
        deadline = time.thread_time() + seconds
        while time.thread_time() < deadline:
            pass

    before = service_cost.snapshot()
    worker = threading.Thread(target=burn, args=(0.3,), name="instyle-worker-stylize-0000aaaa")
    worker.start()
    worker.join()
    # join() returns once Python is done with the thread, a moment before the OS thread has
    # exited: until then its task is still listed, unnamed, and counted as a live native thread
    # (so this failed now and then, "ended threads" 10 ms). Wait for it to be gone.
    task, deadline = Path(f"/proc/self/task/{worker.native_id}"), time.monotonic() + 5.0
    while task.exists() and time.monotonic() < deadline:
        time.sleep(0.001)
    after = service_cost.snapshot()
    rows = service_cost.per_image(before, after, images=1, children={"redis-server": 0.05})
    assert rows["ended threads"] >= 250  # ms: the thread's 0.3 s, over one image
    assert rows.get("stylize threads", 0.0) == 0.0  # not counted again under its live group
    assert rows["redis-server"] == pytest.approx(50.0)
    assert rows["total"] >= 300  # the process's CPU and redis-server's


def test_service_cost_runs_the_server_with_the_model_step_copied(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from benchmarks import service_cost

    out = tmp_path / "cost.json"
    args = ["--size", "64", "--clients", "2", "--seconds", "1", "--rounds", "2", "--out", str(out)]
    assert service_cost.main([*args, "--env", "INSTYLE_PRECISION=fp32"]) == 0
    result = json.loads(out.read_text())
    assert result["generator"].startswith("null") and len(result["rounds"]) == 2
    assert all(r["images"] > 0 and r["errors"] == 0 for r in result["rounds"])
    cost = result["cpu_ms_per_image"]
    stylize = "stylize processes" if "stylize processes" in cost else "stylize threads"
    assert cost["event loop"]["median"] > 0 and cost[stylize]["median"] > 0
    assert cost["total"]["median"] >= cost[stylize]["median"]
    printed = capsys.readouterr().out
    assert "| **total** |" in printed
    if result["redis_commands_per_image"]:  # the private redis-server (not the in-process fake)
        commands = result["redis_commands_per_image"]
        assert commands["total"] > 10 and commands["blmove"] >= 1 and "info" not in commands
        assert "Redis commands per image" in printed


def test_service_cost_finds_the_private_redis_socket() -> None:
    from benchmarks import service_cost

    line = "instyle (embedded mode, private redis-server 7.0.15 on /tmp/instyle-redis-x1/redis.sock) on http://h:1"
    assert service_cost.redis_socket(line) == "/tmp/instyle-redis-x1/redis.sock"
    assert service_cost.redis_socket("instyle (embedded mode, in-process fake Redis) on http://h:1") is None
    rows = service_cost.commands_per_image({"get": 4, "info": 1}, {"get": 8, "set": 2, "info": 3}, images=2)
    assert rows == {"get": 2.0, "set": 1.0, "total": 3.0}


def test_service_cost_null_generator_copies_the_photo() -> None:
    import torch

    from benchmarks import service_cost
    from stylenet import fast

    kept = {engine: engine.__dict__["forward_bytes"] for engine in (fast.JohnsonEngine, fast.UlyanovEngine)}
    try:
        service_cost._copy_the_model_step()
        pixels = torch.randint(0, 256, (1, 8, 8, 3), dtype=torch.uint8)
        for engine in kept:
            out = engine.forward_bytes(None, pixels)  # type: ignore[arg-type]
            assert torch.equal(out, pixels) and out.data_ptr() != pixels.data_ptr()
    finally:
        for engine, method in kept.items():
            engine.forward_bytes = method  # type: ignore[method-assign]


def _worker_row(size: int, ms: float, speedup: float, psnr: float, **extra: object) -> dict[str, object]:
    row = {"arch": "johnson", "size": size, "path": "worker", "median_ms": ms, "speedup": speedup, "psnr_db": psnr}
    return {**row, "peak_rss_mb": 500.0, **extra}


def test_targets_judges_each_target_from_the_benchmarks_json() -> None:
    from benchmarks import targets

    figures = ((256, 40, 1.9, 60), (512, 150, 2.5, 58), (1024, 1300, 1.7, 52))
    rows = [_worker_row(size, ms, speedup, db) for size, ms, speedup, db in figures]
    eager = {"arch": "johnson", "size": 512, "path": "eager", "median_ms": 800.0, "peak_rss_mb": 600.0}
    judged = {r["target"]: r for r in targets.judge_inference({"rows": [*rows, eager]})}
    assert judged["Johnson 512² <= 300 ms"]["met"] is True
    assert judged["Johnson 1024² <= 1200 ms"] == {
        "target": "Johnson 1024² <= 1200 ms", "measured": "1300 ms", "met": False
    }  # fmt: skip
    speed = judged[">= 1.75x ONNX Runtime at 256², 512², 1024², 2048²"]
    assert speed["met"] is None and "1024² 1.70x" in speed["measured"]  # 2048² not run: no verdict yet
    full = [*rows, _worker_row(2048, 6000, 2.0, 47)]
    assert targets.judge_inference({"rows": full})[2]["met"] is False  # 1024²'s 1.70x
    assert targets.judge_inference({"rows": full})[3]["met"] is True
    assert [r["met"] for r in targets.judge_inference(None)] == [None] * 4

    def large(mib: float) -> dict[str, object]:
        return {"rows": [_worker_row(4096, 20000, 0, 0, peak_rss_mb=mib, tiled=True)]}

    assert targets.judge_large(large(1320))[0]["met"] is True
    assert "over 2e9 bytes" in targets.judge_large(large(2012))[0]["measured"]
    assert targets.judge_large(large(2100))[0]["met"] is False
    assert targets.judge_large(None)[0]["met"] is None

    throughput = [{"clients": 8, "ratio": v} for v in (0.87, 0.91, 0.88)]
    service: dict[str, object] = {"latency": {"median_overhead_ms": 12.5}, "median_ratio_by_clients": {"8": 0.88}}
    service["throughput"] = throughput
    overhead, clients = targets.judge_service(service)
    assert overhead["met"] is True and overhead["measured"] == "12.5 ms"
    assert clients["met"] is False and clients["measured"] == "median 88% (87% / 91% / 88%)"
    assert targets.judge_cuda({"rows": [_worker_row(1024, 3.27, 4.1, 68)]})[0]["met"] is False
    assert "**not met**" in targets.table([clients])


def test_targets_runs_each_benchmark_and_leaves_what_it_skipped_unjudged(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from benchmarks import targets

    out = tmp_path / "targets.json"
    argv = ["--sizes", "32", "--skip", "large,service", "--runs", "1", "--precision", "fp32", "--out", str(out)]
    assert targets.main(argv) == 0
    result = json.loads(out.read_text())
    verdicts = {r["target"]: r["met"] for r in result["targets"]}
    assert verdicts["PSNR >= 40 dB against eager float32"] is True  # measured at 32²
    assert verdicts["Johnson 512² <= 300 ms"] is None and verdicts["4096² tiled in <= 2 GB peak RSS"] is None
    assert Path(result["parts"]["inference"]).exists() and set(result["parts"]) == {"inference"}
    rows = json.loads(Path(result["parts"]["inference"]).read_text())["rows"]
    assert {r["precision"] for r in rows if r["path"] == "worker"} == {"fp32"}  # --precision reached the worker
    assert "| PSNR >= 40 dB against eager float32 | 32² " in capsys.readouterr().out


def test_a_device_this_machine_lacks_stops_the_benchmarks_at_once(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import pytest
    import torch

    from benchmarks import targets

    assert inference.device_problem("cpu") is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "sees no CUDA device" in str(inference.device_problem("cuda"))
    assert "only cpu and cuda" in str(inference.device_problem("meta"))
    assert "Expected one of" in str(inference.device_problem("gpu"))
    for main in (targets.main, inference.main):
        with pytest.raises(SystemExit) as stopped:
            main(["--device", "cuda", "--out", str(tmp_path / "out.json")])
        assert stopped.value.code == 2
        assert "--device cuda: this torch sees no CUDA device" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing measured, nothing written


def test_job_cost_splits_a_stylize_job_between_the_job_and_rq(tmp_path: Path) -> None:
    from benchmarks import job_cost
    from stylenet import fast

    step = fast.JohnsonEngine.forward_bytes
    root = logging.getLogger()
    handlers = root.handlers[:]
    out = tmp_path / "job-cost.json"
    assert job_cost.main(["--jobs", "3", "--rounds", "2", "--size", "48", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for r in result["rounds"]:
        assert r["jobs"] == 3 and r["enqueue ms"] > 0 and r["job function ms"] > 0 and r["RQ ms"] > 0
        assert r["worker ms"] == pytest.approx(r["job function ms"] + r["RQ ms"], abs=0.002)
        # RQ's dequeue, fetch and bookkeeping, and the job's own pipelines: several round trips a job
        assert r["round trips"] >= 5 and r["commands"] >= r["round trips"]
        assert r["commands_per_job"]["lmove"] >= 1  # each job dequeued
    assert set(result["per_job"]) == set(job_cost.FIGURES) and result["generator"].startswith("null")
    # the model step and the logging are as they were
    assert fast.JohnsonEngine.forward_bytes is step and root.handlers == handlers
