"""Jobs on a real cluster: success, failure, stop, delete, idempotent ids, environment, not found."""

import time
import uuid

import pytest

from helpers import process_exists, processes_with_env, wait_finished, wait_until
from troupe import InvalidRequestError, JobAlreadyExistsError, JobNotFoundError, JobStatus


def test_job_that_exits_0_succeeds_and_its_output_is_logged(client):
    job_id = client.submit_job("echo hello-from-job; echo second line")
    info = wait_finished(client, job_id)
    assert info.status == JobStatus.SUCCEEDED, info.message
    assert info.exit_code == 0
    assert client.get_job_status(job_id) == JobStatus.SUCCEEDED
    logs = client.get_job_logs(job_id)
    assert "hello-from-job\n" in logs and "second line\n" in logs
    assert info.entrypoint == "echo hello-from-job; echo second line"
    assert info.submit_time_ms and info.start_time_ms and info.end_time_ms
    assert info.submit_time_ms <= info.start_time_ms <= info.end_time_ms


def test_job_that_exits_3_fails_with_its_exit_code_and_last_lines(client):
    job_id = client.submit_job("echo first-words; echo last-words >&2; exit 3")
    info = wait_finished(client, job_id)
    assert info.status == JobStatus.FAILED
    assert info.exit_code == 3
    assert "last-words" in info.log_tail or "last-words" in info.message
    assert "first-words" in client.get_job_logs(job_id)


def test_long_job_is_stopped_and_its_processes_are_gone(client):
    job_id = client.submit_job("echo started; sleep 600")
    wait_until(lambda: "started" in client.get_job_logs(job_id), 30, "the job to print `started`")
    info = client.get_job_info(job_id)
    assert info.status == JobStatus.RUNNING and info.pid
    assert processes_with_env("TROUPE_JOB_ID", job_id), "the job's processes should be visible"
    with pytest.raises(InvalidRequestError):
        client.delete_job(job_id)  # not finished yet
    started = time.monotonic()
    assert client.stop_job(job_id, grace_s=2) is True
    info = wait_finished(client, job_id, timeout=15)
    assert info.status == JobStatus.STOPPED
    assert time.monotonic() - started < 10
    assert info.stop_requested
    wait_until(lambda: not process_exists(info.pid), 5, f"pid {info.pid} to exit")
    wait_until(lambda: not processes_with_env("TROUPE_JOB_ID", job_id), 5, "the sleep to exit")
    assert client.stop_job(job_id) is False  # already finished


def test_finished_job_is_deleted(client):
    job_id = client.submit_job("true")
    wait_finished(client, job_id)
    assert client.delete_job(job_id) is True
    with pytest.raises(JobNotFoundError, match="no such job"):
        client.get_job_info(job_id)
    assert client.delete_job(job_id) is False
    assert job_id not in {job.submission_id for job in client.list_jobs()}


def test_unknown_job_is_not_found(client):
    with pytest.raises(JobNotFoundError, match="no-such-job-42"):
        client.get_job_status("no-such-job-42")
    with pytest.raises(JobNotFoundError):
        client.get_job_logs("no-such-job-42")


def test_same_submission_id_runs_once(client):
    submission_id = f"dup-{uuid.uuid4().hex[:8]}"
    marker = f"once-{uuid.uuid4().hex}"
    first = client.submit_job(f"echo {marker}", submission_id=submission_id)
    second = client.submit_job(f"echo {marker}", submission_id=submission_id)
    assert first == second == submission_id
    assert [job.submission_id for job in client.list_jobs()].count(submission_id) == 1
    assert wait_finished(client, submission_id).status == JobStatus.SUCCEEDED
    assert client.get_job_logs(submission_id).count(marker) == 1
    with pytest.raises(JobAlreadyExistsError):
        client.submit_job("echo something else", submission_id=submission_id)


def test_environment_reaches_the_job(client, cluster):
    job_id = client.submit_job(
        'echo "G=$GREETING"; echo "A=$TROUPE_ADDRESS"; echo "J=$TROUPE_JOB_ID"',
        env_vars={"GREETING": "hi there"},
        metadata={"owner": "tests"},
    )
    info = wait_finished(client, job_id)
    assert info.status == JobStatus.SUCCEEDED, info.message
    lines = client.get_job_logs(job_id).splitlines()
    assert "G=hi there" in lines
    assert f"J={job_id}" in lines
    address = next(line[2:] for line in lines if line.startswith("A="))
    assert address.rsplit(":", 1)[-1] == cluster.address.rsplit(":", 1)[-1], address
    assert info.env_vars == {"GREETING": "hi there"}
    assert info.metadata == {"owner": "tests"}


def test_submission_ids_that_could_name_other_paths_are_refused(client):
    for bad in ("../escape", "a/b", ".hidden", "with space"):
        with pytest.raises(InvalidRequestError, match="submission_id"):
            client.submit_job("true", submission_id=bad)
    assert not any(job.submission_id == "../escape" for job in client.list_jobs())
