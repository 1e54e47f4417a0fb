"""The Prometheus rules leg of `make test`: `promtool check rules` on the shipped alerting
rules (deploy/prometheus/alerts.yml) and `promtool test rules` on their unit tests
(alerts_test.yml: for each alert a case that fires and one that does not), when promtool is
installed (Debian: `apt-get install prometheus`; `make test` installs nothing system-wide).

Run as `python -m tests.promtool_leg`. It prints one line saying whether the leg ran and exits
non-zero when a check fails (0 when promtool is absent: the leg is optional).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"


def main() -> int:
    promtool = shutil.which("promtool")
    if promtool is None:
        print("Prometheus rules leg: not run, promtool is not installed (apt-get install "
              "prometheus)", flush=True)  # fmt: skip
        return 0
    print(f"Prometheus rules leg: checking {RULES}/alerts.yml with {promtool}", flush=True)
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        code = subprocess.call([promtool, *args], cwd=RULES)
        if code != 0:
            print(f"Prometheus rules leg: promtool {' '.join(args)} failed", flush=True)
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
