"""Pure decisions of the inbound sync: user choice, old-assignee removal, ordering, outcome."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from worker.domain.assignment import (
    Assignee,
    Outcome,
    Removal,
    choose_user,
    delivery_outcome,
    is_newer,
    subscriptions_to_remove,
)

# --- choose_user (SPEC 4.2) ---


def test_user_on_a_project_team_is_chosen() -> None:
    assert choose_user({5: {1}}, {1, 2}) == 5


def test_user_on_no_project_team_is_not_chosen() -> None:
    assert choose_user({5: {3}}, {1, 2}) is None


def test_user_on_no_team_at_all_is_not_chosen() -> None:
    assert choose_user({5: set()}, {1}) is None


def test_no_matching_user_chooses_nobody() -> None:
    assert choose_user({}, {1}) is None


def test_project_without_teams_chooses_nobody() -> None:
    assert choose_user({5: {1}}, set()) is None


def test_several_eligible_users_choose_the_lowest_id() -> None:
    assert choose_user({9: {1}, 4: {2}, 7: {1}}, {1, 2}) == 4


def test_lowest_id_ineligible_user_is_skipped() -> None:
    assert choose_user({2: {3}, 8: {1}}, {1}) == 8


@given(st.dictionaries(st.integers(1, 50), st.sets(st.integers(1, 5))), st.sets(st.integers(1, 5)))
def test_choice_does_not_depend_on_order(users: dict[int, set[int]], teams: set[int]) -> None:
    reversed_users = dict(reversed(list(users.items())))
    assert choose_user(users, teams) == choose_user(reversed_users, teams)


# --- subscriptions_to_remove (SPEC 4.5) ---


def test_previous_user_loses_assigned_subscription() -> None:
    removal = subscriptions_to_remove(Assignee(user_id=1), Assignee(user_id=2), {})
    assert removal == Removal(user_ids=frozenset({1}))


def test_previous_user_loses_subscription_on_unassign() -> None:
    assert subscriptions_to_remove(Assignee(user_id=1), None, {}) == Removal(
        user_ids=frozenset({1})
    )


def test_previous_user_keeps_subscription_when_new_team_contains_them() -> None:
    removal = subscriptions_to_remove(Assignee(user_id=1), Assignee(team_id=10), {10: {1, 2}})
    assert removal == Removal()


def test_previous_user_loses_subscription_when_new_team_lacks_them() -> None:
    removal = subscriptions_to_remove(Assignee(user_id=1), Assignee(team_id=10), {10: {2}})
    assert removal == Removal(user_ids=frozenset({1}))


def test_previous_team_and_members_lose_subscriptions() -> None:
    removal = subscriptions_to_remove(Assignee(team_id=10), Assignee(user_id=9), {10: {1, 2}})
    assert removal == Removal(user_ids=frozenset({1, 2}), team_ids=frozenset({10}))


def test_previous_team_member_who_is_new_assignee_keeps_subscription() -> None:
    removal = subscriptions_to_remove(Assignee(team_id=10), Assignee(user_id=2), {10: {1, 2}})
    assert removal == Removal(user_ids=frozenset({1}), team_ids=frozenset({10}))


def test_previous_team_on_unassign_loses_all() -> None:
    removal = subscriptions_to_remove(Assignee(team_id=10), None, {10: {1}})
    assert removal == Removal(user_ids=frozenset({1}), team_ids=frozenset({10}))


# --- is_newer (ordering, SPEC 4.2) ---


def test_first_event_is_newer_than_nothing() -> None:
    assert is_newer((100, 1), None)


def test_later_timestamp_is_newer() -> None:
    assert is_newer((101, 1), (100, 9))


def test_earlier_timestamp_is_not_newer() -> None:
    assert not is_newer((99, 9), (100, 1))


def test_same_timestamp_orders_by_changelog_id() -> None:
    assert is_newer((100, 2), (100, 1))
    assert not is_newer((100, 1), (100, 2))


def test_the_same_event_is_not_newer_than_itself() -> None:
    assert not is_newer((100, 1), (100, 1))


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 3)), min_size=1, max_size=12))
def test_applying_only_newer_events_in_any_order_ends_at_the_newest(
    events: list[tuple[int, int]],
) -> None:
    applied: tuple[int, int] | None = None
    for event in events:
        if is_newer(event, applied):
            applied = event
    assert applied == max(events)


# --- delivery_outcome ---


def test_any_assigned_group_makes_the_delivery_assigned() -> None:
    assert delivery_outcome(["stale", "user-not-found", "assigned"]) is Outcome.ASSIGNED


def test_unassigned_group_makes_the_delivery_unassigned() -> None:
    assert delivery_outcome(["unchanged", "unassigned"]) is Outcome.UNASSIGNED


def test_user_not_found_beats_unchanged() -> None:
    assert delivery_outcome(["unchanged", "user-not-found"]) is Outcome.USER_NOT_FOUND


def test_all_stale_groups_make_the_delivery_stale() -> None:
    assert delivery_outcome(["stale", "stale"]) is Outcome.STALE


def test_unchanged_beats_stale() -> None:
    assert delivery_outcome(["stale", "unchanged"]) is Outcome.UNCHANGED


def test_no_groups_is_no_affected_groups() -> None:
    assert delivery_outcome([]) is Outcome.NO_AFFECTED_GROUPS
