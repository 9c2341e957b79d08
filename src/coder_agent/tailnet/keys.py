"""The agent's tailnet identity: node and disco keys, its two addresses, its node id.

Rules:

* Both keys are X25519, generated per process and never persisted (a restarted agent is a new
  node; coordination tells every peer). Raw private and public keys are 32 bytes.
* Wire forms (coder-tailnet.md §2): ``Node.key`` = ``b"np"`` + 32 raw public bytes
  (``key.NodePublic.MarshalBinary``); ``Node.disco`` = ``"discokey:"`` + 64 lowercase hex.
* Keys are never logged: ``repr()`` and ``str()`` of a key say only its kind, and there is no
  ``nodekey:`` text form on purpose.
* Addresses (``tailnet/conn.go`` ``ServicePrefix.AddrFromUUID``): the 16 agent-id bytes with the
  first 6 overwritten by the /48 prefix, as a /128.
* ``node_id`` (``tailnet/conn.go`` ``NodeID``): the last 8 id bytes as a signed big-endian int64,
  then its absolute value, except -2**63 which has none and stays as it is.
"""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass, field

__all__ = [
    "CODER_SERVICE_PREFIX",
    "TAILSCALE_SERVICE_PREFIX",
    "DiscoKey",
    "KeyPair",
    "NodeKey",
    "addresses",
    "disco_from_wire",
    "node_id",
    "node_key_from_wire",
    "public_from_private",
    "service_address",
]

TAILSCALE_SERVICE_PREFIX = ipaddress.IPv6Network("fd7a:115c:a1e0::/48")
CODER_SERVICE_PREFIX = ipaddress.IPv6Network("fd60:627a:a42b::/48")

_NODE_PREFIX = b"np"
_DISCO_PREFIX = "discokey:"


def public_from_private(private: bytes) -> bytes:
    """The X25519 public key of a raw 32-byte private key."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _generate() -> bytes:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    return X25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


@dataclass(frozen=True, repr=False)
class KeyPair:
    """An X25519 key pair (raw bytes). ``repr`` never shows the key."""

    private: bytes
    public: bytes = field(default=b"")

    def __post_init__(self) -> None:
        if len(self.private) != 32:
            raise ValueError("an X25519 private key is 32 bytes")
        if not self.public:
            object.__setattr__(self, "public", public_from_private(self.private))

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"

    __str__ = __repr__


class NodeKey(KeyPair):
    """The WireGuard static key, which is also the DERP identity."""

    @classmethod
    def generate(cls) -> NodeKey:
        return cls(_generate())

    @property
    def wire(self) -> bytes:
        """``Node.key``: ``b"np"`` + the 32 raw public bytes."""
        return _NODE_PREFIX + self.public


class DiscoKey(KeyPair):
    """The disco key (NaCl box key for disco messages)."""

    @classmethod
    def generate(cls) -> DiscoKey:
        return cls(_generate())

    @property
    def wire(self) -> str:
        """``Node.disco``: ``"discokey:"`` + 64 hex digits."""
        return _DISCO_PREFIX + self.public.hex()


def node_key_from_wire(data: bytes) -> bytes:
    """A peer's raw public node key from ``Node.key``; ValueError if it is not ``np`` + 32 bytes."""
    if len(data) != 34 or not data.startswith(_NODE_PREFIX):
        raise ValueError("node key is not 'np' + 32 bytes")
    return data[2:]


def disco_from_wire(text: str) -> bytes:
    """A peer's raw public disco key from ``Node.disco``; ValueError if malformed."""
    if not text.startswith(_DISCO_PREFIX) or len(text) != len(_DISCO_PREFIX) + 64:
        raise ValueError("disco key is not 'discokey:' + 64 hex digits")
    return bytes.fromhex(text[len(_DISCO_PREFIX):])


def service_address(prefix: ipaddress.IPv6Network, agent_id: uuid.UUID) -> ipaddress.IPv6Address:
    """The /128 of ``agent_id`` under a /48 service prefix."""
    if prefix.prefixlen != 48:
        raise ValueError("service prefixes are /48")
    return ipaddress.IPv6Address(prefix.network_address.packed[:6] + agent_id.bytes[6:])


def addresses(agent_id: uuid.UUID) -> tuple[ipaddress.IPv6Address, ipaddress.IPv6Address]:
    """The agent's two addresses: Tailscale service prefix (what clients dial) first, Coder's second."""
    return (service_address(TAILSCALE_SERVICE_PREFIX, agent_id), service_address(CODER_SERVICE_PREFIX, agent_id))


def node_id(agent_id: uuid.UUID) -> int:
    """``Node.id``: |int64 of the last 8 id bytes, big-endian|, -2**63 staying as it is (as Go)."""
    v = int.from_bytes(agent_id.bytes[8:], "big", signed=True)
    return v if v == -(1 << 63) else abs(v)
