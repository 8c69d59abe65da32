"""Actor logs through the head: a job's driver (examples/job_driver.rs, built by `cargo test`)
spawns a named actor that prints; get_actor_logs finds it by name and reads its lines from the
node agent that ran it. Unknown actors and incarnations are refused by name."""

import os
from pathlib import Path

import pytest

from helpers import wait_finished, wait_until
from troupe import IncarnationLog, JobStatus, TroupeError
from troupe.actor_logs import parse_line, parse_records

REPO_ROOT = Path(__file__).resolve().parents[2]
JOB_DRIVER = REPO_ROOT / "target" / "debug" / "examples" / "job_driver"


def test_records_parse_and_foreign_lines_are_kept():
    assert parse_line("1700000000123 E boom") == parse_records(b"1700000000123 E boom\n")[0]
    line = parse_line("1700000000123 O hello world")
    assert (line.unix_ms, line.stream, line.text) == (1700000000123, "stdout", "hello world")
    assert parse_line("not a record").unix_ms == 0
    assert [l.text for l in parse_records(b"1 O a\n2 O \n")] == ["a", ""]


def test_an_unknown_actor_is_named(client):
    with pytest.raises(TroupeError, match="no actor named `no-such-actor`"):
        client.get_actor_logs("no-such-actor")


def test_a_job_drivers_actor_logs_are_read_by_name(client):
    if not os.access(JOB_DRIVER, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail(f"{JOB_DRIVER} is missing: `cargo test --workspace` builds it", pytrace=False)
        pytest.skip(f"{JOB_DRIVER} is not built (cargo build -p troupe --example job_driver)")
    job_id = client.submit_job(f"{JOB_DRIVER} --actors 1 --hold-s 20")
    wait_until(lambda: "actor 0 answered" in client.get_job_logs(job_id), 60, "the job's actor to answer")
    logs = client.get_actor_logs(f"{job_id}-echo-0")
    assert len(logs) == 1 and isinstance(logs[0], IncarnationLog)
    log = logs[0]
    assert log.incarnation == 1 and log.node_id and log.ended_unix_ms == 0
    texts = [line.text for line in log.lines]
    assert "echo got `hello 0` (call 1)" in texts, texts
    assert all(line.unix_ms > 1_600_000_000_000 for line in log.lines if line.text.startswith("echo got"))
    assert client.get_actor_logs(f"{job_id}-echo-0", tail=1)[0].lines[-1].text == texts[-1]
    assert client.get_actor_logs(f"{job_id}-echo-0", since_unix_ms=2**62)[0].lines == []
    by_id = client.get_actor_logs(log.actor_id)
    assert [line.text for line in by_id[0].lines] == texts
    with pytest.raises(TroupeError, match="no incarnation 5"):
        client.get_actor_logs(f"{job_id}-echo-0", incarnation=5)
    client.stop_job(job_id, grace_s=0.5)
    assert wait_finished(client, job_id, timeout=20).status in (JobStatus.STOPPED, JobStatus.SUCCEEDED)
