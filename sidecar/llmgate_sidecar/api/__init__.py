"""The HTTP API: one request lifecycle, the endpoint specs, and the OpenAI and Anthropic
dialects clients speak. The only layer below `app` that uses `aiohttp.web`."""
