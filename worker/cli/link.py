"""`jira-sync integration link|complete`: linking a Jira by OAuth 1.0a (two steps), by a token
(one step: a Cloud API token, a service account's scoped token, a Data Center PAT) or through
a Cloud OAuth 2.0 app (two steps: consent, then the callback or `complete --code --state`)."""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path
from typing import Any

from worker.cli.common import EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, CliError, echo
from worker.domain.errors import JiraRejected, JiraUnavailable
from worker.jira import consent, linking, webhooks
from worker.runtime import resources


def register(cmds: Any) -> None:
    """The `link` and `complete` subcommands of `jira-sync integration`."""
    p = cmds.add_parser(
        "link",
        help="link a Jira (OAuth 1.0a and OAuth 2.0 print the URL to authorize; a token links "
        "at once); linking one already linked re-links it with a fresh secret and one webhook",
    )
    p.add_argument("--base-url", required=True, help="e.g. https://jira.example.com")
    p.add_argument("--consumer-key", help="OAuth 1.0a: the application link's consumer key")
    p.add_argument("--private-key-file", type=Path, help="OAuth 1.0a: RSA private key (PEM)")
    p.add_argument("--email", help="Jira Cloud: the e-mail of the API token's account")
    p.add_argument("--api-token-file", type=Path, help="Jira Cloud: a file holding the API token")
    p.add_argument(
        "--scoped-token", action="store_true",
        help="Jira Cloud: the API token is a scoped one (a service account's; implied by an "
        "@serviceaccount.atlassian.com e-mail): calls go through api.atlassian.com",
    )  # fmt: skip
    p.add_argument(
        "--api-token-expires", type=_date, metavar="YYYY-MM-DD",
        help="when the token expires (no REST call tells): listed, and warned of 14 days ahead",
    )  # fmt: skip
    p.add_argument(
        "--personal-access-token-file", type=Path,
        help="Server / Data Center 8.14+: a file holding a personal access token",
    )  # fmt: skip
    p.add_argument("--oauth2-client-id", help="Jira Cloud, OAuth 2.0 (3LO) app: its client id")
    p.add_argument(
        "--oauth2-client-secret-file", type=Path,
        help="Jira Cloud, OAuth 2.0 (3LO) app: a file holding its client secret",
    )  # fmt: skip
    p.add_argument(
        "--webhook-jql", metavar="JQL",
        help="OAuth 2.0: the issues the dynamic webhook sends, e.g. 'project IN (APP, OPS)'",
    )  # fmt: skip
    p.add_argument(
        "--no-register-webhook", dest="register_webhook", action="store_false",
        help="with a token: link without registering the webhook (add it by hand)",
    )  # fmt: skip
    p.add_argument(
        "--organization", dest="organizations", action="append", required=True, metavar="SLUG"
    )
    p.add_argument("--no-verify-ssl", dest="verify_ssl", action="store_false")
    p.add_argument(
        "--enable",
        action="store_true",
        help="re-linking a disabled integration turns it back on (else it stays disabled)",
    )
    p.set_defaults(handler=cmd_link)

    p = cmds.add_parser(
        "complete", help="finish a link when Jira (or Atlassian) cannot reach the callback"
    )
    p.add_argument("--oauth-token", help="OAuth 1.0a: the oauth_token Jira redirected with")
    p.add_argument("--code", help="OAuth 2.0: the code Atlassian redirected with")
    p.add_argument("--state", help="OAuth 2.0: the state Atlassian redirected with")
    p.add_argument("--no-register-webhook", dest="register_webhook", action="store_false")
    p.set_defaults(handler=cmd_complete)


def jira_error(exc: Exception) -> CliError:
    if isinstance(exc, JiraUnavailable):
        return CliError(f"Jira: {exc}", EXIT_UNAVAILABLE)
    return CliError(f"Jira refused: {exc}")


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: cannot read: {type(exc).__name__}") from None


LINK_WAYS = (
    "link with one of: --consumer-key and --private-key-file (OAuth 1.0a, Server / Data "
    "Center), --email and --api-token-file (Jira Cloud; a service account's scoped token with "
    "--scoped-token), --oauth2-client-id and --oauth2-client-secret-file (Jira Cloud, an "
    "OAuth 2.0 app), or --personal-access-token-file (Data Center 8.14+)"
)


def cmd_link(args: argparse.Namespace) -> int:
    oauth = args.consumer_key is not None or args.private_key_file is not None
    cloud = args.email is not None or args.api_token_file is not None
    pat = args.personal_access_token_file is not None
    oauth2 = args.oauth2_client_id is not None or args.oauth2_client_secret_file is not None
    if [oauth, cloud, pat, oauth2].count(True) != 1:
        raise CliError(LINK_WAYS)
    if oauth and (args.consumer_key is None or args.private_key_file is None):
        raise CliError("OAuth 1.0a needs both --consumer-key and --private-key-file")
    if cloud and (args.email is None or args.api_token_file is None):
        raise CliError("Jira Cloud needs both --email and --api-token-file")
    if oauth2 and (args.oauth2_client_id is None or args.oauth2_client_secret_file is None):
        raise CliError("an OAuth 2.0 app needs both --oauth2-client-id and "
                       "--oauth2-client-secret-file")  # fmt: skip
    if oauth2 and not args.webhook_jql:
        raise CliError("an OAuth 2.0 link needs --webhook-jql (the issues its dynamic webhook "
                       "sends, e.g. 'project IN (APP, OPS)')")  # fmt: skip
    if args.webhook_jql and not oauth2:
        raise CliError("--webhook-jql goes with an OAuth 2.0 app (--oauth2-client-id)")
    if args.api_token_expires is not None and (oauth or oauth2):
        raise CliError("--api-token-expires goes with a token (--api-token-file, ...)")
    if args.scoped_token and not cloud:
        raise CliError("--scoped-token goes with --email and --api-token-file")
    if oauth2:
        return _start_oauth2(args, _read(args.oauth2_client_secret_file))
    if not oauth:
        return _link_with_token(args, _read(args.api_token_file or args.personal_access_token_file))
    pem = _read(args.private_key_file)
    try:
        started = linking.start(
            resources.current(),
            args.base_url,
            args.consumer_key,
            pem,
            args.organizations,
            verify_ssl=args.verify_ssl,
            enable=args.enable,
        )
    except (JiraUnavailable, JiraRejected) as exc:
        raise jira_error(exc) from None
    echo(f"Open this URL in Jira and allow access (within {started.expires_in_s // 60} min):")
    echo(started.authorize_url)
    echo("Jira then redirects to the receiver's callback, which finishes the link. If it cannot")
    echo("reach the receiver: jira-sync integration complete --oauth-token <oauth_token>")
    return EXIT_OK


def _start_oauth2(args: argparse.Namespace, client_secret: str) -> int:
    res = resources.current()
    try:
        started = consent.start(
            res, args.base_url, args.oauth2_client_id, client_secret, args.organizations,
            args.webhook_jql, verify_ssl=args.verify_ssl, enable=args.enable,
        )  # fmt: skip
    except (JiraUnavailable, JiraRejected) as exc:
        raise jira_error(exc) from None
    echo(f"Open this URL and allow access to the site (within {started.expires_in_s // 60} min):")
    echo(started.authorize_url)
    echo(f"Atlassian then redirects to {consent.redirect_uri(res.settings)} (the app's callback")
    echo("URL in the developer console), which finishes the link. If it cannot reach the")
    echo("receiver: jira-sync integration complete --code=<code> --state=<state>")
    return EXIT_OK


def _link_with_token(args: argparse.Namespace, token: str) -> int:
    try:
        result = linking.link_with_token(
            resources.current(),
            args.base_url,
            args.organizations,
            token,
            email=args.email,
            expires_on=args.api_token_expires,
            verify_ssl=args.verify_ssl,
            enable=args.enable,
            register_webhook=args.register_webhook,
            scoped=args.scoped_token,
        )
    except (JiraUnavailable, JiraRejected) as exc:
        raise jira_error(exc) from None
    echo(linking.completion_message(result))
    echo(f"Webhook URL: {webhooks.masked(result.webhook_url)}")
    return EXIT_OK if result.webhook_registered or not args.register_webhook else EXIT_FAILED


def cmd_complete(args: argparse.Namespace) -> int:
    oauth2 = args.code is not None or args.state is not None
    if oauth2 == (args.oauth_token is not None):
        raise CliError("complete needs --oauth-token (OAuth 1.0a) or --code and --state "
                       "(OAuth 2.0), from the URL the authorization redirected to")  # fmt: skip
    if oauth2 and (args.code is None or args.state is None):
        raise CliError("OAuth 2.0 needs both --code and --state")
    res = resources.current()
    try:
        if oauth2:
            result = consent.complete(res, args.code, args.state, args.register_webhook)
        else:
            result = linking.complete(res, args.oauth_token, args.register_webhook)
    except (JiraUnavailable, JiraRejected) as exc:
        raise jira_error(exc) from None
    echo(linking.completion_message(result))
    echo(f"Webhook URL: {webhooks.masked(result.webhook_url)}")
    return EXIT_OK
