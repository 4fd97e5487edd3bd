"""The sidecar process: both listeners, signal handling and graceful drain.

`serve(settings)` runs until SIGTERM/SIGINT (or `stop` is set), then stops accepting, lets
in-flight requests (streams included) finish within `shutdown_grace`, ends the streams still
open with an in-band error, and returns. `main(argv)` is `llmgate sidecar`. Used by
`llmgate dev` too, with its own config directories.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from llmgate_sidecar.api.state import DRAINING, ROUTER
from llmgate_sidecar.app import api_runner, create_app, create_ops_app
from llmgate_sidecar.observability import logs
from llmgate_sidecar.settings import SidecarSettings, add_arguments, from_args

log = logging.getLogger("llmgate.sidecar")
# After the grace period, streams get this long to write their in-band error and finish
# before aiohttp cancels whatever handler is still running.
CUT_MARGIN = 2.0


async def serve(settings: SidecarSettings, *,
                ready: Callable[[SidecarSettings], Awaitable[None] | None] | None = None,
                stop: asyncio.Event | None = None,
                readiness: Callable[[], Mapping[str, Any]] | None = None) -> None:
    api = create_app(settings)
    ops = create_ops_app(api, readiness=readiness)
    runner = api_runner(api, shutdown_timeout=settings.shutdown_grace + CUT_MARGIN)
    ops_runner = web.AppRunner(ops, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await ops_runner.setup()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        await web.TCPSite(runner, settings.host, settings.port, backlog=1024).start()
        await web.TCPSite(ops_runner, settings.ops_host, settings.ops_port).start()
        log.info("llmgate sidecar listening", extra={
            "api": f"http://{settings.host}:{settings.port}/v1",
            "ops": f"http://{settings.ops_host}:{settings.ops_port}"})
        if ready is not None:
            result = ready(settings)
            if result is not None:
                await result
        await stop.wait()
        api[DRAINING].set()  # /readyz turns 503: the kubelet stops routing to this pod
        log.info("shutting down: draining in-flight requests",
                 extra={"grace_seconds": settings.shutdown_grace})
    finally:
        await drain(api, runner, settings.shutdown_grace)
        await ops_runner.cleanup()


async def drain(api: web.Application, runner: web.AppRunner, grace: float) -> None:
    """Stop listening, wait up to `grace` for in-flight requests, then cut open streams.

    AppRunner.cleanup stops the listeners first and then waits for the handlers; a stream
    still running when the grace is over is ended by the router with an in-band error (so
    the client knows it is incomplete) rather than by a bare connection close."""
    cleanup = asyncio.create_task(runner.cleanup(), name="llmgate-drain")
    done, _ = await asyncio.wait({cleanup}, timeout=grace)
    if not done:
        cut = api[ROUTER].interrupt_streams()
        log.warning("shutdown grace over: ending open streams", extra={"streams": cut})
    await cleanup


def install_fast_loop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmgate sidecar",
                                     description="Serve the OpenAI API beside an app pod.")
    add_arguments(parser, defaults=SidecarSettings())
    settings = from_args(parser.parse_args(argv))
    logs.configure(settings.log_level)
    install_fast_loop()
    asyncio.run(serve(settings))
    return 0
