"""Format ``transformers``: a causal language model directory in Hugging Face layout.

The directory holds ``config.json``, ``*.safetensors`` weights (sharded or not), the
tokenizer files (``tokenizer.json`` and ``tokenizer_config.json``), and optionally a chat
template (``chat_template.jinja`` or in ``tokenizer_config.json``) and
``generation_config.json``. Loading never runs code from the directory and never
unpickles: ``trust_remote_code=False`` (a config whose architecture needs its own Python
files is refused), ``use_safetensors=True`` (``*.bin`` weights are refused), and
``local_files_only=True`` (nothing is fetched from a hub). Chat templates are Jinja,
rendered by transformers in a sandboxed environment.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from berth_runtime.errors import BadRequest, ModelLoadError
from berth_runtime.llm.engine import Engine, EngineConfig
from berth_runtime.llm.prompt import SpecialText, TemplateMangled
from berth_runtime.models.base import ServedModel
from berth_runtime.settings import Settings

log = logging.getLogger("berth.llm")

DEFAULT_CONTEXT = 2048
"""Context length when neither --max-model-len nor the config gives one."""


def check_directory(path: Path) -> dict[str, Any]:
    """The parsed config.json of a loadable directory, or ModelLoadError saying what is wrong."""
    if not path.is_dir():
        raise ModelLoadError(f"{path}: format transformers needs a directory (Hugging Face layout)")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"{path}: no config.json (format transformers)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{config_file}: not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{config_file}: must be a JSON object")
    if config.get("auto_map"):
        raise ModelLoadError(
            f"{config_file}: auto_map names Python code shipped with the model; Berth never "
            "runs model-supplied code (trust_remote_code is off). Use an architecture "
            "built into transformers"
        )
    if not any(path.glob("*.safetensors")):
        bins = sorted(p.name for p in path.glob("*.bin")) + sorted(
            p.name for p in path.glob("*.pt")
        )
        hint = f" (found {', '.join(bins)}: pickled weights are refused)" if bins else ""
        raise ModelLoadError(f"{path}: no *.safetensors weights{hint}")
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
        raise ModelLoadError(f"{path}: no tokenizer.json or tokenizer_config.json")
    return config


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    raw = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if raw is None:
        raw = tokenizer.eos_token_id
    if raw is None:
        return []
    return [int(x) for x in (raw if isinstance(raw, list) else [raw])]


def special_strings(tokenizer: Any) -> list[str]:
    """Every special token's text: the added tokens marked special, bos/eos/unk/pad and the rest."""
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    out = [str(t.content) for t in added.values() if getattr(t, "special", False)]
    return out + [str(t) for t in getattr(tokenizer, "all_special_tokens", ()) or ()]


class CausalLM(ServedModel):
    """A text generation model: no tensor inputs; served by the OpenAI chat and completion routes."""

    platform = "transformers"
    generative = True

    def __init__(
        self, settings: Settings, path: Path, device: torch.device, dtype: torch.dtype
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        config = check_directory(path)
        self.name = settings.name
        self.inputs = ()
        self.outputs = ()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                str(path), local_files_only=True, trust_remote_code=False
            )
            model = AutoModelForCausalLM.from_pretrained(
                str(path),
                local_files_only=True,
                trust_remote_code=False,
                use_safetensors=True,
                dtype=dtype,
            )
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"cannot load transformers model at {path}: {exc}") from exc
        self.model = model.to(device).eval()  # type: ignore[arg-type]
        configured = config.get("max_position_embeddings")
        limit = settings.max_model_len or (configured if isinstance(configured, int) else 0)
        self.context = int(limit or DEFAULT_CONTEXT)
        if isinstance(configured, int) and self.context > configured:
            raise ModelLoadError(
                f"--max-model-len {self.context} exceeds the model's max_position_embeddings "
                f"({configured})"
            )
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        self.chat_template = bool(getattr(self.tokenizer, "chat_template", None))
        self.special_text = SpecialText(special_strings(self.tokenizer))
        self.engine_config = EngineConfig(
            max_running=settings.max_batch_size,
            max_queue=settings.max_queue,
            kv_blocks=-(-settings.kv_cache_tokens // 16),
            context=self.context,
        )
        self.engine: Engine | None = None

    # --- text <-> tokens --------------------------------------------------------------

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        if not self.chat_template:
            raise BadRequest(
                f"model {self.name!r} has no chat template; use /v1/completions with a prompt"
            )
        masked = self.special_text.mask(messages)
        try:
            text = self.tokenizer.apply_chat_template(
                masked.messages, add_generation_prompt=True, tokenize=False
            )
        except Exception as exc:  # a template may raise on a conversation it refuses
            raise BadRequest(f"the model's chat template refused these messages: {exc}") from None
        try:
            return self.special_text.encode(str(text), masked.pieces, self._encode_part)
        except TemplateMangled as exc:
            raise BadRequest(
                "the model's chat template rewrote message content that holds special-token "
                f"text, so it cannot be kept apart from the template's own markup ({exc})"
            ) from None

    def _encode_part(self, text: str, split_special: bool) -> list[int]:
        """Ids of ``text``; with ``split_special`` its special-token strings are plain text."""
        out = self.tokenizer(text, add_special_tokens=False, split_special_tokens=split_special)
        return list(out["input_ids"])

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    def decode(self, ids: Any) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    def check_ids(self, ids: tuple[int, ...]) -> list[int]:
        vocab = int(self.model.config.get_text_config().vocab_size)
        bad = [t for t in ids if t >= vocab]
        if bad:
            raise BadRequest(
                f"prompt token ids must be below the vocabulary size {vocab}, got {bad[0]}"
            )
        return list(ids)

    # --- ServedModel ------------------------------------------------------------------

    def predict(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        raise BadRequest(
            f"model {self.name!r} generates text; use /v1/chat/completions or /v1/completions"
        )

    def warmup(self, max_batch_size: int) -> None:
        """Start the engine and generate a few tokens through it."""
        engine = Engine(self.model, self.eos_ids, self.engine_config)
        engine.start()
        started = time.perf_counter()
        rid = engine.manager.add_request(self.encode("warm-up") or [0], max_new_tokens=2)
        result = engine.manager.get_result(rid, timeout=120)
        if result is None or result.error is not None:
            engine.stop()
            raise ModelLoadError(
                f"warm-up generation failed: {result.error if result else 'timeout'}"
            )
        self.engine = engine
        log.info(
            "LLM engine warm in %.2f s (context %d tokens)",
            time.perf_counter() - started,
            self.context,
        )

    def close(self) -> None:
        if self.engine is not None:
            self.engine.stop()
