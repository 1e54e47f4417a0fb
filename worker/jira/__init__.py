"""Talking to Jira Server: the OAuth 1.0a (RSA-SHA1) client and its signed REST calls
(`api`), linking and administering integrations (`linking`), each instance's status
categories (`statuses`), and the reconciliation sweep that searches Jira for changes whose
webhooks never arrived (`reconcile`).

May import `worker.store`, `worker.domain`, `worker.cache` (the status categories' Redis
copy), `worker.runtime.resources` and `worker.receiver.tokens` (a link mints its webhook URL
token); never the CLI or the steps.
"""
