"""PostgreSQL: the connection pool and transactions, the migrations runner, every SQL
statement (`queries/`, one typed function each), credential encryption at rest and the
failed-task store.

May import `worker.domain` and `worker.runtime.logs` (a leaf: log scrubbing); never the
receiver, the Jira client, the CLI or the steps.
"""
