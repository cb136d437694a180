"""moto's S3 + SQS server for the benchmarks, its SQS model reading the clock the cheap way.

moto's SQS walks every message of a queue on each send and on each message it hands out
(it computes all of the queue's attributes, approximate counts included, to read one),
and each message's visibility check reads the clock through `datetime` arithmetic: with
1,000 messages queued that was three quarters of moto's CPU, and moto, one Python
process, starved the consumer it stands in front of. Real SQS costs this machine
nothing. Here `unix_time` and `unix_time_millis` in moto's SQS model return the same
values from `time.time()`; everything else is moto as installed.

    python -m benchmarks.moto_server -H 127.0.0.1 -p PORT
"""

from __future__ import annotations

import time
from datetime import datetime

from moto.core import utils
from moto.sqs import models


def unix_time(dt: datetime | None = None) -> float:
    return time.time() if dt is None else utils.unix_time(dt)


def unix_time_millis(dt: datetime | None = None) -> float:
    return unix_time(dt) * 1000.0


def main() -> None:
    from moto.server import main as serve

    models.unix_time = unix_time
    models.unix_time_millis = unix_time_millis
    serve()


if __name__ == "__main__":
    main()
