"""Open Inference Protocol datatypes and their numpy and torch equivalents."""

from __future__ import annotations

import numpy as np
import torch

# OIP datatype -> numpy dtype used on the wire. BF16 travels as raw uint16 bits.
NUMPY: dict[str, np.dtype[np.generic]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BF16": np.dtype(np.uint16),
    "BYTES": np.dtype(np.object_),
}

TORCH_TO_OIP: dict[torch.dtype, str] = {
    torch.bool: "BOOL",
    torch.uint8: "UINT8",
    torch.int8: "INT8",
    torch.int16: "INT16",
    torch.int32: "INT32",
    torch.int64: "INT64",
    torch.float16: "FP16",
    torch.float32: "FP32",
    torch.float64: "FP64",
    torch.bfloat16: "BF16",
}

NUMPY_TO_OIP: dict[np.dtype[np.generic], str] = {
    v: k for k, v in NUMPY.items() if k not in ("BF16",)
}

TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def oip_of_numpy(dtype: np.dtype[np.generic]) -> str:
    """The OIP datatype name for a numpy dtype (object arrays are BYTES)."""
    try:
        return NUMPY_TO_OIP[dtype]
    except KeyError:
        raise TypeError(f"no OIP datatype for numpy dtype {dtype}") from None
