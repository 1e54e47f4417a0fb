"""What a replay of a failed step runs next, as `failed show` prints it (tasks/pipeline.py)."""

from __future__ import annotations

import pytest

from config.settings import get_settings
from tasks import pipeline


def test_a_failed_first_step_runs_the_whole_inbound_chain_again() -> None:
    assert pipeline.rest_of_chain(pipeline.CHECK_CHANGELOG) == [
        f"{pipeline.SYNC_STATUS} (if the status changed)",
        pipeline.SYNC,
        f"{pipeline.ASSIGN} | {pipeline.DEASSIGN}",
        f"{pipeline.PURGE_ASSIGNEE_EXISTS} + {pipeline.PURGE_OWNERS_DEBOUNCE} + "
        f"{pipeline.OUTBOUND_SYNC}",
    ]


def test_a_group_step_is_followed_by_its_own_side_effects() -> None:
    assert pipeline.rest_of_chain(pipeline.DEASSIGN) == [
        f"{pipeline.PURGE_ASSIGNEE_EXISTS} + {pipeline.PURGE_OWNERS_DEBOUNCE} + "
        f"{pipeline.OUTBOUND_SYNC}"
    ]


def test_the_status_sync_is_followed_by_the_assignee_chain() -> None:
    assert pipeline.rest_of_chain(pipeline.SYNC_STATUS)[0] == (
        f"{pipeline.SYNC} (if the assignee changed) + {pipeline.OUTBOUND_STATUS}"
    )
    assert pipeline.rest_of_chain(pipeline.SYNC_STATUS)[1:] == pipeline.rest_of_chain(pipeline.SYNC)


def test_side_effects_and_last_project_steps_have_nothing_after_them() -> None:
    for step in (
        pipeline.OUTBOUND_SYNC,
        pipeline.OUTBOUND_STATUS,
        pipeline.PROJECT_INSERT,
        pipeline.PROJECT_PURGE_CACHES,
    ):
        assert pipeline.rest_of_chain(step) == []


def test_a_project_step_is_followed_by_the_rest_of_its_sequence() -> None:
    assert pipeline.rest_of_chain(pipeline.PROJECT_CHOOSE_SLUG) == [
        pipeline.PROJECT_CLAIM_ID,
        pipeline.PROJECT_INSERT,
    ]


def test_outbound_sync_is_the_last_side_effect_of_every_action() -> None:
    for action, steps in pipeline.SIDE_EFFECTS.items():
        assert steps[-1] == pipeline.OUTBOUND_SYNC, action


def test_side_effects_are_sent_in_the_declared_order_whatever_the_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "DATABASE_URL": "postgresql://unused",
        "REDIS_URL": "redis://unused",
        "SECRET_KEY": "x" * 32,
        "PIPELINE_BATCH_SIZE": "2",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    calls = pipeline.side_effects([(1, 10, "assign"), (2, 20, "deassign"), (3, 30, "assign")])
    get_settings.cache_clear()
    assert [(c.name, c.kwargs["changes"]) for c in calls] == [
        (pipeline.PURGE_ASSIGNEE_EXISTS, [[1, 10], [2, 20]]),
        (pipeline.PURGE_ASSIGNEE_EXISTS, [[3, 30]]),
        (pipeline.PURGE_OWNERS_DEBOUNCE, [[2, 20]]),
        (pipeline.OUTBOUND_SYNC, [[1, 10], [2, 20]]),
        (pipeline.OUTBOUND_SYNC, [[3, 30]]),
    ]
