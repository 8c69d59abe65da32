from troupe.v1 import common_pb2 as _common_pb2
from troupe.v1 import jobs_pb2 as _jobs_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ReadWorkerLogRequest(_message.Message):
    __slots__ = ("actor_id", "incarnation", "offset", "from_end", "max_bytes")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    FROM_END_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    incarnation: int
    offset: int
    from_end: bool
    max_bytes: int
    def __init__(self, actor_id: _Optional[str] = ..., incarnation: _Optional[int] = ..., offset: _Optional[int] = ..., from_end: bool = ..., max_bytes: _Optional[int] = ...) -> None: ...

class StartWorkerRequest(_message.Message):
    __slots__ = ("actor_id", "incarnation", "binary_hash", "args", "env", "gpu_ids", "cpu_milli", "owner_session")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    BINARY_HASH_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    GPU_IDS_FIELD_NUMBER: _ClassVar[int]
    CPU_MILLI_FIELD_NUMBER: _ClassVar[int]
    OWNER_SESSION_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    incarnation: int
    binary_hash: str
    args: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.ScalarMap[str, str]
    gpu_ids: _containers.RepeatedScalarFieldContainer[int]
    cpu_milli: int
    owner_session: str
    def __init__(self, actor_id: _Optional[str] = ..., incarnation: _Optional[int] = ..., binary_hash: _Optional[str] = ..., args: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ..., gpu_ids: _Optional[_Iterable[int]] = ..., cpu_milli: _Optional[int] = ..., owner_session: _Optional[str] = ...) -> None: ...

class StartWorkerReply(_message.Message):
    __slots__ = ("pid", "log_path")
    PID_FIELD_NUMBER: _ClassVar[int]
    LOG_PATH_FIELD_NUMBER: _ClassVar[int]
    pid: int
    log_path: str
    def __init__(self, pid: _Optional[int] = ..., log_path: _Optional[str] = ...) -> None: ...

class StopWorkerRequest(_message.Message):
    __slots__ = ("actor_id", "grace_ms", "incarnation")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    GRACE_MS_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    grace_ms: int
    incarnation: int
    def __init__(self, actor_id: _Optional[str] = ..., grace_ms: _Optional[int] = ..., incarnation: _Optional[int] = ...) -> None: ...
