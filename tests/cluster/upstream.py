"""The suite's fake OpenAI upstream (tests/fakes) served from a thread, for sync tests.

The cluster tests are synchronous (they drive processes and poll an API server); the fake
is an aiohttp app, so it gets its own event loop in a daemon thread. Stopped by `close()`.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any

from tests.fakes.openai_upstream import FakeOpenAI


class ThreadedUpstream:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="fake upstream")
        self.fake = FakeOpenAI()

    def _run(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout=30)

    def start(self) -> ThreadedUpstream:
        self.thread.start()
        self._run(self.fake.start())
        return self

    @property
    def url(self) -> str:
        return self.fake.url

    def authorizations(self) -> list[str]:
        return [h.get("Authorization", "") for h in list(self.fake.headers)]

    def close(self) -> None:
        self._run(self.fake.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
