from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LeaseState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEASE_STATE_UNSPECIFIED: _ClassVar[LeaseState]
    LEASE_PENDING: _ClassVar[LeaseState]
    LEASE_LOADING: _ClassVar[LeaseState]
    LEASE_READY: _ClassVar[LeaseState]
    LEASE_RELEASING: _ClassVar[LeaseState]
    LEASE_RELEASED: _ClassVar[LeaseState]
    LEASE_EXPIRED: _ClassVar[LeaseState]
    LEASE_FAILED: _ClassVar[LeaseState]
    LEASE_PARKED: _ClassVar[LeaseState]

class ModelState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_STATE_UNSPECIFIED: _ClassVar[ModelState]
    MODEL_PENDING: _ClassVar[ModelState]
    MODEL_FETCHING: _ClassVar[ModelState]
    MODEL_LOADING: _ClassVar[ModelState]
    MODEL_READY: _ClassVar[ModelState]
    MODEL_UNLOADING: _ClassVar[ModelState]
    MODEL_UNLOADED: _ClassVar[ModelState]
    MODEL_FAILED: _ClassVar[ModelState]
LEASE_STATE_UNSPECIFIED: LeaseState
LEASE_PENDING: LeaseState
LEASE_LOADING: LeaseState
LEASE_READY: LeaseState
LEASE_RELEASING: LeaseState
LEASE_RELEASED: LeaseState
LEASE_EXPIRED: LeaseState
LEASE_FAILED: LeaseState
LEASE_PARKED: LeaseState
MODEL_STATE_UNSPECIFIED: ModelState
MODEL_PENDING: ModelState
MODEL_FETCHING: ModelState
MODEL_LOADING: ModelState
MODEL_READY: ModelState
MODEL_UNLOADING: ModelState
MODEL_UNLOADED: ModelState
MODEL_FAILED: ModelState

class ModelSpec(_message.Message):
    __slots__ = ("name", "uri", "memory_bytes", "sha256")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    name: str
    uri: str
    memory_bytes: int
    sha256: str
    def __init__(self, name: _Optional[str] = ..., uri: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class AcquireRequest(_message.Message):
    __slots__ = ("models", "name", "duration_s", "activity_window_s", "pool", "quota", "tritonserver", "gpus", "gpu_product", "node_selector", "exclusive", "colocate_with", "avoid", "labels", "priority", "autoscale")
    class NodeSelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    ACTIVITY_WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    QUOTA_FIELD_NUMBER: _ClassVar[int]
    TRITONSERVER_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    GPU_PRODUCT_FIELD_NUMBER: _ClassVar[int]
    NODE_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    EXCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    COLOCATE_WITH_FIELD_NUMBER: _ClassVar[int]
    AVOID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    AUTOSCALE_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelSpec]
    name: str
    duration_s: float
    activity_window_s: float
    pool: str
    quota: int
    tritonserver: str
    gpus: int
    gpu_product: str
    node_selector: _containers.ScalarMap[str, str]
    exclusive: bool
    colocate_with: _containers.RepeatedScalarFieldContainer[str]
    avoid: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.ScalarMap[str, str]
    priority: int
    autoscale: Autoscale
    def __init__(self, models: _Optional[_Iterable[_Union[ModelSpec, _Mapping]]] = ..., name: _Optional[str] = ..., duration_s: _Optional[float] = ..., activity_window_s: _Optional[float] = ..., pool: _Optional[str] = ..., quota: _Optional[int] = ..., tritonserver: _Optional[str] = ..., gpus: _Optional[int] = ..., gpu_product: _Optional[str] = ..., node_selector: _Optional[_Mapping[str, str]] = ..., exclusive: _Optional[bool] = ..., colocate_with: _Optional[_Iterable[str]] = ..., avoid: _Optional[_Iterable[str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., priority: _Optional[int] = ..., autoscale: _Optional[_Union[Autoscale, _Mapping]] = ...) -> None: ...

class Autoscale(_message.Message):
    __slots__ = ("min_replicas", "max_replicas", "metric", "target", "up_window_s", "down_window_s", "up_cooldown_s", "down_cooldown_s", "drain_s", "park_after_s")
    MIN_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    MAX_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    UP_WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    DOWN_WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    UP_COOLDOWN_S_FIELD_NUMBER: _ClassVar[int]
    DOWN_COOLDOWN_S_FIELD_NUMBER: _ClassVar[int]
    DRAIN_S_FIELD_NUMBER: _ClassVar[int]
    PARK_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    min_replicas: int
    max_replicas: int
    metric: str
    target: float
    up_window_s: float
    down_window_s: float
    up_cooldown_s: float
    down_cooldown_s: float
    drain_s: float
    park_after_s: float
    def __init__(self, min_replicas: _Optional[int] = ..., max_replicas: _Optional[int] = ..., metric: _Optional[str] = ..., target: _Optional[float] = ..., up_window_s: _Optional[float] = ..., down_window_s: _Optional[float] = ..., up_cooldown_s: _Optional[float] = ..., down_cooldown_s: _Optional[float] = ..., drain_s: _Optional[float] = ..., park_after_s: _Optional[float] = ...) -> None: ...

class PlanResponse(_message.Message):
    __slots__ = ("decision", "server_id", "node", "gpus", "reason")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    decision: str
    server_id: str
    node: str
    gpus: _containers.RepeatedScalarFieldContainer[int]
    reason: str
    def __init__(self, decision: _Optional[str] = ..., server_id: _Optional[str] = ..., node: _Optional[str] = ..., gpus: _Optional[_Iterable[int]] = ..., reason: _Optional[str] = ...) -> None: ...

class LeaseRef(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RenewRequest(_message.Message):
    __slots__ = ("id", "duration_s")
    ID_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    id: str
    duration_s: float
    def __init__(self, id: _Optional[str] = ..., duration_s: _Optional[float] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("include_ended",)
    INCLUDE_ENDED_FIELD_NUMBER: _ClassVar[int]
    include_ended: bool
    def __init__(self, include_ended: _Optional[bool] = ...) -> None: ...

class ServerEndpoints(_message.Message):
    __slots__ = ("server_id", "http", "grpc", "metrics")
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    HTTP_FIELD_NUMBER: _ClassVar[int]
    GRPC_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    server_id: str
    http: str
    grpc: str
    metrics: str
    def __init__(self, server_id: _Optional[str] = ..., http: _Optional[str] = ..., grpc: _Optional[str] = ..., metrics: _Optional[str] = ...) -> None: ...

class Endpoints(_message.Message):
    __slots__ = ("http", "grpc", "metrics", "servers")
    HTTP_FIELD_NUMBER: _ClassVar[int]
    GRPC_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    SERVERS_FIELD_NUMBER: _ClassVar[int]
    http: str
    grpc: str
    metrics: str
    servers: _containers.RepeatedCompositeFieldContainer[ServerEndpoints]
    def __init__(self, http: _Optional[str] = ..., grpc: _Optional[str] = ..., metrics: _Optional[str] = ..., servers: _Optional[_Iterable[_Union[ServerEndpoints, _Mapping]]] = ...) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("name", "uri", "memory_bytes", "state", "error", "load_s", "measured_bytes", "framework", "bytes_done", "bytes_total")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LOAD_S_FIELD_NUMBER: _ClassVar[int]
    MEASURED_BYTES_FIELD_NUMBER: _ClassVar[int]
    FRAMEWORK_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    name: str
    uri: str
    memory_bytes: int
    state: ModelState
    error: str
    load_s: float
    measured_bytes: int
    framework: str
    bytes_done: int
    bytes_total: int
    def __init__(self, name: _Optional[str] = ..., uri: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., state: _Optional[_Union[ModelState, str]] = ..., error: _Optional[str] = ..., load_s: _Optional[float] = ..., measured_bytes: _Optional[int] = ..., framework: _Optional[str] = ..., bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("id", "name", "state", "reason", "models", "endpoints", "created_at", "expires_at", "duration_s", "server_id", "updated_at", "activity_window_s", "last_activity_at", "pool", "quota", "tritonserver", "gpus", "gpu_product", "node_selector", "exclusive", "colocate_with", "avoid", "labels", "priority", "node", "server_gpus", "autoscale", "replicas", "replicas_wanted", "parked_at", "woke_at", "wake_s")
    class NodeSelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    ACTIVITY_WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    LAST_ACTIVITY_AT_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    QUOTA_FIELD_NUMBER: _ClassVar[int]
    TRITONSERVER_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    GPU_PRODUCT_FIELD_NUMBER: _ClassVar[int]
    NODE_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    EXCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    COLOCATE_WITH_FIELD_NUMBER: _ClassVar[int]
    AVOID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    SERVER_GPUS_FIELD_NUMBER: _ClassVar[int]
    AUTOSCALE_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_WANTED_FIELD_NUMBER: _ClassVar[int]
    PARKED_AT_FIELD_NUMBER: _ClassVar[int]
    WOKE_AT_FIELD_NUMBER: _ClassVar[int]
    WAKE_S_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    state: LeaseState
    reason: str
    models: _containers.RepeatedCompositeFieldContainer[ModelStatus]
    endpoints: Endpoints
    created_at: float
    expires_at: float
    duration_s: float
    server_id: str
    updated_at: float
    activity_window_s: float
    last_activity_at: float
    pool: str
    quota: int
    tritonserver: str
    gpus: int
    gpu_product: str
    node_selector: _containers.ScalarMap[str, str]
    exclusive: bool
    colocate_with: _containers.RepeatedScalarFieldContainer[str]
    avoid: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.ScalarMap[str, str]
    priority: int
    node: str
    server_gpus: _containers.RepeatedScalarFieldContainer[int]
    autoscale: Autoscale
    replicas: _containers.RepeatedCompositeFieldContainer[Replica]
    replicas_wanted: int
    parked_at: float
    woke_at: float
    wake_s: float
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[_Union[LeaseState, str]] = ..., reason: _Optional[str] = ..., models: _Optional[_Iterable[_Union[ModelStatus, _Mapping]]] = ..., endpoints: _Optional[_Union[Endpoints, _Mapping]] = ..., created_at: _Optional[float] = ..., expires_at: _Optional[float] = ..., duration_s: _Optional[float] = ..., server_id: _Optional[str] = ..., updated_at: _Optional[float] = ..., activity_window_s: _Optional[float] = ..., last_activity_at: _Optional[float] = ..., pool: _Optional[str] = ..., quota: _Optional[int] = ..., tritonserver: _Optional[str] = ..., gpus: _Optional[int] = ..., gpu_product: _Optional[str] = ..., node_selector: _Optional[_Mapping[str, str]] = ..., exclusive: _Optional[bool] = ..., colocate_with: _Optional[_Iterable[str]] = ..., avoid: _Optional[_Iterable[str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., priority: _Optional[int] = ..., node: _Optional[str] = ..., server_gpus: _Optional[_Iterable[int]] = ..., autoscale: _Optional[_Union[Autoscale, _Mapping]] = ..., replicas: _Optional[_Iterable[_Union[Replica, _Mapping]]] = ..., replicas_wanted: _Optional[int] = ..., parked_at: _Optional[float] = ..., woke_at: _Optional[float] = ..., wake_s: _Optional[float] = ...) -> None: ...

class ScaleRequest(_message.Message):
    __slots__ = ("id", "replicas")
    ID_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    id: str
    replicas: int
    def __init__(self, id: _Optional[str] = ..., replicas: _Optional[int] = ...) -> None: ...

class Replica(_message.Message):
    __slots__ = ("id", "server_id", "state", "reason", "node", "draining", "ready_at", "http", "grpc")
    ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    READY_AT_FIELD_NUMBER: _ClassVar[int]
    HTTP_FIELD_NUMBER: _ClassVar[int]
    GRPC_FIELD_NUMBER: _ClassVar[int]
    id: str
    server_id: str
    state: LeaseState
    reason: str
    node: str
    draining: bool
    ready_at: float
    http: str
    grpc: str
    def __init__(self, id: _Optional[str] = ..., server_id: _Optional[str] = ..., state: _Optional[_Union[LeaseState, str]] = ..., reason: _Optional[str] = ..., node: _Optional[str] = ..., draining: _Optional[bool] = ..., ready_at: _Optional[float] = ..., http: _Optional[str] = ..., grpc: _Optional[str] = ...) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("leases",)
    LEASES_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[Lease]
    def __init__(self, leases: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ...) -> None: ...

class ResourceStatus(_message.Message):
    __slots__ = ("total_bytes", "declared_bytes", "measured_bytes", "server_ids", "lease_ids", "standby_server_ids")
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DECLARED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEASURED_BYTES_FIELD_NUMBER: _ClassVar[int]
    SERVER_IDS_FIELD_NUMBER: _ClassVar[int]
    LEASE_IDS_FIELD_NUMBER: _ClassVar[int]
    STANDBY_SERVER_IDS_FIELD_NUMBER: _ClassVar[int]
    total_bytes: int
    declared_bytes: int
    measured_bytes: int
    server_ids: _containers.RepeatedScalarFieldContainer[str]
    lease_ids: _containers.RepeatedScalarFieldContainer[str]
    standby_server_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, total_bytes: _Optional[int] = ..., declared_bytes: _Optional[int] = ..., measured_bytes: _Optional[int] = ..., server_ids: _Optional[_Iterable[str]] = ..., lease_ids: _Optional[_Iterable[str]] = ..., standby_server_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GpuStatus(_message.Message):
    __slots__ = ("index", "product", "memory", "device_used_bytes")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    DEVICE_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    index: int
    product: str
    memory: ResourceStatus
    device_used_bytes: int
    def __init__(self, index: _Optional[int] = ..., product: _Optional[str] = ..., memory: _Optional[_Union[ResourceStatus, _Mapping]] = ..., device_used_bytes: _Optional[int] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("name", "labels", "source", "cpu", "gpus", "cache")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    name: str
    labels: _containers.ScalarMap[str, str]
    source: str
    cpu: ResourceStatus
    gpus: _containers.RepeatedCompositeFieldContainer[GpuStatus]
    cache: ModelCacheStatus
    def __init__(self, name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., source: _Optional[str] = ..., cpu: _Optional[_Union[ResourceStatus, _Mapping]] = ..., gpus: _Optional[_Iterable[_Union[GpuStatus, _Mapping]]] = ..., cache: _Optional[_Union[ModelCacheStatus, _Mapping]] = ...) -> None: ...

class ModelCacheStatus(_message.Message):
    __slots__ = ("size_bytes", "cap_bytes", "models", "read_at", "server_id")
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CAP_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    READ_AT_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    size_bytes: int
    cap_bytes: int
    models: _containers.RepeatedCompositeFieldContainer[CachedModel]
    read_at: float
    server_id: str
    def __init__(self, size_bytes: _Optional[int] = ..., cap_bytes: _Optional[int] = ..., models: _Optional[_Iterable[_Union[CachedModel, _Mapping]]] = ..., read_at: _Optional[float] = ..., server_id: _Optional[str] = ...) -> None: ...

class CachedModel(_message.Message):
    __slots__ = ("name", "uri", "bytes", "last_used", "in_use", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_FIELD_NUMBER: _ClassVar[int]
    IN_USE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    uri: str
    bytes: int
    last_used: float
    in_use: bool
    version: str
    def __init__(self, name: _Optional[str] = ..., uri: _Optional[str] = ..., bytes: _Optional[int] = ..., last_used: _Optional[float] = ..., in_use: _Optional[bool] = ..., version: _Optional[str] = ...) -> None: ...

class ClusterStatus(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeStatus]
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeStatus, _Mapping]]] = ...) -> None: ...

class ModelMemory(_message.Message):
    __slots__ = ("name", "uri", "framework", "declared_bytes", "measured_bytes", "lease_ids", "server_ids", "cached_on")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    FRAMEWORK_FIELD_NUMBER: _ClassVar[int]
    DECLARED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEASURED_BYTES_FIELD_NUMBER: _ClassVar[int]
    LEASE_IDS_FIELD_NUMBER: _ClassVar[int]
    SERVER_IDS_FIELD_NUMBER: _ClassVar[int]
    CACHED_ON_FIELD_NUMBER: _ClassVar[int]
    name: str
    uri: str
    framework: str
    declared_bytes: int
    measured_bytes: int
    lease_ids: _containers.RepeatedScalarFieldContainer[str]
    server_ids: _containers.RepeatedScalarFieldContainer[str]
    cached_on: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., uri: _Optional[str] = ..., framework: _Optional[str] = ..., declared_bytes: _Optional[int] = ..., measured_bytes: _Optional[int] = ..., lease_ids: _Optional[_Iterable[str]] = ..., server_ids: _Optional[_Iterable[str]] = ..., cached_on: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelsStatus(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelMemory]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelMemory, _Mapping]]] = ...) -> None: ...

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LeaseName(_message.Message):
    __slots__ = ("name", "lease_id", "next_lease_id", "endpoints", "updated_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    NEXT_LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    lease_id: str
    next_lease_id: str
    endpoints: Endpoints
    updated_at: float
    def __init__(self, name: _Optional[str] = ..., lease_id: _Optional[str] = ..., next_lease_id: _Optional[str] = ..., endpoints: _Optional[_Union[Endpoints, _Mapping]] = ..., updated_at: _Optional[float] = ...) -> None: ...

class NameRequest(_message.Message):
    __slots__ = ("name", "lease_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    lease_id: str
    def __init__(self, name: _Optional[str] = ..., lease_id: _Optional[str] = ...) -> None: ...

class ListNamesResponse(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedCompositeFieldContainer[LeaseName]
    def __init__(self, names: _Optional[_Iterable[_Union[LeaseName, _Mapping]]] = ...) -> None: ...

class PoolServer(_message.Message):
    __slots__ = ("server_id", "state", "quota_used", "quota_free", "lease_ids", "http")
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    QUOTA_USED_FIELD_NUMBER: _ClassVar[int]
    QUOTA_FREE_FIELD_NUMBER: _ClassVar[int]
    LEASE_IDS_FIELD_NUMBER: _ClassVar[int]
    HTTP_FIELD_NUMBER: _ClassVar[int]
    server_id: str
    state: str
    quota_used: int
    quota_free: int
    lease_ids: _containers.RepeatedScalarFieldContainer[str]
    http: str
    def __init__(self, server_id: _Optional[str] = ..., state: _Optional[str] = ..., quota_used: _Optional[int] = ..., quota_free: _Optional[int] = ..., lease_ids: _Optional[_Iterable[str]] = ..., http: _Optional[str] = ...) -> None: ...

class Pool(_message.Message):
    __slots__ = ("name", "tritonserver", "server_memory_bytes", "min_servers", "max_servers", "quota_per_server", "servers", "created_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TRITONSERVER_FIELD_NUMBER: _ClassVar[int]
    SERVER_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MIN_SERVERS_FIELD_NUMBER: _ClassVar[int]
    MAX_SERVERS_FIELD_NUMBER: _ClassVar[int]
    QUOTA_PER_SERVER_FIELD_NUMBER: _ClassVar[int]
    SERVERS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    tritonserver: str
    server_memory_bytes: int
    min_servers: int
    max_servers: int
    quota_per_server: int
    servers: _containers.RepeatedCompositeFieldContainer[PoolServer]
    created_at: float
    def __init__(self, name: _Optional[str] = ..., tritonserver: _Optional[str] = ..., server_memory_bytes: _Optional[int] = ..., min_servers: _Optional[int] = ..., max_servers: _Optional[int] = ..., quota_per_server: _Optional[int] = ..., servers: _Optional[_Iterable[_Union[PoolServer, _Mapping]]] = ..., created_at: _Optional[float] = ...) -> None: ...

class PoolRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListPoolsResponse(_message.Message):
    __slots__ = ("pools",)
    POOLS_FIELD_NUMBER: _ClassVar[int]
    pools: _containers.RepeatedCompositeFieldContainer[Pool]
    def __init__(self, pools: _Optional[_Iterable[_Union[Pool, _Mapping]]] = ...) -> None: ...

class AllowlistEntry(_message.Message):
    __slots__ = ("tritonserver",)
    TRITONSERVER_FIELD_NUMBER: _ClassVar[int]
    tritonserver: str
    def __init__(self, tritonserver: _Optional[str] = ...) -> None: ...

class Allowlist(_message.Message):
    __slots__ = ("tritonservers",)
    TRITONSERVERS_FIELD_NUMBER: _ClassVar[int]
    tritonservers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tritonservers: _Optional[_Iterable[str]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("seq", "at", "kind", "id", "state", "reason", "lease_id", "server_id", "bytes_done", "bytes_total")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    seq: int
    at: float
    kind: str
    id: str
    state: str
    reason: str
    lease_id: str
    server_id: str
    bytes_done: int
    bytes_total: int
    def __init__(self, seq: _Optional[int] = ..., at: _Optional[float] = ..., kind: _Optional[str] = ..., id: _Optional[str] = ..., state: _Optional[str] = ..., reason: _Optional[str] = ..., lease_id: _Optional[str] = ..., server_id: _Optional[str] = ..., bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("since_seq", "replay", "until_caught_up")
    SINCE_SEQ_FIELD_NUMBER: _ClassVar[int]
    REPLAY_FIELD_NUMBER: _ClassVar[int]
    UNTIL_CAUGHT_UP_FIELD_NUMBER: _ClassVar[int]
    since_seq: int
    replay: bool
    until_caught_up: bool
    def __init__(self, since_seq: _Optional[int] = ..., replay: _Optional[bool] = ..., until_caught_up: _Optional[bool] = ...) -> None: ...

class SidecarHello(_message.Message):
    __slots__ = ("server_id",)
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    server_id: str
    def __init__(self, server_id: _Optional[str] = ...) -> None: ...

class ModelAssignment(_message.Message):
    __slots__ = ("name", "uri")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    name: str
    uri: str
    def __init__(self, name: _Optional[str] = ..., uri: _Optional[str] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("generation", "models", "triton_grpc")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    TRITON_GRPC_FIELD_NUMBER: _ClassVar[int]
    generation: int
    models: _containers.RepeatedCompositeFieldContainer[ModelAssignment]
    triton_grpc: str
    def __init__(self, generation: _Optional[int] = ..., models: _Optional[_Iterable[_Union[ModelAssignment, _Mapping]]] = ..., triton_grpc: _Optional[str] = ...) -> None: ...

class ModelReport(_message.Message):
    __slots__ = ("name", "uri", "state", "error", "load_s", "memory_bytes", "inference_count", "last_inference_ms", "gpu_memory_bytes", "bytes_done", "bytes_total", "queue_us", "requests", "inferences", "pending", "has_metrics", "metrics_read_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LOAD_S_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_INFERENCE_MS_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    QUEUE_US_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    INFERENCES_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    HAS_METRICS_FIELD_NUMBER: _ClassVar[int]
    METRICS_READ_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    uri: str
    state: ModelState
    error: str
    load_s: float
    memory_bytes: int
    inference_count: int
    last_inference_ms: int
    gpu_memory_bytes: int
    bytes_done: int
    bytes_total: int
    queue_us: float
    requests: int
    inferences: int
    pending: float
    has_metrics: bool
    metrics_read_at: float
    def __init__(self, name: _Optional[str] = ..., uri: _Optional[str] = ..., state: _Optional[_Union[ModelState, str]] = ..., error: _Optional[str] = ..., load_s: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., inference_count: _Optional[int] = ..., last_inference_ms: _Optional[int] = ..., gpu_memory_bytes: _Optional[int] = ..., bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ..., queue_us: _Optional[float] = ..., requests: _Optional[int] = ..., inferences: _Optional[int] = ..., pending: _Optional[float] = ..., has_metrics: _Optional[bool] = ..., metrics_read_at: _Optional[float] = ...) -> None: ...

class SidecarReport(_message.Message):
    __slots__ = ("server_id", "triton_ready", "generation", "models", "leak", "cache")
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    TRITON_READY_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    LEAK_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    server_id: str
    triton_ready: bool
    generation: int
    models: _containers.RepeatedCompositeFieldContainer[ModelReport]
    leak: str
    cache: ModelCacheStatus
    def __init__(self, server_id: _Optional[str] = ..., triton_ready: _Optional[bool] = ..., generation: _Optional[int] = ..., models: _Optional[_Iterable[_Union[ModelReport, _Mapping]]] = ..., leak: _Optional[str] = ..., cache: _Optional[_Union[ModelCacheStatus, _Mapping]] = ...) -> None: ...

class ReportAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TokenRequest(_message.Message):
    __slots__ = ("name", "role", "tenant", "expires_in_s")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    tenant: str
    expires_in_s: float
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ..., tenant: _Optional[str] = ..., expires_in_s: _Optional[float] = ...) -> None: ...

class ApiToken(_message.Message):
    __slots__ = ("name", "role", "tenant", "created_at", "expires_at", "revoked_at", "secret")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    tenant: str
    created_at: float
    expires_at: float
    revoked_at: float
    secret: str
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ..., tenant: _Optional[str] = ..., created_at: _Optional[float] = ..., expires_at: _Optional[float] = ..., revoked_at: _Optional[float] = ..., secret: _Optional[str] = ...) -> None: ...

class TokenRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[ApiToken]
    def __init__(self, tokens: _Optional[_Iterable[_Union[ApiToken, _Mapping]]] = ...) -> None: ...

class TenantQuota(_message.Message):
    __slots__ = ("leases", "gpus", "gpu_memory_bytes", "host_memory_bytes", "replicas")
    LEASES_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    HOST_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    leases: int
    gpus: int
    gpu_memory_bytes: int
    host_memory_bytes: int
    replicas: int
    def __init__(self, leases: _Optional[int] = ..., gpus: _Optional[int] = ..., gpu_memory_bytes: _Optional[int] = ..., host_memory_bytes: _Optional[int] = ..., replicas: _Optional[int] = ...) -> None: ...

class Tenant(_message.Message):
    __slots__ = ("name", "quota", "over_quota", "used", "created_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    QUOTA_FIELD_NUMBER: _ClassVar[int]
    OVER_QUOTA_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    quota: TenantQuota
    over_quota: str
    used: TenantQuota
    created_at: float
    def __init__(self, name: _Optional[str] = ..., quota: _Optional[_Union[TenantQuota, _Mapping]] = ..., over_quota: _Optional[str] = ..., used: _Optional[_Union[TenantQuota, _Mapping]] = ..., created_at: _Optional[float] = ...) -> None: ...

class TenantRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListTenantsResponse(_message.Message):
    __slots__ = ("tenants",)
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    tenants: _containers.RepeatedCompositeFieldContainer[Tenant]
    def __init__(self, tenants: _Optional[_Iterable[_Union[Tenant, _Mapping]]] = ...) -> None: ...

class AuditRequest(_message.Message):
    __slots__ = ("since", "tenant", "limit")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    since: float
    tenant: str
    limit: int
    def __init__(self, since: _Optional[float] = ..., tenant: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("seq", "at", "who", "role", "tenant", "method", "target", "outcome", "detail")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    WHO_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    seq: int
    at: float
    who: str
    role: str
    tenant: str
    method: str
    target: str
    outcome: str
    detail: str
    def __init__(self, seq: _Optional[int] = ..., at: _Optional[float] = ..., who: _Optional[str] = ..., role: _Optional[str] = ..., tenant: _Optional[str] = ..., method: _Optional[str] = ..., target: _Optional[str] = ..., outcome: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class AuditResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ...) -> None: ...

class WhoAmIResponse(_message.Message):
    __slots__ = ("name", "role", "tenant")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    tenant: str
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...
