"""Berth inference runtime: one model per process, served over OIP v2, KServe v1 and OpenAI routes.

Nothing here runs at import time; start with :func:`berth_runtime.app.create_app` or the
``berth-runtime serve`` command (:mod:`berth_runtime.cli`).
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
