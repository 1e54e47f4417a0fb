"""OAuth 1.0a (RSA-SHA1) with Jira Server / Data Center: the three legs of a link (request
token, the operator's approval, access token) and the signer of REST calls. Jira Cloud does
not accept it (SPEC 13): Cloud links with an API token.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode

import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from oauthlib.oauth1 import SIGNATURE_RSA
from requests_oauthlib import OAuth1

from worker.domain.errors import InvalidInput, JiraRejected
from worker.jira.transport import send

REQUEST_TOKEN_PATH = "/plugins/servlet/oauth/request-token"
AUTHORIZE_PATH = "/plugins/servlet/oauth/authorize"
ACCESS_TOKEN_PATH = "/plugins/servlet/oauth/access-token"
MAX_CONSUMER_KEY_CHARS = 200
BAD_KEY_MESSAGE = "private key must be a PEM-encoded RSA private key"


@dataclass(frozen=True, repr=False)
class TokenPair:
    """An OAuth token and its secret (request or access); the secret never prints."""

    token: str
    secret: str

    def __repr__(self) -> str:
        return f"TokenPair(token={self.token[:4]}..., secret=***)"


def check_consumer_key(consumer_key: str) -> str:
    key = consumer_key.strip()
    if not key:
        raise InvalidInput("consumer key must not be empty")
    if len(key) > MAX_CONSUMER_KEY_CHARS:
        raise InvalidInput(f"consumer key must be at most {MAX_CONSUMER_KEY_CHARS} characters")
    return key


def check_private_key(pem: str) -> str:
    """The PEM text if it loads as an RSA private key; InvalidInput otherwise."""
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError, UnicodeError):
        raise InvalidInput(BAD_KEY_MESSAGE) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InvalidInput(BAD_KEY_MESSAGE)
    return pem


def authorize_url(base_url: str, request_token: str) -> str:
    """Where the operator approves the link in Jira."""
    return f"{base_url}{AUTHORIZE_PATH}?{urlencode({'oauth_token': request_token})}"


def signer(
    consumer_key: str, private_key_pem: str, access_token: str, access_token_secret: str
) -> OAuth1:
    """What signs each REST call of a linked instance."""
    return OAuth1(
        consumer_key,
        signature_method=SIGNATURE_RSA,
        rsa_key=private_key_pem,
        resource_owner_key=access_token,
        resource_owner_secret=access_token_secret,
    )


def _token_pair(response: requests.Response, what: str) -> TokenPair:
    fields = parse_qs(response.text, keep_blank_values=False)
    for name in ("oauth_token", "oauth_token_secret"):
        if not fields.get(name):
            raise JiraRejected(f"Jira's {what} answer has no {name}")
    return TokenPair(fields["oauth_token"][0], fields["oauth_token_secret"][0])


def get_request_token(
    base_url: str,
    consumer_key: str,
    private_key_pem: str,
    callback_url: str,
    *,
    verify_ssl: bool = True,
    timeout_s: float = 10.0,
) -> TokenPair:
    """Step 1 of the link: a request token, signed with the consumer key and private key."""
    oauth = {"callback_uri": callback_url}
    return _token_request(
        base_url, REQUEST_TOKEN_PATH, consumer_key, private_key_pem, oauth, verify_ssl, timeout_s
    )


def get_access_token(
    base_url: str,
    consumer_key: str,
    private_key_pem: str,
    request_token: TokenPair,
    verifier: str,
    *,
    verify_ssl: bool = True,
    timeout_s: float = 10.0,
) -> TokenPair:
    """Step 3: trade the authorized request token (Jira Server: verifier = the token)."""
    oauth = {
        "resource_owner_key": request_token.token,
        "resource_owner_secret": request_token.secret,
        "verifier": verifier,
    }
    return _token_request(
        base_url, ACCESS_TOKEN_PATH, consumer_key, private_key_pem, oauth, verify_ssl, timeout_s
    )


def _token_request(
    base_url: str,
    path: str,
    consumer_key: str,
    private_key_pem: str,
    oauth: dict[str, str],
    verify_ssl: bool,
    timeout_s: float,
) -> TokenPair:
    """POST to one of Jira's OAuth token endpoints, RSA-SHA1 signed; the token pair it gives."""
    auth = OAuth1(consumer_key, signature_method=SIGNATURE_RSA, rsa_key=private_key_pem, **oauth)
    response = send("POST", base_url + path, auth, verify_ssl=verify_ssl, timeout_s=timeout_s)
    return _token_pair(response, path.rsplit("/", 1)[-1])  # "request-token", "access-token"
