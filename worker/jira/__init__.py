"""Talking to Jira Server, Data Center and Cloud: the REST client in its dialect (`api`; Cloud's
dynamic webhooks in `dynamic`), how calls go out (`transport`), OAuth 1.0a (`oauth1`),
Atlassian's OAuth 2.0 and API gateway (`oauth2`), linking an instance (`linking`; a Cloud site
through an OAuth 2.0 app's consent: `consent`), its webhook (`webhooks`), administering linked
ones (`admin`), each instance's status categories (`statuses`), and the reconciliation sweep
that searches Jira for changes whose webhooks never arrived (`reconcile`).

May import `config`, `worker.support`, `worker.store`, `worker.domain` (a link mints its
webhook URL token with `worker.domain.tokens`), `worker.cache` (the status categories' Redis
copy) and `worker.runtime.resources`; never the receiver, the CLI or the steps.
"""
