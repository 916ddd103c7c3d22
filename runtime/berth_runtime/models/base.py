"""What every served model looks like to the batcher and the routes.

KServe's shape: a model has a name, tensor specs, ``predict`` and ``warmup``. ``predict``
runs only on the device-owning worker thread, inside ``torch.inference_mode``; it gets one
numpy array per input, already concatenated along the batch dimension, and returns one
numpy array per output with the same number of rows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from berth_runtime.manifest import TensorSpec


class ServedModel(ABC):
    """A loaded model. Subclasses fill the attributes in ``__init__`` and after warm-up."""

    name: str
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    embedding: bool = False
    """True for text embedding models (enables the OpenAI routes)."""
    generative: bool = False
    """True for text generation models (served by the OpenAI chat and completion routes)."""
    fixed_batch: int | None = None
    """Set when the model only accepts one batch size; such requests never share a pass."""

    @abstractmethod
    def predict(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Run one forward pass on a whole batch."""

    @abstractmethod
    def warmup(self, max_batch_size: int) -> None:
        """Run representative passes and fill ``outputs``; raise on failure."""

    def close(self) -> None:
        """Release what the model holds beyond memory (threads); called once at shutdown."""
        return None

    def metadata(self) -> dict[str, object]:
        """The OIP v2 model metadata body."""
        return {
            "name": self.name,
            "versions": ["1"],
            "platform": self.platform,
            "inputs": [s.metadata() for s in self.inputs],
            "outputs": [s.metadata() for s in self.outputs],
        }
