"""A static allow-list file: `{"agents": {"<agent id>": {"pre_authorized_clients": [...]}}}`.

JSON or YAML. The file is re-read when it changes on disk, so operators can edit it
without a restart; while it cannot be read or parsed, the source is unavailable (503),
never open.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path

import yaml

from lkps.authorization.source import AuthorizationUnavailable

log = logging.getLogger(__name__)


class InvalidAuthorizationFile(ValueError):
    pass


def parse_authorization_document(text: str) -> dict[str, frozenset[str]]:
    """Agent id → pre-authorized client ids, all canonical lower-case UUID strings."""
    try:
        document = yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        raise InvalidAuthorizationFile(f"not JSON or YAML: {exc}") from None
    if document is None:
        return {}
    if not isinstance(document, dict) or not isinstance(document.get("agents", {}), dict):
        raise InvalidAuthorizationFile('expected {"agents": {"<agent id>": {...}}}')
    agents: dict[str, frozenset[str]] = {}
    for agent_id, entry in (document.get("agents") or {}).items():
        clients = (
            (entry or {}).get("pre_authorized_clients", []) if isinstance(entry, dict) else None
        )
        if not isinstance(clients, list):
            raise InvalidAuthorizationFile(
                f"agent {agent_id}: pre_authorized_clients must be a list"
            )
        agents[_canonical(agent_id)] = frozenset(_canonical(client) for client in clients)
    return agents


def _canonical(value: object) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise InvalidAuthorizationFile(f"{value!r} is not a UUID") from None


class FileAuthorizationSource:
    name = "file"

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._agents: dict[str, frozenset[str]] | None = None
        self._error: str | None = None

    async def pre_authorized_clients(self, agent_id: str) -> frozenset[str] | None:
        agents = self._current()
        return agents.get(agent_id.lower())

    def ready(self) -> bool:
        try:
            self._current()
        except AuthorizationUnavailable:
            return False
        return True

    async def start(self) -> None:
        self.ready()  # load now, so a broken file shows in the first log lines

    async def aclose(self) -> None:
        pass

    def _current(self) -> dict[str, frozenset[str]]:
        try:
            stat = os.stat(self._path)
        except OSError as exc:
            self._agents = None
            raise AuthorizationUnavailable(f"{self._path}: {exc.strerror}") from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._stamp = stamp
            self._load()
        if self._agents is None:
            raise AuthorizationUnavailable(f"{self._path}: {self._error}")
        return self._agents

    def _load(self) -> None:
        try:
            self._agents = parse_authorization_document(self._path.read_text(encoding="utf-8"))
            self._error = None
            log.info("authorization file loaded", extra={"agents": len(self._agents)})
        except (OSError, UnicodeDecodeError, InvalidAuthorizationFile) as exc:
            self._agents = None
            self._error = str(exc)
            log.error("authorization file unusable; denying with 503", extra={"error": str(exc)})


def write_authorization_file(path: Path, agents: dict[str, list[str]]) -> None:
    """Write an allow-list file (used by `lkps dev` and tests)."""
    document = {"agents": {a: {"pre_authorized_clients": c} for a, c in agents.items()}}
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
