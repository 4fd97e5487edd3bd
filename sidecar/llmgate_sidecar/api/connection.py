"""Client connections of the API port: header deadlines and parser errors in the envelope.

aiohttp gives every connection as long as it likes to send a request's headers, so a client
trickling them a byte at a time holds a connection (and a file descriptor) forever; and
what its HTTP parser refuses (a bad request line, a broken Content-Length) is answered in
plain text. `ApiRunner` (built by `app.api_runner`) serves the API app with `Connection`,
which closes a connection whose request headers are not complete within
`header_timeout` seconds of their first byte (or of the connection opening), and answers
parser errors with the OpenAI error envelope. Its requests go through `Dispatch`: a `POST`
to one of the app's fixed paths (every model-addressed endpoint) goes straight to its
handler inside the app's middlewares, as the app's router would send it, without resolving
the route anew on every request; everything else (other methods and paths, 404/405,
`Expect: 100-continue`) goes through the app as before. Relies on aiohttp 3's handler
internals (`web_protocol.RequestHandler`, `web_urldispatcher`), pinned `<4` in
pyproject.toml.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import orjson
from aiohttp import web, web_protocol, web_server
from aiohttp.web_urldispatcher import UrlMappingMatchInfo

from llmgate_sidecar.errors import GatewayError

log = logging.getLogger("llmgate.sidecar")


class Connection(web_protocol.RequestHandler):
    """One client connection; see the module docstring."""

    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._current_request is None:
            self._arm()  # bytes outside a handled request: the headers of the next one
        super().data_received(data)
        if self._messages:
            self._disarm()  # a whole request head was parsed

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = asyncio.get_running_loop().call_later(
                self._header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if self._current_request is None and not self._messages:
            log.info("closing a connection whose request headers did not arrive in time",
                     extra={"header_timeout_s": self._header_timeout})
            self.force_close()
            if self.transport is not None:
                self.transport.close()

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        # What the HTTP parser refused: the client's mistake, in the envelope it expects.
        log.info("unparseable request", extra={"status": status, "reason": message})
        error = GatewayError(f"malformed HTTP request: {message or exc or status}",
                             code="invalid_http_request")
        error.type = "invalid_request_error"
        response = web.Response(status=status, body=orjson.dumps(error.envelope()),
                                content_type="application/json")
        response.force_close()
        return response


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Dispatch:
    """The API app's request handler: fixed `POST` paths straight to their handler (see the
    module docstring), the rest through `web.Application._handle` (the router)."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._posts: dict[str, tuple[UrlMappingMatchInfo, Handler]] = {}
        for resource in app.router.resources():
            if not isinstance(resource, web.PlainResource):
                continue
            for route in resource:
                if route.method != "POST":
                    continue
                # The match the router would make, made once: frozen, never written to.
                match = UrlMappingMatchInfo({}, route)
                match.add_app(app)
                match.freeze()
                handler: Handler = route.handler
                for middleware in reversed(app.middlewares):
                    if getattr(middleware, "__middleware_version__", None) != 1:
                        raise TypeError(f"old-style middleware {middleware!r}")
                    handler = partial(middleware, handler=handler)
                self._posts[resource.get_info()["path"]] = (match, handler)

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        assert isinstance(request, web.Request)  # made by the app's request factory
        if request.method == "POST" and "Expect" not in request.headers:
            # The router matches plain resources on the same form of the path.
            found = self._posts.get(request.rel_url.path_safe)
            if found is not None:
                request._match_info = found[0]
                return await found[1](request)
        return await self._app._handle(request)


class ApiServer(web_server.Server):
    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout

    def __call__(self) -> web_protocol.RequestHandler:
        return Connection(self, loop=self._loop, header_timeout=self._header_timeout,
                          **self._kwargs)


class ApiRunner(web.AppRunner):
    """An AppRunner whose connections are `Connection`s."""

    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout

    async def _make_server(self) -> web_server.Server:
        server = await super()._make_server()
        # The app built an aiohttp Server; rebuild it as ours with the very same arguments,
        # its requests handled by `Dispatch` (the app's router is frozen by now).
        return ApiServer(Dispatch(self.app), request_factory=server.request_factory,
                         handler_cancellation=server.handler_cancellation,
                         loop=server._loop, header_timeout=self._header_timeout,
                         **server._kwargs)
