#!/usr/bin/env bash
# The remote-code suite (tests/remote_code) on each Python beside the main one (3.10, 3.12, 3.13: INTERPRETERS in
# .ci/interpreters.py), each in a hermetic venv built from .ci/locks/python-<version>.txt; a missing interpreter is
# skipped with its name printed.
#
#   bash .ci/interpreters.sh                 # every interpreter
#   bash .ci/interpreters.sh 3.10            # one
#
# Run under the main environment (the one with transformers_diffclip installed: it writes the fixture folders).
# See docs/version-matrix.md ("Python versions").
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" .ci/interpreters.py run "$@"
