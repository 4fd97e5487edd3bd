"""Byte-level framing: server-sent events (`sse`) and the AWS event stream (`eventstream`)."""
