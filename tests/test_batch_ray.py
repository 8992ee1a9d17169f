"""The batch job on Ray (backend/serving/batch_ray.py) on a two-node cluster on this machine, one per module.

Each node has one CPU, so ``--workers 2`` puts one actor on each. The tiny checkpoint and a fake people finder
keep the model's time small; the command-line test runs the real finder.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from backend.serving.batch import BatchError, BatchOptions, Job, run_local
from tests.test_batch import FAST, make_photos, outputs, two_people
from tests.test_cli import ENV
from tests.test_server_fixtures import REPO

ray = pytest.importorskip("ray", reason="the Ray batch needs the [ray] extra")
from ray.cluster_utils import Cluster  # noqa: E402 - only once ray is known to be there

from backend.serving.batch_ray import CLIENT_ATTEMPTS, connect, run_ray  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    # The nodes' processes inherit this environment: the fast engine settings, one thread, the repository.
    with pytest.MonkeyPatch.context() as mp:
        for k, v in (FAST | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}).items():
            mp.setenv(k, v)
        # The head also serves Ray's client protocol, for the ray:// address of the command-line test.
        port = free_port()
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                          "ray_client_server_port": port})
        c.client_address = f"ray://127.0.0.1:{port}"
        c.add_node(num_cpus=1)
        c.wait_for_nodes()
        try:
            yield c
        finally:
            if ray.is_initialized():
                ray.shutdown()
            c.shutdown()


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from backend.dfimat.model import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("rayw") / "tiny.pt")


@pytest.fixture(scope="module")
def photos(tmp_path_factory, weights) -> tuple[Path, dict[str, bytes]]:
    """Five photos and a corrupt one, and what the local batch writes for them (the reference)."""
    root = tmp_path_factory.mktemp("rayphotos")
    make_photos(root / "in", [96, 104, 112, 120, 128], corrupt=True)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in FAST.items():
            mp.setenv(k, v)
        assert run_local(BatchOptions(root / "in", root / "local", text="", weights=str(weights)),
                         detector=two_people) == 0
    return root / "in", outputs(root / "local")


def options(photos, out: Path, weights: Path) -> BatchOptions:
    return BatchOptions(photos[0], out, text="", weights=str(weights))


def test_two_workers_give_the_local_batch_s_results_byte_for_byte(cluster, photos, weights, tmp_path, capsys):
    assert run_ray(options(photos, tmp_path / "out", weights), address=cluster.address, workers=2,
                   detector=two_people) == 0
    assert outputs(tmp_path / "out") == photos[1]  # masks and index.json, the corrupt image's entry included
    out = capsys.readouterr()
    assert "ray: 2 workers" in out.err and "6/6 images, 10 people" in out.err
    assert "wrote 10 mattes for 6 images" in out.out and "1 failed: broken.png" in out.out


def dying_finder(marks: Path):
    """A finder whose worker process kills itself (SIGKILL, no clean-up) on the job's third image, once; every
    call leaves a file naming its process."""

    def find(image: np.ndarray) -> list[list[float]]:
        calls = len(list(marks.glob("call-*")))
        (marks / f"call-{os.getpid()}-{uuid.uuid4().hex}").touch()
        if calls == 2 and not (marks / "killed").exists():
            (marks / "killed").touch()
            os.kill(os.getpid(), signal.SIGKILL)
        h, w = image.shape[:2]
        return [[2.0, 2.0, w / 2, h - 2.0], [w / 2, 2.0, w - 2.0, h - 2.0]]

    return find


def test_a_worker_killed_mid_job_is_replaced_and_every_image_is_done_once(cluster, photos, weights, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    assert run_ray(options(photos, tmp_path / "out", weights), address=cluster.address, workers=2,
                   detector=dying_finder(marks)) == 0
    assert (marks / "killed").exists()
    pids = {p.name.split("-")[1] for p in marks.glob("call-*")}
    assert len(pids) == 3  # two actors, and the one Ray started in place of the killed one
    assert len(list(marks.glob("call-*"))) == 5 + 1  # five readable photos, one of them twice
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert sorted(e["image"] for e in index) == sorted(set(e["image"] for e in index))
    assert outputs(tmp_path / "out") == photos[1]  # nothing missing, nothing extra, no temporary files left


def poison_finder(width: int):
    """A finder that kills its worker process on every photo ``width`` pixels wide."""

    def find(image: np.ndarray) -> list[list[float]]:
        if image.shape[1] == width:
            os.kill(os.getpid(), signal.SIGKILL)
        h, w = image.shape[:2]
        return [[2.0, 2.0, w / 2, h - 2.0], [w / 2, 2.0, w - 2.0, h - 2.0]]

    return find


def test_an_image_that_kills_every_worker_is_reported_and_the_job_completes(cluster, photos, weights, tmp_path,
                                                                             capsys):
    assert run_ray(options(photos, tmp_path / "out", weights), address=cluster.address, workers=2,
                   detector=poison_finder(104)) == 0
    index = {e["image"]: e for e in json.loads((tmp_path / "out" / "index.json").read_text())}
    assert index["photo01.png"]["error"].startswith("its worker process died 3 times on it")
    assert index["photo01.png"]["masks"] == []
    reference = {e["image"]: e for e in json.loads(photos[1]["index.json"])}
    for name in ("photo00.png", "photo02.png", "photo03.png", "photo04.png"):
        assert index[name] == reference[name]
    assert "2 failed: broken.png, photo01.png" in capsys.readouterr().out


def test_an_interrupted_ray_job_resumes_on_the_rerun(cluster, photos, weights, tmp_path, monkeypatch, capsys):
    record = Job.record

    def record_then_ctrl_c(self, entry):
        record(self, entry)
        if len(self.entries) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(Job, "record", record_then_ctrl_c)
    opts = options(photos, tmp_path / "out", weights)
    assert run_ray(opts, address=cluster.address, workers=1, detector=two_people) == 130
    assert len(json.loads((tmp_path / "out" / "index.json").read_text())) == 3
    monkeypatch.setattr(Job, "record", record)
    capsys.readouterr()
    # The corrupt image is tried again (it may have been fixed), the two good ones recorded before are not.
    assert run_ray(opts, address=cluster.address, workers=2, detector=two_people) == 0
    assert "resumed" in capsys.readouterr().out
    assert outputs(tmp_path / "out") == photos[1]


def test_gpus_asked_of_a_cluster_without_gpus_is_one_error_line(cluster, photos, weights, tmp_path, capsys):
    assert run_ray(options(photos, tmp_path / "out", weights), address=cluster.address,
                   gpus_per_worker=1, detector=two_people) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --gpus-per-worker 1 needs GPUs, and the Ray cluster has 0"]


def test_the_command_line_on_the_cluster_matches_the_local_command_line(cluster, photos, weights, tmp_path):
    """``python -m backend batch DIR -o OUT --ray ray://HEAD:PORT`` (Ray's client, from outside the cluster) with
    the real people finder, against the same command without --ray. The other tests use HOST:PORT."""
    env = ENV | FAST
    common = [sys.executable, "-m", "backend", "batch", str(photos[0]), "--weights", str(weights)]
    local = subprocess.run([*common, "-o", str(tmp_path / "local")], capture_output=True, text=True, cwd=REPO,
                           env=env, timeout=300)
    assert local.returncode == 0, local.stderr
    on_ray = subprocess.run([*common, "-o", str(tmp_path / "ray"), "--ray", cluster.client_address, "--workers",
                             "2"],
                            capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert on_ray.returncode == 0, on_ray.stderr
    assert "Traceback" not in on_ray.stderr
    assert outputs(tmp_path / "ray") == outputs(tmp_path / "local")
    assert on_ray.stdout.replace("/ray ", "/local ").split("(")[0] == local.stdout.split("(")[0]


class RefusingRay:
    """Stands in for the ray module: ``init`` fails ``refusals`` times as Ray's client does when the head's client
    server could not start the process for that connection, then connects."""

    def __init__(self, refusals: int) -> None:
        self.refusals, self.calls = refusals, []

    def is_initialized(self) -> bool:
        return False

    def init(self, address: str, **kwargs) -> None:
        self.calls.append(address)
        if len(self.calls) <= self.refusals:
            raise ConnectionAbortedError("Initialization failure from server:\nTraceback (most recent call last):")


def test_a_ray_client_connection_the_head_refused_is_tried_again(capsys):
    fake = RefusingRay(CLIENT_ATTEMPTS - 1)
    assert connect(fake, "ray://10.0.0.1:10001") is True
    assert fake.calls == ["ray://10.0.0.1:10001"] * CLIENT_ATTEMPTS
    assert capsys.readouterr().err.count("refused the connection (Initialization failure from server)") == \
        CLIENT_ATTEMPTS - 1
    fake = RefusingRay(CLIENT_ATTEMPTS)
    with pytest.raises(BatchError, match=r"^cannot reach the Ray cluster at ray://10.0.0.1:10001: Initialization "
                                         rf"failure from server: \(tried {CLIENT_ATTEMPTS} times\)$"):
        connect(fake, "ray://10.0.0.1:10001")
    assert len(fake.calls) == CLIENT_ATTEMPTS
    fake = RefusingRay(1)  # not a client address: one try, as before
    with pytest.raises(BatchError, match="^cannot reach the Ray cluster at 10.0.0.1:6379: Initialization"):
        connect(fake, "10.0.0.1:6379")
    assert len(fake.calls) == 1
