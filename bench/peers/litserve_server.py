"""LitServe serving one benchmark model, with its dynamic batching.

Configured per LitServe's docs for throughput: `max_batch_size` / `batch_timeout` on the
LitAPI, one inference worker (`workers_per_device=1`), one API server process, and the
ZeroMQ `fast_queue`. Endpoint: POST /predict.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import litserve as ls
from common import Runner, env


class BenchAPI(ls.LitAPI):  # type: ignore[misc]
    def setup(self, device):  # type: ignore[no-untyped-def]
        self.runner = Runner()

    def decode_request(self, request):  # type: ignore[no-untyped-def]
        return self.runner.decode(request["instances"][0])

    def batch(self, inputs):  # type: ignore[no-untyped-def]
        return inputs

    def predict(self, x):  # type: ignore[no-untyped-def]
        return self.runner.predict(x if isinstance(x, list) else [x])

    def unbatch(self, output):  # type: ignore[no-untyped-def]
        return output

    def encode_response(self, output):  # type: ignore[no-untyped-def]
        if output and isinstance(output[0], list) and not isinstance(output[0][0], float):
            output = output[0]  # unbatched single request
        return {"predictions": [output]}


if __name__ == "__main__":
    api = BenchAPI(
        max_batch_size=int(env("BENCH_MAX_BATCH", "32")),
        batch_timeout=float(env("BENCH_MAX_DELAY_MS", "5")) / 1000.0,
    )
    accel = "cuda" if env("BENCH_DEVICE", "cpu") == "cuda" else "cpu"
    server = ls.LitServer(
        api, accelerator=accel, devices=1, workers_per_device=1, fast_queue=True, timeout=120
    )
    server.run(
        host="127.0.0.1",
        port=int(env("BENCH_PORT")),
        num_api_servers=1,
        generate_client_file=False,
        log_level="warning",
    )
