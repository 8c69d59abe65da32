"""JobSubmissionClient: submits, watches, stops and deletes jobs on a troupe cluster over gRPC."""

import os
import time
from typing import AsyncIterator, Dict, Iterator, List, Mapping, Optional, Union

import grpc
import grpc.aio

from .config import resolve_address, resolve_token
from .errors import (
    InvalidRequestError,
    JobNotFoundError,
    PackageError,
    TroupeError,
    WaitTimeoutError,
    from_rpc_error,
)
from .actor_logs import (
    MAX_READ_BYTES,
    READ_BYTES,
    UNREADABLE_CODES,
    IncarnationLog,
    LogLine,
    looks_like_id,
    parse_records,
    request_for,
)
from .logs import LogDecoder
from .models import JobDetails, JobStatus
from .packaging import MAX_PACKAGE_BYTES, chunks, describe_size, pack_directory, sha256_hex
from .v1 import common_pb2, head_pb2, head_pb2_grpc, jobs_pb2, jobs_pb2_grpc

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Like the Rust client: no HTTP proxy between the client and the head.
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.enable_http_proxy", 0),
]
MAX_GRACE_S = 600.0
_MIB = 1024 * 1024


def _string_map(values: Optional[Mapping[str, str]], what: str) -> Dict[str, str]:
    result: Dict[str, str] = {}
    for key, value in (values or {}).items():
        if not isinstance(key, str) or not isinstance(value, str) or not key:
            raise InvalidRequestError(
                f"{what}: keys and values must be strings (and keys non-empty), got {key!r}={value!r}"
            )
        result[key] = value
    return result


def _amount(value: Optional[float], what: str) -> float:
    amount = float(value or 0.0)
    if not amount >= 0.0 or amount == float("inf"):
        raise InvalidRequestError(f"{what} must be a finite number >= 0, got {value!r}")
    return amount


RUNTIME_ENV_KEYS = ("working_dir", "env_vars")


def _merge_runtime_env(
    runtime_env: Mapping[str, object],
    working_dir: Optional[Union[str, "os.PathLike[str]"]],
    env_vars: Optional[Mapping[str, str]],
) -> tuple:
    """Ray's `runtime_env` spelled as troupe's arguments; unsupported keys are an error."""
    unknown = sorted(set(runtime_env) - set(RUNTIME_ENV_KEYS))
    if unknown:
        raise InvalidRequestError(
            f"runtime_env keys {unknown} are not supported (troupe takes {list(RUNTIME_ENV_KEYS)})"
        )
    if "working_dir" in runtime_env:
        if working_dir is not None:
            raise InvalidRequestError("give working_dir once: as an argument or in runtime_env")
        working_dir = runtime_env["working_dir"]  # type: ignore[assignment]
    if "env_vars" in runtime_env:
        extra = runtime_env["env_vars"]
        if not isinstance(extra, Mapping):
            raise InvalidRequestError("runtime_env['env_vars'] must be a mapping of strings")
        env_vars = {**dict(extra), **dict(env_vars or {})}
    return working_dir, env_vars


class JobSubmissionClient:
    """A connection to a troupe head for jobs.

    `address` is `host:port` or `http://host:port` (default: $TROUPE_ADDRESS, then the cluster
    `troupe up` started). `token` is the cluster token (default: $TROUPE_TOKEN, the file named by
    $TROUPE_TOKEN_FILE, $TROUPE_HOME/head/token, /tmp/troupe-up/head/token); it is sent as
    `authorization: Bearer TOKEN` on every call. `timeout` bounds each unary call in seconds.
    """

    def __init__(
        self, address: Optional[str] = None, token: Optional[str] = None, timeout: float = 30.0
    ) -> None:
        self.address = resolve_address(address)
        self.timeout = timeout
        token_value, self.token_source = resolve_token(token)
        self._metadata = (("authorization", f"Bearer {token_value}"),) if token_value else ()
        self._channel = grpc.insecure_channel(self.address, options=CHANNEL_OPTIONS)
        self._jobs = jobs_pb2_grpc.JobsStub(self._channel)
        self._cluster = head_pb2_grpc.ClusterStub(self._channel)
        self._actors = head_pb2_grpc.ActorsStub(self._channel)

    def close(self) -> None:
        """Closes the connection; the client cannot be used afterwards."""
        self._channel.close()

    def __enter__(self) -> "JobSubmissionClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _error(self, error: grpc.RpcError, job_id: Optional[str] = None) -> TroupeError:
        return from_rpc_error(error, self.address, self.token_source, job_id)

    def _call(self, method, request, job_id: Optional[str] = None, timeout: Optional[float] = None):
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise self._error(error, job_id) from error

    def get_version(self) -> str:
        """The head's version string (the one call that needs no token)."""
        return self._call(self._cluster.Version, common_pb2.Empty()).version

    def submit_job(
        self,
        entrypoint: str,
        working_dir: Optional[Union[str, "os.PathLike[str]"]] = None,
        env_vars: Optional[Mapping[str, str]] = None,
        entrypoint_num_cpus: Optional[float] = None,
        entrypoint_num_gpus: Optional[float] = None,
        submission_id: Optional[str] = None,
        metadata: Optional[Mapping[str, str]] = None,
        runtime_env: Optional[Mapping[str, object]] = None,
    ) -> str:
        """Submits `entrypoint` (a shell command line, run with `sh -c`) and returns the job's id.

        `working_dir` is packed, uploaded unless the head has it already, and unpacked as the
        job's current directory. Submitting a `submission_id` again with the same spec runs nothing
        new and returns the same id; with another spec it raises JobAlreadyExistsError.
        `runtime_env` takes Ray's form, `{"working_dir": ..., "env_vars": {...}}`, for code written
        against Ray's client; other keys are refused by name.
        """
        if not isinstance(entrypoint, str) or not entrypoint.strip():
            raise InvalidRequestError("the entrypoint is empty")
        if runtime_env:
            working_dir, env_vars = _merge_runtime_env(runtime_env, working_dir, env_vars)
        spec = jobs_pb2.JobSpec(
            entrypoint=entrypoint,
            working_dir_package=self.upload_working_dir(working_dir) if working_dir is not None else "",
            env_vars=_string_map(env_vars, "env_vars"),
            entrypoint_num_cpus=_amount(entrypoint_num_cpus, "entrypoint_num_cpus"),
            entrypoint_num_gpus=_amount(entrypoint_num_gpus, "entrypoint_num_gpus"),
            metadata=_string_map(metadata, "metadata"),
        )
        request = jobs_pb2.SubmitJobRequest(submission_id=submission_id or "", spec=spec)
        return self._call(self._jobs.SubmitJob, request, job_id=submission_id).submission_id

    def upload_working_dir(self, path: Union[str, "os.PathLike[str]"]) -> str:
        """Packs the directory, uploads it unless the head has it, and returns its sha256."""
        archive = pack_directory(path)
        digest = sha256_hex(archive)
        if self.has_package(digest):
            return digest
        return self.upload_package(archive)

    def has_package(self, package_hash: str) -> bool:
        """Whether the head stores a working-directory package with this sha256."""
        reply = self._call(self._jobs.HasPackage, common_pb2.BinaryRef(hash=package_hash))
        return reply.present

    def upload_package(self, archive_bytes: bytes) -> str:
        """Uploads a working-directory archive (a .tar.gz) as is, in 1 MiB chunks; returns its sha256.

        The head checks the archive (no paths leaving the directory, no links pointing outside)
        and raises InvalidRequestError naming what it refused.
        """
        if len(archive_bytes) > MAX_PACKAGE_BYTES:
            limit = describe_size(MAX_PACKAGE_BYTES)
            raise PackageError(f"the package is {len(archive_bytes)} bytes, more than the {limit} allowed")
        digest = sha256_hex(archive_bytes)

        def requests() -> Iterator[common_pb2.BinaryChunk]:
            for index, piece in enumerate(chunks(archive_bytes)):
                yield common_pb2.BinaryChunk(hash=digest if index == 0 else "", data=piece)

        # Allow for a slow link: at least 1 MiB/s on top of the usual timeout.
        deadline = self.timeout + len(archive_bytes) / _MIB
        reply = self._call(self._jobs.UploadPackage, requests(), timeout=deadline)
        if reply.hash and reply.hash != digest:
            raise TroupeError(f"the head stored the package as {reply.hash}, but its sha256 is {digest}")
        return digest

    def get_job_info(self, job_id: str) -> JobDetails:
        """Everything the head keeps about the job; JobNotFoundError if there is none."""
        return JobDetails.from_proto(
            self._call(self._jobs.GetJob, jobs_pb2.JobRef(submission_id=job_id), job_id)
        )

    def get_job_status(self, job_id: str) -> JobStatus:
        """The job's status."""
        return self.get_job_info(job_id).status

    def list_jobs(self) -> List[JobDetails]:
        """Every job the head keeps, finished or not."""
        reply = self._call(self._jobs.ListJobs, common_pb2.Empty())
        return [JobDetails.from_proto(info) for info in reply.jobs]

    def stop_job(self, job_id: str, grace_s: Optional[float] = None) -> bool:
        """Stops the job: SIGTERM, then SIGKILL after `grace_s` seconds (default 5, at most 600).

        Returns False when the job had already finished.
        """
        grace_ms = 0
        if grace_s is not None:
            if not 0.0 <= grace_s <= MAX_GRACE_S:
                raise InvalidRequestError(f"grace_s must be between 0 and {MAX_GRACE_S:g}, got {grace_s}")
            grace_ms = max(1, round(grace_s * 1000))  # 0 would mean "the default" to the head
        reply = self._call(
            self._jobs.StopJob, jobs_pb2.StopJobRequest(submission_id=job_id, grace_ms=grace_ms), job_id
        )
        return reply.stopped

    def delete_job(self, job_id: str) -> bool:
        """Deletes a finished job's record and log. True when deleted, False when there was no such job.

        A job that has not finished raises InvalidRequestError (stop it first).
        """
        try:
            self._call(self._jobs.DeleteJob, jobs_pb2.JobRef(submission_id=job_id), job_id)
        except JobNotFoundError:
            return False
        return True

    def get_actor_logs(
        self,
        actor: str,
        incarnation: Optional[int] = None,
        tail: Optional[int] = None,
        since_unix_ms: Optional[int] = None,
    ) -> List[IncarnationLog]:
        """An actor's stdout and stderr, by name or id, one entry per incarnation the head knows
        (oldest first; only `incarnation` when given), read from the node agents that ran them.
        `tail` keeps the last lines of each; `since_unix_ms` only lines from then on. At most
        `MAX_READ_BYTES` are read per incarnation (its end). An incarnation whose node died or does
        not answer has no lines and says why in `unreadable`. An unknown actor raises TroupeError
        naming it."""
        try:
            listing = self._actors.ReadActorLog(
                request_for(actor, list_only=True), timeout=self.timeout, metadata=self._metadata
            )
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND or not looks_like_id(actor):
                raise self._error(error) from error
            # An id-shaped name.
            by_name = head_pb2.ReadActorLogRequest(name=actor, list_only=True)
            listing = self._call(self._actors.ReadActorLog, by_name)
        chosen = [i for i in listing.incarnations if incarnation is None or i.incarnation == incarnation]
        if incarnation is not None and not chosen:
            known = ", ".join(str(i.incarnation) for i in listing.incarnations) or "none"
            raise TroupeError(f"actor {listing.actor_id} has no incarnation {incarnation} (known: {known})")
        logs = []
        for entry in chosen:
            log = IncarnationLog(
                actor_id=listing.actor_id,
                incarnation=entry.incarnation,
                node_id=entry.node_id,
                started_unix_ms=entry.started_unix_ms,
                ended_unix_ms=entry.ended_unix_ms,
                exit_reason=entry.exit_reason,
            )
            if since_unix_ms is not None and 0 < entry.ended_unix_ms < since_unix_ms:
                logs.append(log)
                continue
            try:
                log.lines = self._read_incarnation(listing.actor_id, entry.incarnation, tail)
            except grpc.RpcError as error:
                if error.code() not in UNREADABLE_CODES:
                    raise self._error(error) from error
                log.unreadable = error.details()
            if since_unix_ms is not None:
                log.lines = [line for line in log.lines if line.unix_ms >= since_unix_ms]
            if tail is not None:
                log.lines = log.lines[len(log.lines) - min(tail, len(log.lines)) :]
            logs.append(log)
        return logs

    def _read_incarnation(self, actor_id: str, incarnation: int, tail: Optional[int]) -> List[LogLine]:
        """One incarnation's lines: its last `MAX_READ_BYTES`, or with `tail` a window from the
        end grown until it holds that many lines, read up to the size the log had at the first
        read."""

        def read(**fields):
            request = head_pb2.ReadActorLogRequest(id=actor_id, incarnation=incarnation, max_bytes=READ_BYTES, **fields)
            return self._actors.ReadActorLog(request, timeout=self.timeout, metadata=self._metadata).chunk

        window = MAX_READ_BYTES if tail is None else min(MAX_READ_BYTES, max(4096, (tail + 1) * 256))
        while True:
            first = read(offset=window, from_end=True)
            data = bytearray(first.data)
            end, offset = first.size, first.next_offset
            while offset < end and len(data) < MAX_READ_BYTES:
                chunk = read(offset=offset)
                if not chunk.data:
                    break
                data += chunk.data[: max(0, end - offset)]
                offset = chunk.next_offset
            if first.offset > 0:  # a read from mid-file drops its first, cut line
                cut = data.find(b"\n")
                data = data[cut + 1 :] if cut >= 0 else bytearray()
            lines = parse_records(bytes(data))
            if tail is None or len(lines) >= tail or first.offset == 0 or window >= MAX_READ_BYTES:
                return lines
            window = min(MAX_READ_BYTES, window * 4)

    def get_job_logs(self, job_id: str) -> str:
        """The job's whole log so far, as text (invalid UTF-8 replaced)."""
        data = bytearray()
        offset = 0
        while True:
            request = jobs_pb2.GetJobLogsRequest(submission_id=job_id, offset=offset, max_bytes=0)
            chunk = self._call(self._jobs.GetJobLogs, request, job_id)
            data += chunk.data
            if chunk.complete or chunk.next_offset <= offset:
                break
            offset = chunk.next_offset
        return bytes(data).decode("utf-8", errors="replace")

    def tail_job_logs(self, job_id: str) -> Iterator[str]:
        """Yields the job's log text from the start as it grows; ends once the job has finished."""
        request = jobs_pb2.TailJobLogsRequest(submission_id=job_id, offset=0)
        call = self._jobs.TailJobLogs(request, metadata=self._metadata)
        decoder = LogDecoder()
        try:
            for chunk in call:
                text = decoder.feed(chunk.data)
                if text:
                    yield text
        except grpc.RpcError as error:
            raise self._error(error, job_id) from error
        finally:
            call.cancel()
        rest = decoder.finish()
        if rest:
            yield rest

    async def async_tail_job_logs(self, job_id: str) -> AsyncIterator[str]:
        """Like tail_job_logs, for asyncio (its own grpc.aio channel, opened in the running loop)."""
        request = jobs_pb2.TailJobLogsRequest(submission_id=job_id, offset=0)
        decoder = LogDecoder()
        async with grpc.aio.insecure_channel(self.address, options=CHANNEL_OPTIONS) as channel:
            call = jobs_pb2_grpc.JobsStub(channel).TailJobLogs(request, metadata=self._metadata)
            try:
                async for chunk in call:
                    text = decoder.feed(chunk.data)
                    if text:
                        yield text
            except grpc.RpcError as error:
                raise self._error(error, job_id) from error
            finally:
                call.cancel()
        rest = decoder.finish()
        if rest:
            yield rest

    def wait_for_job(self, job_id: str, timeout: Optional[float] = None, poll_s: float = 0.2) -> JobDetails:
        """Polls until the job has finished and returns its details; WaitTimeoutError after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            info = self.get_job_info(job_id)
            if info.status.is_terminal():
                return info
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeoutError(f"job {job_id} is still {info.status} after {timeout} s")
            time.sleep(poll_s)
