"""Ray Serve serving one benchmark model, with `@serve.batch`.

Configured per Ray Serve's docs for throughput with batching: one replica,
`@serve.batch(max_batch_size, batch_wait_timeout_s)`, and `max_ongoing_requests` raised
well above the batch size (the default, 5, would cap every batch at 5). Ray is started
locally with as many logical CPUs as the server is given.
Endpoint: POST /predict.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ray
from common import Runner, env
from ray import serve

MAX_BATCH = int(env("BENCH_MAX_BATCH", "32"))
MAX_DELAY_S = float(env("BENCH_MAX_DELAY_MS", "5")) / 1000.0


@serve.deployment(num_replicas=1, max_ongoing_requests=256, ray_actor_options={"num_cpus": 1})
class Bench:
    def __init__(self) -> None:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        self.runner = Runner()

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=MAX_DELAY_S)
    async def run(self, items):  # type: ignore[no-untyped-def]
        return self.runner.predict(items)

    async def __call__(self, request):  # type: ignore[no-untyped-def]
        body = await request.json()
        out = await self.run(self.runner.decode(body["instances"][0]))
        return {"predictions": [out]}


if __name__ == "__main__":
    passed = {
        k: v
        for k, v in os.environ.items()
        if k.startswith("BENCH_") or k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
    }
    for attempt in range(5):  # Ray's raylet must register within a fixed 30 s
        try:
            ray.init(
                num_cpus=int(env("BENCH_RAY_CPUS", "1")),
                include_dashboard=False,
                runtime_env={"env_vars": passed},
                logging_level="warning",
            )
            break
        except Exception as exc:  # Ray raises a bare Exception on a slow start
            print(f"ray.init attempt {attempt + 1} failed: {exc}", flush=True)
            ray.shutdown()
            if attempt == 4:
                raise
    serve.start(http_options={"host": "127.0.0.1", "port": int(env("BENCH_PORT"))})
    serve.run(Bench.bind(), route_prefix="/predict", name=env("BENCH_NAME"))
    print("ray serve ready", flush=True)
    while True:
        time.sleep(3600)
