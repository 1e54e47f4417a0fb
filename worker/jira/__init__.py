"""Talking to Jira Server: the OAuth 1.0a (RSA-SHA1) client and its signed REST calls
(`api`), and linking and administering integrations (`linking`).

May import `worker.store`, `worker.domain`, `worker.runtime.resources` and
`worker.receiver.tokens` (a link mints its webhook URL token); never the CLI or the steps.
"""
