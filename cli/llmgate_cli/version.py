"""`llmgate version`: the version, the API and the compiled-config schemas this build speaks.

It runs in both images, so it imports only the contract and the API group's constants: no
pydantic, no YAML (the sidecar image installs neither; tests/sidecar/test_lean_imports.py).
"""

from __future__ import annotations

import argparse
import json
from importlib import metadata

from llmgate_contract import config as contract
from llmgate_operator.group import API_VERSION


def version() -> str:
    try:
        return metadata.version("llmgate")
    except metadata.PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmgate version",
                                     description="Print what this build speaks.")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    args = parser.parse_args(argv)
    reads = [contract.MIN_SCHEMA_VERSION, contract.SCHEMA_VERSION]
    info = {"version": version(), "api": API_VERSION,
            "configSchema": {"writes": contract.SCHEMA_VERSION, "reads": reads}}
    if args.output == "json":
        print(json.dumps(info))
    else:
        print(f"llmgate {info['version']}\n  API: {info['api']}\n  compiled config schema: "
              f"writes up to {contract.SCHEMA_VERSION}, reads {reads[0]}..{reads[1]}")
    return 0
