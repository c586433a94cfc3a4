"""Local doubles of the services LKPS talks to, for tests and for `lkps dev`.

Never part of a production install: the development identity provider lives here so
that a server without this distribution cannot trust it.

- `EntraDouble`: Entra ID with real RSA keys, a JWKS, v1/v2 token shapes, the v2.0
  token endpoint (client secret, certificate or federated credential) and a managed
  identity endpoint.
- `GraphDouble`: Microsoft Graph's `applications(appId=...)`, with OData errors,
  throttling, delays and request counters.
- `ServerThread`: any of them (or LKPS) on 127.0.0.1, over TLS with `generate_tls_files`.
- `lkps_testkit.livekit.LiveKitDouble`: a LiveKit server speaking LiveKit's wire protocol
  (worker socket, Twirp room and dispatch services, joins with `roomConfig`), in a thread
  or as `python -m lkps_testkit.livekit`; imported from its own module, since it pulls in
  aiohttp and the LiveKit protobufs.
"""

from lkps_testkit.entra import EntraDouble, FederatedCredential, SigningKey
from lkps_testkit.graph import GraphDouble
from lkps_testkit.server import ServerThread
from lkps_testkit.tls import TlsFiles, generate_tls_files

__all__ = [
    "EntraDouble",
    "FederatedCredential",
    "GraphDouble",
    "ServerThread",
    "SigningKey",
    "TlsFiles",
    "generate_tls_files",
]
