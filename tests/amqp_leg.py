"""The RabbitMQ leg of `make test`: the broker-facing tests (marked `broker`, plus those marked
`amqp_only`) again, with RabbitMQ as the Celery broker, when one is reachable at TEST_AMQP_URL
(default amqp://guest:guest@127.0.0.1:5672//).

Run as `python -m tests.amqp_leg [pytest args]`. It prints one line saying whether the leg ran
and exits with pytest's status (0 when no RabbitMQ is reachable: the leg is optional). The run
gets a vhost of its own, deleted afterwards (tests.amqp.run_vhost).
"""

from __future__ import annotations

import os
import subprocess
import sys

from config.settings import redact_url
from devtools import rabbitmq as amqp


def main(pytest_args: list[str]) -> int:
    url = amqp.test_url()
    shown = redact_url(url)
    why_not = amqp.reachable(url)
    if why_not is not None:
        print(f"RabbitMQ leg: not run, no RabbitMQ at {shown} ({why_not})", flush=True)
        return 0
    print(f"RabbitMQ leg: running the broker tests on {shown}", flush=True)
    with amqp.run_vhost(url) as leg_url:
        env = {**os.environ, "TEST_BROKER_URL": leg_url}
        code = subprocess.call(
            [sys.executable, "-m", "pytest", "-m", "broker or amqp_only", *pytest_args], env=env
        )
    print(f"RabbitMQ leg: ran on {shown}: {'passed' if code == 0 else 'FAILED'}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
