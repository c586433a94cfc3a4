"""The suite's xdist scheduling (tests/conftest.py): under `--dist loadgroup` every test of
a serial tier (tests/faults) is one unit of work, so one worker runs them one after
another, in order, with their module-scoped fixtures (the replicas' fleet) set up once.

xdist's own `xdist_group` marker did not do this with pytest 9 (the fault tests ran on
both workers at once); these check the scheduler the suite actually gets."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import SERIAL_GROUP, pytest_xdist_make_scheduler, serial_scope

pytestmark = pytest.mark.unit

FAULTS = [
    "tests/faults/test_replicas.py::test_three_replicas_are_one_service",
    "tests/faults/test_replicas.py::test_a_replica_killed_under_load",
    "tests/faults/test_jwks_outage.py::test_jwks_outage_and_unknown_kid_flood[postgresql]",
    "tests/faults/test_log_check.py::test_fragments_of_secrets_are_found_anywhere_in_a_line",
]
PARALLEL = [
    "tests/api/test_health.py::test_live[sqlite]",
    "tests/realserver/test_worker_load.py::test_livekit_offers_jobs_only_below_the_target_load",
    "tests/unit/test_faults_like_name.py::test_faults",
    "tests/e2e/test_agent_flow.py::test_x[tests/faults/a]",
]


class Options:
    """What xdist's schedulers read of the configuration."""

    def __init__(self, dist: str) -> None:
        self.values: dict[str, Any] = {"dist": dist, "tx": ["2*popen"]}

    def getvalue(self, name: str) -> Any:
        return self.values[name]


def test_the_fault_tests_are_one_group_and_nothing_else_is() -> None:
    assert {serial_scope(nodeid) for nodeid in FAULTS} == {SERIAL_GROUP}
    assert [serial_scope(nodeid) for nodeid in PARALLEL] == [None] * len(PARALLEL)


def test_loadgroup_schedules_the_fault_tests_as_one_unit() -> None:
    scheduler = pytest_xdist_make_scheduler(Options("loadgroup"), None)  # type: ignore[arg-type]
    assert {scheduler._split_scope(nodeid) for nodeid in FAULTS} == {SERIAL_GROUP}
    # Every other test is a unit of its own, as under plain `--dist load`.
    assert [scheduler._split_scope(nodeid) for nodeid in PARALLEL] == PARALLEL
    # xdist's own groups still hold.
    assert scheduler._split_scope("tests/api/test_x.py::test_y@mine") == "mine"


@pytest.mark.parametrize("dist", ["load", "loadscope", "worksteal", "no"])
def test_other_distributions_are_left_to_xdist(dist: str) -> None:
    assert pytest_xdist_make_scheduler(Options(dist), None) is None  # type: ignore[arg-type]
