"""Model loading and batched predict shared by every peer server and by the in-process
ceiling. It runs inside each peer's own virtualenv, so it imports only torch, numpy and
(for the embedding model) sentence-transformers.

Configuration comes from the environment, the same for every peer:
  BENCH_MODEL_KIND   cnn | embedding | trivial
  BENCH_MODEL_PATH   TorchScript file (cnn, trivial) or sentence-transformers directory
  BENCH_THREADS      torch intra-op threads (inter-op is 1)
  BENCH_DEVICE       cpu | cuda
  BENCH_MAX_BATCH    the server's max batch size (32)
  BENCH_MAX_DELAY_MS the server's max batching delay in ms (5)
  BENCH_NAME         served model name
  BENCH_PORT         HTTP port

Every peer takes the same JSON request, KServe v1 style, one instance per request:
  {"instances": [<flat list of floats> | "<sentence>"]}
and answers {"predictions": [<flat list of floats>]}.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np
import torch

SHAPES = {"cnn": (3, 224, 224), "trivial": (16,)}


def env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise KeyError(f"environment variable {name} is required")
    return value


class Runner:
    """Decode one JSON instance; run a list of decoded instances as one batch."""

    def __init__(
        self,
        kind: str | None = None,
        path: str | None = None,
        threads: int | None = None,
        device: str | None = None,
    ) -> None:
        self.kind = kind or env("BENCH_MODEL_KIND")
        self.path = path or env("BENCH_MODEL_PATH")
        self.threads = threads or int(env("BENCH_THREADS", "1"))
        self.device = torch.device(device or env("BENCH_DEVICE", "cpu"))
        torch.set_num_threads(self.threads)
        with contextlib.suppress(RuntimeError):  # already set in this process
            torch.set_num_interop_threads(1)
        if self.kind == "embedding":
            from sentence_transformers import SentenceTransformer

            self.st = SentenceTransformer(self.path, device=str(self.device))
        else:
            self.module = torch.jit.load(self.path, map_location=self.device).eval()
        self.warmup()

    def decode(self, instance: Any) -> Any:
        if self.kind == "embedding":
            return str(instance)
        arr = np.asarray(instance, dtype=np.float32)
        return torch.from_numpy(arr.reshape(SHAPES[self.kind]))

    @torch.inference_mode()
    def predict(self, items: list[Any]) -> list[list[float]]:
        if self.kind == "embedding":
            out = self.st.encode(items, batch_size=max(1, len(items)), convert_to_numpy=True)
            return out.tolist()  # type: ignore[no-any-return]
        batch = torch.stack(items).to(self.device)
        return self.module(batch).float().cpu().numpy().tolist()  # type: ignore[no-any-return]

    def warmup(self) -> None:
        if self.kind == "embedding":
            self.predict(["warm up the tokenizer and the encoder"] * 4)
        else:
            for bs in (1, 4):
                self.predict([torch.zeros(SHAPES[self.kind])] * bs)
