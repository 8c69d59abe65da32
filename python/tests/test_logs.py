"""Log streaming on a real cluster: tail_job_logs and async_tail_job_logs see output while it is written."""

import asyncio

from helpers import wait_finished
from troupe import JobStatus

SLOW_PRINTER = "for i in 1 2 3 4 5; do echo tail-line-$i; sleep 1; done"


def _expect_all_lines(text):
    positions = [text.index(f"tail-line-{i}\n") for i in range(1, 6)]
    assert positions == sorted(positions), text


def test_tail_job_logs_yields_lines_while_the_job_runs(client):
    job_id = client.submit_job(SLOW_PRINTER)
    received = ""
    status_at_first_line = None
    for text in client.tail_job_logs(job_id):
        received += text
        if status_at_first_line is None and "tail-line-1" in received:
            status_at_first_line = client.get_job_status(job_id)
    assert status_at_first_line == JobStatus.RUNNING
    _expect_all_lines(received)
    assert wait_finished(client, job_id, timeout=10).status == JobStatus.SUCCEEDED


def test_async_tail_job_logs_yields_lines_while_the_job_runs(client):
    job_id = client.submit_job(SLOW_PRINTER)

    async def follow():
        received, status_at_first_line = "", None
        async for text in client.async_tail_job_logs(job_id):
            received += text
            if status_at_first_line is None and "tail-line-1" in received:
                status_at_first_line = client.get_job_status(job_id)
        return received, status_at_first_line

    received, status_at_first_line = asyncio.run(asyncio.wait_for(follow(), timeout=60))
    assert status_at_first_line == JobStatus.RUNNING
    _expect_all_lines(received)


def test_utf8_output_is_decoded(client):
    job_id = client.submit_job("printf 'caf\\303\\251 \\342\\202\\254\\n'")
    assert wait_finished(client, job_id).status == JobStatus.SUCCEEDED
    assert "café €" in "".join(client.tail_job_logs(job_id))
    assert "café €" in client.get_job_logs(job_id)
