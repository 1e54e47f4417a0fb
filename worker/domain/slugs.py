"""Project slug rules (SPEC 5), pure: slugify, reserved names, the random-suffix schedule."""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Callable, Iterator

MAX_LENGTH = 50
RANDOM_SLUG_LENGTH = 12
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
RESERVED = frozenset(
    {
        "api-keys",
        "audit-log",
        "auth",
        "members",
        "projects",
        "rate-limits",
        "repos",
        "settings",
        "teams",
        "billing",
        "payments",
        "legal",
        "subscription",
        "support",
        "integrations",
        "developer-settings",
        "usage",
        "$all",
    }
)
# (tries, suffix length): 1 try of 2 chars, 5 of 3, 20 of 5, then 1 of 12.
SUFFIX_SCHEDULE = ((1, 2), (5, 3), (20, 5), (1, 12))

_OTHER = re.compile(r"[^a-z0-9]+")
_VALID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")

RandomText = Callable[[int], str]


class SlugUnavailable(Exception):
    """Raised when every candidate of the suffix schedule is already taken."""


def random_text(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def slugify(name: str) -> str:
    """Accents folded to ASCII, lowercase letters, digits and single dashes; at most 50."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = _OTHER.sub("-", folded.lower()).strip("-")
    return slug[:MAX_LENGTH].rstrip("-")


def is_reserved(slug: str) -> bool:
    return slug.lower() in RESERVED


def slug_problem(slug: str) -> str | None:
    """Why an explicitly given slug breaks the rules, or None when it keeps them."""
    if not slug:
        return "slug must not be empty"
    if len(slug) > MAX_LENGTH:
        return f"slug must be at most {MAX_LENGTH} characters"
    if is_reserved(slug):
        return f"slug {slug!r} is reserved"
    if not _VALID.fullmatch(slug):
        return (
            f"slug {slug!r} may hold only lowercase letters, digits and single dashes between them"
        )
    if slug.isdigit():
        return f"slug {slug!r} must not be all digits"
    return None


def candidates(base: str, random: RandomText = random_text) -> Iterator[str]:
    """`base-<suffix>` per the suffix schedule, the base cut so that the whole fits in 50."""
    for tries, length in SUFFIX_SCHEDULE:
        stem = base[: MAX_LENGTH - 1 - length].rstrip("-")
        for _ in range(tries):
            yield f"{stem}-{random(length)}"


def choose_slug(
    name: str, is_taken: Callable[[str], bool], random: RandomText = random_text
) -> str:
    """The slug for a project named `name`, given which slugs the organization already holds
    (is_taken compares case-insensitively)."""
    base = slugify(name)
    if not base or is_reserved(base):
        # A random 12-char slug may, in theory, be taken too: it gets a suffix like any clash.
        base = random(RANDOM_SLUG_LENGTH)
    if not base.isdigit() and not is_taken(base):
        return base
    for candidate in candidates(base, random):
        # A suffix can spell a reserved name too (audit + "-log").
        if not is_reserved(candidate) and not is_taken(candidate):
            return candidate
    raise SlugUnavailable(f"no free slug for {name!r}: every suffix tried is taken")
