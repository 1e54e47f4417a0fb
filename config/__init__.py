"""Configuration: environment settings and the Celery settings built from them."""
