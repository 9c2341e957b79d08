# mypy: ignore-errors
import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DERPMap(_message.Message):
    __slots__ = ("home_params", "regions")
    class HomeParams(_message.Message):
        __slots__ = ("region_score",)
        class RegionScoreEntry(_message.Message):
            __slots__ = ("key", "value")
            KEY_FIELD_NUMBER: _ClassVar[int]
            VALUE_FIELD_NUMBER: _ClassVar[int]
            key: int
            value: float
            def __init__(self, key: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
        REGION_SCORE_FIELD_NUMBER: _ClassVar[int]
        region_score: _containers.ScalarMap[int, float]
        def __init__(self, region_score: _Optional[_Mapping[int, float]] = ...) -> None: ...
    class Region(_message.Message):
        __slots__ = ("region_id", "embedded_relay", "region_code", "region_name", "avoid", "nodes")
        class Node(_message.Message):
            __slots__ = ("name", "region_id", "host_name", "cert_name", "ipv4", "ipv6", "stun_port", "stun_only", "derp_port", "insecure_for_tests", "force_http", "stun_test_ip", "can_port_80")
            NAME_FIELD_NUMBER: _ClassVar[int]
            REGION_ID_FIELD_NUMBER: _ClassVar[int]
            HOST_NAME_FIELD_NUMBER: _ClassVar[int]
            CERT_NAME_FIELD_NUMBER: _ClassVar[int]
            IPV4_FIELD_NUMBER: _ClassVar[int]
            IPV6_FIELD_NUMBER: _ClassVar[int]
            STUN_PORT_FIELD_NUMBER: _ClassVar[int]
            STUN_ONLY_FIELD_NUMBER: _ClassVar[int]
            DERP_PORT_FIELD_NUMBER: _ClassVar[int]
            INSECURE_FOR_TESTS_FIELD_NUMBER: _ClassVar[int]
            FORCE_HTTP_FIELD_NUMBER: _ClassVar[int]
            STUN_TEST_IP_FIELD_NUMBER: _ClassVar[int]
            CAN_PORT_80_FIELD_NUMBER: _ClassVar[int]
            name: str
            region_id: int
            host_name: str
            cert_name: str
            ipv4: str
            ipv6: str
            stun_port: int
            stun_only: bool
            derp_port: int
            insecure_for_tests: bool
            force_http: bool
            stun_test_ip: str
            can_port_80: bool
            def __init__(self, name: _Optional[str] = ..., region_id: _Optional[int] = ..., host_name: _Optional[str] = ..., cert_name: _Optional[str] = ..., ipv4: _Optional[str] = ..., ipv6: _Optional[str] = ..., stun_port: _Optional[int] = ..., stun_only: _Optional[bool] = ..., derp_port: _Optional[int] = ..., insecure_for_tests: _Optional[bool] = ..., force_http: _Optional[bool] = ..., stun_test_ip: _Optional[str] = ..., can_port_80: _Optional[bool] = ...) -> None: ...
        REGION_ID_FIELD_NUMBER: _ClassVar[int]
        EMBEDDED_RELAY_FIELD_NUMBER: _ClassVar[int]
        REGION_CODE_FIELD_NUMBER: _ClassVar[int]
        REGION_NAME_FIELD_NUMBER: _ClassVar[int]
        AVOID_FIELD_NUMBER: _ClassVar[int]
        NODES_FIELD_NUMBER: _ClassVar[int]
        region_id: int
        embedded_relay: bool
        region_code: str
        region_name: str
        avoid: bool
        nodes: _containers.RepeatedCompositeFieldContainer[DERPMap.Region.Node]
        def __init__(self, region_id: _Optional[int] = ..., embedded_relay: _Optional[bool] = ..., region_code: _Optional[str] = ..., region_name: _Optional[str] = ..., avoid: _Optional[bool] = ..., nodes: _Optional[_Iterable[_Union[DERPMap.Region.Node, _Mapping]]] = ...) -> None: ...
    class RegionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: DERPMap.Region
        def __init__(self, key: _Optional[int] = ..., value: _Optional[_Union[DERPMap.Region, _Mapping]] = ...) -> None: ...
    HOME_PARAMS_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    home_params: DERPMap.HomeParams
    regions: _containers.MessageMap[int, DERPMap.Region]
    def __init__(self, home_params: _Optional[_Union[DERPMap.HomeParams, _Mapping]] = ..., regions: _Optional[_Mapping[int, DERPMap.Region]] = ...) -> None: ...

class StreamDERPMapsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Node(_message.Message):
    __slots__ = ("id", "as_of", "key", "disco", "preferred_derp", "derp_latency", "derp_forced_websocket", "addresses", "allowed_ips", "endpoints")
    class DerpLatencyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class DerpForcedWebsocketEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: str
        def __init__(self, key: _Optional[int] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    DISCO_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_DERP_FIELD_NUMBER: _ClassVar[int]
    DERP_LATENCY_FIELD_NUMBER: _ClassVar[int]
    DERP_FORCED_WEBSOCKET_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_IPS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    id: int
    as_of: _timestamp_pb2.Timestamp
    key: bytes
    disco: str
    preferred_derp: int
    derp_latency: _containers.ScalarMap[str, float]
    derp_forced_websocket: _containers.ScalarMap[int, str]
    addresses: _containers.RepeatedScalarFieldContainer[str]
    allowed_ips: _containers.RepeatedScalarFieldContainer[str]
    endpoints: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[int] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., key: _Optional[bytes] = ..., disco: _Optional[str] = ..., preferred_derp: _Optional[int] = ..., derp_latency: _Optional[_Mapping[str, float]] = ..., derp_forced_websocket: _Optional[_Mapping[int, str]] = ..., addresses: _Optional[_Iterable[str]] = ..., allowed_ips: _Optional[_Iterable[str]] = ..., endpoints: _Optional[_Iterable[str]] = ...) -> None: ...

class CoordinateRequest(_message.Message):
    __slots__ = ("update_self", "disconnect", "add_tunnel", "remove_tunnel", "ready_for_handshake")
    class UpdateSelf(_message.Message):
        __slots__ = ("node",)
        NODE_FIELD_NUMBER: _ClassVar[int]
        node: Node
        def __init__(self, node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...
    class Disconnect(_message.Message):
        __slots__ = ()
        def __init__(self) -> None: ...
    class Tunnel(_message.Message):
        __slots__ = ("id",)
        ID_FIELD_NUMBER: _ClassVar[int]
        id: bytes
        def __init__(self, id: _Optional[bytes] = ...) -> None: ...
    class ReadyForHandshake(_message.Message):
        __slots__ = ("id",)
        ID_FIELD_NUMBER: _ClassVar[int]
        id: bytes
        def __init__(self, id: _Optional[bytes] = ...) -> None: ...
    UPDATE_SELF_FIELD_NUMBER: _ClassVar[int]
    DISCONNECT_FIELD_NUMBER: _ClassVar[int]
    ADD_TUNNEL_FIELD_NUMBER: _ClassVar[int]
    REMOVE_TUNNEL_FIELD_NUMBER: _ClassVar[int]
    READY_FOR_HANDSHAKE_FIELD_NUMBER: _ClassVar[int]
    update_self: CoordinateRequest.UpdateSelf
    disconnect: CoordinateRequest.Disconnect
    add_tunnel: CoordinateRequest.Tunnel
    remove_tunnel: CoordinateRequest.Tunnel
    ready_for_handshake: _containers.RepeatedCompositeFieldContainer[CoordinateRequest.ReadyForHandshake]
    def __init__(self, update_self: _Optional[_Union[CoordinateRequest.UpdateSelf, _Mapping]] = ..., disconnect: _Optional[_Union[CoordinateRequest.Disconnect, _Mapping]] = ..., add_tunnel: _Optional[_Union[CoordinateRequest.Tunnel, _Mapping]] = ..., remove_tunnel: _Optional[_Union[CoordinateRequest.Tunnel, _Mapping]] = ..., ready_for_handshake: _Optional[_Iterable[_Union[CoordinateRequest.ReadyForHandshake, _Mapping]]] = ...) -> None: ...

class CoordinateResponse(_message.Message):
    __slots__ = ("peer_updates", "error")
    class PeerUpdate(_message.Message):
        __slots__ = ("id", "node", "kind", "reason")
        class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
            __slots__ = ()
            KIND_UNSPECIFIED: _ClassVar[CoordinateResponse.PeerUpdate.Kind]
            NODE: _ClassVar[CoordinateResponse.PeerUpdate.Kind]
            DISCONNECTED: _ClassVar[CoordinateResponse.PeerUpdate.Kind]
            LOST: _ClassVar[CoordinateResponse.PeerUpdate.Kind]
            READY_FOR_HANDSHAKE: _ClassVar[CoordinateResponse.PeerUpdate.Kind]
        KIND_UNSPECIFIED: CoordinateResponse.PeerUpdate.Kind
        NODE: CoordinateResponse.PeerUpdate.Kind
        DISCONNECTED: CoordinateResponse.PeerUpdate.Kind
        LOST: CoordinateResponse.PeerUpdate.Kind
        READY_FOR_HANDSHAKE: CoordinateResponse.PeerUpdate.Kind
        ID_FIELD_NUMBER: _ClassVar[int]
        NODE_FIELD_NUMBER: _ClassVar[int]
        KIND_FIELD_NUMBER: _ClassVar[int]
        REASON_FIELD_NUMBER: _ClassVar[int]
        id: bytes
        node: Node
        kind: CoordinateResponse.PeerUpdate.Kind
        reason: str
        def __init__(self, id: _Optional[bytes] = ..., node: _Optional[_Union[Node, _Mapping]] = ..., kind: _Optional[_Union[CoordinateResponse.PeerUpdate.Kind, str]] = ..., reason: _Optional[str] = ...) -> None: ...
    PEER_UPDATES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    peer_updates: _containers.RepeatedCompositeFieldContainer[CoordinateResponse.PeerUpdate]
    error: str
    def __init__(self, peer_updates: _Optional[_Iterable[_Union[CoordinateResponse.PeerUpdate, _Mapping]]] = ..., error: _Optional[str] = ...) -> None: ...
