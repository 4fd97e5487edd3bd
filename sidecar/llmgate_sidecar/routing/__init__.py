"""Choosing and calling upstream targets: the router's attempt loop, the strategies, the
circuit breakers and the committed streams."""
