"""llmgate's control plane: CRD models, compile, render, webhook and the kopf operator.

Pure modules (`api`, `compile`, `render`, `injection`, `webhook`) import no Kubernetes
client; only `kube` talks to the API server and only `handlers` imports kopf.
"""
