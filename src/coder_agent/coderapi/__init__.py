"""The Coder API client: httpx underneath, the transport injectable, one error type."""

from .client import CoderClient, FixedToken, TokenFile, TokenProvider

__all__ = ["CoderClient", "FixedToken", "TokenFile", "TokenProvider"]
