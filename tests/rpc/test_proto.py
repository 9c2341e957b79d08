"""Wire checks of the generated coder.agent.v2 / coder.tailnet.v2 messages.

Expected bytes are hand-assembled from the field numbers in the protocol notes (§4),
so a renumbered field in agent.proto fails here rather than against coderd.
"""

from __future__ import annotations

import random

from coder_agent.rpc import drpc
from coder_agent.rpc.proto import agent_pb2, tailnet_pb2


def tag(field: int, wire_type: int) -> bytes:
    return drpc.encode_varint(field << 3 | wire_type)


def ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return tag(field, 2) + drpc.encode_varint(len(payload)) + payload


def test_imports_use_the_package_path() -> None:
    assert agent_pb2.Manifest.DESCRIPTOR.fields_by_name["derp_map"].message_type.full_name == (
        "coder.tailnet.v2.DERPMap"
    )
    assert agent_pb2.DESCRIPTOR.package == "coder.agent.v2"
    assert tailnet_pb2.DESCRIPTOR.package == "coder.tailnet.v2"


def test_manifest_field_numbers() -> None:
    agent_id = bytes(range(16))
    raw = (
        ld(1, agent_id)
        + tag(2, 0)
        + b"\x02"  # git_auth_configs
        + ld(3, ld(1, b"K") + ld(2, b"V"))  # environment_variables map entry
        + ld(4, b"~/src")
        + ld(5, b"proxy")
        + ld(6, b"/etc/motd")
        + tag(7, 0)
        + b"\x01"
        + tag(8, 0)
        + b"\x01"
        + ld(9, ld(2, tag(1, 0) + b"\x07" + ld(2, ld(6, ld(1, b"n1") + tag(9, 0) + b"\xbb\x03"))))
        + ld(10, ld(1, b"S" * 16) + ld(3, b"echo hi") + tag(5, 0) + b"\x01" + ld(10, b"I" * 16))
        + ld(11, ld(1, b"A" * 16) + ld(4, b"code") + tag(12, 0) + b"\x02")
        + ld(12, ld(2, b"load") + ld(4, tag(2, 0) + b"\x05"))
        + ld(13, b"owner")
        + ld(14, b"W" * 16)
        + ld(15, b"main")
        + ld(16, b"ws")
        + ld(17, ld(1, b"D" * 16) + ld(2, b"/ws"))
        + ld(18, b"P" * 16)
        + ld(19, ld(1, b"TOKEN") + ld(3, b"secret"))
    )
    m = agent_pb2.Manifest.FromString(raw)
    assert m.agent_id == agent_id
    assert m.git_auth_configs == 2
    assert dict(m.environment_variables) == {"K": "V"}
    assert (m.directory, m.vs_code_port_proxy_uri, m.motd_path) == ("~/src", "proxy", "/etc/motd")
    assert m.disable_direct_connections and m.derp_force_websockets
    region = m.derp_map.regions[7]
    assert region.nodes[0].name == "n1" and region.nodes[0].derp_port == 443
    assert m.scripts[0].script == "echo hi" and m.scripts[0].run_on_start and m.scripts[0].id == b"I" * 16
    assert m.apps[0].slug == "code" and m.apps[0].health == agent_pb2.WorkspaceApp.INITIALIZING
    # Metadata interval quirk: 5 "nanoseconds" mean 5 seconds.
    assert m.metadata[0].key == "load" and m.metadata[0].interval.nanos == 5
    assert (m.owner_username, m.workspace_id, m.agent_name, m.workspace_name) == (
        "owner",
        b"W" * 16,
        "main",
        "ws",
    )
    assert m.devcontainers[0].workspace_folder == "/ws"
    assert m.HasField("parent_id") and m.parent_id == b"P" * 16
    assert m.secrets[0].env_name == "TOKEN" and m.secrets[0].value == b"secret"
    # Nothing landed in unknown fields and every type matched: re-encoding is exact.
    assert m.SerializeToString() == raw


def test_batch_update_metadata_uses_field_two() -> None:
    req = agent_pb2.BatchUpdateMetadataRequest(metadata=[agent_pb2.Metadata(key="k")])
    assert req.SerializeToString() == ld(2, ld(1, b"k"))


def test_request_encodings() -> None:
    lifecycle = agent_pb2.UpdateLifecycleRequest(
        lifecycle=agent_pb2.Lifecycle(state=agent_pb2.Lifecycle.STARTING)
    )
    lifecycle.lifecycle.changed_at.seconds = 1
    assert lifecycle.SerializeToString() == ld(1, tag(1, 0) + b"\x02" + ld(2, tag(1, 0) + b"\x01"))

    logs = agent_pb2.BatchCreateLogsRequest(
        log_source_id=b"L" * 16, logs=[agent_pb2.Log(output="hello", level=agent_pb2.Log.INFO)]
    )
    assert logs.SerializeToString() == ld(1, b"L" * 16) + ld(2, ld(2, b"hello") + tag(3, 0) + b"\x03")

    startup = agent_pb2.UpdateStartupRequest(
        startup=agent_pb2.Startup(version="v0.1.0", expanded_directory="/home/u", subsystems=[1])
    )
    assert startup.SerializeToString() == ld(1, ld(1, b"v0.1.0") + ld(2, b"/home/u") + ld(3, b"\x01"))

    # Timing: START / OK are value 0 and therefore not on the wire.
    timing = agent_pb2.WorkspaceAgentScriptCompletedRequest(
        timing=agent_pb2.Timing(script_id=b"s" * 16, exit_code=1, stage=agent_pb2.Timing.START)
    )
    assert timing.SerializeToString() == ld(1, ld(1, b"s" * 16) + tag(4, 0) + b"\x01")

    conn = agent_pb2.ReportConnectionRequest(connection=agent_pb2.Connection(ip="127.0.0.1", app_name="ssh"))
    assert conn.SerializeToString() == ld(1, ld(5, b"127.0.0.1") + ld(8, b"ssh"))

    health = agent_pb2.BatchUpdateAppHealthRequest(
        updates=[agent_pb2.BatchUpdateAppHealthRequest.HealthUpdate(id=b"a" * 16, health=agent_pb2.HEALTHY)]
    )
    assert health.SerializeToString() == ld(1, ld(1, b"a" * 16) + tag(2, 0) + b"\x03")

    assert agent_pb2.UpdateStatsRequest().SerializeToString() == b""
    assert agent_pb2.BatchCreateLogsResponse.FromString(tag(1, 0) + b"\x01").log_limit_exceeded


def test_service_lists_every_rpc_in_order() -> None:
    methods = agent_pb2.DESCRIPTOR.services_by_name["Agent"].methods
    assert [m.name for m in methods][:8] == [
        "GetManifest",
        "GetServiceBanner",
        "UpdateStats",
        "UpdateLifecycle",
        "BatchUpdateAppHealths",
        "UpdateStartup",
        "BatchUpdateMetadata",
        "BatchCreateLogs",
    ]
    assert len(methods) == 19
    assert methods[12].output_type.full_name == "google.protobuf.Empty"


def test_big_manifest_through_drpc() -> None:
    rng = random.Random(9)
    manifest = agent_pb2.Manifest(agent_id=bytes(16), directory="/w")
    for i in range(20):
        manifest.scripts.add(
            log_source_id=bytes(16), script=rng.randbytes(60_000).hex(), display_name=f"s{i}"
        )
    body = manifest.SerializeToString()
    assert len(body) > 2 * 1024 * 1024

    call = drpc.UnaryCall(
        "/coder.agent.v2.Agent/GetManifest", agent_pb2.GetManifestRequest().SerializeToString()
    )
    server = drpc.ServerStream()
    events = server.receive_data(call.data_to_send())
    assert isinstance(events[1], drpc.RequestReceived)
    agent_pb2.GetManifestRequest.FromString(events[1].request)
    server.reply(body)
    call.receive_data(server.data_to_send())
    assert agent_pb2.Manifest.FromString(call.result()) == manifest
