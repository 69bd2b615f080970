"""What the generated engine clients raise when an answer's body does not match its documented schema."""

from __future__ import annotations

__all__ = ["MalformedBody"]


class MalformedBody(ValueError):
    """A documented answer whose body does not match its schema (a required member missing, a member of the wrong
    type, not JSON): `status_code`, `content`, and the reason naming the member. openapi-python-client's models
    would raise a bare KeyError/TypeError/ValueError from their `from_dict`."""

    def __init__(self, status_code: int, content: bytes, cause: Exception) -> None:
        reason = f"missing member {cause}" if isinstance(cause, KeyError) else f"{type(cause).__name__}: {cause}"
        super().__init__(f"HTTP {status_code} answer does not match its schema ({reason}): {content[:200]!r}")
        self.status_code = status_code
        self.content = content
        self.reason = reason
