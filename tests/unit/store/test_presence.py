"""The presence read, against a real store: what two replicas of LKPS (two pools on one
database) see of each other's writes, at once, and where the presence TTL ends.

The read runs without a transaction of its own (autocommit on PostgreSQL) and is never
cached, so none of this may lag behind a commit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from lkps.agents import AgentRegistry
from lkps.authorization.overrides import AuthorizationOverrides
from lkps.store import Database
from tests.backends import TestDatabase
from tests.conftest import AGENT, AGENT_2, CLIENT_B, FakeClock

pytestmark = pytest.mark.e2e

TTL = 90


@dataclass
class Replica:
    db: Database
    registry: AgentRegistry
    overrides: AuthorizationOverrides


@pytest.fixture
async def replicas(database: TestDatabase, clock: FakeClock) -> AsyncIterator[list[Replica]]:
    """Two LKPS replicas' stores: separate engines and pools on the same database."""
    made: list[Replica] = []
    for _ in range(2):
        db = Database.from_url(database.url, pool_size=2)
        registry = AgentRegistry(db, clock, presence_ttl=TTL, default_enforce=True)
        made.append(Replica(db, registry, AuthorizationOverrides(db, clock)))
    yield made
    for replica in made:
        await replica.db.dispose()


async def test_a_registration_elsewhere_counts_at_once(replicas: list[Replica]) -> None:
    one, other = replicas
    assert await one.registry.presence(AGENT) is None
    await other.registry.register(AGENT, enforce_client_authz=False, version="1.2")
    presence = await one.registry.presence(AGENT)
    assert presence is not None
    assert (presence.agent_id, presence.registered_enforce, presence.version) == (
        AGENT,
        False,
        "1.2",
    )
    assert await one.registry.presence(AGENT_2) is None


async def test_a_deregistration_elsewhere_counts_from_the_next_check(
    replicas: list[Replica],
) -> None:
    one, other = replicas
    await one.registry.register(AGENT)
    assert await one.registry.presence(AGENT) is not None
    await other.registry.deregister(AGENT, None)
    assert await one.registry.presence(AGENT) is None


async def test_the_agent_stays_present_until_its_last_registration_ends(
    replicas: list[Replica],
) -> None:
    one, other = replicas
    first = await one.registry.register(AGENT)
    second = await other.registry.register(AGENT)
    await other.registry.deregister(AGENT, first.registration_id)
    assert await one.registry.presence(AGENT) is not None
    await other.registry.deregister(AGENT, second.registration_id)
    assert await one.registry.presence(AGENT) is None


async def test_presence_ends_exactly_at_the_ttl(replicas: list[Replica], clock: FakeClock) -> None:
    one, _ = replicas
    await one.registry.register(AGENT)
    clock.advance(TTL - 1e-6)  # the last microsecond of the TTL
    assert await one.registry.presence(AGENT) is not None
    clock.advance(1e-6)  # expires_at == now: lapsed
    assert await one.registry.presence(AGENT) is None


async def test_a_heartbeat_elsewhere_extends_presence_at_once(
    replicas: list[Replica], clock: FakeClock
) -> None:
    one, other = replicas
    await one.registry.register(AGENT)
    clock.advance(TTL - 1)
    await other.registry.heartbeat(AGENT, None)
    clock.advance(TTL - 1)
    assert await one.registry.presence(AGENT) is not None


async def test_an_override_elsewhere_counts_at_once(replicas: list[Replica]) -> None:
    one, other = replicas
    await one.registry.register(AGENT, enforce_client_authz=True)
    await other.overrides.set(
        AGENT, enforce_client_authz=False, additional_clients=[CLIENT_B], updated_by="ops"
    )
    presence = await one.registry.presence(AGENT)
    assert presence is not None
    assert (presence.registered_enforce, presence.override_enforce) == (True, False)
    assert not presence.enforce_client_authz
    assert presence.additional_clients == frozenset({CLIENT_B})
    await other.overrides.clear(AGENT)
    presence = await one.registry.presence(AGENT)
    assert presence is not None
    assert (presence.override_enforce, presence.additional_clients) == (None, frozenset())
    assert presence.enforce_client_authz


async def test_text_with_nul_reads_back_exactly(replicas: list[Replica]) -> None:
    one, _ = replicas
    version = "2.1\x00-rc\ue000e\ue0000"
    await one.registry.register(AGENT, version=version)
    presence = await one.registry.presence(AGENT)
    assert presence is not None and presence.version == version
