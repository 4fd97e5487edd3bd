"""The compiled config as the sidecar uses it: where it comes from (`source`), the runtime
tables built from it (`runtime`) and the prices it carries (`pricing`)."""
