"""What the client hands back about jobs: the JobStatus enum and the JobDetails record."""

import enum
from dataclasses import dataclass, field
from typing import Dict, Optional

from .errors import TroupeError
from .v1 import jobs_pb2


class JobStatus(str, enum.Enum):
    """Where a job is in its life. PENDING and RUNNING change; the others are final."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"

    def is_terminal(self) -> bool:
        """True once the job has finished (SUCCEEDED, FAILED or STOPPED)."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED)

    def __str__(self) -> str:
        return self.value

    @classmethod
    def from_proto(cls, value: int) -> "JobStatus":
        """The status for a troupe.v1.JobStatus number; TroupeError for one this client does not know."""
        try:
            name = jobs_pb2.JobStatus.Name(value)
        except ValueError:
            name = ""
        short = name[len("JOB_STATUS_") :] if name.startswith("JOB_STATUS_") else ""
        if short not in cls.__members__:
            raise TroupeError(
                f"the head reported job status {value} ({name or 'unknown'}), which this client does not know"
            )
        return cls[short]


def _nonzero(value: int) -> Optional[int]:
    return value if value else None


@dataclass(frozen=True)
class JobDetails:
    """Everything the head keeps about one job.

    Times are milliseconds since the Unix epoch; None marks what has not happened (or is unknown).
    """

    submission_id: str
    status: JobStatus
    entrypoint: str
    message: str = ""
    exit_code: Optional[int] = None
    signal: Optional[int] = None
    submit_time_ms: Optional[int] = None
    start_time_ms: Optional[int] = None
    end_time_ms: Optional[int] = None
    node_id: Optional[str] = None
    pid: Optional[int] = None
    log_tail: str = ""
    stop_requested: bool = False
    log_bytes: int = 0
    working_dir_package: Optional[str] = None
    env_vars: Dict[str, str] = field(default_factory=dict)
    entrypoint_num_cpus: float = 0.0
    entrypoint_num_gpus: float = 0.0
    metadata: Dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_proto(cls, info: "jobs_pb2.JobInfo") -> "JobDetails":
        """Builds the record from a troupe.v1.JobInfo."""
        spec = info.spec
        return cls(
            submission_id=info.submission_id,
            status=JobStatus.from_proto(info.status),
            entrypoint=spec.entrypoint,
            message=info.message,
            exit_code=info.exit_code if info.has_exit_code else None,
            signal=_nonzero(info.signal),
            submit_time_ms=_nonzero(info.submit_time_ms),
            start_time_ms=_nonzero(info.start_time_ms),
            end_time_ms=_nonzero(info.end_time_ms),
            node_id=info.node_id or None,
            pid=_nonzero(info.pid),
            log_tail=info.log_tail,
            stop_requested=info.stop_requested,
            log_bytes=info.log_bytes,
            working_dir_package=spec.working_dir_package or None,
            env_vars=dict(spec.env_vars),
            entrypoint_num_cpus=spec.entrypoint_num_cpus,
            entrypoint_num_gpus=spec.entrypoint_num_gpus,
            metadata=dict(spec.metadata),
        )
