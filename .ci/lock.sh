#!/usr/bin/env bash
# Regenerate the lock files (.ci/locks/): `main.txt` (what .ci/run installs: torch + -e .[dev]) and
# `transformers-<release>.txt` (one per version-matrix release), each resolved in a fresh venv.
#
#   bash .ci/lock.sh                 # all; keeps the current pins where they still fit (adds a new dependency's)
#   bash .ci/lock.sh main            # only the main lock (after adding a dependency to pyproject.toml)
#   bash .ci/lock.sh 5.26.0          # a new matrix release (add it to RELEASES in .ci/matrix.py too)
#   bash .ci/lock.sh --upgrade       # resolve everything afresh (newest releases): a deliberate move
#
# See docs/version-matrix.md.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" .ci/matrix.py lock "$@"
