"""Strategy choice, chief-only writing, and (in subprocesses, which need their
own TensorFlow start-up) multi-replica, multi-worker and resumed training."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tl_keras.training.distribution import (
    WorkerOutput,
    global_batch_size,
    is_chief,
    pick_distribution,
    set_precision,
    worker_name,
)

HERE = pathlib.Path(__file__).resolve().parent
SCRIPT = HERE / "distributed_training.py"


def _tf_config(monkeypatch, cluster, task):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))


def test_pick_distribution_choices(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert pick_distribution("auto") is tf.distribute.get_strategy()
    assert pick_distribution("none").num_replicas_in_sync == 1
    with pytest.raises(ValueError, match=r"received 'horovod'"):
        pick_distribution("horovod")
    with pytest.raises(ValueError, match="needs TF_CONFIG"):
        pick_distribution("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match=r"TF_CONFIG is not valid JSON .*'\{not json'"):
        pick_distribution("auto")


def test_chief_and_worker_names(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert is_chief() and worker_name() == "chief"
    workers = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    _tf_config(monkeypatch, workers, {"type": "worker", "index": 0})
    assert is_chief() and worker_name() == "chief"
    _tf_config(monkeypatch, workers, {"type": "worker", "index": 1})
    assert not is_chief() and worker_name() == "worker-1"
    _tf_config(monkeypatch, {"chief": ["127.0.0.1:3"], **workers}, {"type": "worker", "index": 0})
    assert not is_chief() and worker_name() == "worker-0"


def test_only_the_chief_keeps_what_it_writes(monkeypatch, tmp_path):
    workers = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    _tf_config(monkeypatch, workers, {"type": "worker", "index": 1})
    with WorkerOutput(tmp_path / "out") as folder:
        pathlib.Path(folder, "metrics.json").write_text("{}")
        assert pathlib.Path(folder) != tmp_path / "out"
    assert not pathlib.Path(folder).exists() and not (tmp_path / "out").exists()
    _tf_config(monkeypatch, workers, {"type": "worker", "index": 0})
    with WorkerOutput(tmp_path / "out") as folder:
        assert folder == tmp_path / "out"


def test_global_batch_and_precision():
    strategy = tf.distribute.get_strategy()
    assert global_batch_size(16, strategy) == 16
    with pytest.raises(ValueError, match="received 0"):
        global_batch_size(0, strategy)
    with pytest.warns(UserWarning, match="needs a GPU"):
        assert set_precision("mixed_float16") == "float32"
    with pytest.raises(ValueError, match="received 'float8'"):
        set_precision("float8")


def _run(args, env=None, timeout=600):
    result = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_mirrored_two_replicas_match_single_device(tmp_path):
    _run(["mirrored", str(tmp_path)])
    single = np.load(tmp_path / "single.npz")
    mirrored = np.load(tmp_path / "mirrored.npz")
    assert int(mirrored["replicas"]) == 2
    # Same initial weights, batches and global batch; the two replicas'
    # gradients are averaged instead of computed in one pass, so only float32
    # rounding (about 1e-7 relative) differs. Adam divides by sqrt(v), which
    # can amplify rounding on near-zero gradients by a few orders, hence 1e-4
    # on weights that moved by up to ~5e-3 in these steps.
    moved = max(np.abs(single[k] - single["initial_" + k]).max() for k in single.files if k.startswith("w"))
    assert moved > 1e-3
    for key in single.files:
        if key.startswith("w"):
            np.testing.assert_allclose(mirrored[key], single[key], atol=1e-4)


def test_two_tower_softmax_on_two_replicas_averages_their_gradients(tmp_path):
    _run(["two_tower_mirrored", str(tmp_path)])
    saved = np.load(tmp_path / "two_tower.npz")
    assert int(saved["replicas"]) == 2
    count = len([k for k in saved.files if k.startswith("single_")])
    moved = max(np.abs(saved[f"single_{i}"] - saved[f"initial_{i}"]).max() for i in range(count))
    assert moved > 1e-2
    for i in range(count):  # Plain SGD: only float32 rounding differs.
        np.testing.assert_allclose(saved[f"mirrored_{i}"], saved[f"single_{i}"], atol=1e-5)


def test_two_mirrored_runs_in_one_process(tmp_path):
    # A second MirroredStrategy in a process breaks the first's all-reduces
    # (tensorflow#62790); pick_distribution hands out one a process.
    _run(["two_mirrored_runs", str(tmp_path)])
    assert np.load(tmp_path / "two_runs.npz")["replicas"].tolist() == [2, 2]


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multi_worker_training_matches_single_worker(tmp_path):
    _run(["prepare", str(tmp_path)])  # Files both workers read.
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    workers = []
    try:
        for index in range(2):
            env = {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
            workers.append(subprocess.Popen([sys.executable, str(SCRIPT), "multi_worker", str(tmp_path)],
                                            env={**os.environ, **env}, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True))
        outputs = [w.communicate(timeout=300) for w in workers]
    finally:
        for worker in workers:
            worker.kill()
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    _run(["single_for_multi_worker", str(tmp_path)])
    chief, other, single = (np.load(tmp_path / f"{name}.npz") for name in ("worker-0", "worker-1", "single"))
    assert int(chief["replicas"]) == 2
    for key in single.files:
        if key.startswith("w"):
            np.testing.assert_array_equal(chief[key], other[key])
            np.testing.assert_allclose(chief[key], single[key], atol=1e-4)  # As for mirrored, above.
    # Only the chief wrote the report.
    assert (tmp_path / "multi_worker_run" / "metrics.json").exists()
    assert not list(tmp_path.glob("tl_keras_worker_*"))


def test_killed_run_resumes_from_its_last_epoch(tmp_path):
    _run(["prepare", str(tmp_path)])
    command = [sys.executable, str(SCRIPT), "resume", str(tmp_path)]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metadata = tmp_path / "resumed" / "backup" / "chief" / "full" / "training_metadata.json"
    try:
        deadline = time.monotonic() + 300
        while not (metadata.exists() and json.loads(metadata.read_text() or "{}").get("epoch", 0) >= 2):
            assert first.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        first.kill()
    assert not (tmp_path / "resumed" / "metrics.json").exists()
    _run(["resume", str(tmp_path)])  # The same command again.
    resumed = json.loads((tmp_path / "resumed" / "metrics.json").read_text())["history"]
    _run(["uninterrupted", str(tmp_path)])
    straight = json.loads((tmp_path / "uninterrupted" / "metrics.json").read_text())["history"]
    assert resumed["phase"] == straight["phase"] == ["head"] + ["full"] * 6
    assert len(resumed["loss"]) == 7
    # The first epochs come from the killed attempt and were not redone.
    assert resumed["loss"][:2] == pytest.approx(straight["loss"][:2], rel=1e-3)
    # The resumed epochs draw other shuffles than the straight run's, so the
    # final loss is close, not equal.
    assert resumed["loss"][-1] == pytest.approx(straight["loss"][-1], rel=0.25, abs=0.02)
    assert resumed["loss"][-1] < resumed["loss"][1]
