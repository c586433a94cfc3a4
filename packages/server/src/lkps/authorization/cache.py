"""A cache of authorization answers for a source that asks a remote service per agent.

Any `AuthorizationSource` backed by a slow, rate-limited or failing service (Microsoft
Graph today) wraps its per-agent fetch in `AnswerCache`, which decides when the service
is asked and which answer a caller gets. Why each rule:

- **TTL on the injected monotonic `Clock`.** Session starts must not cost a round trip
  each: the service throttles, and a pre-authorization change taking up to the TTL to
  show is acceptable.
- **Single flight, joining the fetch under way** (`lkps.singleflight`): a burst of 1,000
  session starts for one agent costs one fetch. Joining is right here (unlike for the
  presence read) because the cache may serve older answers anyway.
- **Stale-while-revalidate, bounded.** An expired answer is still served while its
  refresh runs in the background (callers never wait on the service for an agent we
  know), and while the service is failing, for at most `max_stale` seconds past its TTL
  (0 disables it). An answer older than that is not used: fail closed.
- **Fail closed.** With nothing usable cached, any failure raises
  `AuthorizationUnavailable` (503), never an allow. A fetch that returns is an answer
  and is cached, whatever it says (`None`, "no such agent", included).
- **Backoff after a failure.** After a failed fetch for an agent, it is not fetched again
  for `failure_backoff` seconds: callers get the stale answer or a 503 at once, so an
  outage does not turn the request rate into the service's request rate.
- **A pause for everyone.** A fetch may fail with `FetchFailed(pause=seconds)` when the
  service throttles the whole client (Graph's 429): no agent is fetched until then;
  stale answers are still served and everything else gets 503.
- **Bounded size.** Past `max_entries`, answers too old to serve go first, then the
  least recently refreshed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from lkps.authorization.source import AuthorizationUnavailable
from lkps.clock import Clock
from lkps.singleflight import SingleFlight

log = logging.getLogger(__name__)

V = TypeVar("V")


class FetchFailed(Exception):
    """A fetch that gave no answer. `pause` (seconds), when set, stops every fetch for that
    long instead of backing off this agent alone."""

    def __init__(self, reason: str, *, pause: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.pause = pause


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """How long answers live and how hard a failing service is spared (seconds)."""

    ttl: float = 300.0
    max_stale: float = 3600.0
    failure_backoff: float = 5.0
    max_entries: int = 10_000

    def __post_init__(self) -> None:
        if self.ttl < 0 or self.max_stale < 0 or self.failure_backoff < 0:
            raise ValueError("cache_ttl, max_stale and failure_backoff must not be negative")


@dataclass
class CacheStats:
    """What the cache did, for tests and diagnostics."""

    hits: int = 0
    stale_served: int = 0
    failures: int = 0


@dataclass(frozen=True, slots=True)
class _Answer(Generic[V]):
    value: V
    fetched_at: float  # clock.monotonic() when the fetch that produced it started


class Backoff:
    """Which agents may be fetched now: not one whose last fetch failed within
    `interval` seconds, and none at all during a pause the service asked for."""

    def __init__(self, interval: float, service: str) -> None:
        self._interval = interval
        self._service = service
        self._failures: dict[str, tuple[float, str]] = {}  # agent -> (when, reason)
        self._paused_until: float | None = None

    def blocked(self, agent: str, now: float) -> str | None:
        """Why `agent` may not be fetched at `now`, or None when it may."""
        if self._paused_until is not None and now < self._paused_until:
            wait = self._paused_until - now
            return (
                f"{self._service} throttled LKPS; no {self._service} request for another "
                f"{wait:.0f}s"
            )
        failure = self._failures.get(agent)
        if failure is not None and now - failure[0] < self._interval:
            return f"{failure[1]} (next attempt in {self._interval - (now - failure[0]):.0f}s)"
        return None

    def failed(self, agent: str, now: float, reason: str) -> None:
        self._failures[agent] = (now, reason)

    def succeeded(self, agent: str) -> None:
        self._failures.pop(agent, None)

    def pause(self, now: float, seconds: float) -> None:
        """No fetch until `now + seconds` (an earlier end never shortens a pause)."""
        until = now + seconds
        if self._paused_until is None or until > self._paused_until:
            self._paused_until = until
        log.warning(
            "%s throttled LKPS; pausing every %s request for %.1fs",
            self._service,
            self._service,
            seconds,
        )

    def forget(self, now: float, keep: Callable[[str], bool]) -> None:
        """Drop failures that no longer hold anything back, but those of kept agents."""
        for agent in [a for a in self._failures if not keep(a)]:
            if now - self._failures[agent][0] >= self._interval:
                del self._failures[agent]


class AnswerCache(Generic[V]):
    """Per-agent answers from `fetch`, served under the rules of the module docstring.

    `fetch(agent)` returns the answer or raises `FetchFailed`; anything else it raises
    still fails closed. `service` names the service in reasons and logs ("Graph").
    """

    def __init__(
        self,
        fetch: Callable[[str], Awaitable[V]],
        clock: Clock,
        policy: CachePolicy,
        *,
        service: str,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._policy = policy
        self._service = service
        self._answers: dict[str, _Answer[V]] = {}  # ordered by refresh time
        self._backoff = Backoff(policy.failure_backoff, service)
        self._flights: SingleFlight[str, _Answer[V] | str] = SingleFlight(
            self._refresh, join_running=True, name=f"lkps-{service.lower()}-lookup"
        )
        self.stats = CacheStats()

    async def get(self, agent: str) -> V:
        """The agent's answer; raises `AuthorizationUnavailable` with nothing usable."""
        now = self._clock.monotonic()
        answer = self._answers.get(agent)
        if answer is not None:
            age = now - answer.fetched_at
            if age < self._policy.ttl:
                self.stats.hits += 1
                return answer.value
            if age - self._policy.ttl <= self._policy.max_stale:
                self.stats.stale_served += 1
                self._flight(agent, now)  # in the background, if the service may be asked
                return answer.value
        flight = self._flight(agent, now)
        if flight is None:
            reason = self._backoff.blocked(agent, now) or f"{self._service} may not be asked now"
            log.warning(
                "no usable answer for agent %s, %s not asked: %s; failing closed",
                agent,
                self._service,
                reason,
                extra={"agent_id": agent, "reason": reason},
            )
            raise AuthorizationUnavailable(reason)
        outcome = await asyncio.shield(flight)
        if isinstance(outcome, str):
            raise AuthorizationUnavailable(outcome)
        return outcome.value

    async def revalidate(self, agent: str) -> bool:
        """Fetch `agent` now (or join the fetch under way) unless backoff forbids it;
        whether that fetch succeeded."""
        flight = self._flight(agent, self._clock.monotonic())
        return flight is not None and not isinstance(await asyncio.shield(flight), str)

    def in_flight(self) -> int:
        return self._flights.in_flight()

    async def settled(self) -> None:
        """Wait until no fetch (foreground or background) is under way."""
        await self._flights.settled()

    async def aclose(self) -> None:
        """Cancel the fetches under way."""
        await self._flights.aclose()

    def _flight(self, agent: str, now: float) -> asyncio.Future[_Answer[V] | str] | None:
        """The fetch under way for `agent`, a new one, or None while it may not be made."""
        if self._flights.running(agent) is None and self._backoff.blocked(agent, now):
            return None
        return self._flights.flight(agent)

    async def _refresh(self, agent: str) -> _Answer[V] | str:
        """One fetch; never raises (but for cancellation): a failure is its reason."""
        started = self._clock.monotonic()
        try:
            value = await self._fetch(agent)
        except FetchFailed as failure:
            return self._failed(agent, failure.reason, pause=failure.pause)
        except Exception as exc:  # anything unforeseen still fails closed
            log.exception(
                "unexpected error in a %s lookup", self._service, extra={"agent_id": agent}
            )
            return self._failed(
                agent, f"unexpected {type(exc).__name__} in the {self._service} lookup"
            )
        answer = _Answer(value, started)
        self._backoff.succeeded(agent)
        self._answers.pop(agent, None)  # re-insert: the dict stays ordered by refresh time
        self._answers[agent] = answer
        self._evict()
        return answer

    def _failed(self, agent: str, reason: str, *, pause: float | None = None) -> str:
        self.stats.failures += 1
        now = self._clock.monotonic()
        if pause is None:
            self._backoff.failed(agent, now, reason)
        else:
            self._backoff.pause(now, pause)
        log.warning(
            "%s lookup for agent %s failed: %s; %s",
            self._service,
            agent,
            reason,
            "serving the cached answer while it may be used"
            if agent in self._answers
            else "failing closed",
            extra={"agent_id": agent, "reason": reason},
        )
        return reason

    def _evict(self) -> None:
        if len(self._answers) <= self._policy.max_entries:
            return
        now = self._clock.monotonic()
        horizon = self._policy.ttl + self._policy.max_stale
        for agent in [a for a, e in self._answers.items() if now - e.fetched_at > horizon]:
            del self._answers[agent]
        while len(self._answers) > self._policy.max_entries:
            del self._answers[next(iter(self._answers))]
        self._backoff.forget(now, keep=self._answers.__contains__)
