"""coder-agent: a Python daemon that speaks Coder's workspace-agent API."""

__version__ = "0.1.0"

__all__ = ["__version__"]
