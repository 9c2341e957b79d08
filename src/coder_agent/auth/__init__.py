"""Agent authentication: instance identity on AWS, Azure and Google Cloud.

Token auth (``CODER_AGENT_TOKEN`` / ``CODER_AGENT_TOKEN_FILE``) lives with the API client
(:class:`coder_agent.coderapi.client.FixedToken`, :class:`~coder_agent.coderapi.client.TokenFile`,
the file re-read on every refresh). This package adds the three instance-identity methods: read
a signed identity from the cloud's metadata service, POST it to coderd without a session token,
and use the ``session_token`` it returns (:mod:`.flows` is the protocol, :mod:`.provider` the
caching, pacing and error reporting).

Why plain HTTP and no cloud SDK (``../shared/testbed/testbed.md`` §5 measured each library):

* AWS: botocore has no public call for the instance identity document; doing it with botocore
  means subclassing ``IMDSFetcher`` and calling private methods. Three plain requests are the
  whole protocol, and we check every status code, which the Go agent does not.
* Google: ``google.oauth2.id_token.fetch_id_token`` does the identity call, but it sends two
  extra requests (a ping and a service-account listing), prefers ``GOOGLE_APPLICATION_CREDENTIALS``
  when that is set (yielding a token without ``google.compute_engine.instance_id``, which coderd
  cannot use), and reads ``GCE_METADATA_HOST`` once at import, so the ``--gce-metadata-host``
  flag and TOML key could not move it without mutating the process environment. The one
  request it makes that matters is a single GET; we send exactly the Go agent's request and
  additionally check the ``Metadata-Flavor: Google`` reply header.
* Azure: no Azure SDK fetches the attested document (azure-identity only does access tokens).

So the base install does all three, with no extra dependency and no heavy import. The extras
``coder-agent[aws]``, ``[gcp]`` and ``[azure]`` are kept (empty) so install lines written for
the design brief keep working.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..clock import Clock
from ..errors import ConfigError
from .flows import AWS, AZURE, CLOUDS, GOOGLE, Cloud
from .provider import IDENTITY, InstanceIdentityProvider

if TYPE_CHECKING:
    from ..coderapi.client import CoderClient
    from ..config import Settings
    from ..log import Redactor

__all__ = ["AWS", "AZURE", "CLOUDS", "GOOGLE", "IDENTITY", "Cloud", "InstanceIdentityProvider", "build_provider"]


def build_provider(
    settings: Settings, *, client: Callable[[], CoderClient], clock: Clock, redactor: Redactor,
) -> InstanceIdentityProvider:
    """The provider for ``settings.auth`` (one of the instance-identity methods)."""
    cloud = CLOUDS.get(settings.auth)
    if cloud is None:
        raise ConfigError("CODER_AGENT_AUTH", f"unknown agent auth type {settings.auth!r}")
    endpoint = {
        AWS.method: settings.aws_metadata_endpoint,
        AZURE.method: settings.azure_metadata_url,
        GOOGLE.method: settings.gce_metadata_host,
    }[cloud.method]
    return InstanceIdentityProvider(
        cloud, endpoint, client, agent_name=settings.agent_name, clock=clock,
        on_new_token=redactor.add, scrub=redactor.scrub,
    )
