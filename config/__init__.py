"""Configuration: environment settings and the Celery settings built from them.

The ground floor: imports nothing of ours.
"""
