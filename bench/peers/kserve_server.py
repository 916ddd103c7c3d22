"""KServe's Python model server (the `kserve` package) serving one benchmark model.

Configured per KServe's docs: a `kserve.Model` with `load()` and `predict()`, served by
`kserve.ModelServer` with one worker. The Python server itself has no dynamic batching
(KServe batches with its Go agent sidecar, `spec.predictor.batcher`, which runs only
inside a cluster), so each request is one forward pass.
Endpoint: POST /v1/models/NAME:predict.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kserve
from common import Runner, env


class BenchModel(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.runner: Runner | None = None

    def load(self) -> bool:
        self.runner = Runner()
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):  # type: ignore[no-untyped-def]
        assert self.runner is not None
        items = [self.runner.decode(x) for x in payload["instances"]]
        return {"predictions": self.runner.predict(items)}


if __name__ == "__main__":
    model = BenchModel(env("BENCH_NAME"))
    model.load()
    sys.argv = [sys.argv[0]]  # kserve parses its own flags from sys.argv
    kserve.ModelServer(
        http_port=int(env("BENCH_PORT")),
        workers=1,
        enable_grpc=False,
        enable_latency_logging=False,
    ).start([model])
