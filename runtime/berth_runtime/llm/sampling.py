"""Per-request sampling inside transformers' continuous batching, with per-request seeds.

transformers' batching samples every row of a batch with one global generator and one
``do_sample`` switch, so a request's ``seed`` could not make its own tokens repeatable
(they would depend on its neighbours). Berth runs the manager greedy (argmax) and plugs in
this logits processor: for each row that asks for sampling it applies temperature and
top-p, draws one token with that request's own ``torch.Generator``, and leaves only that
token's score finite, so the argmax picks it. Greedy rows (temperature 0) are untouched,
which keeps them identical to ``model.generate(do_sample=False)``.

A request names its row through a small integer slot passed as a logits-processor
argument; slots are registered on the event loop and read on the engine thread (plain
dict reads and writes, atomic under the GIL).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import Any

import torch
from transformers.generation.continuous_batching.cb_logits_processors import (
    ContinuousBatchingLogitsProcessor,
    ContinuousBatchingLogitsProcessorList,
)
from transformers.generation.logits_process import LogitsProcessorList

SLOT_KWARG = "berth_slot"


@dataclass
class Slot:
    temperature: float
    top_p: float
    generator: torch.Generator


class SeededSampler(ContinuousBatchingLogitsProcessor):
    supported_kwargs: dict[str, type] = {SLOT_KWARG: int}
    ignored_kwargs: tuple[str, ...] = ()

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.slots: dict[int, Slot] = {}
        self._ids = itertools.count(1)  # 0 means "no slot": greedy

    def register(self, temperature: float, top_p: float, seed: int | None) -> int:
        """A slot for one request; 0 (no slot) for a greedy one."""
        if temperature == 0:
            return 0
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed % 2**63 if seed is not None else int.from_bytes(os.urandom(8)) >> 1)
        slot = next(self._ids) % 2**31
        self.slots[slot] = Slot(temperature, top_p, gen)
        return slot

    def release(self, slot: int) -> None:
        self.slots.pop(slot, None)

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        int32_tensor.fill_(0)

    def prepare_tensor_args(self, requests_with_new_token: list[Any]) -> torch.Tensor:
        ids = [r.state.logit_processor_kwargs.get(SLOT_KWARG, 0) for r in requests_with_new_token]
        return torch.tensor(ids, dtype=torch.int32, device="cpu")

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        rows = tensor_arg[: scores.size(0)].tolist()
        for i, slot_id in enumerate(rows):
            slot = self.slots.get(slot_id) if slot_id else None
            if slot is None:
                continue  # greedy
            token = sample_row(scores[i], slot.temperature, slot.top_p, slot.generator)
            scores[i].fill_(float("-inf"))
            scores[i, token] = 0.0
        return scores


def sample_row(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator
) -> int:
    """One token from ``softmax(logits / temperature)`` restricted to the top-p nucleus."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        sorted_probs[before >= top_p] = 0.0  # the first token always stays (before = 0)
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return int(order[choice].item())
    return int(torch.multinomial(probs, 1, generator=generator).item())


def processor_list(sampler: SeededSampler) -> ContinuousBatchingLogitsProcessorList:
    """The manager's logits processors: only the sampler (one int32 argument per request)."""
    procs = ContinuousBatchingLogitsProcessorList(
        logits_processor=LogitsProcessorList([sampler]), per_request_processors=False
    )
    procs.tensors_required = 1
    return procs
