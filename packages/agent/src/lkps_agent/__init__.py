"""Run a `livekit-agents` worker on an Entra identity, with LiveKit tokens from LKPS."""
