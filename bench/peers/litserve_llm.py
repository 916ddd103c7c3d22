"""A one-request-at-a-time OpenAI chat server: LitServe's OpenAISpec over a transformers model.

Stands in for KServe's Hugging Face server without vLLM (not installable from PyPI here),
which likewise runs one ``generate`` at a time: LitServe with ``max_batch_size=1`` feeds
its single worker one request at a time; ``predict`` decodes greedily with a KV cache and
yields each token's text as it comes (streaming).

Usage: python litserve_llm.py MODEL_DIR PORT
"""

from __future__ import annotations

import sys

import litserve as ls
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache


class ChatAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        path = sys.argv[1]
        torch.set_num_threads(1)
        self.tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
        eos = self.model.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos])

    def predict(self, request, context):  # type: ignore[no-untyped-def]
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        text = self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = self.tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        limit = request.max_completion_tokens or request.max_tokens or 64
        cache = DynamicCache()
        generated: list[int] = []
        shown = ""
        with torch.inference_mode():
            step = ids
            for _ in range(limit):
                out = self.model(input_ids=step, past_key_values=cache, use_cache=True)
                token = int(out.logits[0, -1].argmax())
                generated.append(token)
                if token in self.eos:
                    break
                decoded = self.tok.decode(generated, skip_special_tokens=True)
                if not decoded.endswith("\ufffd") and len(decoded) > len(shown):
                    yield decoded[len(shown) :]
                    shown = decoded
                step = torch.tensor([[token]])
        tail = self.tok.decode(generated, skip_special_tokens=True)[len(shown) :]
        if tail:
            yield tail


if __name__ == "__main__":
    api = ChatAPI(spec=ls.OpenAISpec(), max_batch_size=1)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(port=int(sys.argv[2]), generate_client_file=False)
