"""LKPS, the LiveKit Platform Service.

Agents and client applications prove who they are with Microsoft Entra ID; LKPS alone
holds the LiveKit API secret and hands out short-lived, narrowly scoped LiveKit tokens,
recording every decision in a hash-chained audit trail.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lkps")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

__all__ = ["__version__"]
