"""Shared test helpers: polling with a deadline, making tar.gz archives, finding job processes."""

import io
import tarfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], Optional[T]], timeout: float, what: str, interval: float = 0.1) -> T:
    """Calls `check` until it returns something truthy, and returns that; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def make_archive(members: List[Dict[str, str]]) -> bytes:
    """A tar.gz from dicts with `name` and either `data` (a file) or `link` (a symlink target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for member in members:
            info = tarfile.TarInfo(member["name"])
            if "link" in member:
                info.type = tarfile.SYMTYPE
                info.linkname = member["link"]
                tar.addfile(info)
            else:
                data = member.get("data", "").encode()
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def processes_with_env(name: str, value: str) -> List[int]:
    """Pids of this user's processes whose environment has name=value (from /proc)."""
    needle = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def process_exists(pid: int) -> bool:
    """Whether a process (not a zombie) with this pid exists."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_finished(client, job_id: str, timeout: float = 60.0):
    """The job's JobDetails once it has finished; AssertionError with its log after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        info = client.get_job_info(job_id)
        if info.status.is_terminal():
            return info
        if time.monotonic() >= deadline:
            logs = client.get_job_logs(job_id)
            raise AssertionError(
                f"job {job_id} still {info.status} after {timeout} s: {info.message}\n{logs}"
            )
        time.sleep(0.1)
