"""Training under tf.distribute: the sharded training stream, which worker writes, and real
runs of ``python -m training.train`` with MirroredStrategy on two logical CPU devices and
MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1.

The runs are subprocesses (tests/distributed_worker.py wraps training.train.main and records
what each process saw) with one thread per TensorFlow pool and a hard deadline: a worker
whose peer died waits on collective ops, so every process is killed when time runs out.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from training import distribute

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "distributed_worker.py"
DEADLINE_S = 300  # per launch; the runs measured 1-2.5 min on two cores shared with a training run


def _tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def test_index_stream_gives_each_worker_its_slice_of_the_same_global_draw():
    import tensorflow as tf

    probabilities = np.full(30, 1 / 30)
    draws = [b.numpy() for b in distribute.index_stream(probabilities, 16, seed=5).take(3)]
    assert not np.array_equal(draws[0], draws[1])
    # Two workers with two replicas each: per-replica batches of 4, two per step per worker.
    shards = []
    for worker in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=4)
        batches = [b.numpy() for b in distribute.index_stream(probabilities, 16, 5, context).take(6)]
        assert all(b.shape == (4,) for b in batches)
        shards.append([np.concatenate(batches[2 * k:2 * k + 2]) for k in range(3)])
    for step, draw in enumerate(draws):
        np.testing.assert_array_equal(np.concatenate([shards[0][step], shards[1][step]]), draw)
    with pytest.raises(ValueError):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=0, num_replicas_in_sync=2)
        distribute.index_stream(probabilities, 15, 5, context)


def test_only_the_chief_keeps_its_run_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", _tf_config([1, 2], 1))
    assert distribute.task() == ("worker", 1) and not distribute.is_chief()
    with distribute.writable_run_dir(tmp_path / "run") as scratch:
        (scratch / "last.keras").write_text("x")
        assert scratch != tmp_path / "run"
    assert not scratch.exists() and not (tmp_path / "run").exists()
    assert distribute.backup_dir(tmp_path) == tmp_path / "backup" / "worker-1"
    assert distribute.is_chief("mirrored")  # one process: TF_CONFIG does not matter
    monkeypatch.setenv("TF_CONFIG", _tf_config([1, 2], 0))
    assert distribute.is_chief()
    with distribute.writable_run_dir(tmp_path / "run") as kept:
        assert kept == tmp_path / "run"
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert not distribute.is_chief()
    monkeypatch.delenv("TF_CONFIG")
    assert distribute.is_chief()


def test_scale_lr_and_multiworker_options(monkeypatch, tmp_path):
    from training.train import parse_args, run

    monkeypatch.setenv("IMAGENET_WEIGHTS", str(tmp_path / "none.h5"))
    cfg = parse_args(["--data-dir", "x", "--batch-size", "256", "--scale-lr", "--lr", "0.005", "--head-lr", "0.01"])
    assert cfg.lr == pytest.approx(0.02) and cfg.head_lr == pytest.approx(0.04)
    assert parse_args(["--data-dir", "x", "--batch-size", "256"]).lr == 5e-3
    for extra in (["--resume"], ["--time-budget-min", "5"]):
        with pytest.raises(SystemExit, match="resumes by itself"):
            run(parse_args(["--data-dir", "x", "--strategy", "multiworker", *extra]))


def _launch(runs: list[tuple[list[str], dict]], logs: Path) -> list[int]:
    """Start every process, wait for all of them until the deadline; kill them all on timeout."""
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for i, (args, env) in enumerate(runs):
        out = (logs / f"{i}.log").open("w")
        procs.append(subprocess.Popen([sys.executable, str(WORKER), *args], cwd=ROOT, env=env, stdout=out,
                                      stderr=subprocess.STDOUT))
    deadline = time.monotonic() + DEADLINE_S
    try:
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()
        tails = "\n".join((logs / f"{i}.log").read_text()[-1500:] for i in range(len(procs)))
        pytest.fail(f"distributed run exceeded {DEADLINE_S} s; processes killed\n{tails}")
    codes = [proc.returncode for proc in procs]
    return codes


def _env(tmp_path: Path, **extra) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "IMAGENET_WEIGHTS": str(tmp_path / "absent.h5"),
           "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
           "PYTHONUNBUFFERED": "1", "TF_ENABLE_ONEDNN_OPTS": "0"}
    env.pop("TF_CONFIG", None)
    return {**env, **extra}


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _log(path: Path) -> str:
    return path.read_text()[-3000:] if path.is_file() else ""


TINY = ["--input-size", "32", "--batch-size", "8", "--epoch-size", "16", "--head-epochs", "1", "--epochs", "2",
        "--verbose", "0"]


@pytest.mark.slow
def test_multiworker_training_on_two_local_workers(tmp_path):
    """Two workers train one model: both finish with identical weights, each trained on its own
    slice of every global batch, and only the chief (worker 0) wrote files."""
    from tests.conftest import write_utkface_folder

    write_utkface_folder(tmp_path / "data", n=96, seed=5)
    ports = _free_ports(2)
    runs = []
    for i in range(2):
        (tmp_path / f"tmp{i}").mkdir()
        # Distinct run folders and outputs on this one host show which worker wrote what.
        args = ["--record", str(tmp_path / f"record{i}.json"), "--", "--strategy", "multiworker",
                "--data-dir", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache"),
                "--run-dir", str(tmp_path / f"run{i}"), "--output", str(tmp_path / f"out{i}" / "m.keras"), *TINY]
        runs.append((args, _env(tmp_path, TF_CONFIG=_tf_config(ports, i), TMPDIR=str(tmp_path / f"tmp{i}"))))
    started = time.monotonic()
    codes = _launch(runs, tmp_path / "logs")
    print(f"two-worker run: {time.monotonic() - started:.0f} s")
    assert codes == [0, 0], _log(tmp_path / "logs" / "0.log") + _log(tmp_path / "logs" / "1.log")
    records = [json.loads((tmp_path / f"record{i}.json").read_text()) for i in range(2)]

    for record in records:
        assert record["replicas"] == 2
        assert record["epochs"] == [["heads", 0], ["fine_tune", 0], ["fine_tune", 1]]
    for phase in ("heads", "fine_tune"):
        assert records[0]["weights"][phase] == records[1]["weights"][phase], phase
    assert records[0]["weights"]["heads"] != records[0]["weights"]["fine_tune"]

    # Sharding by data: every batch a worker trained on is its half of one global draw.
    streams = [record["streams"][0] for record in records]
    assert [(s["pipeline"], s["pipelines"]) for s in streams] == [(0, 2), (1, 2)]
    longest = max(len(s["batches"]) for s in streams)
    draws = [b.numpy().tolist() for b in distribute.index_stream(
        np.array(streams[0]["probabilities"]), 8, streams[0]["seed"]).take(longest)]
    for worker, stream in enumerate(streams):
        halves = [draw[4 * worker:4 * worker + 4] for draw in draws]
        assert len(stream["batches"]) >= 6  # 2 + 4 steps, each one batch per worker
        assert all(batch in halves for batch in stream["batches"]), worker
    seen = [{i for batch in s["batches"] for i in batch} for s in streams]
    assert seen[0] != seen[1]

    # Only the chief wrote the model, the card and the run's files; the other worker's
    # temporary folder is gone and its backup was removed at the end.
    card = json.loads((tmp_path / "out0" / "model_card.json").read_text())
    assert card["training"]["config"]["strategy"] == "multiworker" and (tmp_path / "out0" / "m.keras").is_file()
    assert {"best.keras", "last.keras", "history.csv", "state.json"} <= {p.name for p in (tmp_path / "run0").iterdir()}
    assert not (tmp_path / "run0" / "backup").exists()
    assert not (tmp_path / "out1").exists()
    assert not (tmp_path / "run1").exists() or not [p for p in (tmp_path / "run1").rglob("*") if p.is_file()]
    assert not list((tmp_path / "tmp1").iterdir())


@pytest.mark.slow
def test_mirrored_training_on_two_cpu_devices_resumes_from_its_backup(tmp_path):
    """MirroredStrategy over two logical CPU devices; the first run dies after fine-tuning epoch 1
    (os._exit, like a killed worker) and the same command continues from that epoch."""
    from tests.conftest import write_utkface_folder

    write_utkface_folder(tmp_path / "data", n=96, seed=6)
    run_dir = tmp_path / "run"
    train_args = ["--strategy", "mirrored", "--data-dir", str(tmp_path / "data"), "--cache-dir",
                  str(tmp_path / "cache"), "--run-dir", str(run_dir), *TINY]
    record = tmp_path / "record.json"
    started = time.monotonic()
    codes = _launch([(["--record", str(record), "--logical-cpus", "2", "--exit-after", "fine_tune:1", "--",
                       *train_args], _env(tmp_path))], tmp_path / "logs1")
    print(f"interrupted run: {time.monotonic() - started:.0f} s")
    assert codes == [75], _log(tmp_path / "logs1" / "0.log")
    first = json.loads(record.read_text())
    assert first["replicas"] == 2 and first["epochs"] == [["heads", 0], ["fine_tune", 0]]
    backup = run_dir / "backup" / "worker-0"
    assert distribute.backed_up_epochs(run_dir) == {"fine_tune": 1, "heads": 1}
    assert (backup / "fine_tune" / "latest.weights.h5").is_file()

    started = time.monotonic()
    codes = _launch([(["--record", str(record), "--logical-cpus", "2", "--", *train_args], _env(tmp_path))],
                    tmp_path / "logs2")
    print(f"resumed run: {time.monotonic() - started:.0f} s")
    assert codes == [0], _log(tmp_path / "logs2" / "0.log")
    second = json.loads(record.read_text())
    assert second["epochs"] == [["fine_tune", 1]]  # the heads phase restored its end, fine-tuning its epoch 1
    assert second["streams"][0]["seed"] == first["streams"][0]["seed"] + 1009 * 2  # new draws after a restart
    assert second["local_copies"] == 2 and second["unequal_local_copies"] == {"heads": [], "fine_tune": []}
    assert second["weights"]["heads"] != second["weights"]["fine_tune"]
    with (run_dir / "history.csv").open() as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["0", "0", "1"]
    state = json.loads((run_dir / "state.json").read_text())
    assert (state["phase"], state["epochs_done"]) == ("fine_tune", 2)
    assert not (run_dir / "backup").exists()
