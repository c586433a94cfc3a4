"""LiveKit access tokens, minted with `livekit-api`; LKPS alone holds the API secret."""

from lkps.livekit.tokens import IssuedToken, TokenMinter, dispatch_room_config

__all__ = ["IssuedToken", "TokenMinter", "dispatch_room_config"]
