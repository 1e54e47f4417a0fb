"""The replay baseline: `python -m bench.raw_send N` calls apply_async N times, nothing else.

Run as its own process, like the CLI it is compared with, so both pay the same start-up.
"""

from __future__ import annotations

import sys

from tasks.changelog import check_changelog


def main() -> None:
    count = int(sys.argv[1])
    for delivery_id in range(1, count + 1):
        check_changelog.apply_async(kwargs={"delivery_id": delivery_id})


if __name__ == "__main__":
    main()
