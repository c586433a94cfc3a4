"""Room names: `{cwid}-{agent id}-{unix seconds}-{random hex}` (contract §3).

Never reused: LiveKit ignores a token's room configuration when the room exists, so a
reused name could put a client into someone else's room with someone else's agent.
"""

from __future__ import annotations

import secrets
from datetime import datetime

RANDOM_HEX_BYTES = 8  # 16 hex characters; the contract asks for at least 8


def new_room_name(cwid: str, agent_id: str, now: datetime) -> str:
    return f"{cwid}-{agent_id}-{int(now.timestamp())}-{secrets.token_hex(RANDOM_HEX_BYTES)}"
