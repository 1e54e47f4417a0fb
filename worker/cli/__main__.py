"""`python -m worker.cli` is `jira-sync`."""

from worker.cli import run

run()
