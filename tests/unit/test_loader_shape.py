"""The reference-data document is checked whole before anything is imported."""

from __future__ import annotations

import json
from pathlib import Path

from worker.services.loader import check_shape

EXAMPLE = json.loads((Path(__file__).parents[2] / "examples" / "scene.json").read_text())


def test_example_scene_has_a_valid_shape() -> None:
    assert check_shape(EXAMPLE) == []


def test_unknown_key_is_named_by_path() -> None:
    doc = {"groups": [{"id": 1, "project": 2}, {"id": 2, "project": 2, "colour": "red"}]}
    assert check_shape(doc) == ["groups[1].colour: unknown key"]


def test_unknown_section_is_refused() -> None:
    assert check_shape({"widgets": []})[0].startswith("widgets: unknown section")


def test_wrong_types_are_named_by_path() -> None:
    doc = {"users": [{"id": "1", "emails": [{"email": 5}]}]}
    assert check_shape(doc) == [
        "users[0].id: must be an integer",
        "users[0].emails[0].email: must be a string",
    ]


def test_missing_required_field_is_named() -> None:
    assert check_shape({"projects": [{"id": 1, "organization": "a", "slug": "s"}]}) == [
        "projects[0].name: missing"
    ]


def test_booleans_are_not_integers() -> None:
    assert check_shape({"users": [{"id": True}]}) == ["users[0].id: must be an integer"]


def test_document_must_be_an_object() -> None:
    assert check_shape([1, 2]) == ["$: the document must be a JSON object"]
