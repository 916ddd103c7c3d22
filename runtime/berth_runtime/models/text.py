"""sentence-transformers directories served as text embedding models."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from berth_runtime.errors import ModelLoadError
from berth_runtime.manifest import TensorSpec
from berth_runtime.models.base import ServedModel

log = logging.getLogger("berth.models")

TEXT_INPUT = "text"
EMBEDDING_OUTPUT = "embedding"


class TextEmbeddingModel(ServedModel):
    """Input ``text`` (BYTES, [-1]) -> output ``embedding`` (FP32, [-1, dim])."""

    platform = "sentence_transformers"
    embedding = True

    def __init__(self, name: str, path: Path, device: torch.device, dtype: torch.dtype) -> None:
        from sentence_transformers import SentenceTransformer

        if not (path.is_dir() and (path / "modules.json").is_file()):
            raise ModelLoadError(
                f"{path} is not a sentence-transformers directory (no modules.json)"
            )
        try:
            model = SentenceTransformer(
                str(path), device=str(device), local_files_only=True, trust_remote_code=False
            )
        except Exception as exc:
            raise ModelLoadError(
                f"cannot load sentence-transformers model at {path}: {exc}"
            ) from exc
        if dtype != torch.float32:
            model = model.to(dtype)
        model.eval()
        self.model = model
        self.name = name
        dim = model.get_sentence_embedding_dimension() or -1
        self.dimension = dim
        self.inputs = (TensorSpec(TEXT_INPUT, "BYTES", (-1,)),)
        self.outputs = (TensorSpec(EMBEDDING_OUTPUT, "FP32", (-1, dim)),)

    def encode(self, texts: list[str]) -> np.ndarray:
        with torch.inference_mode():
            out = self.model.encode(
                texts, batch_size=max(1, len(texts)), convert_to_numpy=True, show_progress_bar=False
            )
        return np.ascontiguousarray(out, dtype=np.float32)

    def predict(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        texts = [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in inputs[0]]
        return [self.encode(texts)]

    def warmup(self, max_batch_size: int) -> None:
        self.encode(["warm-up"])
        self.encode(["warm-up"] * max_batch_size)
        # models/base sets outputs at construction; dimension is known from the config.
        if self.dimension < 0:
            self.dimension = int(self.encode(["x"]).shape[1])
            self.outputs = (TensorSpec(EMBEDDING_OUTPUT, "FP32", (-1, self.dimension)),)
