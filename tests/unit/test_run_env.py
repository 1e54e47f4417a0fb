"""`make run`'s receiver address: one port for uvicorn, PUBLIC_URL and the printed URL."""

from __future__ import annotations

from devtools.run import receiver_env


def test_without_port_the_receiver_gets_8000_and_public_url_names_it() -> None:
    # honcho would hand the first process PORT=5000 if the launcher left PORT unset.
    assert receiver_env({}) == {"PORT": "8000", "PUBLIC_URL": "http://127.0.0.1:8000"}


def test_a_chosen_port_is_the_one_public_url_names() -> None:
    assert receiver_env({"PORT": "9100"})["PUBLIC_URL"] == "http://127.0.0.1:9100"


def test_an_explicit_public_url_is_kept() -> None:
    env = {"PORT": "9100", "PUBLIC_URL": "https://sync.example.test"}
    assert receiver_env(env) == {"PORT": "9100", "PUBLIC_URL": "https://sync.example.test"}
