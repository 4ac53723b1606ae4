"""GET /reports/{id}: a report file's bytes, for its own tenant only.

Authenticated as GraphQL is (Authorization: Bearer <API key or token>); the caller needs "read"
on casbin object "report". Another tenant's id is answered 404, like a missing one. The body is
the file as stored; `Digest`-style integrity is in the `X-Content-SHA256` header and the ETag.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gateway.auth.authenticate import bearer_token
from gateway.errors import DomainError, Forbidden, Unauthenticated
from gateway.http.encoding import JSONResponse
from gateway.http.errors import error_body
from gateway.runtime import Runtime


def report_download(runtime: Runtime) -> Any:
    def fetch(token: str | None, file_id: str) -> Response:
        if token is None:
            raise Unauthenticated("send Authorization: Bearer <API key or token>")
        me = runtime.authenticator.authenticate(token)
        if not runtime.policy.allowed(me.user_id, me.tenant_id, "report", "read"):
            raise Forbidden("read on report is not allowed for this user")
        row = runtime.reports.file(me.tenant_id, file_id)
        return Response(row.content, media_type=row.media_type, headers={
            "Content-Disposition": f'attachment; filename="{row.filename}"',
            "ETag": f'"{row.sha256}"', "X-Content-SHA256": row.sha256,
            "Cache-Control": "private, no-store"})

    async def download(request: Request) -> Response:
        try:
            token = bearer_token(request.headers.get("authorization"))
            return await run_in_threadpool(fetch, token, request.path_params["id"])
        except DomainError as exc:
            headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
            return JSONResponse(error_body(exc.code, exc.message), status_code=exc.http_status,
                                headers=headers)

    return download
