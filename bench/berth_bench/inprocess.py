"""The compute ceiling: the model called in-process, no HTTP, at each batch size.

Run by `berth bench runtime` pinned to the servers' CPUs with the same thread count:
    python -m berth_bench.inprocess --kind cnn --path X --threads 1 --batch-sizes 1,8,32
prints one JSON line {"items_per_s": {"1": ..., "8": ...}, "best_batch": 8, "best": ...}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

PEERS_DIR = Path(__file__).resolve().parent.parent / "peers"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--kind", required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-sizes", default="1,2,4,8,16,32,64,128")
    p.add_argument("--seconds", type=float, default=2.0, help="measured seconds per size")
    a = p.parse_args(argv)
    sys.path.insert(0, str(PEERS_DIR))
    from common import SHAPES, Runner  # the same code the peers run

    from berth_bench.models import SENTENCE

    runner = Runner(a.kind, a.path, a.threads, a.device)
    one = SENTENCE if a.kind == "embedding" else runner.decode([0.5] * _numel(SHAPES[a.kind]))
    rates: dict[str, float] = {}
    cpu_per_1k: dict[str, float] = {}  # CPU seconds per 1000 items: robust to a busy host
    for bs in (int(x) for x in a.batch_sizes.split(",")):
        items = [one] * bs
        runner.predict(items)  # warm this shape
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        while (elapsed := time.perf_counter() - t0) < a.seconds:
            runner.predict(items)
            n += bs
        rates[str(bs)] = n / elapsed
        cpu_per_1k[str(bs)] = (time.process_time() - c0) / n * 1000
    best = max(rates, key=lambda k: rates[k])
    cheapest = min(cpu_per_1k, key=lambda k: cpu_per_1k[k])
    print(
        json.dumps(
            {
                "items_per_s": rates,
                "best_batch": int(best),
                "best": rates[best],
                "cpu_s_per_1k": cpu_per_1k,
                "best_cpu_s_per_1k": cpu_per_1k[cheapest],
            }
        )
    )
    return 0


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


if __name__ == "__main__":
    sys.exit(main())
