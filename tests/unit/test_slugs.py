"""Project slug rules: slugify, reserved names, the suffix schedule, explicit slugs."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest

from worker.domain import slugs
from worker.domain.slugs import SlugUnavailable, choose_slug, slug_problem, slugify


def counting_random() -> slugs.RandomText:
    """Deterministic 'random' text: a, b, c, ... repeated to the requested length."""
    letters: Iterator[str] = itertools.cycle("abcdefghijklmnopqrstuvwxyz")

    def _text(length: int) -> str:
        return next(letters) * length

    return _text


def never_taken(_: str) -> bool:
    return False


def taken_from(existing: set[str]) -> Callable[[str], bool]:
    lowered = {s.lower() for s in existing}
    return lambda slug: slug.lower() in lowered


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Backend API", "backend-api"),
        ("  --Hello__World!!  ", "hello-world"),
        ("Café Münster", "cafe-munster"),
        ("Ångström  Über-Naïve", "angstrom-uber-naive"),
        ("a...b///c", "a-b-c"),
    ],
)
def test_slugify_folds_accents_and_collapses_other_characters(name: str, slug: str) -> None:
    assert slugify(name) == slug


def test_slugify_cuts_at_50_characters_without_a_trailing_dash() -> None:
    assert slugify("x" * 80) == "x" * 50
    assert slugify("y" * 49 + " tail") == "y" * 49


@pytest.mark.parametrize("name", ["", "   ", "!!!", "日本語のプロジェクト", "🚀🚀"])
def test_empty_result_gets_a_random_12_char_slug(name: str) -> None:
    slug = choose_slug(name, never_taken)
    assert len(slug) == 12
    assert set(slug) <= set(slugs.ALPHABET)


@pytest.mark.parametrize("name", ["Settings", "API keys", "audit log", "Developer Settings"])
def test_reserved_name_gets_a_random_12_char_slug(name: str) -> None:
    slug = choose_slug(name, never_taken, counting_random())
    assert slug == "a" * 12


def test_reserved_list_matches_the_spec() -> None:
    assert "$all" in slugs.RESERVED
    assert len(slugs.RESERVED) == 18


def test_all_digit_name_gets_a_suffix() -> None:
    assert choose_slug("2024", never_taken, counting_random()) == "2024-aa"


def test_free_slug_is_used_as_it_is() -> None:
    assert choose_slug("Web App", taken_from({"api"})) == "web-app"


def test_clash_with_different_case_gets_a_suffix() -> None:
    assert choose_slug("Web", taken_from({"WEB"}), counting_random()) == "web-aa"


def test_suffix_schedule_is_1x2_then_5x3_then_20x5_then_1x12() -> None:
    tried: list[str] = []

    def record(slug: str) -> bool:
        tried.append(slug)
        return True

    with pytest.raises(SlugUnavailable):
        choose_slug("web", record, counting_random())
    lengths = [len(s) - len("web-") for s in tried[1:]]
    assert tried[0] == "web"
    assert lengths == [2] + [3] * 5 + [5] * 20 + [12]


def test_first_free_candidate_of_the_schedule_wins() -> None:
    taken = taken_from({"web", "web-aa", "web-bbb"})
    assert choose_slug("web", taken, counting_random()) == "web-ccc"


def test_a_suffix_that_spells_a_reserved_slug_is_skipped() -> None:
    texts = {2: iter(["xx"]), 3: iter(["log", "abc"])}
    taken = taken_from({"audit", "audit-xx"})
    assert choose_slug("Audit", taken, lambda n: next(texts[n])) == "audit-abc"


def test_suffixed_slug_stays_within_50_characters() -> None:
    name = "q" * 50
    taken = taken_from({"q" * 50})
    slug = choose_slug(name, taken, counting_random())
    assert slug == "q" * 47 + "-aa"
    assert len(slug) == 50


def test_cut_base_does_not_leave_a_double_dash() -> None:
    base = "a" * 46 + "-bc"  # cut to 47 ends right after the dash
    candidate = next(slugs.candidates(base, counting_random()))
    assert "--" not in candidate
    assert len(candidate) <= 50


@pytest.mark.parametrize(
    ("slug", "problem"),
    [
        ("", "must not be empty"),
        ("x" * 51, "at most 50"),
        ("settings", "reserved"),
        ("$all", "reserved"),
        ("Web", "lowercase"),
        ("web app", "lowercase"),
        ("-web", "lowercase"),
        ("web--app", "lowercase"),
        ("café", "lowercase"),
        ("12345", "all digits"),
    ],
)
def test_explicit_slug_breaking_a_rule_is_refused(slug: str, problem: str) -> None:
    found = slug_problem(slug)
    assert found is not None
    assert problem in found


@pytest.mark.parametrize("slug", ["web", "web-app-2", "x" * 50, "2024-report"])
def test_explicit_slug_keeping_the_rules_is_accepted(slug: str) -> None:
    assert slug_problem(slug) is None
