"""Fixtures: a real troupe head and node agent started from the Rust binary, and clients for it.

The binary is $TROUPE_BIN, else target/debug/troupe at the repository root (build it with
`cargo build -p troupe-cli`). Both processes run in their own process groups and are killed at the
end of the session, also when a test or the start-up failed.
"""

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List

import grpc
import pytest

from helpers import wait_until
from troupe import JobSubmissionClient, TroupeError
from troupe.v1 import common_pb2, head_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0


def troupe_binary() -> Path:
    """Where the Rust `troupe` executable is."""
    path = Path(os.environ.get("TROUPE_BIN") or REPO_ROOT / "target" / "debug" / "troupe")
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"no troupe executable at {path}: run `cargo build -p troupe-cli` or set TROUPE_BIN", pytrace=False
        )
    return path


@dataclass
class Cluster:
    """A running head and node agent."""

    address: str
    token: str
    root: Path
    data_dir: Path
    work_dir: Path
    processes: List[subprocess.Popen]

    def client(self, **kwargs) -> JobSubmissionClient:
        """A client with the cluster's address and token (override either with kwargs)."""
        kwargs.setdefault("address", self.address)
        kwargs.setdefault("token", self.token)
        return JobSubmissionClient(**kwargs)

    def logs(self) -> str:
        """The last lines of the head's and node agent's output, for failure messages."""
        parts = []
        for name in ("head.log", "node.log"):
            path = self.root / name
            lines = path.read_text(errors="replace").splitlines()[-30:] if path.exists() else []
            parts.append(f"--- {name}\n" + "\n".join(lines))
        return "\n".join(parts)


def _start(args: List[str], log: Path, env: dict) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )


def _kill(process: subprocess.Popen) -> None:
    """SIGTERM to the process group, SIGKILL after 5 s."""
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # the group may outlive its leader
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _node_alive(address: str, token: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = head_pb2_grpc.ClusterStub(channel).Status(
                common_pb2.Empty(), timeout=5, metadata=(("authorization", f"Bearer {token}"),)
            )
        except grpc.RpcError:
            return False
    return any(node.alive for node in reply.nodes)


def _stop_unfinished_jobs(cluster: Cluster) -> None:
    try:
        with cluster.client(timeout=5.0) as client:
            for job in client.list_jobs():
                if not job.status.is_terminal():
                    client.stop_job(job.submission_id, grace_s=0.5)
    except TroupeError:
        pass


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A head (`troupe head --port 0`) and one node agent with 4 CPUs, for the whole session."""
    binary = troupe_binary()
    root = tmp_path_factory.mktemp("cluster")
    data_dir, work_dir, address_file = root / "head-data", root / "node-work", root / "head.address"
    data_dir.mkdir()
    work_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TROUPE_")}
    env["TROUPE_HOME"] = str(root / "no-troupe-up")
    processes: List[subprocess.Popen] = []
    cluster = Cluster("", "", root, data_dir, work_dir, processes)
    try:
        head_args = [
            str(binary),
            "head",
            "--port",
            "0",
            "--data-dir",
            str(data_dir),
            "--address-file",
            str(address_file),
        ]
        processes.append(_start(head_args, root / "head.log", env))

        def head_ready() -> str:
            if processes[0].poll() is not None:
                raise AssertionError(f"the head exited with {processes[0].returncode}\n{cluster.logs()}")
            if not address_file.exists() or not (data_dir / "token").exists():
                return ""
            text = address_file.read_text().strip()
            time.sleep(0.05)  # read twice, in case the file was caught half written
            return text if re.fullmatch(r"\S+:\d+", text) and text == address_file.read_text().strip() else ""

        cluster.address = wait_until(head_ready, START_TIMEOUT_S, "the head's address file and token")
        cluster.token = (data_dir / "token").read_text().strip()
        with cluster.client() as client:
            wait_until(lambda: _answers_version(client), START_TIMEOUT_S, "the head to answer Version")
        node_args = [
            str(binary),
            "node",
            "--head",
            cluster.address,
            "--work-dir",
            str(work_dir),
            "--cpus",
            "4",
            "--token-file",
            str(data_dir / "token"),
        ]
        processes.append(_start(node_args, root / "node.log", env))
        wait_until(
            lambda: _node_alive(cluster.address, cluster.token), START_TIMEOUT_S, "the node agent to register"
        )
        yield cluster
    finally:
        if cluster.address and cluster.token:
            _stop_unfinished_jobs(cluster)
        for process in reversed(processes):
            _kill(process)


def _answers_version(client: JobSubmissionClient) -> bool:
    try:
        client.get_version()
    except TroupeError:
        return False
    return True


@pytest.fixture
def client(cluster: Cluster) -> Iterator[JobSubmissionClient]:
    """A client of the session's cluster, closed after the test."""
    with cluster.client() as job_client:
        yield job_client
