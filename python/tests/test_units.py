"""Client pieces that need no cluster: packing, log decoding, configuration, statuses, CLI helpers."""

import gzip
import io
import os
import tarfile

import pytest

from troupe import ConfigError, JobDetails, JobStatus, PackageError
from troupe.cli import _entrypoint, format_table, outcome_exit_code
from troupe.config import normalize_address, resolve_address, resolve_token
from troupe.logs import LogDecoder
from troupe.packaging import chunks, pack_directory
from troupe.v1 import jobs_pb2


def _tree(root):
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_text("alpha")
    (root / "sub" / "deeper" / "b.bin").write_bytes(bytes(range(256)))
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    os.symlink("sub/deeper/b.bin", root / "link")
    return root


def test_packing_is_deterministic_and_normalized(tmp_path):
    root = _tree(tmp_path / "w")
    first = pack_directory(root)
    os.utime(root / "a.txt", (1, 1))
    assert pack_directory(root) == first
    assert first[4:8] == b"\0\0\0\0"  # gzip header mtime
    assert gzip.decompress(first)  # valid gzip
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names) == ["a.txt", "link", "run.sh", "sub", "sub/deeper", "sub/deeper/b.bin"]
    assert all(
        m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == "" for m in members
    )
    by_name = {m.name: m for m in members}
    assert by_name["link"].issym() and by_name["link"].linkname == "sub/deeper/b.bin"
    assert by_name["run.sh"].mode == 0o755 and by_name["a.txt"].mode == 0o644
    assert by_name["sub"].isdir()


def test_packing_refuses_escaping_links_large_trees_and_files(tmp_path):
    root = _tree(tmp_path / "w")
    os.symlink("/etc", root / "etc-link")
    with pytest.raises(PackageError, match="etc-link"):
        pack_directory(root)
    (root / "etc-link").unlink()
    os.symlink("../../outside", root / "sub" / "up")
    with pytest.raises(PackageError, match="outside the working directory"):
        pack_directory(root)
    (root / "sub" / "up").unlink()
    (root / "big").write_bytes(os.urandom(64 * 1024))
    with pytest.raises(PackageError, match="larger than 4096 bytes"):
        pack_directory(root, limit=4096)
    with pytest.raises(PackageError, match="not a directory"):
        pack_directory(root / "a.txt")


def test_chunks_are_one_mib():
    data = b"x" * (2 * 1024 * 1024 + 5)
    assert [len(c) for c in chunks(data)] == [1024 * 1024, 1024 * 1024, 5]
    assert list(chunks(b"")) == [b""]


def test_log_decoder_carries_split_characters():
    encoded = "café €".encode()
    decoder = LogDecoder()
    text = "".join(decoder.feed(encoded[i : i + 1]) for i in range(len(encoded))) + decoder.finish()
    assert text == "café €"
    decoder = LogDecoder()
    assert decoder.feed(b"ok\xff") == "ok\ufffd"
    assert decoder.feed(b"\xe2\x82") == ""
    assert decoder.finish() == "\ufffd"


def test_addresses(monkeypatch, tmp_path):
    assert normalize_address("http://127.0.0.1:50051/") == "127.0.0.1:50051"
    assert normalize_address("head:7") == "head:7"
    for bad in ("https://h:1", "nohost", "h:port", "http://h:1/path"):
        with pytest.raises(ConfigError):
            normalize_address(bad)
    monkeypatch.delenv("TROUPE_ADDRESS", raising=False)
    monkeypatch.setenv("TROUPE_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="TROUPE_ADDRESS"):
        resolve_address(None)
    (tmp_path / "cluster.json").write_text('{"head_address": "127.0.0.1:9"}')
    assert resolve_address(None) == "127.0.0.1:9"
    monkeypatch.setenv("TROUPE_ADDRESS", "http://10.0.0.1:5")
    assert resolve_address(None) == "10.0.0.1:5"
    assert resolve_address("x:1") == "x:1"


def test_token_lookup_order(monkeypatch, tmp_path):
    for name in ("TROUPE_TOKEN", "TROUPE_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TROUPE_HOME", str(tmp_path))
    assert resolve_token(None)[0] is None
    (tmp_path / "head").mkdir()
    (tmp_path / "head" / "token").write_text("from-home\n")
    assert resolve_token(None)[0] == "from-home"
    (tmp_path / "file").write_text(" from-file ")
    monkeypatch.setenv("TROUPE_TOKEN_FILE", str(tmp_path / "file"))
    assert resolve_token(None)[0] == "from-file"
    monkeypatch.setenv("TROUPE_TOKEN", "from-env")
    assert resolve_token(None)[0] == "from-env"
    assert resolve_token("given")[0] == "given"
    with pytest.raises(ConfigError, match="printable ASCII"):
        resolve_token("has space")
    monkeypatch.delenv("TROUPE_TOKEN")
    monkeypatch.setenv("TROUPE_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="missing"):
        resolve_token(None)


def test_statuses_and_details():
    assert [s.is_terminal() for s in JobStatus] == [False, False, True, True, True]
    for status in JobStatus:
        assert JobStatus.from_proto(jobs_pb2.JobStatus.Value(f"JOB_STATUS_{status.value}")) is status
    info = jobs_pb2.JobInfo(
        submission_id="j", status=jobs_pb2.JOB_STATUS_FAILED, has_exit_code=True, exit_code=3
    )
    info.spec.entrypoint = "exit 3"
    details = JobDetails.from_proto(info)
    assert (details.status, details.exit_code, details.signal, details.pid) == (
        JobStatus.FAILED,
        3,
        None,
        None,
    )
    assert JobDetails.from_proto(jobs_pb2.JobInfo(status=jobs_pb2.JOB_STATUS_RUNNING)).exit_code is None


def test_cli_helpers():
    assert _entrypoint(["--", "sh", "-c", "exit 3"]) == "sh -c 'exit 3'"
    assert _entrypoint(["echo hi && ls"]) == "echo hi && ls"
    make = lambda **kw: JobDetails(submission_id="j", entrypoint="x", **kw)  # noqa: E731
    assert outcome_exit_code(make(status=JobStatus.SUCCEEDED, exit_code=0)) == 0
    assert outcome_exit_code(make(status=JobStatus.FAILED, exit_code=3)) == 3
    assert outcome_exit_code(make(status=JobStatus.FAILED)) == 1
    assert outcome_exit_code(make(status=JobStatus.FAILED, signal=9)) == 137
    assert outcome_exit_code(make(status=JobStatus.STOPPED)) == 130
    table = format_table([make(status=JobStatus.FAILED, exit_code=3, submit_time_ms=1000)])
    assert table.splitlines()[0].split() == ["ID", "STATUS", "EXIT", "SUBMITTED", "ENTRYPOINT"]
    assert table.splitlines()[1].split()[:3] == ["j", "FAILED", "3"]
