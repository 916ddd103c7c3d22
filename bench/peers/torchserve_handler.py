"""TorchServe custom handler for one benchmark model.

TorchServe batches on its Java frontend (`batchSize`, `maxBatchDelay` in the model's
config) and hands the handler a list of requests. Endpoint: POST /predictions/NAME.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import Runner

_runner: Runner | None = None


def handle(data, context):  # type: ignore[no-untyped-def]
    global _runner
    if _runner is None:
        _runner = Runner()
    if data is None:  # TorchServe's initialization ping
        return None
    items = []
    for row in data:
        body = row.get("body") if row.get("body") is not None else row.get("data")
        if isinstance(body, (bytes, bytearray)):
            body = json.loads(body)
        items.append(_runner.decode(body["instances"][0]))
    return [{"predictions": [out]} for out in _runner.predict(items)]
