"""AnswerCache on its own, with a fetch the test controls: what any authorization source
built on it gets (the Graph source's tests cover it against Graph)."""

from __future__ import annotations

import asyncio

import pytest

from lkps.authorization import AuthorizationUnavailable
from lkps.authorization.cache import AnswerCache, CachePolicy, FetchFailed
from tests.conftest import FakeClock

pytestmark = pytest.mark.unit

POLICY = CachePolicy(ttl=10.0, max_stale=100.0, failure_backoff=5.0, max_entries=2)


class Service:
    """Answers per agent; a fetch waits while `answering` is clear."""

    def __init__(self) -> None:
        self.answers: dict[str, str] = {}
        self.fetches: list[str] = []
        self.failure: FetchFailed | None = None
        self.answering = asyncio.Event()
        self.answering.set()

    async def fetch(self, agent: str) -> str:
        self.fetches.append(agent)
        await self.answering.wait()
        if self.failure is not None:
            raise self.failure
        return self.answers[agent]


async def unavailable(cache: AnswerCache[str], agent: str) -> str:
    """The reason the cache fails closed for `agent` (it must)."""
    with pytest.raises(AuthorizationUnavailable) as failed:
        await cache.get(agent)
    return failed.value.reason


@pytest.fixture
def service() -> Service:
    return Service()


@pytest.fixture
def cache(service: Service, clock: FakeClock) -> AnswerCache[str]:
    return AnswerCache(service.fetch, clock, POLICY, service="Test")


async def test_stale_answer_is_served_while_its_refresh_is_under_way(
    cache: AnswerCache[str], service: Service, clock: FakeClock
) -> None:
    service.answers["a"] = "v1"
    assert await cache.get("a") == "v1"
    service.answers["a"] = "v2"
    clock.advance(POLICY.ttl)
    service.answering.clear()  # the refresh cannot finish: callers must not wait for it
    assert await asyncio.gather(*(cache.get("a") for _ in range(5))) == ["v1"] * 5
    assert cache.in_flight() == 1
    service.answering.set()
    await cache.settled()
    assert await cache.get("a") == "v2"
    assert service.fetches == ["a", "a"]
    assert (cache.stats.hits, cache.stats.stale_served) == (1, 5)


async def test_failures_back_off_per_agent_and_stale_answers_expire(
    cache: AnswerCache[str], service: Service, clock: FakeClock
) -> None:
    service.answers["a"] = "v1"
    assert await cache.get("a") == "v1"
    service.failure = FetchFailed("service down")
    clock.advance(POLICY.ttl)
    assert await cache.get("a") == "v1"
    await cache.settled()
    assert await cache.get("a") == "v1"  # within the backoff: not fetched again
    await cache.settled()
    assert service.fetches == ["a", "a"]
    assert "service down" in await unavailable(
        cache, "b"
    )  # another agent is not held back by a's failure
    clock.advance(POLICY.max_stale + 1)  # a's answer is now too old to serve
    assert "service down" in await unavailable(cache, "a")
    assert cache.stats.failures == 3


async def test_a_pause_stops_every_fetch_until_it_ends(
    cache: AnswerCache[str], service: Service, clock: FakeClock
) -> None:
    service.answers |= {"a": "va", "b": "vb"}
    service.failure = FetchFailed("throttled", pause=30.0)
    assert "throttled" in await unavailable(cache, "a")
    service.failure = None
    clock.advance(29)
    assert "Test throttled LKPS" in await unavailable(cache, "b")
    assert service.fetches == ["a"]
    clock.advance(1)
    assert await cache.get("b") == "vb"


async def test_size_is_bounded_least_recently_refreshed_first(
    cache: AnswerCache[str], service: Service
) -> None:
    service.answers |= {"a": "va", "b": "vb", "c": "vc"}
    for agent in ("a", "b", "c"):
        await cache.get(agent)
    assert await cache.get("c") == "vc"
    assert await cache.get("a") == "va"  # evicted: fetched again
    assert service.fetches == ["a", "b", "c", "a"]


async def test_unexpected_errors_fail_closed(cache: AnswerCache[str], service: Service) -> None:
    del service.answers  # the fetch raises AttributeError
    assert "unexpected AttributeError in the Test" in await unavailable(cache, "a")
