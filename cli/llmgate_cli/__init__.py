"""The `llmgate` command: `dev` (local mode), `validate`/`compile`/`version` (CI and humans),
`sidecar` (data plane), `operator` (control plane).

Dispatch only; each subcommand imports its plane lazily so the sidecar image runs without
the operator's dependencies (kopf, kubernetes) and the reverse.
"""

from __future__ import annotations

import sys

USAGE = """usage: llmgate <command> [options]

commands:
  dev        run the gateway locally from CR YAML files (no cluster needed)
  validate   check CR files (CRD schema, CEL rules, the operator's checks) with file and line
  compile    print the compiled config the operator would write for CR files
  version    print the version, the API and the config schemas this build speaks
  sidecar    run the sidecar proxy (inside a pod; reads the mounted compiled config)
  operator   run the Kubernetes operator and the sidecar-injection webhook

Run 'llmgate <command> --help' for the options of a command."""


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "dev":
        from llmgate_cli.dev import main as dev_main
        return dev_main(rest)
    if command == "version":  # also in the sidecar image: imports no pydantic, no YAML
        from llmgate_cli.version import main as version_main
        return version_main(rest)
    if command in ("validate", "compile"):
        from llmgate_cli import commands
        return {"validate": commands.validate_main, "compile": commands.compile_main}[command](rest)
    if command == "sidecar":
        from llmgate_sidecar.upstream.tls import import_aiohttp
        import_aiohttp()  # first: aiohttp without its import-time CA loads (see there)
        from llmgate_sidecar.server import main as sidecar_main
        return sidecar_main(rest)
    if command == "operator":
        from llmgate_operator.main import main as operator_main
        return operator_main(rest)
    print(f"llmgate: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2
