"""Pure decisions and shared vocabulary: assignment rules, slugs, the snowflake layout, stored
codes, webhook URL tokens (`tokens`) and the error tree (`worker.support.classify`).

No I/O: these modules import only the standard library and each other, so every rule here is
unit-tested without servers.
"""
