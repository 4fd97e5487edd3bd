"""The `llmgate` command: `dev` (local mode), `sidecar` (data plane), `operator` (control plane).

Dispatch only; each subcommand imports its plane lazily so the sidecar image runs without
the operator's dependencies (kopf, kubernetes) and the reverse.
"""

from __future__ import annotations

import sys

USAGE = """usage: llmgate <command> [options]

commands:
  dev        run the gateway locally from CR YAML files (no cluster needed)
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
    if command == "sidecar":
        from llmgate_sidecar.server import main as sidecar_main
        return sidecar_main(rest)
    if command == "operator":
        from llmgate_operator.main import main as operator_main
        return operator_main(rest)
    print(f"llmgate: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2
