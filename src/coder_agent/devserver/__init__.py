"""A development control plane: a real HTTP server on loopback that answers the agent-facing
endpoints the way coderd does (validation rules, status codes, limits), keeps what it receives
in memory, and injects faults. Tests use it as their coderd; ``coder-agent demo`` shows it."""

from .app import DevServer
from .state import DevAgent, DevState, Fault

__all__ = ["DevAgent", "DevServer", "DevState", "Fault"]
