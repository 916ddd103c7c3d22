"""OpenAPI fragments for the routes (the handlers take raw requests for speed)."""

from __future__ import annotations

from typing import Any


def name_param(example: str) -> dict[str, Any]:
    return {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "example": example,
    }


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


V2_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {
            "type": "string",
            "enum": [
                "BOOL",
                "UINT8",
                "UINT16",
                "UINT32",
                "UINT64",
                "INT8",
                "INT16",
                "INT32",
                "INT64",
                "FP16",
                "FP32",
                "FP64",
                "BF16",
                "BYTES",
            ],
        },
        "parameters": {"type": "object"},
        "data": {},
    },
}

V2_INFER = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {"type": "array", "items": V2_TENSOR},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
            },
        },
    },
}

V1_PREDICT = {
    "type": "object",
    "properties": {"instances": {"type": "array"}, "inputs": {"type": "array"}},
}

EMBEDDINGS = {
    "type": "object",
    "required": ["input", "model"],
    "properties": {
        "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "model": {"type": "string"},
        "encoding_format": {"type": "string", "enum": ["float", "base64"]},
        "dimensions": {"type": "integer"},
        "user": {"type": "string"},
    },
}

ERROR = {"description": "error", "content": {"application/json": {"schema": {"type": "object"}}}}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: ERROR for code in codes}


_GEN_COMMON: dict[str, Any] = {
    "model": {"type": "string"},
    "max_tokens": {"type": "integer", "minimum": 1},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    "seed": {"type": "integer"},
    "n": {"type": "integer", "enum": [1]},
    "stream": {"type": "boolean"},
    "stream_options": {
        "type": "object",
        "properties": {"include_usage": {"type": "boolean"}},
    },
    "user": {"type": "string"},
}

CHAT_COMPLETIONS = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        **_GEN_COMMON,
        "max_completion_tokens": {"type": "integer", "minimum": 1},
        "messages": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {
                    "role": {
                        "type": "string",
                        "enum": ["system", "developer", "user", "assistant"],
                    },
                    "content": {"type": "string"},
                },
            },
        },
    },
}

COMPLETIONS = {
    "type": "object",
    "required": ["model", "prompt"],
    "properties": {
        **_GEN_COMMON,
        "prompt": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "integer"}}]},
    },
}
