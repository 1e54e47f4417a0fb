"""Talking to Jira Server: the OAuth 1.0a (RSA-SHA1) client and its signed REST calls
(`api`), linking an instance (`linking`), administering linked ones (`admin`), each
instance's status categories (`statuses`), and the reconciliation sweep that searches Jira
for changes whose webhooks never arrived (`reconcile`).

May import `config`, `worker.support`, `worker.store`, `worker.domain` (a link mints its
webhook URL token with `worker.domain.tokens`), `worker.cache` (the status categories' Redis
copy) and `worker.runtime.resources`; never the receiver, the CLI or the steps.
"""
