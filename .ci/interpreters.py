"""CI across interpreters: the remote-code suite (tests/remote_code) on each Python this machine ships beside the
main one, each in a hermetic venv built from `.ci/locks/python-<version>.txt`.

    python .ci/interpreters.py lock [--upgrade] [VERSION ...]   # regenerate .ci/locks/python-<version>.txt
    python .ci/interpreters.py run [VERSION ...]                # the suites (`bash .ci/interpreters.sh`)

`pyproject.toml` declares Python >= 3.10 and the remote code (the model files every Hub folder ships) must import
on each release of 3.10-3.13. The main suite and the version matrix run on the main interpreter (3.11 here); this
runs the remote-code suite on the others (INTERPRETERS), found as `python3.X` on PATH or in pyenv's versions. An
interpreter that is not there is skipped with its name printed, never silently; a skipped one does not fail CI.

Each interpreter runs the newest matrix release of transformers that supports it (5.24 and later need Python 3.11:
Python 3.10 runs 5.0.0). torch: the CPU wheel of CI (`2.13.0+cpu`) exists here for Python 3.11 only, and the
index's x86_64 wheels of the same release are CUDA builds that import only beside their CUDA libraries. So each
other interpreter gets torch `2.13.0` (that CUDA build, about 500 MB, installed `--no-deps --target` into the cache)
and one copy of its CUDA libraries (the `nvidia-*` wheels of its requirements, about 2.7 GB unpacked, shared by every
interpreter through a `nvidia` link beside torch); torch then imports and computes on the CPU. Both are cached in
$DIFFCLIP_CI_CACHE, so only the first run pays (about 3 minutes of downloads and unpacking here).
Standard library only, like `.ci/matrix.py`, whose helpers it uses. docs/version-matrix.md explains the whole.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import matrix  # noqa: E402  (the sibling script: locks, venvs, fixture, cache lock)
from matrix import CACHE, LOCKS, QUIET, ROOT, CIError, canonical, clean_env, counts, freeze, log, read_lock, run  # noqa: E402


# interpreter -> the transformers release its remote-code suite runs (the newest of the matrix it can install)
INTERPRETERS = {"3.10": "5.0.0", "3.12": "5.25.0", "3.13": "5.25.0"}
REQUIREMENTS = ROOT / ".ci" / "interpreter-requirements.txt"
TORCH_RELEASE = matrix.TORCH.split("+")[0]  # the same torch release as CI's CPU build
# torch's own Linux requirements that it does not need to import and compute on a CPU (Python packages, not libraries)
NOT_NEEDED_ON_CPU = {"triton", "cuda-bindings"}
FORMAT = 1  # bump to rebuild every cached interpreter venv


def find_interpreter(version: str) -> Path | None:
    """`python<version>` on PATH, else in pyenv's versions (`$PYENV_ROOT` or ~/.pyenv), else None. A candidate
    counts only when it runs and is that version (a pyenv shim of a version not selected does not run)."""
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    candidates = [shutil.which(f"python{version}")]
    candidates += sorted(glob.glob(str(root / "versions" / f"{version}.*" / "bin" / f"python{version}")), reverse=True)
    for candidate in filter(None, candidates):
        probe = [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]
        try:
            result = subprocess.run(probe, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
        except (OSError, subprocess.SubprocessError):
            continue
        if result.returncode == 0 and result.stdout.strip() == version:
            return Path(candidate)
    return None


def lock_path(version: str) -> Path:
    return LOCKS / f"python-{version}.txt"


# ------------------------------------------------------------------------------------------------------- torch


def torch_for(version: str) -> tuple[Path, list[Path]]:
    """(the torch folder for `.pth` files, the folders the isolation check must allow) for Python `version`."""
    if version == f"{sys.version_info.major}.{sys.version_info.minor}":
        return matrix.torch_dir(), []
    target = CACHE / f"torch-{TORCH_RELEASE}-py{version.replace('.', '')}"
    if not (target / ".complete").is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=CACHE))
        t0 = time.time()
        platform = ["--only-binary=:all:", "--python-version", version, "--implementation", "cp"]
        run([sys.executable, "-m", "pip", "install", *QUIET, "--no-deps", "--no-compile", "--target", tmp, *platform,
             f"torch=={TORCH_RELEASE}"])  # fmt: skip
        (tmp / ".complete").write_text(TORCH_RELEASE + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        log(f"torch {TORCH_RELEASE} (the index's) for Python {version} in {target} [{time.time() - t0:.0f} s]")
    libraries = cuda_libraries(target)
    link = target / "nvidia"  # where torch's RPATH ($ORIGIN/../../nvidia/...) looks for them
    if not (link.is_symlink() and link.resolve() == (libraries / "nvidia").resolve()):
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(libraries / "nvidia")
    return target, [libraries]


def cuda_libraries(torch_target: Path) -> Path:
    """The `nvidia-*` library wheels a torch install requires on Linux, installed once (per requirement set) into
    the cache: `--target`, no Python packages beside them."""
    metadata = next(torch_target.glob("torch-*.dist-info")) / "METADATA"
    wanted = []
    for line in metadata.read_text().splitlines():
        match = re.fullmatch(r"Requires-Dist: ([^;]+);\s*(.*)", line)
        if match and 'platform_system == "Linux"' in match.group(2) and "extra ==" not in match.group(2):
            name = re.split(r"[\[<>=!~ ]", match.group(1).strip(), maxsplit=1)[0]
            if canonical(name) not in NOT_NEEDED_ON_CPU:
                wanted.append(match.group(1).strip())
    key = hashlib.sha256("\n".join(sorted(wanted)).encode()).hexdigest()[:12]
    target = CACHE / f"cuda-libraries-{key}"
    if (target / ".complete").is_file():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=CACHE))
    t0 = time.time()
    run([sys.executable, "-m", "pip", "install", *QUIET, "--no-compile", "--only-binary=:all:", "--target", tmp,
         *wanted])  # fmt: skip
    (tmp / ".complete").write_text("\n".join(wanted) + "\n")
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    log(f"torch's CUDA libraries ({len(wanted)} requirements) installed in {target} [{time.time() - t0:.0f} s]")
    return target


# ------------------------------------------------------------------------------------------------------ venvs


def bare_venv(python: Path, path: Path, log_file: Path) -> Path:
    """`python -m venv` (no system site-packages); returns its interpreter."""
    run([python, "-m", "venv", path], log_file=log_file)
    return path / "bin" / "python"


def add_torch(venv_python: Path, torch_folder: Path) -> None:
    """Puts the shared torch on the venv's path, after `pip check` ran (pip would see the CUDA build's Python-level
    requirements, triton and cuda-bindings, as missing)."""
    site = run([venv_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    Path(site, "_diffclip_shared_torch.pth").write_text(f"{torch_folder}\n")


def lock(version: str, upgrade: bool) -> None:
    """.ci/locks/python-<version>.txt: transformers==<its release> + .ci/interpreter-requirements.txt, resolved by
    that interpreter in a fresh venv (torch is not in it: shared, added after)."""
    python = find_interpreter(version)
    if python is None:
        raise CIError(f"Python {version} is not on this machine (python{version} on PATH or in pyenv)")
    path, release = lock_path(version), INTERPRETERS[version]
    log(f"locking the venv of Python {version} (transformers {release}) ...")
    with tempfile.TemporaryDirectory(prefix="diffclip-lock-") as work:
        logf = Path(work) / "log.txt"
        venv_python = bare_venv(python, Path(work) / "venv", logf)
        constraints = Path(work) / "constraints.txt"
        keep = "" if upgrade or not path.is_file() else path.read_text()
        constraints.write_text(keep)
        command = [venv_python, "-m", "pip", "install", *QUIET, "-c", constraints]
        run(command + [f"transformers=={release}", "-r", REQUIREMENTS], log_file=logf)
        run([venv_python, "-m", "pip", "check"], log_file=logf)
        pins = freeze(venv_python)
    if "torch" in pins:
        raise CIError(f"the lock venv of Python {version} pulled torch in; add what needs it to {REQUIREMENTS.name}")
    title = f"The remote-code venv of Python {version}: transformers {release} + .ci/interpreter-requirements.txt."
    matrix.write_lock(path, pins, pins["pip"], title)
    main = f"{sys.version_info.major}.{sys.version_info.minor}"
    text = path.read_text().replace(f"# Python {main}, ", f"# Python {version}, ")
    text = text.replace("`bash .ci/lock.sh`", f"`python .ci/interpreters.py lock {version}`")
    path.write_text(text.replace(f"torch {matrix.TORCH}.", f"torch {TORCH_RELEASE} (shared, not listed)."))
    log(f"wrote {path.relative_to(ROOT)} ({len(pins) - 1} pins)")


def venv_for(version: str, python: Path, torch_folder: Path, logs: Path) -> Path:
    """The cached venv of Python `version`, built from its lock when the lock (or the interpreter, torch) changed."""
    lock_file = lock_path(version)
    if not lock_file.is_file():
        raise CIError(f"{lock_file.relative_to(ROOT)} is missing: `python .ci/interpreters.py lock {version}`")
    interpreter = run([python, "-c", "import sys; print(sys.version)"]).stdout.strip()
    key = hashlib.sha256(f"{FORMAT}\n{interpreter}\n{torch_folder}\n{lock_file.read_text()}".encode()).hexdigest()
    venvs = CACHE / "venvs"
    path = venvs / f"py-{version}-{key[:12]}"
    logf = logs / f"venv-py{version}.log"
    logf.write_text("")
    if (path / ".complete").is_file():
        return path
    venvs.mkdir(parents=True, exist_ok=True)
    for old in venvs.glob(f"py-{version}-*"):
        shutil.rmtree(old, ignore_errors=True)
    venv_python = bare_venv(python, path, logf)
    pins = read_lock(lock_file)
    run([venv_python, "-m", "pip", "install", *QUIET, f"pip=={pins['pip']}"], log_file=logf)
    requirements = [f"{name}=={v}" for name, v in pins.items() if name != "pip"]
    run([venv_python, "-m", "pip", "install", *QUIET, "--no-deps", *requirements], log_file=logf)
    run([venv_python, "-m", "pip", "check"], log_file=logf)
    got = freeze(venv_python, logf)
    if got != pins:
        diff = sorted(set(got.items()) ^ set(pins.items()))
        raise CIError(f"the venv of Python {version} does not hold exactly its lock: {diff}")
    add_torch(venv_python, torch_folder)
    (path / ".complete").write_text(lock_file.read_text())
    return path


# -------------------------------------------------------------------------------------------------------- run


def run_suite(version, venv_python: Path, fixture: Path, allowed: list[Path], logs: Path, work: Path):
    """The model files' import, then the remote-code suite with the isolation check. Returns (passed, log line)."""
    modules = work / f"modules-py{version}"
    env = clean_env(
        PATH=f"{venv_python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=str(ROOT / "tests" / "remote_code"),  # the isolation plugin (-p isolation)
        PYTHONNOUSERSITE="1",
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_MODULES_CACHE=str(modules),
        DIFFCLIP_REMOTE_CODE_FIXTURE=str(fixture),
        DIFFCLIP_ISOLATION_ALLOW=os.pathsep.join(str(p) for p in (*allowed, fixture, modules)),
    )
    t0 = time.time()
    logf = logs / f"suite-py{version}.log"
    # the package's model files as a user's interpreter imports them (the source tree on the path, nothing installed)
    probe = "import transformers_diffclip.modeling_diffclip as m, torch, transformers, sys; "
    probe += "print(sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__)"
    source_env = {**env, "PYTHONPATH": str(ROOT / "src")}
    imported = run([venv_python, "-c", probe], env=source_env, check=False, log_file=logf)
    if imported.returncode != 0:
        return False, f"Python {version}: the model files do NOT import (log {logf}) [{time.time() - t0:.0f} s]"
    versions = imported.stdout.strip().splitlines()[-1]
    report = work / f"isolation-py{version}.json"
    command = [venv_python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "isolation", "tests/remote_code"]
    result = run(command, env={**env, "DIFFCLIP_ISOLATION_REPORT": str(report)}, check=False, log_file=logf)
    summary, ok = counts(result.stdout), result.returncode == 0
    if report.is_file():
        isolation = json.loads(report.read_text())
        summary += f" (isolation: {isolation['modules']} modules, {len(isolation['outside'])} from outside)"
    else:
        summary, ok = summary + " (isolation: NOT CHECKED)", False
    if result.returncode != 0:
        summary += f" FAILED (exit {result.returncode}, log {logf})"
    return ok, f"Python {versions}: model files import; remote-code {summary} [{time.time() - t0:.0f} s]"


def run_all(versions: list[str]) -> int:
    matrix.hold_cache()
    start = time.time()
    logs = CACHE / "interpreters" / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="work-", dir=CACHE / "interpreters"))
    fixture = None
    failed = []
    main = f"{sys.version_info.major}.{sys.version_info.minor}"
    if main not in versions:
        log(f"Python {main}: the main interpreter (the main suite and the version matrix run on it)")
    for version in versions:
        python = find_interpreter(version)
        if python is None:
            log(f"Python {version}: SKIPPED, no interpreter (no python{version} on PATH or in pyenv's versions)")
            continue
        try:
            torch_folder, allowed = torch_for(version)
            venv = venv_for(version, python, torch_folder, logs)
        except (CIError, OSError) as error:
            log(f"Python {version}: the venv could not be built: {error}")
            failed.append(version)
            continue
        if fixture is None:
            fixture = matrix.make_fixture(logs)
        ok, line = run_suite(version, venv / "bin" / "python", fixture, [torch_folder, *allowed], logs, work)
        log(line)
        if not ok:
            failed.append(version)
    shutil.rmtree(work, ignore_errors=True)
    log(f"interpreters: {time.time() - start:.0f} s in all; logs in {logs}")
    if failed:
        log(f"interpreters FAILED: Python {', '.join(failed)}")
        return 1
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    lock_parser = sub.add_parser("lock", help="regenerate .ci/locks/python-<version>.txt (all, or those named)")
    lock_parser.add_argument("versions", nargs="*", metavar="VERSION")
    lock_parser.add_argument("--upgrade", action="store_true", help="resolve afresh instead of keeping the pins")
    run_parser = sub.add_parser("run", help="the remote-code suite per interpreter")
    run_parser.add_argument("versions", nargs="*", metavar="VERSION")
    args = parser.parse_args(argv)
    try:
        unknown = [v for v in args.versions if v not in INTERPRETERS]
        if unknown:
            raise CIError(f"no transformers release is set for Python {', '.join(unknown)} (INTERPRETERS, {__file__})")
        if args.command == "lock":
            for version in args.versions or INTERPRETERS:
                lock(version, args.upgrade)
            return 0
        return run_all(args.versions or list(INTERPRETERS))
    except CIError as error:
        log(f"ERROR: {error}")
        return 1
    except subprocess.SubprocessError as error:
        log(f"ERROR: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
