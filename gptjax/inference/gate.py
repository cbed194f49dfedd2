"""What every request passes before its route: the API key (401 on /v1/), shutting down (503
for new requests while those in flight finish), the body limit (413) and the count of requests
by endpoint and status. A plain ASGI middleware: a streamed answer counts as in flight until
its last chunk is sent.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse

from gptjax.inference.openai_api import APIError

DRAIN = 8  # a body up to DRAIN times the limit is read (and dropped) before its 413
OPEN = ("/health", "/metrics")  # answered while shutting down


class Gate:
    def __init__(self, app, served, *, api_key: str | None, max_body: int):
        self.app, self.served, self.api_key, self.max_body = app, served, api_key, max_body
        self.routes: set[str] | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = [500]

        async def counted(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.admit(scope, receive, counted)
        finally:
            handler = self.handler(scope)
            self.served.metrics.http.labels(handler, scope["method"], str(status[0])).inc()

    async def admit(self, scope, receive, send):
        path = scope["path"]
        if self.api_key and path.startswith("/v1/"):
            auth = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            if auth != f"Bearer {self.api_key}":
                return await reply(APIError(401, DENIED, code="invalid_api_key"), scope, send)
        if self.served.draining and path not in OPEN:
            error = APIError(503, "the server is shutting down", code="shutting_down")
            return await reply(error, scope, send)
        if scope["method"] in ("POST", "PUT", "PATCH"):
            body = await self.read(scope, receive)
            if body is None:
                too_big = APIError(413, f"request body is larger than {self.max_body} bytes")
                return await reply(too_big, scope, send)
            receive = replay(body, receive)
        self.served.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.served.inflight -= 1

    async def read(self, scope, receive) -> bytes | None:
        """The whole body, or None past max_body. A body up to DRAIN times the limit is read to
        its end first: a client still sending when the server answers and closes would get a
        broken pipe, not the 413."""
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if int(length or 0) > DRAIN * self.max_body:
            return None
        body, size = bytearray(), 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > DRAIN * self.max_body:
                return None
            if size <= self.max_body:
                body += chunk
            if not message.get("more_body"):
                break
        return None if size > self.max_body else bytes(body)

    def handler(self, scope) -> str:
        """The route a request went to (a bounded set of labels, whatever paths clients try)."""
        if self.routes is None:
            self.routes = {getattr(r, "path", "") for r in scope["app"].routes}
        path = scope["path"]
        if path.startswith("/v1/models/"):
            return "/v1/models/{model_id}"
        return path if path in self.routes else "other"


DENIED = "missing or wrong API key: send 'Authorization: Bearer KEY'"


def replay(body: bytes, receive):
    """A `receive` that gives the body read already, then whatever comes next (a disconnect)."""
    sent = False

    async def again():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


async def reply(error: APIError, scope, send) -> None:
    response = JSONResponse(error.body(), status_code=error.status, headers=error.headers)
    await response(scope, _nothing, send)


async def _nothing():
    return {"type": "http.disconnect"}
