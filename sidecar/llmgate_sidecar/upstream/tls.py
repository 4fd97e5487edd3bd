"""TLS to upstreams: one verified client context for the process, loaded on first use.

aiohttp builds two default SSL contexts when it is imported (`aiohttp.connector`), each
loading OpenSSL's default CA file; in `llmgate sidecar` that was ≈ 45 ms of CPU and 1.9 MiB
of the start, paid even when every upstream is plain http (docs/performance.md, "Cold
start"). So `import_aiohttp` imports aiohttp with `SSL_CERT_FILE` pointed at an empty file
(the environment is restored right after; aiohttp's own contexts still verify, against the
CA directory only), and every https request of the sidecar (`transport.HttpTransport`,
`aws_identity`) passes `context_for(url)` instead, which for an https URL (in any case:
schemes are case-insensitive, RFC 3986 §3.1) is `client_context()`:
`ssl.create_default_context()` with the pod's environment as it is (a `SSL_CERT_FILE` set
for a private CA counts), created once, in a thread, when the first https request needs it.
Certificate and host name verification are those of `ssl.create_default_context`; nothing
here turns them off.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
import threading

_context: ssl.SSLContext | None = None
_lock = threading.Lock()


def import_aiohttp() -> None:
    """Import aiohttp without its import-time CA loads (a no-op once it is imported). Call it
    before anything imports aiohttp: `llmgate sidecar` does, first thing."""
    if "aiohttp" in sys.modules:
        return
    saved = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = os.devnull
    try:
        import aiohttp.connector  # noqa: F401  (builds its default contexts now)
    finally:
        if saved is None:
            del os.environ["SSL_CERT_FILE"]
        else:
            os.environ["SSL_CERT_FILE"] = saved


def _load() -> ssl.SSLContext:
    global _context
    with _lock:
        if _context is None:
            context = ssl.create_default_context()
            context.set_alpn_protocols(["http/1.1"])  # as aiohttp's own: it speaks HTTP/1.1
            _context = context
        return _context


async def client_context() -> ssl.SSLContext:
    """The verified client context of https upstreams (loaded off the event loop once)."""
    return _context if _context is not None else await asyncio.to_thread(_load)


def is_https(url: str) -> bool:
    """Whether `url` is https: its scheme compared without case (`HTTPS://` is https too)."""
    return url[:6].lower() == "https:"


async def context_for(url: str) -> ssl.SSLContext | bool:
    """What an aiohttp request to `url` passes as `ssl=`: the sidecar's verified context for
    https (whatever the scheme's case), aiohttp's default (`True`) for plain http."""
    return await client_context() if is_https(url) else True
