"""Encryption at rest for stored credentials, keyed from SECRET_KEY."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken

from worker.domain.errors import PermanentError
from worker.support.logs import register_secret


class Vault:
    """Encrypts and decrypts short secrets (tokens, PEM keys) with a key from configuration."""

    def __init__(self, secret_key: str) -> None:
        digest = hashlib.sha256(b"jira-sync credentials:" + secret_key.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def encrypt(self, plain: str) -> str:
        register_secret(plain)  # whatever is worth encrypting never reaches a log line
        return self._fernet.encrypt(plain.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            plain = self._fernet.decrypt(token.encode("ascii")).decode()
        except InvalidToken:
            raise PermanentError(
                "stored credentials cannot be decrypted: SECRET_KEY differs from the one "
                "they were stored with"
            ) from None
        register_secret(plain)
        return plain
