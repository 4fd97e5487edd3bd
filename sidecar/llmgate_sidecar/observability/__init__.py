"""What a request did, made visible: the request record, Prometheus metrics, the JSON log
line and OpenTelemetry spans. The only package that imports `prometheus_client` or
`opentelemetry`."""
