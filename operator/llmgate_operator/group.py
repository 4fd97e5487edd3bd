"""The custom resources' API group and version: one definition, with no imports.

`api` (the pydantic models) takes them from here, and so does `llmgate version`, which also
runs in the sidecar image, where pydantic is not installed (docs/performance.md).
"""

GROUP = "llmgate.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
