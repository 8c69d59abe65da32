from troupe.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
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
    __slots__ = ("call_id", "method", "args")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    method: int
    args: bytes
    def __init__(self, call_id: _Optional[int] = ..., method: _Optional[int] = ..., args: _Optional[bytes] = ...) -> None: ...

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
