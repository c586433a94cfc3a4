"""Client library for the LiveKit Platform Service (placeholder)."""
