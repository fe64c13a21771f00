#!/usr/bin/env bash
# Try the newest releases of transformers, huggingface_hub and tokenizers (unlocked) against the version-matrix
# suites and the main suite, and say what breaks. torch stays CI's CPU build unless DIFFCLIP_TRY_TORCH names another
# (newer torch releases on the index are multi-GB CUDA builds). Nothing in the checkout changes; moving the locks
# is then `bash .ci/lock.sh --upgrade` (see docs/version-matrix.md).
#
#   bash .ci/try_latest.sh               # matrix suites + main suite
#   bash .ci/try_latest.sh --no-main     # matrix suites only
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" .ci/matrix.py try-latest "$@"
