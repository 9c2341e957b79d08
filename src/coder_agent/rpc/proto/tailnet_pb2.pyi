# mypy: ignore-errors
from google.protobuf.internal import containers as _containers
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
