from troupe.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FailureKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_KIND_UNSPECIFIED: _ClassVar[FailureKind]
    FAILURE_KIND_PANIC: _ClassVar[FailureKind]
    FAILURE_KIND_BAD_ARGUMENTS: _ClassVar[FailureKind]
    FAILURE_KIND_UNKNOWN_METHOD: _ClassVar[FailureKind]
    FAILURE_KIND_EXITING: _ClassVar[FailureKind]
    FAILURE_KIND_APPLICATION: _ClassVar[FailureKind]
FAILURE_KIND_UNSPECIFIED: FailureKind
FAILURE_KIND_PANIC: FailureKind
FAILURE_KIND_BAD_ARGUMENTS: FailureKind
FAILURE_KIND_UNKNOWN_METHOD: FailureKind
FAILURE_KIND_EXITING: FailureKind
FAILURE_KIND_APPLICATION: FailureKind

class InspectRequest(_message.Message):
    __slots__ = ("backtraces",)
    BACKTRACES_FIELD_NUMBER: _ClassVar[int]
    backtraces: bool
    def __init__(self, backtraces: bool = ...) -> None: ...

class InflightCall(_message.Message):
    __slots__ = ("call_id", "method", "caller", "elapsed_us", "step", "weight_version")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_US_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_VERSION_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    method: str
    caller: str
    elapsed_us: int
    step: int
    weight_version: int
    def __init__(self, call_id: _Optional[int] = ..., method: _Optional[str] = ..., caller: _Optional[str] = ..., elapsed_us: _Optional[int] = ..., step: _Optional[int] = ..., weight_version: _Optional[int] = ...) -> None: ...

class ThreadStack(_message.Message):
    __slots__ = ("tid", "name", "frames", "note")
    TID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    tid: int
    name: str
    frames: _containers.RepeatedScalarFieldContainer[str]
    note: str
    def __init__(self, tid: _Optional[int] = ..., name: _Optional[str] = ..., frames: _Optional[_Iterable[str]] = ..., note: _Optional[str] = ...) -> None: ...

class InspectReply(_message.Message):
    __slots__ = ("pid", "calls", "queued", "max_concurrency", "served", "threads", "backtrace_note")
    PID_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    SERVED_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    BACKTRACE_NOTE_FIELD_NUMBER: _ClassVar[int]
    pid: int
    calls: _containers.RepeatedCompositeFieldContainer[InflightCall]
    queued: int
    max_concurrency: int
    served: int
    threads: _containers.RepeatedCompositeFieldContainer[ThreadStack]
    backtrace_note: str
    def __init__(self, pid: _Optional[int] = ..., calls: _Optional[_Iterable[_Union[InflightCall, _Mapping]]] = ..., queued: _Optional[int] = ..., max_concurrency: _Optional[int] = ..., served: _Optional[int] = ..., threads: _Optional[_Iterable[_Union[ThreadStack, _Mapping]]] = ..., backtrace_note: _Optional[str] = ...) -> None: ...

class TimelineRequest(_message.Message):
    __slots__ = ("since_unix_us", "until_unix_us")
    SINCE_UNIX_US_FIELD_NUMBER: _ClassVar[int]
    UNTIL_UNIX_US_FIELD_NUMBER: _ClassVar[int]
    since_unix_us: int
    until_unix_us: int
    def __init__(self, since_unix_us: _Optional[int] = ..., until_unix_us: _Optional[int] = ...) -> None: ...

class Span(_message.Message):
    __slots__ = ("kind", "name", "actor_id", "node_id", "start_unix_us", "duration_us", "step", "weight_version", "bytes_in", "bytes_out", "caller", "failed", "group", "incarnation")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    START_UNIX_US_FIELD_NUMBER: _ClassVar[int]
    DURATION_US_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_VERSION_FIELD_NUMBER: _ClassVar[int]
    BYTES_IN_FIELD_NUMBER: _ClassVar[int]
    BYTES_OUT_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    kind: str
    name: str
    actor_id: str
    node_id: str
    start_unix_us: int
    duration_us: int
    step: int
    weight_version: int
    bytes_in: int
    bytes_out: int
    caller: str
    failed: bool
    group: str
    incarnation: int
    def __init__(self, kind: _Optional[str] = ..., name: _Optional[str] = ..., actor_id: _Optional[str] = ..., node_id: _Optional[str] = ..., start_unix_us: _Optional[int] = ..., duration_us: _Optional[int] = ..., step: _Optional[int] = ..., weight_version: _Optional[int] = ..., bytes_in: _Optional[int] = ..., bytes_out: _Optional[int] = ..., caller: _Optional[str] = ..., failed: bool = ..., group: _Optional[str] = ..., incarnation: _Optional[int] = ...) -> None: ...

class TimelineReply(_message.Message):
    __slots__ = ("spans", "dropped")
    SPANS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    spans: _containers.RepeatedCompositeFieldContainer[Span]
    dropped: int
    def __init__(self, spans: _Optional[_Iterable[_Union[Span, _Mapping]]] = ..., dropped: _Optional[int] = ...) -> None: ...

class ObjectId(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ObjectChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class CallFrame(_message.Message):
    __slots__ = ("call_id", "method", "args", "step", "weight_version")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_VERSION_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    method: int
    args: bytes
    step: int
    weight_version: int
    def __init__(self, call_id: _Optional[int] = ..., method: _Optional[int] = ..., args: _Optional[bytes] = ..., step: _Optional[int] = ..., weight_version: _Optional[int] = ...) -> None: ...

class CallFailure(_message.Message):
    __slots__ = ("kind", "message", "backtrace", "method")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    BACKTRACE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    kind: FailureKind
    message: str
    backtrace: str
    method: str
    def __init__(self, kind: _Optional[_Union[FailureKind, str]] = ..., message: _Optional[str] = ..., backtrace: _Optional[str] = ..., method: _Optional[str] = ...) -> None: ...

class ReplyFrame(_message.Message):
    __slots__ = ("call_id", "ok", "failed")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    ok: bytes
    failed: CallFailure
    def __init__(self, call_id: _Optional[int] = ..., ok: _Optional[bytes] = ..., failed: _Optional[_Union[CallFailure, _Mapping]] = ...) -> None: ...
