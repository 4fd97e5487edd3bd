"""The sidecar process: both listeners, signal handling and graceful drain.

`serve(settings)` runs until SIGTERM/SIGINT, then stops accepting, lets in-flight requests
(streams included) finish within `shutdown_grace`, and returns. `main(argv)` is
`llmgate sidecar`. Used by `llmgate dev` too, with its own config directories.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

from aiohttp import web

from llmgate_sidecar import logs
from llmgate_sidecar.app import create_app, create_ops_app
from llmgate_sidecar.settings import SidecarSettings, add_arguments, from_args

log = logging.getLogger("llmgate.sidecar")


async def serve(settings: SidecarSettings, *,
                ready: Callable[[SidecarSettings], Awaitable[None] | None] | None = None,
                stop: asyncio.Event | None = None) -> None:
    api = create_app(settings)
    ops = create_ops_app(api)
    api_runner = web.AppRunner(api, access_log=None, shutdown_timeout=settings.shutdown_grace)
    ops_runner = web.AppRunner(ops, access_log=None, shutdown_timeout=1.0)
    await api_runner.setup()
    await ops_runner.setup()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        await web.TCPSite(api_runner, settings.host, settings.port, backlog=1024).start()
        await web.TCPSite(ops_runner, settings.ops_host, settings.ops_port).start()
        log.info("llmgate sidecar listening", extra={
            "api": f"http://{settings.host}:{settings.port}/v1",
            "ops": f"http://{settings.ops_host}:{settings.ops_port}"})
        if ready is not None:
            result = ready(settings)
            if result is not None:
                await result
        await stop.wait()
        log.info("shutting down: draining in-flight requests",
                 extra={"grace_seconds": settings.shutdown_grace})
    finally:
        # AppRunner.cleanup stops listening first, then waits for handlers to finish.
        await api_runner.cleanup()
        await ops_runner.cleanup()


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
