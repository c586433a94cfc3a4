"""The agent gateway: agents' workers reach LiveKit's `/agent` through LKPS, which binds
each connection to the agent its credential names (issue 11, finding 3)."""

from lkps.gateway.credentials import GatewayClaims, GatewayCredentials, InvalidGatewayCredential
from lkps.gateway.observer import NoObserver, WorkerConnectionObserver, WorkerSession, WorkerStatus
from lkps.gateway.relay import GatewayRelay
from lkps.gateway.service import AgentGateway, GatewayDenied, gateway_url_for

__all__ = [
    "AgentGateway",
    "GatewayClaims",
    "GatewayCredentials",
    "GatewayDenied",
    "GatewayRelay",
    "InvalidGatewayCredential",
    "NoObserver",
    "WorkerConnectionObserver",
    "WorkerSession",
    "WorkerStatus",
    "gateway_url_for",
]
