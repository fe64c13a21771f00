#!/usr/bin/env bash
# The version matrix: the remote-code suite (tests/remote_code) and transformers' own common model tests
# (tests/test_transformers_common.py, from each release's sdist) once per transformers release, each in a hermetic
# venv built from .ci/locks/transformers-<release>.txt, each run ending with the isolation check.
#
#   bash .ci/version_matrix.sh                 # 4.57.6 5.0.0 5.24.0 5.25.0 (RELEASES in .ci/matrix.py)
#   bash .ci/version_matrix.sh 5.24.0          # one release (its lock must exist: bash .ci/lock.sh 5.24.0)
#
# Run under the main environment (the one with transformers_diffclip installed: it writes the fixture folders).
# Venvs and the shared torch are cached in $DIFFCLIP_CI_CACHE (default ~/.cache/transformers-diffclip/ci).
# See docs/version-matrix.md.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" .ci/matrix.py run "$@"
