"""`llmgate validate` and `llmgate compile`: the CLI for CI and humans.

`validate -f PATH…` reports every problem of the given CR files at its file and line (text,
JSON, or GitHub Actions annotations) and exits 1 if any is an error; `compile -f PATH…`
prints the compiled config the operator would write, for diffs in review. Checks live in
`checks`, files in `manifests`; `llmgate version` is the `version` module (no pydantic).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from llmgate_cli.manifests import InputError, Problem, load

if TYPE_CHECKING:  # `checks` needs the validate extra, which `version` does not
    from llmgate_operator.compile import Compilation

    from llmgate_cli.checks import Checked

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", dest="paths", action="append", required=True,
                        help="CR YAML file or directory (repeatable; directories recursively)")
    parser.add_argument("-n", "--namespace", default=os.environ.get("LLMGATE_NAMESPACE",
                                                                    "default"),
                        help="namespace of CRs that do not set metadata.namespace")


def run_checks(paths: Sequence[str], namespace: str, *, placeholder_keys: bool,
               ) -> tuple[Checked, dict[str, Compilation], list[Problem]]:
    """Load, check and compile (with stand-ins for Secrets the files lack), or InputError."""
    from llmgate_cli.checks import check, compile_checked

    docs, problems = load(paths)
    checked = check(docs, namespace=namespace, problems=problems)
    results, compiled = compile_checked(checked, now=datetime.now(UTC),
                                        placeholder_keys=placeholder_keys)
    return checked, results, _sorted(checked.problems + compiled)


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.where.file, p.where.line, p.where.column))


def _github(problem: Problem) -> str:
    level = {"error": "error", "warning": "warning"}.get(problem.severity, "notice")

    def esc(text: str) -> str:
        return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    what = " ".join(p for p in (problem.object, problem.field) if p)
    message = f"{what}: {problem.message}" if what else problem.message
    return (f"::{level} file={esc(problem.where.file).replace(',', '%2C')},"
            f"line={problem.where.line},col={problem.where.column},"
            f"title=llmgate validate::{esc(message)}")


def validate_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="llmgate validate",
        description="Check llmgate CRs as the API server and the operator would: CRD schema, "
                    "CEL rules and the operator's semantic checks. Exit 1 on any error.")
    _common(parser)
    parser.add_argument("-o", "--output", choices=("text", "json", "github"), default="text",
                        help="text (default), json, or GitHub Actions annotations")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="text output: no notices (ignored objects)")
    args = parser.parse_args(argv)
    try:
        checked, _, problems = run_checks(args.paths, args.namespace, placeholder_keys=True)
    except InputError as exc:
        print(f"llmgate validate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    counts = {s: sum(p.severity == s for p in problems) for s in ("error", "warning", "notice")}
    valid = len(checked.valid)
    if args.output == "json":
        json.dump({"problems": [p.as_dict() for p in problems],
                   "summary": {"documents": checked.documents, "valid": valid,
                               "invalid": checked.rejected, "errors": counts["error"],
                               "warnings": counts["warning"], "ignored": counts["notice"]}},
                  sys.stdout, indent=2)
        print()
    else:
        for problem in problems:
            if args.output == "github":
                print(_github(problem))
            elif not (args.quiet and problem.severity == "notice"):
                print(problem)
        print(f"llmgate validate: {checked.documents} document(s), {valid} valid llmgate "
              f"resource(s), {checked.rejected} invalid; {counts['error']} error(s), "
              f"{counts['warning']} warning(s), {counts['notice']} ignored",
              file=sys.stderr)
    return EXIT_INVALID if counts["error"] else EXIT_OK


def compile_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="llmgate compile",
        description="Print the compiled config the operator would write for these CRs "
                    "(one JSON document per namespace; no secret values).")
    _common(parser)
    args = parser.parse_args(argv)
    try:
        checked, results, problems = run_checks(args.paths, args.namespace,
                                                placeholder_keys=False)
    except InputError as exc:
        print(f"llmgate compile: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for problem in problems:
        if problem.severity != "notice":
            print(problem, file=sys.stderr)
    for ns in sorted(results):
        config = results[ns].config
        print(json.dumps(json.loads(config.canonical_json()), indent=2, sort_keys=True,
                         ensure_ascii=False))
    return EXIT_INVALID if checked.errors else EXIT_OK
