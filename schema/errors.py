"""Error codes on the WebSocket path: the same formatting the HTTP path applies."""

from __future__ import annotations

from graphql import GraphQLError
from strawberry.extensions import MaskErrors

from gateway.http.errors import format_error


class DomainErrorCodes(MaskErrors):
    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        request_id = getattr(self.execution_context.context, "request_id", "")
        out = []
        for error in errors:
            formatted = format_error(error, request_id)
            out.append(GraphQLError(formatted["message"], nodes=error.nodes, source=error.source,
                                    positions=error.positions, path=error.path,
                                    extensions=formatted.get("extensions")))
        return out
