"""Small models built in the tests (importable by the server subprocess via PYTHONPATH)."""

from __future__ import annotations

import itertools
import json
import time
import warnings
from pathlib import Path

import torch
from torch import nn

CNN_INPUT = {"name": "input__0", "datatype": "FP32", "shape": [-1, 3, 16, 16]}


class SmallCNN(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, stride=2)
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.head(x.mean(dim=(2, 3)))


def small_cnn(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN().eval()


def write_torchscript(model: nn.Module, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # torch.jit.script is deprecated in favour of export
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(model).save(str(dest / "model.pt"))
    (dest / "berth.json").write_text(json.dumps({"inputs": [CNN_INPUT]}))
    return dest


def write_export(model: nn.Module, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=1024)
    ep = torch.export.export(model, (torch.randn(4, 3, 16, 16),), dynamic_shapes=({0: batch},))
    torch.export.save(ep, str(dest / "model.pt2"))
    return dest


class SlowDouble(nn.Module):
    """Doubles its input and sleeps, so requests pile up (shutdown and batching tests)."""

    def __init__(self, delay_s: float = 0.05) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))
        self.delay_s = delay_s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay_s)
        return x * self.scale


def build_slow_double(delay_s: float = 0.05) -> SlowDouble:
    """Factory passed as --factory berth_test_models:build_slow_double (allow-listed)."""
    return SlowDouble(delay_s)


def write_slow_double(dest: Path, delay_s: float = 0.05) -> Path:
    from safetensors.torch import save_file

    dest.mkdir(parents=True, exist_ok=True)
    save_file(SlowDouble(delay_s).state_dict(), str(dest / "model.safetensors"))
    manifest = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "factory_kwargs": {"delay_s": delay_s},
    }
    (dest / "berth.json").write_text(json.dumps(manifest))
    return dest


class Pair(nn.Module):
    """Two inputs of any shape: ``left + right`` (``right`` cast to float)."""

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        return left + right.float()


def write_bare_pair(dest: Path) -> Path:
    """A TorchScript file and nothing else: no berth.json (a newcomer's first try)."""
    dest.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(Pair()).save(str(dest / "pair.pt"))
    return dest


def build_scripted_chat(dest: Path, answer: str) -> list[int]:
    """The tiny chat model (berth_runtime.llm.tiny) rewired so greedy decoding writes
    ``answer`` and then eos, whatever the prompt; returns the answer's token ids.

    Every layer's attention and MLP output projections are zero, so the last hidden state is
    the current token's embedding; each token of the chain (the prompt's last token, then
    the answer's tokens) gets its own embedding axis, and the output head maps that axis to
    the next token of the chain. The answer's tokens must be distinct (a successor table).
    """
    from berth_runtime.llm.tiny import build
    from transformers import AutoModelForCausalLM, AutoTokenizer

    build(dest)
    tok = AutoTokenizer.from_pretrained(str(dest), local_files_only=True)
    ids = list(tok(answer, add_special_tokens=False)["input_ids"])
    start = tok("\n", add_special_tokens=False)["input_ids"]  # the template's last token
    chain = [*start, *ids, tok.eos_token_id]
    if len(set(chain[:-1])) != len(chain) - 1:
        raise ValueError(f"answer {answer!r} repeats a token; the chain needs distinct tokens")
    model = AutoModelForCausalLM.from_pretrained(str(dest), local_files_only=True)
    hidden = model.config.hidden_size
    if len(chain) - 1 > hidden:
        raise ValueError(f"answer {answer!r} needs more than {hidden} tokens")
    model.config.tie_word_embeddings = False
    with torch.no_grad():
        embed = torch.zeros(model.config.vocab_size, hidden)
        head = torch.zeros(model.config.vocab_size, hidden)
        for axis, (token, following) in enumerate(itertools.pairwise(chain)):
            embed[token, axis] = 1.0
            head[following, axis] = 10.0
        model.model.embed_tokens.weight = nn.Parameter(embed)
        model.lm_head.weight = nn.Parameter(head)
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    model.save_pretrained(str(dest), safe_serialization=True)
    for f in dest.iterdir():
        f.chmod(0o644)
    return ids
