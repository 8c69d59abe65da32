"""Python client for troupe clusters: submit and manage jobs (`python -m troupe job --help`)."""

from .errors import (
    AuthenticationError,
    ConfigError,
    HeadUnavailableError,
    InvalidRequestError,
    JobAlreadyExistsError,
    JobNotFoundError,
    PackageError,
    TroupeError,
    WaitTimeoutError,
)
from .actor_logs import IncarnationLog, LogLine
from .job_client import JobSubmissionClient
from .models import JobDetails, JobStatus

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "HeadUnavailableError",
    "IncarnationLog",
    "InvalidRequestError",
    "JobAlreadyExistsError",
    "JobDetails",
    "JobNotFoundError",
    "JobStatus",
    "JobSubmissionClient",
    "LogLine",
    "PackageError",
    "TroupeError",
    "WaitTimeoutError",
    "__version__",
]
