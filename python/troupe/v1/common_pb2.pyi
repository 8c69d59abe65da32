from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ActorState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTOR_STATE_UNSPECIFIED: _ClassVar[ActorState]
    ACTOR_STATE_PENDING: _ClassVar[ActorState]
    ACTOR_STATE_STARTING: _ClassVar[ActorState]
    ACTOR_STATE_ALIVE: _ClassVar[ActorState]
    ACTOR_STATE_RESTARTING: _ClassVar[ActorState]
    ACTOR_STATE_DEAD: _ClassVar[ActorState]
ACTOR_STATE_UNSPECIFIED: ActorState
ACTOR_STATE_PENDING: ActorState
ACTOR_STATE_STARTING: ActorState
ACTOR_STATE_ALIVE: ActorState
ACTOR_STATE_RESTARTING: ActorState
ACTOR_STATE_DEAD: ActorState

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResourceRequest(_message.Message):
    __slots__ = ("cpu_milli", "memory_bytes", "gpu_milli", "custom", "label_selector", "gpu_models", "node_id", "node_soft")
    class CustomEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class LabelSelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CPU_MILLI_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPU_MILLI_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    GPU_MODELS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_SOFT_FIELD_NUMBER: _ClassVar[int]
    cpu_milli: int
    memory_bytes: int
    gpu_milli: int
    custom: _containers.ScalarMap[str, float]
    label_selector: _containers.ScalarMap[str, str]
    gpu_models: _containers.RepeatedScalarFieldContainer[str]
    node_id: str
    node_soft: bool
    def __init__(self, cpu_milli: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., gpu_milli: _Optional[int] = ..., custom: _Optional[_Mapping[str, float]] = ..., label_selector: _Optional[_Mapping[str, str]] = ..., gpu_models: _Optional[_Iterable[str]] = ..., node_id: _Optional[str] = ..., node_soft: bool = ...) -> None: ...

class GpuDevice(_message.Message):
    __slots__ = ("index", "model")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    index: int
    model: str
    def __init__(self, index: _Optional[int] = ..., model: _Optional[str] = ...) -> None: ...

class NodeResources(_message.Message):
    __slots__ = ("cpu_milli", "memory_bytes", "gpus", "custom", "labels")
    class CustomEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CPU_MILLI_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    cpu_milli: int
    memory_bytes: int
    gpus: _containers.RepeatedCompositeFieldContainer[GpuDevice]
    custom: _containers.ScalarMap[str, float]
    labels: _containers.ScalarMap[str, str]
    def __init__(self, cpu_milli: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., gpus: _Optional[_Iterable[_Union[GpuDevice, _Mapping]]] = ..., custom: _Optional[_Mapping[str, float]] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GpuAssignment(_message.Message):
    __slots__ = ("index", "milli")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    MILLI_FIELD_NUMBER: _ClassVar[int]
    index: int
    milli: int
    def __init__(self, index: _Optional[int] = ..., milli: _Optional[int] = ...) -> None: ...

class ActorInfo(_message.Message):
    __slots__ = ("id", "name", "type_name", "state", "node_id", "worker_address", "gpus", "restarts", "max_restarts", "incarnation", "death_reason", "detached", "owner_session", "pid", "resources", "pending_reason", "max_concurrency", "node_address", "priority", "preemptible", "placement_group_id", "preemptions", "history")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    MAX_RESTARTS_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    DEATH_REASON_FIELD_NUMBER: _ClassVar[int]
    DETACHED_FIELD_NUMBER: _ClassVar[int]
    OWNER_SESSION_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    PENDING_REASON_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    NODE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PREEMPTIBLE_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    PREEMPTIONS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    type_name: str
    state: ActorState
    node_id: str
    worker_address: str
    gpus: _containers.RepeatedCompositeFieldContainer[GpuAssignment]
    restarts: int
    max_restarts: int
    incarnation: int
    death_reason: str
    detached: bool
    owner_session: str
    pid: int
    resources: ResourceRequest
    pending_reason: str
    max_concurrency: int
    node_address: str
    priority: int
    preemptible: bool
    placement_group_id: str
    preemptions: int
    history: _containers.RepeatedCompositeFieldContainer[Incarnation]
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., type_name: _Optional[str] = ..., state: _Optional[_Union[ActorState, str]] = ..., node_id: _Optional[str] = ..., worker_address: _Optional[str] = ..., gpus: _Optional[_Iterable[_Union[GpuAssignment, _Mapping]]] = ..., restarts: _Optional[int] = ..., max_restarts: _Optional[int] = ..., incarnation: _Optional[int] = ..., death_reason: _Optional[str] = ..., detached: bool = ..., owner_session: _Optional[str] = ..., pid: _Optional[int] = ..., resources: _Optional[_Union[ResourceRequest, _Mapping]] = ..., pending_reason: _Optional[str] = ..., max_concurrency: _Optional[int] = ..., node_address: _Optional[str] = ..., priority: _Optional[int] = ..., preemptible: bool = ..., placement_group_id: _Optional[str] = ..., preemptions: _Optional[int] = ..., history: _Optional[_Iterable[_Union[Incarnation, _Mapping]]] = ...) -> None: ...

class Incarnation(_message.Message):
    __slots__ = ("incarnation", "node_id", "node_address", "started_unix_ms", "ended_unix_ms", "exit_reason")
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    ENDED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    EXIT_REASON_FIELD_NUMBER: _ClassVar[int]
    incarnation: int
    node_id: str
    node_address: str
    started_unix_ms: int
    ended_unix_ms: int
    exit_reason: str
    def __init__(self, incarnation: _Optional[int] = ..., node_id: _Optional[str] = ..., node_address: _Optional[str] = ..., started_unix_ms: _Optional[int] = ..., ended_unix_ms: _Optional[int] = ..., exit_reason: _Optional[str] = ...) -> None: ...

class LogChunk(_message.Message):
    __slots__ = ("data", "offset", "next_offset", "size")
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    offset: int
    next_offset: int
    size: int
    def __init__(self, data: _Optional[bytes] = ..., offset: _Optional[int] = ..., next_offset: _Optional[int] = ..., size: _Optional[int] = ...) -> None: ...

class BinaryRef(_message.Message):
    __slots__ = ("hash",)
    HASH_FIELD_NUMBER: _ClassVar[int]
    hash: str
    def __init__(self, hash: _Optional[str] = ...) -> None: ...

class HasBinaryReply(_message.Message):
    __slots__ = ("present",)
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    present: bool
    def __init__(self, present: bool = ...) -> None: ...

class BinaryChunk(_message.Message):
    __slots__ = ("hash", "data")
    HASH_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    hash: str
    data: bytes
    def __init__(self, hash: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...
