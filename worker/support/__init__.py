"""Shared leaves under every other package: JSON logs with secrets scrubbed (`logs`) and the
classification of any exception, the drivers' included, into the error tree's kinds
(`classify`).

May import `worker.domain` and third-party libraries only, so every package above may use it.
"""
