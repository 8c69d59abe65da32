from troupe.v1 import common_pb2 as _common_pb2
from troupe.v1 import jobs_pb2 as _jobs_pb2
from troupe.v1 import worker_pb2 as _worker_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PlacementGroupState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLACEMENT_GROUP_PENDING: _ClassVar[PlacementGroupState]
    PLACEMENT_GROUP_CREATED: _ClassVar[PlacementGroupState]
    PLACEMENT_GROUP_RESCHEDULING: _ClassVar[PlacementGroupState]
    PLACEMENT_GROUP_REMOVED: _ClassVar[PlacementGroupState]
PLACEMENT_GROUP_PENDING: PlacementGroupState
PLACEMENT_GROUP_CREATED: PlacementGroupState
PLACEMENT_GROUP_RESCHEDULING: PlacementGroupState
PLACEMENT_GROUP_REMOVED: PlacementGroupState

class RegisterNodeRequest(_message.Message):
    __slots__ = ("node_id", "address", "resources", "hostname", "running_jobs")
    class RunningJobsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    resources: _common_pb2.NodeResources
    hostname: str
    running_jobs: _containers.ScalarMap[str, int]
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ..., resources: _Optional[_Union[_common_pb2.NodeResources, _Mapping]] = ..., hostname: _Optional[str] = ..., running_jobs: _Optional[_Mapping[str, int]] = ...) -> None: ...

class RegisterNodeReply(_message.Message):
    __slots__ = ("node_id", "heartbeat_interval_ms", "node_timeout_ms")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    NODE_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    heartbeat_interval_ms: int
    node_timeout_ms: int
    def __init__(self, node_id: _Optional[str] = ..., heartbeat_interval_ms: _Optional[int] = ..., node_timeout_ms: _Optional[int] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("node_id", "running", "jobs")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    running: _containers.RepeatedScalarFieldContainer[str]
    jobs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node_id: _Optional[str] = ..., running: _Optional[_Iterable[str]] = ..., jobs: _Optional[_Iterable[str]] = ...) -> None: ...

class HeartbeatReply(_message.Message):
    __slots__ = ("reregister",)
    REREGISTER_FIELD_NUMBER: _ClassVar[int]
    reregister: bool
    def __init__(self, reregister: bool = ...) -> None: ...

class WorkerExitedRequest(_message.Message):
    __slots__ = ("node_id", "actor_id", "incarnation", "exit_code", "signal", "log_tail", "start_error")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    LOG_TAIL_FIELD_NUMBER: _ClassVar[int]
    START_ERROR_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    actor_id: str
    incarnation: int
    exit_code: int
    signal: int
    log_tail: str
    start_error: str
    def __init__(self, node_id: _Optional[str] = ..., actor_id: _Optional[str] = ..., incarnation: _Optional[int] = ..., exit_code: _Optional[int] = ..., signal: _Optional[int] = ..., log_tail: _Optional[str] = ..., start_error: _Optional[str] = ...) -> None: ...

class CreateActorRequest(_message.Message):
    __slots__ = ("type_name", "constructor_args", "name", "resources", "max_restarts", "max_concurrency", "detached", "owner_session", "binary_hash", "worker_args", "env", "gang", "gang_size", "job_id", "priority", "preemptible", "placement_group_id", "bundle_index", "spawn_id")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TYPE_NAME_FIELD_NUMBER: _ClassVar[int]
    CONSTRUCTOR_ARGS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    MAX_RESTARTS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    DETACHED_FIELD_NUMBER: _ClassVar[int]
    OWNER_SESSION_FIELD_NUMBER: _ClassVar[int]
    BINARY_HASH_FIELD_NUMBER: _ClassVar[int]
    WORKER_ARGS_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    GANG_FIELD_NUMBER: _ClassVar[int]
    GANG_SIZE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PREEMPTIBLE_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_INDEX_FIELD_NUMBER: _ClassVar[int]
    SPAWN_ID_FIELD_NUMBER: _ClassVar[int]
    type_name: str
    constructor_args: bytes
    name: str
    resources: _common_pb2.ResourceRequest
    max_restarts: int
    max_concurrency: int
    detached: bool
    owner_session: str
    binary_hash: str
    worker_args: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.ScalarMap[str, str]
    gang: str
    gang_size: int
    job_id: str
    priority: int
    preemptible: bool
    placement_group_id: str
    bundle_index: int
    spawn_id: str
    def __init__(self, type_name: _Optional[str] = ..., constructor_args: _Optional[bytes] = ..., name: _Optional[str] = ..., resources: _Optional[_Union[_common_pb2.ResourceRequest, _Mapping]] = ..., max_restarts: _Optional[int] = ..., max_concurrency: _Optional[int] = ..., detached: bool = ..., owner_session: _Optional[str] = ..., binary_hash: _Optional[str] = ..., worker_args: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ..., gang: _Optional[str] = ..., gang_size: _Optional[int] = ..., job_id: _Optional[str] = ..., priority: _Optional[int] = ..., preemptible: bool = ..., placement_group_id: _Optional[str] = ..., bundle_index: _Optional[int] = ..., spawn_id: _Optional[str] = ...) -> None: ...

class GetActorRequest(_message.Message):
    __slots__ = ("id", "name", "wait_ready", "wait_past_incarnation", "incarnation", "timeout_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    WAIT_READY_FIELD_NUMBER: _ClassVar[int]
    WAIT_PAST_INCARNATION_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    wait_ready: bool
    wait_past_incarnation: bool
    incarnation: int
    timeout_ms: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., wait_ready: bool = ..., wait_past_incarnation: bool = ..., incarnation: _Optional[int] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class KillActorRequest(_message.Message):
    __slots__ = ("id", "allow_restart")
    ID_FIELD_NUMBER: _ClassVar[int]
    ALLOW_RESTART_FIELD_NUMBER: _ClassVar[int]
    id: str
    allow_restart: bool
    def __init__(self, id: _Optional[str] = ..., allow_restart: bool = ...) -> None: ...

class ListActorsReply(_message.Message):
    __slots__ = ("actors",)
    ACTORS_FIELD_NUMBER: _ClassVar[int]
    actors: _containers.RepeatedCompositeFieldContainer[_common_pb2.ActorInfo]
    def __init__(self, actors: _Optional[_Iterable[_Union[_common_pb2.ActorInfo, _Mapping]]] = ...) -> None: ...

class GetActorSpecRequest(_message.Message):
    __slots__ = ("actor_id", "incarnation")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    incarnation: int
    def __init__(self, actor_id: _Optional[str] = ..., incarnation: _Optional[int] = ...) -> None: ...

class ActorSpec(_message.Message):
    __slots__ = ("actor_id", "type_name", "constructor_args", "name", "max_concurrency", "incarnation", "owner_session", "node_id")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_NAME_FIELD_NUMBER: _ClassVar[int]
    CONSTRUCTOR_ARGS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    OWNER_SESSION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    type_name: str
    constructor_args: bytes
    name: str
    max_concurrency: int
    incarnation: int
    owner_session: str
    node_id: str
    def __init__(self, actor_id: _Optional[str] = ..., type_name: _Optional[str] = ..., constructor_args: _Optional[bytes] = ..., name: _Optional[str] = ..., max_concurrency: _Optional[int] = ..., incarnation: _Optional[int] = ..., owner_session: _Optional[str] = ..., node_id: _Optional[str] = ...) -> None: ...

class WorkerReadyRequest(_message.Message):
    __slots__ = ("actor_id", "incarnation", "worker_address", "pid", "constructor_error")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    WORKER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    CONSTRUCTOR_ERROR_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    incarnation: int
    worker_address: str
    pid: int
    constructor_error: str
    def __init__(self, actor_id: _Optional[str] = ..., incarnation: _Optional[int] = ..., worker_address: _Optional[str] = ..., pid: _Optional[int] = ..., constructor_error: _Optional[str] = ...) -> None: ...

class CallStats(_message.Message):
    __slots__ = ("actor_id", "calls_delta")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    CALLS_DELTA_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    calls_delta: int
    def __init__(self, actor_id: _Optional[str] = ..., calls_delta: _Optional[int] = ...) -> None: ...

class VersionReply(_message.Message):
    __slots__ = ("version", "protocol")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    version: str
    protocol: str
    def __init__(self, version: _Optional[str] = ..., protocol: _Optional[str] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("id", "address", "hostname", "alive", "total", "cpu_milli_used", "memory_bytes_used", "custom_used", "gpus", "ms_since_heartbeat")
    class CustomUsedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    CPU_MILLI_USED_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_USED_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_USED_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    MS_SINCE_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    id: str
    address: str
    hostname: str
    alive: bool
    total: _common_pb2.NodeResources
    cpu_milli_used: int
    memory_bytes_used: int
    custom_used: _containers.ScalarMap[str, float]
    gpus: _containers.RepeatedCompositeFieldContainer[GpuUsage]
    ms_since_heartbeat: int
    def __init__(self, id: _Optional[str] = ..., address: _Optional[str] = ..., hostname: _Optional[str] = ..., alive: bool = ..., total: _Optional[_Union[_common_pb2.NodeResources, _Mapping]] = ..., cpu_milli_used: _Optional[int] = ..., memory_bytes_used: _Optional[int] = ..., custom_used: _Optional[_Mapping[str, float]] = ..., gpus: _Optional[_Iterable[_Union[GpuUsage, _Mapping]]] = ..., ms_since_heartbeat: _Optional[int] = ...) -> None: ...

class GpuUsage(_message.Message):
    __slots__ = ("index", "model", "milli_used", "actor_ids")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MILLI_USED_FIELD_NUMBER: _ClassVar[int]
    ACTOR_IDS_FIELD_NUMBER: _ClassVar[int]
    index: int
    model: str
    milli_used: int
    actor_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, index: _Optional[int] = ..., model: _Optional[str] = ..., milli_used: _Optional[int] = ..., actor_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ClusterStatusReply(_message.Message):
    __slots__ = ("nodes", "actors", "jobs", "placement_groups", "pending_demand", "policy", "autoscaler")
    NODES_FIELD_NUMBER: _ClassVar[int]
    ACTORS_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_GROUPS_FIELD_NUMBER: _ClassVar[int]
    PENDING_DEMAND_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    AUTOSCALER_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeStatus]
    actors: _containers.RepeatedCompositeFieldContainer[_common_pb2.ActorInfo]
    jobs: _containers.RepeatedCompositeFieldContainer[_jobs_pb2.JobInfo]
    placement_groups: _containers.RepeatedCompositeFieldContainer[PlacementGroupInfo]
    pending_demand: PendingDemand
    policy: str
    autoscaler: AutoscalerStatus
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeStatus, _Mapping]]] = ..., actors: _Optional[_Iterable[_Union[_common_pb2.ActorInfo, _Mapping]]] = ..., jobs: _Optional[_Iterable[_Union[_jobs_pb2.JobInfo, _Mapping]]] = ..., placement_groups: _Optional[_Iterable[_Union[PlacementGroupInfo, _Mapping]]] = ..., pending_demand: _Optional[_Union[PendingDemand, _Mapping]] = ..., policy: _Optional[str] = ..., autoscaler: _Optional[_Union[AutoscalerStatus, _Mapping]] = ...) -> None: ...

class AutoscalerStatus(_message.Message):
    __slots__ = ("provider", "nodes", "decisions", "waiting", "launches", "terminations", "launch_failures")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    LAUNCHES_FIELD_NUMBER: _ClassVar[int]
    TERMINATIONS_FIELD_NUMBER: _ClassVar[int]
    LAUNCH_FAILURES_FIELD_NUMBER: _ClassVar[int]
    provider: str
    nodes: _containers.RepeatedCompositeFieldContainer[AutoscaledNode]
    decisions: _containers.RepeatedScalarFieldContainer[str]
    waiting: _containers.RepeatedScalarFieldContainer[str]
    launches: int
    terminations: int
    launch_failures: int
    def __init__(self, provider: _Optional[str] = ..., nodes: _Optional[_Iterable[_Union[AutoscaledNode, _Mapping]]] = ..., decisions: _Optional[_Iterable[str]] = ..., waiting: _Optional[_Iterable[str]] = ..., launches: _Optional[int] = ..., terminations: _Optional[int] = ..., launch_failures: _Optional[int] = ...) -> None: ...

class AutoscaledNode(_message.Message):
    __slots__ = ("launch_id", "node_type", "phase", "node_id", "for_s", "reason", "attempts")
    LAUNCH_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_TYPE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    FOR_S_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    launch_id: str
    node_type: str
    phase: str
    node_id: str
    for_s: float
    reason: str
    attempts: int
    def __init__(self, launch_id: _Optional[str] = ..., node_type: _Optional[str] = ..., phase: _Optional[str] = ..., node_id: _Optional[str] = ..., for_s: _Optional[float] = ..., reason: _Optional[str] = ..., attempts: _Optional[int] = ...) -> None: ...

class PendingDemand(_message.Message):
    __slots__ = ("shapes", "cpu_milli", "memory_bytes", "gpu_milli")
    SHAPES_FIELD_NUMBER: _ClassVar[int]
    CPU_MILLI_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPU_MILLI_FIELD_NUMBER: _ClassVar[int]
    shapes: _containers.RepeatedCompositeFieldContainer[DemandShape]
    cpu_milli: int
    memory_bytes: int
    gpu_milli: int
    def __init__(self, shapes: _Optional[_Iterable[_Union[DemandShape, _Mapping]]] = ..., cpu_milli: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., gpu_milli: _Optional[int] = ...) -> None: ...

class DemandShape(_message.Message):
    __slots__ = ("resources", "count")
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    resources: _common_pb2.ResourceRequest
    count: int
    def __init__(self, resources: _Optional[_Union[_common_pb2.ResourceRequest, _Mapping]] = ..., count: _Optional[int] = ...) -> None: ...

class CreatePlacementGroupRequest(_message.Message):
    __slots__ = ("name", "bundles", "strategy", "priority", "preemptible", "restart_whole_on_node_loss", "owner_session", "detached")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PREEMPTIBLE_FIELD_NUMBER: _ClassVar[int]
    RESTART_WHOLE_ON_NODE_LOSS_FIELD_NUMBER: _ClassVar[int]
    OWNER_SESSION_FIELD_NUMBER: _ClassVar[int]
    DETACHED_FIELD_NUMBER: _ClassVar[int]
    name: str
    bundles: _containers.RepeatedCompositeFieldContainer[_common_pb2.ResourceRequest]
    strategy: str
    priority: int
    preemptible: bool
    restart_whole_on_node_loss: bool
    owner_session: str
    detached: bool
    def __init__(self, name: _Optional[str] = ..., bundles: _Optional[_Iterable[_Union[_common_pb2.ResourceRequest, _Mapping]]] = ..., strategy: _Optional[str] = ..., priority: _Optional[int] = ..., preemptible: bool = ..., restart_whole_on_node_loss: bool = ..., owner_session: _Optional[str] = ..., detached: bool = ...) -> None: ...

class PlacementGroupRef(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class BundleInfo(_message.Message):
    __slots__ = ("resources", "node_id", "gpus")
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    resources: _common_pb2.ResourceRequest
    node_id: str
    gpus: _containers.RepeatedCompositeFieldContainer[_common_pb2.GpuAssignment]
    def __init__(self, resources: _Optional[_Union[_common_pb2.ResourceRequest, _Mapping]] = ..., node_id: _Optional[str] = ..., gpus: _Optional[_Iterable[_Union[_common_pb2.GpuAssignment, _Mapping]]] = ...) -> None: ...

class PlacementGroupInfo(_message.Message):
    __slots__ = ("id", "name", "strategy", "state", "bundles", "priority", "preemptible", "pending_reason", "reschedules")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PREEMPTIBLE_FIELD_NUMBER: _ClassVar[int]
    PENDING_REASON_FIELD_NUMBER: _ClassVar[int]
    RESCHEDULES_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    strategy: str
    state: PlacementGroupState
    bundles: _containers.RepeatedCompositeFieldContainer[BundleInfo]
    priority: int
    preemptible: bool
    pending_reason: str
    reschedules: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., strategy: _Optional[str] = ..., state: _Optional[_Union[PlacementGroupState, str]] = ..., bundles: _Optional[_Iterable[_Union[BundleInfo, _Mapping]]] = ..., priority: _Optional[int] = ..., preemptible: bool = ..., pending_reason: _Optional[str] = ..., reschedules: _Optional[int] = ...) -> None: ...

class SessionPing(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class SessionEvent(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: str
    def __init__(self, message: _Optional[str] = ...) -> None: ...

class KvPutRequest(_message.Message):
    __slots__ = ("key", "value", "overwrite")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: bytes
    overwrite: bool
    def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ..., overwrite: bool = ...) -> None: ...

class KvGetRequest(_message.Message):
    __slots__ = ("key", "wait", "timeout_ms")
    KEY_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    key: str
    wait: bool
    timeout_ms: int
    def __init__(self, key: _Optional[str] = ..., wait: bool = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class KvGetReply(_message.Message):
    __slots__ = ("found", "value")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    found: bool
    value: bytes
    def __init__(self, found: bool = ..., value: _Optional[bytes] = ...) -> None: ...

class ReadActorLogRequest(_message.Message):
    __slots__ = ("id", "name", "incarnation", "offset", "from_end", "max_bytes", "list_only")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    FROM_END_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    LIST_ONLY_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    incarnation: int
    offset: int
    from_end: bool
    max_bytes: int
    list_only: bool
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., incarnation: _Optional[int] = ..., offset: _Optional[int] = ..., from_end: bool = ..., max_bytes: _Optional[int] = ..., list_only: bool = ...) -> None: ...

class ActorLogChunk(_message.Message):
    __slots__ = ("actor_id", "actor_name", "incarnation", "node_id", "chunk", "running", "incarnations", "actor_state")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_NAME_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    INCARNATIONS_FIELD_NUMBER: _ClassVar[int]
    ACTOR_STATE_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    actor_name: str
    incarnation: int
    node_id: str
    chunk: _common_pb2.LogChunk
    running: bool
    incarnations: _containers.RepeatedCompositeFieldContainer[_common_pb2.Incarnation]
    actor_state: _common_pb2.ActorState
    def __init__(self, actor_id: _Optional[str] = ..., actor_name: _Optional[str] = ..., incarnation: _Optional[int] = ..., node_id: _Optional[str] = ..., chunk: _Optional[_Union[_common_pb2.LogChunk, _Mapping]] = ..., running: bool = ..., incarnations: _Optional[_Iterable[_Union[_common_pb2.Incarnation, _Mapping]]] = ..., actor_state: _Optional[_Union[_common_pb2.ActorState, str]] = ...) -> None: ...

class PipelineStageInfo(_message.Message):
    __slots__ = ("name", "group", "members", "inputs", "outputs", "dispatch")
    NAME_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    DISPATCH_FIELD_NUMBER: _ClassVar[int]
    name: str
    group: str
    members: int
    inputs: _containers.RepeatedScalarFieldContainer[str]
    outputs: _containers.RepeatedScalarFieldContainer[str]
    dispatch: str
    def __init__(self, name: _Optional[str] = ..., group: _Optional[str] = ..., members: _Optional[int] = ..., inputs: _Optional[_Iterable[str]] = ..., outputs: _Optional[_Iterable[str]] = ..., dispatch: _Optional[str] = ...) -> None: ...

class PipelineStageTime(_message.Message):
    __slots__ = ("stage", "seconds", "member_seconds", "fetch_seconds", "rows", "rows_per_s")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    MEMBER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FETCH_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ROWS_PER_S_FIELD_NUMBER: _ClassVar[int]
    stage: str
    seconds: float
    member_seconds: float
    fetch_seconds: float
    rows: int
    rows_per_s: float
    def __init__(self, stage: _Optional[str] = ..., seconds: _Optional[float] = ..., member_seconds: _Optional[float] = ..., fetch_seconds: _Optional[float] = ..., rows: _Optional[int] = ..., rows_per_s: _Optional[float] = ...) -> None: ...

class PipelineStepInfo(_message.Message):
    __slots__ = ("step", "weight_version", "synced_version", "rows", "stages", "stage_bytes", "finished_unix_ms", "sync_ms")
    STEP_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SYNCED_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    STAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    FINISHED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    SYNC_MS_FIELD_NUMBER: _ClassVar[int]
    step: int
    weight_version: int
    synced_version: int
    rows: int
    stages: _containers.RepeatedCompositeFieldContainer[PipelineStageTime]
    stage_bytes: int
    finished_unix_ms: int
    sync_ms: float
    def __init__(self, step: _Optional[int] = ..., weight_version: _Optional[int] = ..., synced_version: _Optional[int] = ..., rows: _Optional[int] = ..., stages: _Optional[_Iterable[_Union[PipelineStageTime, _Mapping]]] = ..., stage_bytes: _Optional[int] = ..., finished_unix_ms: _Optional[int] = ..., sync_ms: _Optional[float] = ...) -> None: ...

class PipelineReport(_message.Message):
    __slots__ = ("pipeline_id", "session", "stages", "learning_group", "generating_group", "step", "spans")
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    LEARNING_GROUP_FIELD_NUMBER: _ClassVar[int]
    GENERATING_GROUP_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    SPANS_FIELD_NUMBER: _ClassVar[int]
    pipeline_id: str
    session: str
    stages: _containers.RepeatedCompositeFieldContainer[PipelineStageInfo]
    learning_group: str
    generating_group: str
    step: PipelineStepInfo
    spans: _containers.RepeatedCompositeFieldContainer[_worker_pb2.Span]
    def __init__(self, pipeline_id: _Optional[str] = ..., session: _Optional[str] = ..., stages: _Optional[_Iterable[_Union[PipelineStageInfo, _Mapping]]] = ..., learning_group: _Optional[str] = ..., generating_group: _Optional[str] = ..., step: _Optional[_Union[PipelineStepInfo, _Mapping]] = ..., spans: _Optional[_Iterable[_Union[_worker_pb2.Span, _Mapping]]] = ...) -> None: ...
