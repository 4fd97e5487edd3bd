"""Talking to providers: the HTTP transport, one adapter per provider kind (`providers`),
cloud identity (AWS web identity, SigV4) and the built-in mock provider. The only package
that uses the aiohttp client."""
