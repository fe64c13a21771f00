#!/usr/bin/env bash
# The remote-code suite (tests/remote_code) once per transformers version of the supported range, each in its own
# virtual environment, against converted-style folders written by the current environment's package.
#
#   .ci/version_matrix.sh                      # 4.57.6 (last 4.x), 5.0.0 (oldest 5.x), 5.24.0 (newest 5.x)
#   DIFFCLIP_TRANSFORMERS_VERSIONS="5.10.1" .ci/version_matrix.sh
#   DIFFCLIP_MATRIX_SYSTEM=1 .ci/version_matrix.sh   # also run the suite under this environment's transformers
#
# Each venv is `python -m venv --system-site-packages` (it reuses the installed torch, numpy, pillow, ftfy, ...,
# also when they live in an activated virtual environment: a .pth file adds its site-packages) plus
# `pip install transformers==X`, which brings the huggingface_hub / tokenizers releases X pins. torch is held
# at the installed build by a constraint, so pip can never pull another (e.g. a CUDA) torch. Venvs live under
# .ci-venvs/ (git-ignored) and are reused when they already hold the right release.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
VERSIONS=${DIFFCLIP_TRANSFORMERS_VERSIONS:-"4.57.6 5.0.0 5.24.0"}
ROOT=${DIFFCLIP_VENV_ROOT:-.ci-venvs}
FIXTURE="$ROOT/fixture"
LOGS="$ROOT/logs"
mkdir -p "$ROOT" "$LOGS"
start=$SECONDS

# 1. The folders under test, written once by this environment's package (the "converter" side).
HF_HUB_DISABLE_PROGRESS_BARS=1 "$PYTHON" tests/remote_code/make_fixture.py --out "$FIXTURE" 2>"$LOGS/fixture.err" || {
    cat "$LOGS/fixture.err"
    exit 1
}

# 2. One venv per version, created in parallel (the time is network and unpacking, not CPU).
TORCH_VERSION=$("$PYTHON" -c "import torch; print(torch.__version__)")
# The site-packages of the environment $PYTHON runs in (a virtual environment's own, when one is active).
PARENT_SITE=$("$PYTHON" -c 'import site, sysconfig
paths = [*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
print("\n".join(dict.fromkeys(paths)))')
CONSTRAINTS="$ROOT/constraints.txt"
echo "torch==$TORCH_VERSION" >"$CONSTRAINTS"

make_venv() {
    local version=$1 venv="$ROOT/tf-$1"
    if [ -x "$venv/bin/python" ] &&
        [ "$("$venv/bin/python" -c 'import torch, transformers; print(transformers.__version__)' 2>/dev/null)" = "$version" ]; then
        echo "reused"
        return 0
    fi
    rm -rf "$venv"
    "$PYTHON" -m venv --system-site-packages "$venv"
    # --system-site-packages reaches the BASE interpreter's packages only; when $PYTHON runs inside a virtual
    # environment (where torch & co are installed), a .pth file adds that environment's site-packages too, after
    # the new venv's own (so its transformers wins).
    "$venv/bin/python" -c 'import pathlib, sys, sysconfig
pathlib.Path(sysconfig.get_paths()["purelib"], "_diffclip_parent_env.pth").write_text(sys.argv[1] + "\n")' "$PARENT_SITE"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -c "$CONSTRAINTS" "transformers==$version"
    "$venv/bin/python" - "$TORCH_VERSION" <<'EOF'
import sys

import torch
import transformers

assert torch.__version__ == sys.argv[1], f"the venv has torch {torch.__version__}, expected {sys.argv[1]}"
print(f"transformers {transformers.__version__}, torch {torch.__version__}")
EOF
}

declare -A pids
for version in $VERSIONS; do
    (
        t0=$SECONDS
        make_venv "$version" >"$LOGS/venv-$version.log" 2>&1
        echo "venv $version: $((SECONDS - t0)) s" >>"$LOGS/venv-$version.log"
    ) &
    pids[$version]=$!
done
failed=()
for version in $VERSIONS; do
    if ! wait "${pids[$version]}"; then
        echo "=== could not create the venv for transformers $version:"
        tail -n 30 "$LOGS/venv-$version.log"
        failed+=("$version (venv)")
    else
        tail -n 1 "$LOGS/venv-$version.log"
    fi
done
echo "fixture and venvs ready after $((SECONDS - start)) s"

# 3. The suite in each venv, one after another (the tests are CPU-bound). Each run is its own process with its own
#    module cache, and cannot import transformers_diffclip (tests/remote_code/remote_env.py blocks it).
run_suite() {
    local label=$1 python=$2 t0=$SECONDS
    if DIFFCLIP_REMOTE_CODE_FIXTURE="$FIXTURE" HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 \
        "$python" -m pytest tests/remote_code -q -p no:cacheprovider >"$LOGS/suite-$label.log" 2>&1; then
        echo "transformers $label: $(tail -n 1 "$LOGS/suite-$label.log") [$((SECONDS - t0)) s]"
    else
        echo "=== transformers $label: remote-code suite FAILED [$((SECONDS - t0)) s]"
        tail -n 60 "$LOGS/suite-$label.log"
        failed+=("$label")
    fi
}
for version in $VERSIONS; do
    if [ -x "$ROOT/tf-$version/bin/python" ] && [[ ! " ${failed[*]-} " =~ " $version (venv) " ]]; then
        run_suite "$version" "$ROOT/tf-$version/bin/python"
    fi
done
if [ "${DIFFCLIP_MATRIX_SYSTEM:-0}" = "1" ]; then
    run_suite "$("$PYTHON" -c 'import transformers; print(transformers.__version__)')-system" "$PYTHON"
fi

echo "version matrix: $((SECONDS - start)) s in all"
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
