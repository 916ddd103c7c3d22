"""Domain errors. Handlers translate them to Kopf's PermanentError / TemporaryError."""

from __future__ import annotations


class BerthError(Exception):
    """Base of the operator's own errors."""


class RenderError(BerthError):
    """The spec cannot be turned into children: the user must change it (permanent)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ForeignObject(RenderError):
    """A child's name is taken by an object Berth does not own: reported, nothing written,
    and checked again later (the object may be renamed or removed)."""


class ApplyError(BerthError):
    """The API server refused or failed a write; retrying may help (temporary)."""


class NamespaceTerminating(ApplyError):
    """The namespace is being deleted: nothing to converge there any more (not retried)."""
