"""`python -m llmgate_cli` is the `llmgate` command."""

import sys

from llmgate_cli import main

sys.exit(main())
