"""Working directories on a real cluster: unpacked for the job, uploaded once per content."""

import uuid

import pytest

from helpers import wait_finished
from troupe import InvalidRequestError, JobStatus
from troupe.packaging import pack_directory, sha256_hex


def _make_dir(path, marker):
    (path / "data").mkdir(parents=True)
    (path / "data" / "input.txt").write_text(f"payload-{marker}\n")
    script = path / "run.sh"
    script.write_text('#!/bin/sh\necho "script ran in $(basename "$PWD")"\ncat data/input.txt\n')
    script.chmod(0o755)
    return path


def test_job_runs_in_its_working_directory(client, tmp_path):
    marker = uuid.uuid4().hex
    workdir = _make_dir(tmp_path / "project", marker)
    job_id = client.submit_job("./run.sh", working_dir=workdir)
    info = wait_finished(client, job_id)
    assert info.status == JobStatus.SUCCEEDED, f"{info.message}\n{client.get_job_logs(job_id)}"
    logs = client.get_job_logs(job_id)
    assert "script ran" in logs
    assert f"payload-{marker}" in logs
    assert info.working_dir_package == sha256_hex(pack_directory(workdir))


def test_same_working_dir_is_uploaded_once(client, tmp_path):
    workdir = _make_dir(tmp_path / "project", uuid.uuid4().hex)
    package = sha256_hex(pack_directory(workdir))
    assert client.has_package(package) is False
    uploads = []
    upload = client.upload_package
    client.upload_package = lambda archive: uploads.append(len(archive)) or upload(archive)

    first = client.submit_job("./run.sh", working_dir=workdir)
    assert len(uploads) == 1
    assert client.has_package(package) is True
    second = client.submit_job("./run.sh", working_dir=workdir)
    assert len(uploads) == 1, "the second submission should find the package on the head"
    assert first != second
    for job_id in (first, second):
        assert wait_finished(client, job_id).status == JobStatus.SUCCEEDED
        assert client.get_job_info(job_id).working_dir_package == package


def test_ray_style_runtime_env_is_accepted_and_unknown_keys_are_named(client, tmp_path):
    (tmp_path / "hello.txt").write_text("from runtime_env\n")
    job_id = client.submit_job(
        "cat hello.txt; echo $FLAVOUR",
        runtime_env={"working_dir": str(tmp_path), "env_vars": {"FLAVOUR": "ray-style"}},
    )
    info = client.wait_for_job(job_id, timeout=60)
    assert info.status == JobStatus.SUCCEEDED, info.message
    logs = client.get_job_logs(job_id)
    assert "from runtime_env" in logs and "ray-style" in logs
    with pytest.raises(InvalidRequestError, match="pip"):
        client.submit_job("true", runtime_env={"pip": ["numpy"]})
