"""Fake upstreams speaking each provider's documented wire format, on loopback."""

from __future__ import annotations

from typing import Any

from aiohttp import web


async def serve_on_loopback(app: web.Application, **runner: Any) -> tuple[web.AppRunner, int]:
    """Start `app` on a free 127.0.0.1 port; the caller stops it with `runner.cleanup()`."""
    runner_ = web.AppRunner(app, access_log=None, **runner)
    await runner_.setup()
    site = web.TCPSite(runner_, "127.0.0.1", 0)
    await site.start()
    return runner_, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
