"""`python -m troupe job ...` against a real cluster: exit codes, list, status, logs, errors."""

import json
import os
import re
import subprocess
import sys

import pytest


@pytest.fixture
def run_cli(cluster):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TROUPE_")}
    env["TROUPE_TOKEN"] = cluster.token

    def run(*args, timeout=60):
        command = [sys.executable, "-m", "troupe", "--address", cluster.address, *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)

    return run


def test_submit_wait_exits_with_the_job_exit_code_and_list_shows_it(run_cli):
    result = run_cli("job", "submit", "--wait", "--", "sh", "-c", "echo cli-output; exit 3")
    assert result.returncode == 3, result.stderr
    assert "cli-output" in result.stdout
    job_id = re.search(r"submitted job (\S+)", result.stderr).group(1)
    listing = run_cli("job", "list")
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if line.startswith(job_id))
    assert "FAILED" in row and " 3 " in row
    listed = json.loads(run_cli("job", "list", "--json").stdout)
    entry = next(job for job in listed if job["submission_id"] == job_id)
    assert entry["status"] == "FAILED" and entry["exit_code"] == 3
    status = run_cli("job", "status", job_id)
    assert (
        status.returncode == 0 and "FAILED" in status.stdout and re.search(r"exit_code:\s+3", status.stdout)
    )


def test_submit_prints_the_id_and_logs_show_output(run_cli):
    result = run_cli(
        "job", "submit", "--env", "WHO=cli", "--submission-id", "cli-logs-1", "--", 'echo "from $WHO"'
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "cli-logs-1"
    followed = run_cli("job", "logs", "cli-logs-1", "-f")
    assert followed.returncode == 0 and "from cli" in followed.stdout
    logs = run_cli("job", "logs", "cli-logs-1")
    assert logs.returncode == 0 and "from cli" in logs.stdout
    assert run_cli("job", "delete", "cli-logs-1").returncode == 0
    assert run_cli("job", "delete", "cli-logs-1").returncode == 1


def test_submit_wait_exits_0_on_success_and_130_when_stopped(run_cli):
    assert run_cli("job", "submit", "--wait", "--", "true").returncode == 0
    submitted = run_cli("job", "submit", "--submission-id", "cli-stop-1", "--", "sleep 600")
    assert submitted.returncode == 0, submitted.stderr
    stopped = run_cli("job", "stop", "cli-stop-1", "--grace-s", "1")
    assert stopped.returncode == 0, stopped.stderr
    waited = run_cli("job", "submit", "--wait", "--submission-id", "cli-stop-1", "--", "sleep 600")
    assert waited.returncode == 130, waited.stderr


def test_errors_are_one_line_and_exit_1(run_cli):
    result = run_cli("job", "status", "no-such-job-cli")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "no such job" in result.stderr
