"""Run a livekit-agents worker on an Entra identity: LKPS issues its LiveKit token.

    from livekit.agents import JobContext
    from lkps_agent import LkpsAgentServer, run_app

    server = LkpsAgentServer()  # reads LKPS_ENVIRONMENT, AZURE_CLIENT_ID, ... (AgentConfig)

    @server.rtc_session()
    async def entrypoint(ctx: JobContext) -> None:
        await ctx.connect()

    if __name__ == "__main__":
        run_app(server)  # livekit-agents' cli.run_app, exiting 1 when the worker failed

On a host shared with other work, `LkpsAgentServer(load_fnc=job_count_load(4))` reports
the worker's own jobs as its load instead of the machine's CPU (see the guide).

No LIVEKIT_API_KEY or LIVEKIT_API_SECRET: the SDK registers with LKPS, connects the
worker with the token LKPS returns, heartbeats, renews the token before it expires and
deregisters on shutdown. See docs/agent-guide.md.

Everything public is importable from `lkps_agent`; the `_modules` are private.
"""

from lkps_agent._config import DEV_AGENT_ID, AgentConfig, AuthMode, ConfigurationError
from lkps_agent._credentials import DevCredential, build_credential
from lkps_agent._errors import (
    LiveKitRejectedTokenError,
    LkpsAgentError,
    RegistrationRefusedError,
    UnsupportedLiveKitAgentsError,
)
from lkps_agent._lifecycle import AgentLifecycle
from lkps_agent._load import job_count_load
from lkps_agent._runner import run_app
from lkps_agent._server import LkpsAgentServer
from lkps_agent._status import AgentState, AgentStatus

__all__ = [
    "DEV_AGENT_ID",
    "AgentConfig",
    "AgentLifecycle",
    "AgentState",
    "AgentStatus",
    "AuthMode",
    "ConfigurationError",
    "DevCredential",
    "LiveKitRejectedTokenError",
    "LkpsAgentError",
    "LkpsAgentServer",
    "RegistrationRefusedError",
    "UnsupportedLiveKitAgentsError",
    "build_credential",
    "job_count_load",
    "run_app",
]

# Public classes report the package, not the private module they are defined in, so
# tracebacks and reprs show names users can import.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = "lkps_agent"
del _name, _obj
