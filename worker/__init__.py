"""jira-sync: the receiver, the Celery app and the command line."""
