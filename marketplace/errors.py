"""The vendor toolkit's errors: each carries a stable `code` (shown to clients in
`extensions.code` when the gateway raises it) and `details`. The toolkit imports nothing of the
gateway; the gateway treats these as client errors like its own `DomainError`s."""

from __future__ import annotations

from typing import Any


class ToolkitError(Exception):
    code: str = "BAD_USER_INPUT"
    http_status: int = 400

    def __init__(self, message: str, *, code: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or {}
