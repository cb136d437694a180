"""moto's S3 + SQS server for the benchmarks, without its costs that grow with the queue.

moto's SQS walks every message of a queue on each send and on each message it hands out
(it computes all of the queue's attributes, approximate counts included, to read one:
the retention period), and each message's visibility check reads the clock through
`datetime` arithmetic: with 1,000 messages queued that was three quarters of moto's CPU,
and with 3,000 a receive cost 6 ms a message; moto, one Python process, starved the
consumer it stands in front of. Real SQS costs this machine nothing. Here:

- `unix_time` and `unix_time_millis` in moto's SQS model return the same values from
  `time.time()`;
- a message's retention check reads the queue's retention period itself, not every
  attribute of the queue;
- a queue's attributes (a send reads them for its deduplication setting) are computed at
  most once a second: its approximate counts lag by up to a second, where real SQS's lag
  by up to a minute;
- werkzeug does not log each request (a tenth of moto's CPU under load).

Everything else is moto as installed.

    python -m benchmarks.moto_server -H 127.0.0.1 -p PORT
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from moto.core import utils
from moto.sqs import models


def unix_time(dt: datetime | None = None) -> float:
    return time.time() if dt is None else utils.unix_time(dt)


def unix_time_millis(dt: datetime | None = None) -> float:
    return unix_time(dt) * 1000.0


def is_message_valid_based_on_retention_period(
    self: models.SQSBackend, queue_name: str, message: models.Message
) -> bool:
    retention_period = int(self.get_queue(queue_name).message_retention_period)
    return retention_period + message.sent_timestamp / 1000 > unix_time()


_computed_attributes = models.Queue.attributes.fget
_ATTRIBUTES_TTL_SECONDS = 1.0


def attributes_at_most_once_a_second(self: models.Queue) -> dict[str, Any]:
    computed_at, values = getattr(self, "_benchmark_attributes", (-1e9, {}))
    if time.monotonic() - computed_at > _ATTRIBUTES_TTL_SECONDS:
        values = _computed_attributes(self)
        self._benchmark_attributes = (time.monotonic(), values)
    return dict(values)


def main() -> None:
    from moto.server import main as serve

    models.unix_time = unix_time
    models.unix_time_millis = unix_time_millis
    models.SQSBackend.is_message_valid_based_on_retention_period = (
        is_message_valid_based_on_retention_period
    )
    models.Queue.attributes = property(attributes_at_most_once_a_second)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    serve()


if __name__ == "__main__":
    main()
