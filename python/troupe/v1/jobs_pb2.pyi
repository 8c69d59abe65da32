from troupe.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATUS_UNSPECIFIED: _ClassVar[JobStatus]
    JOB_STATUS_PENDING: _ClassVar[JobStatus]
    JOB_STATUS_RUNNING: _ClassVar[JobStatus]
    JOB_STATUS_SUCCEEDED: _ClassVar[JobStatus]
    JOB_STATUS_FAILED: _ClassVar[JobStatus]
    JOB_STATUS_STOPPED: _ClassVar[JobStatus]
JOB_STATUS_UNSPECIFIED: JobStatus
JOB_STATUS_PENDING: JobStatus
JOB_STATUS_RUNNING: JobStatus
JOB_STATUS_SUCCEEDED: JobStatus
JOB_STATUS_FAILED: JobStatus
JOB_STATUS_STOPPED: JobStatus

class JobSpec(_message.Message):
    __slots__ = ("entrypoint", "working_dir_package", "env_vars", "entrypoint_num_cpus", "entrypoint_num_gpus", "metadata")
    class EnvVarsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ENTRYPOINT_FIELD_NUMBER: _ClassVar[int]
    WORKING_DIR_PACKAGE_FIELD_NUMBER: _ClassVar[int]
    ENV_VARS_FIELD_NUMBER: _ClassVar[int]
    ENTRYPOINT_NUM_CPUS_FIELD_NUMBER: _ClassVar[int]
    ENTRYPOINT_NUM_GPUS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    entrypoint: str
    working_dir_package: str
    env_vars: _containers.ScalarMap[str, str]
    entrypoint_num_cpus: float
    entrypoint_num_gpus: float
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, entrypoint: _Optional[str] = ..., working_dir_package: _Optional[str] = ..., env_vars: _Optional[_Mapping[str, str]] = ..., entrypoint_num_cpus: _Optional[float] = ..., entrypoint_num_gpus: _Optional[float] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("submission_id", "spec")
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    submission_id: str
    spec: JobSpec
    def __init__(self, submission_id: _Optional[str] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ...) -> None: ...

class SubmitJobReply(_message.Message):
    __slots__ = ("submission_id", "already_existed")
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    ALREADY_EXISTED_FIELD_NUMBER: _ClassVar[int]
    submission_id: str
    already_existed: bool
    def __init__(self, submission_id: _Optional[str] = ..., already_existed: bool = ...) -> None: ...

class JobRef(_message.Message):
    __slots__ = ("submission_id",)
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    submission_id: str
    def __init__(self, submission_id: _Optional[str] = ...) -> None: ...

class JobInfo(_message.Message):
    __slots__ = ("submission_id", "status", "spec", "message", "has_exit_code", "exit_code", "signal", "submit_time_ms", "start_time_ms", "end_time_ms", "node_id", "pid", "log_tail", "stop_requested", "log_bytes")
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    HAS_EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    SUBMIT_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    END_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    LOG_TAIL_FIELD_NUMBER: _ClassVar[int]
    STOP_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    LOG_BYTES_FIELD_NUMBER: _ClassVar[int]
    submission_id: str
    status: JobStatus
    spec: JobSpec
    message: str
    has_exit_code: bool
    exit_code: int
    signal: int
    submit_time_ms: int
    start_time_ms: int
    end_time_ms: int
    node_id: str
    pid: int
    log_tail: str
    stop_requested: bool
    log_bytes: int
    def __init__(self, submission_id: _Optional[str] = ..., status: _Optional[_Union[JobStatus, str]] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., message: _Optional[str] = ..., has_exit_code: bool = ..., exit_code: _Optional[int] = ..., signal: _Optional[int] = ..., submit_time_ms: _Optional[int] = ..., start_time_ms: _Optional[int] = ..., end_time_ms: _Optional[int] = ..., node_id: _Optional[str] = ..., pid: _Optional[int] = ..., log_tail: _Optional[str] = ..., stop_requested: bool = ..., log_bytes: _Optional[int] = ...) -> None: ...

class ListJobsReply(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobInfo]
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobInfo, _Mapping]]] = ...) -> None: ...

class StopJobRequest(_message.Message):
    __slots__ = ("submission_id", "grace_ms")
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    GRACE_MS_FIELD_NUMBER: _ClassVar[int]
    submission_id: str
    grace_ms: int
    def __init__(self, submission_id: _Optional[str] = ..., grace_ms: _Optional[int] = ...) -> None: ...

class StopJobReply(_message.Message):
    __slots__ = ("stopped",)
    STOPPED_FIELD_NUMBER: _ClassVar[int]
    stopped: bool
    def __init__(self, stopped: bool = ...) -> None: ...

class GetJobLogsRequest(_message.Message):
    __slots__ = ("submission_id", "offset", "max_bytes")
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    submission_id: str
    offset: int
    max_bytes: int
    def __init__(self, submission_id: _Optional[str] = ..., offset: _Optional[int] = ..., max_bytes: _Optional[int] = ...) -> None: ...

class TailJobLogsRequest(_message.Message):
    __slots__ = ("submission_id", "offset")
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    submission_id: str
    offset: int
    def __init__(self, submission_id: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class JobLogChunk(_message.Message):
    __slots__ = ("data", "offset", "next_offset", "complete", "status")
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    offset: int
    next_offset: int
    complete: bool
    status: JobStatus
    def __init__(self, data: _Optional[bytes] = ..., offset: _Optional[int] = ..., next_offset: _Optional[int] = ..., complete: bool = ..., status: _Optional[_Union[JobStatus, str]] = ...) -> None: ...

class StartJobRequest(_message.Message):
    __slots__ = ("submission_id", "entrypoint", "package_hash", "env", "gpu_ids", "cpu_milli")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    ENTRYPOINT_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_HASH_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    GPU_IDS_FIELD_NUMBER: _ClassVar[int]
    CPU_MILLI_FIELD_NUMBER: _ClassVar[int]
    submission_id: str
    entrypoint: str
    package_hash: str
    env: _containers.ScalarMap[str, str]
    gpu_ids: _containers.RepeatedScalarFieldContainer[int]
    cpu_milli: int
    def __init__(self, submission_id: _Optional[str] = ..., entrypoint: _Optional[str] = ..., package_hash: _Optional[str] = ..., env: _Optional[_Mapping[str, str]] = ..., gpu_ids: _Optional[_Iterable[int]] = ..., cpu_milli: _Optional[int] = ...) -> None: ...

class StopJobOrder(_message.Message):
    __slots__ = ("submission_id", "grace_ms")
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    GRACE_MS_FIELD_NUMBER: _ClassVar[int]
    submission_id: str
    grace_ms: int
    def __init__(self, submission_id: _Optional[str] = ..., grace_ms: _Optional[int] = ...) -> None: ...

class JobLogAppend(_message.Message):
    __slots__ = ("node_id", "submission_id", "offset", "data")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    submission_id: str
    offset: int
    data: bytes
    def __init__(self, node_id: _Optional[str] = ..., submission_id: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class JobLogAck(_message.Message):
    __slots__ = ("stored", "unknown")
    STORED_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    stored: int
    unknown: bool
    def __init__(self, stored: _Optional[int] = ..., unknown: bool = ...) -> None: ...

class JobExitedRequest(_message.Message):
    __slots__ = ("node_id", "submission_id", "exit_code", "signal")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    submission_id: str
    exit_code: int
    signal: int
    def __init__(self, node_id: _Optional[str] = ..., submission_id: _Optional[str] = ..., exit_code: _Optional[int] = ..., signal: _Optional[int] = ...) -> None: ...

class StartJobReply(_message.Message):
    __slots__ = ("pid",)
    PID_FIELD_NUMBER: _ClassVar[int]
    pid: int
    def __init__(self, pid: _Optional[int] = ...) -> None: ...
