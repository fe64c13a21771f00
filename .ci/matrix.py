"""CI environments: the lock files, the hermetic version-matrix venvs, and the try-the-newest-releases run.

    python .ci/matrix.py lock [--upgrade] [main] [RELEASE ...]   # regenerate .ci/locks/ (`bash .ci/lock.sh`)
    python .ci/matrix.py check-lock                              # is what the project needs pinned in the lock?
    python .ci/matrix.py run [RELEASE ...]                       # the matrix (`bash .ci/version_matrix.sh`)
    python .ci/matrix.py try-latest [--no-main]                  # newest releases (`bash .ci/try_latest.sh`)

Standard library only; runs under any Python >= 3.10 (the one of the main environment in CI). Each matrix venv is
`python -m venv` WITHOUT system site-packages, holding exactly `.ci/locks/transformers-<release>.txt` (that
release's own huggingface_hub, tokenizers, kernels or none, plus what the suites need). Only torch is shared: one
CPU build, installed once with `pip install --no-deps --target` into the cache and put on each venv's path by a
`.pth` file; its own small dependencies (sympy, networkx, jinja2, fsspec, ...) are in each venv's lock. Venvs are
cached under $DIFFCLIP_CI_CACHE (default ~/.cache/transformers-diffclip/ci) by a hash of their lock and reused
while it matches; pip's own cache keeps the wheels. docs/version-matrix.md explains the whole.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
CI = ROOT / ".ci"
LOCKS = CI / "locks"
MAIN_LOCK = LOCKS / "main.txt"
SUITE_REQUIREMENTS = CI / "matrix-requirements.txt"
# The transformers releases of the matrix: the last 4.x, the first 5.x, the one before the newest, the newest.
RELEASES = ("4.57.6", "5.0.0", "5.24.0", "5.25.0")
# The one torch build of CI (the CPU wheel; a plain `torch` requirement would pull a multi-GB CUDA build).
TORCH = "2.13.0+cpu"
CACHE = Path(os.environ.get("DIFFCLIP_CI_CACHE") or Path.home() / ".cache" / "transformers-diffclip" / "ci")
FORMAT = 1  # bump to rebuild every cached venv
QUIET = ["--quiet", "--disable-pip-version-check", "--no-input"]
NOT_LOCKED = {"pip", "wheel", "transformers-diffclip"}  # pip is pinned on its own line


class CIError(RuntimeError):
    pass


def log(message: str) -> None:
    print(message, flush=True)


def clean_env(**extra) -> dict[str, str]:
    """This process's environment without what would reach into another environment (PYTHONPATH, an active venv,
    pip install locations)."""
    drop = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV", "PIP_TARGET", "PIP_PREFIX")
    env = {k: v for k, v in os.environ.items() if k not in drop and k != "PIP_USER"}
    env.update(extra)
    return env


def run(command, *, log_file: Path | None = None, env=None, check=True, cwd=ROOT) -> subprocess.CompletedProcess:
    """`command` with its output captured (and appended to `log_file`); by default in `clean_env()`."""
    command = [str(part) for part in command]
    env = clean_env() if env is None else env
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if log_file is not None:
        with open(log_file, "a") as out:
            out.write(f"$ {' '.join(command)}\n{result.stdout}{result.stderr}\n[exit {result.returncode}]\n")
    if check and result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise CIError(f"`{' '.join(command[:6])} ...` failed (exit {result.returncode}):\n{tail}")
    return result


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    """{canonical name: version} of a lock file (`name==version` lines; comments ignored)."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            if not version:
                raise CIError(f"{path}: `{line}` is not a `name==version` pin")
            pins[canonical(name)] = version.strip()
    return pins


def pip_pin(upgrade: bool = False) -> list[str]:
    """The pip release of CI (the `pip==` line of the main lock); the newest one when there is none or `upgrade`."""
    if not upgrade and MAIN_LOCK.is_file() and "pip" in read_lock(MAIN_LOCK):
        return [f"pip=={read_lock(MAIN_LOCK)['pip']}"]
    return ["--upgrade", "pip"]


def freeze(python: Path, log_file: Path | None = None) -> dict[str, str]:
    out = run([python, "-m", "pip", "freeze", "--all", "--exclude-editable"], log_file=log_file).stdout
    pins = {}
    for line in out.splitlines():
        if "==" in line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonical(name)] = version.strip()
    return pins


def write_lock(path: Path, pins: dict[str, str], pip_version: str, title: str, exclude=()) -> None:
    lines = [
        f"# {title}",
        "# Generated by `bash .ci/lock.sh` -- do not edit by hand; see docs/version-matrix.md.",
        f"# Python {sys.version_info.major}.{sys.version_info.minor}, torch {TORCH}.",
        f"pip=={pip_version}",
    ]
    lines += [f"{n}=={v}" for n, v in sorted(pins.items()) if n not in NOT_LOCKED and n not in exclude]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------- shared torch


def torch_dir() -> Path:
    """The shared torch install (`pip install --no-deps --target`), built once per torch build and Python."""
    target = CACHE / f"torch-{TORCH}-py{sys.version_info.major}{sys.version_info.minor}"
    if (target / ".complete").is_file():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=CACHE))
    t0 = time.time()
    run([sys.executable, "-m", "pip", "install", *QUIET, "--no-deps", "--target", tmp, f"torch=={TORCH}"])
    (tmp / ".complete").write_text(TORCH + "\n")
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    log(f"shared torch {TORCH} installed in {target} [{time.time() - t0:.0f} s]")
    return target


def new_venv(path: Path, *, shared_torch: Path | None, log_file: Path, upgrade_pip: bool = False) -> Path:
    """`python -m venv` (no system site-packages) + the shared torch on its path + CI's pip."""
    base = getattr(sys, "_base_executable", sys.executable)
    run([base, "-m", "venv", path], log_file=log_file)
    python = path / "bin" / "python"
    if shared_torch is not None:
        site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
        Path(site, "_diffclip_shared_torch.pth").write_text(f"{shared_torch}\n")
    run([python, "-m", "pip", "install", *QUIET, *pip_pin(upgrade_pip)], log_file=log_file)
    return python


# ------------------------------------------------------------------------------------------------------ locks


def lock_main(upgrade: bool) -> None:
    """.ci/locks/main.txt: what `.ci/run` installs (torch + `-e .[dev,docs]`), resolved in a fresh venv."""
    log("locking the main environment (torch + -e .[dev,docs]) ...")
    with tempfile.TemporaryDirectory(prefix="diffclip-lock-") as work:
        logf = Path(work) / "log.txt"
        try:
            python = new_venv(Path(work) / "venv", shared_torch=None, log_file=logf, upgrade_pip=upgrade)
            constraints = Path(work) / "constraints.txt"
            keep = "" if upgrade or not MAIN_LOCK.is_file() else MAIN_LOCK.read_text()
            constraints.write_text(f"torch=={TORCH}\n{keep}")
            run([python, "-m", "pip", "install", *QUIET, "-c", constraints, f"torch=={TORCH}", "-e", f"{ROOT}[dev,docs]"],
                log_file=logf)  # fmt: skip
            run([python, "-m", "pip", "check"], log_file=logf)
            pins = freeze(python)
        except CIError as error:
            hint = "" if upgrade else "\n(a kept pin may conflict with a new dependency: `bash .ci/lock.sh --upgrade`)"
            raise CIError(f"{error}{hint}") from None
    if pins.get("torch") != TORCH:
        raise CIError(f"the lock venv got torch {pins.get('torch')}, expected {TORCH}")
    write_lock(MAIN_LOCK, pins, pins["pip"], "What `.ci/run` installs in the main environment: torch + `-e .[dev,docs]`.")
    log(f"wrote {MAIN_LOCK.relative_to(ROOT)} ({len(pins) - 2} pins)")


def lock_release(release: str, upgrade: bool) -> None:
    """.ci/locks/transformers-<release>.txt: transformers==release + the suites' needs, resolved in a fresh venv."""
    path = LOCKS / f"transformers-{release}.txt"
    log(f"locking the matrix venv of transformers {release} ...")
    shared = torch_dir()
    with tempfile.TemporaryDirectory(prefix="diffclip-lock-") as work:
        logf = Path(work) / "log.txt"
        python = new_venv(Path(work) / "venv", shared_torch=shared, log_file=logf)
        constraints = Path(work) / "constraints.txt"
        keep = "" if upgrade or not path.is_file() else path.read_text()
        constraints.write_text(f"torch=={TORCH}\n{keep}")
        command = [python, "-m", "pip", "install", *QUIET, "-c", constraints]
        command += [f"transformers=={release}", "-r", SUITE_REQUIREMENTS]
        run(command, log_file=logf)
        run([python, "-m", "pip", "check"], log_file=logf)
        pins = freeze(python)
    if pins.get("torch") != TORCH:
        raise CIError(f"the lock venv of {release} sees torch {pins.get('torch')}, expected the shared {TORCH}")
    title = f"The version-matrix venv of transformers {release} (+ .ci/matrix-requirements.txt; torch is shared)."
    write_lock(path, pins, pins["pip"], title, exclude={"torch"})
    log(f"wrote {path.relative_to(ROOT)} ({len(pins) - 2} pins)")


def check_lock() -> None:
    """Every distribution that `transformers-diffclip[dev,docs]` needs (transitively) is pinned in the main lock at the
    installed version: a branch that adds a dependency without `bash .ci/lock.sh` fails here, by name."""
    from importlib import metadata

    from packaging.requirements import Requirement  # pip's vendored copy is not public; packaging is in the lock

    pins = read_lock(MAIN_LOCK)
    missing, wrong, seen = [], [], set()
    todo = [("transformers-diffclip", {"dev", "docs"})]
    while todo:
        name, extras = todo.pop()
        key = (canonical(name), tuple(sorted(extras)))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.append(f"{name} (not installed)")
            continue
        if canonical(name) not in NOT_LOCKED:
            locked = pins.get(canonical(name))
            if locked is None:
                missing.append(f"{name}=={dist.version}")
            elif locked != dist.version:
                wrong.append(f"{name}: installed {dist.version}, locked {locked}")
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (extras or {""})):
                todo.append((req.name, set(req.extras)))
    if missing or wrong:
        raise CIError(
            "the main lock (.ci/locks/main.txt) does not match what the project needs:\n  "
            + "\n  ".join(missing + wrong)
            + "\nregenerate it with `bash .ci/lock.sh main` (docs/version-matrix.md) and commit it"
        )
    log(f"lock check: the {len(seen)} requirements of transformers-diffclip[dev,docs] are pinned in .ci/locks/main.txt")


# ------------------------------------------------------------------------------------------------ matrix venvs


def venv_for(release: str, shared: Path, logs: Path) -> Path:
    """The cached venv of `release`, built from its lock when the lock (or Python, torch, FORMAT) changed."""
    lock = LOCKS / f"transformers-{release}.txt"
    if not lock.is_file():
        raise CIError(f"{lock.relative_to(ROOT)} is missing: `bash .ci/lock.sh {release}` writes it")
    key = hashlib.sha256(f"{FORMAT}\n{sys.version}\n{shared}\n{lock.read_text()}".encode()).hexdigest()[:12]
    venvs = CACHE / "venvs"
    path = venvs / f"tf-{release}-{key}"
    logf = logs / f"venv-{release}.log"
    logf.write_text("")
    if (path / ".complete").is_file():
        return path
    venvs.mkdir(parents=True, exist_ok=True)
    for old in venvs.glob(f"tf-{release}-*"):  # other locks of this release, and half-built ones
        shutil.rmtree(old, ignore_errors=True)
    # built in place; the marker written last tells a complete venv from one a killed run left half-built
    python = new_venv(path, shared_torch=shared, log_file=logf)
    pins = read_lock(lock)
    requirements = [f"{name}=={version}" for name, version in pins.items() if name != "pip"]
    run([python, "-m", "pip", "install", *QUIET, "--no-deps", *requirements], log_file=logf)
    run([python, "-m", "pip", "check"], log_file=logf)
    got = {k: v for k, v in freeze(python, logf).items() if k != "torch"}
    want = pins
    if got != want:
        diff = sorted(set(got.items()) ^ set(want.items()))
        raise CIError(f"the venv of {release} does not hold exactly its lock: {diff}")
    (path / ".complete").write_text(lock.read_text())
    return path


def counts(output: str) -> str:
    """pytest's closing counts (`51 passed, 2 skipped`) from its -q output."""
    for line in reversed(output.strip().splitlines()):
        line = line.strip("= ")
        if re.search(r"\d+ (passed|failed|skipped|errors?|xfailed|xpassed)", line) or "no tests ran" in line:
            return re.sub(r" in [\d.]+s.*$", "", line)
    return "no pytest summary"


def run_suites(label, python: Path, fixture: Path, shared: Path | None, logs: Path, work: Path) -> tuple[bool, str]:
    """The remote-code suite, then transformers' common tests, each in its own process, each ending with the
    isolation check (tests/remote_code/isolation.py); then a two-process fine-tune (.ci/matrix_finetune.py).
    Returns (passed, the log line)."""
    # the cache of tests/_transformers_tests.py, shared with the main suite (one copy per release)
    default = Path.home() / ".cache" / "transformers-diffclip" / "transformers-tests"
    tests_cache = Path(os.environ.get("DIFFCLIP_TRANSFORMERS_TESTS_CACHE") or default)
    modules = work / f"modules-{label}"
    env = clean_env(
        PATH=f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=str(ROOT / "tests" / "remote_code"),  # the isolation plugin (-p isolation)
        PYTHONNOUSERSITE="1",
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_MODULES_CACHE=str(modules),
        DIFFCLIP_REMOTE_CODE_FIXTURE=str(fixture),
        DIFFCLIP_TRANSFORMERS_TESTS_CACHE=str(tests_cache),
        DIFFCLIP_ISOLATION_ALLOW=os.pathsep.join(str(p) for p in (shared, fixture, modules, tests_cache) if p),
    )
    results, ok = [], True
    t0 = time.time()
    # transformers' test files of this release, fetched before the suite so that a failed fetch fails the run
    # (the test module alone would skip)
    fetch_log = logs / f"fetch-{label}.log"
    fetch = run([python, ROOT / "tests" / "_transformers_tests.py"], env=env, check=False, log_file=fetch_log)
    suites = [("remote-code", ["tests/remote_code"], {})]
    common_env = {"DIFFCLIP_COMMON_TESTS_FOLDER": str(fixture / "diffclip"), "DIFFCLIP_COMMON_TESTS_REQUIRED": "1"}
    suites.append(("common", ["tests/test_transformers_common.py"], common_env))
    for name, paths, extra in suites:
        if name == "common" and fetch.returncode != 0:
            ok = False
            results.append(f"{name} NOT RUN (transformers' tests could not be fetched, see {logs}/fetch-{label}.log)")
            continue
        report = work / f"isolation-{label}-{name}.json"
        command = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "isolation", *paths]
        result = run(command, env={**env, **extra, "DIFFCLIP_ISOLATION_REPORT": str(report)}, check=False,
                     log_file=logs / f"suite-{label}-{name}.log")  # fmt: skip
        summary = counts(result.stdout)
        if report.is_file():
            isolation = json.loads(report.read_text())
            summary += f" (isolation: {isolation['modules']} modules, {len(isolation['outside'])} from outside)"
        else:
            summary += " (isolation: NOT CHECKED)"
            ok = False
        if result.returncode != 0:
            ok = False
            summary += f" FAILED (exit {result.returncode}, log {logs}/suite-{label}-{name}.log)"
        results.append(f"{name} {summary}")
    # one two-process fine-tune through the command (the package from src/, its own process tree: the suites'
    # isolation check is not involved), since Trainer's saving changed across the releases
    finetune_log = logs / f"finetune-{label}.log"
    command = [python, CI / "matrix_finetune.py", fixture, work / f"finetune-{label}"]
    result = run(command, env=env, check=False, log_file=finetune_log)
    last = (result.stdout.strip().splitlines() or ["no output"])[-1]
    if result.returncode != 0:
        ok = False
        last += f" FAILED (exit {result.returncode}, log {finetune_log})"
    results.append(f"finetune {last}")
    return ok, f"transformers {label}: {'; '.join(results)} [{time.time() - t0:.0f} s]"


def make_fixture(logs: Path) -> Path:
    """The converted-style folders under test, written once by the main environment's package."""
    fixture = CACHE / "run" / "fixture"
    if fixture.exists():
        shutil.rmtree(fixture)
    env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_OFFLINE": "1"}
    run([sys.executable, ROOT / "tests" / "remote_code" / "make_fixture.py", "--out", fixture], env=env,
        log_file=logs / "fixture.log")  # fmt: skip
    return fixture


def hold_cache() -> None:
    """One matrix / try-latest run at a time per cache folder (they rebuild and remove venvs there); held until
    the process ends."""
    import fcntl

    CACHE.mkdir(parents=True, exist_ok=True)
    handle = open(CACHE / ".lock", "w")  # noqa: SIM115 (kept open for the life of the process)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log(f"waiting for another run that uses {CACHE} ...")
        fcntl.flock(handle, fcntl.LOCK_EX)
    globals()["_cache_lock"] = handle


def matrix(releases: list[str]) -> int:
    hold_cache()
    start = time.time()
    logs = CACHE / "run" / "logs"
    if logs.exists():
        shutil.rmtree(logs)
    logs.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="work-", dir=CACHE / "run"))
    fixture = make_fixture(logs)
    shared = torch_dir()
    failed = []
    # venvs are built two at a time (pip's time is mostly downloads and unpacking) while the suites run, one
    # release after another, as soon as its venv is ready (the suites are CPU-bound)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {release: pool.submit(venv_for, release, shared, logs) for release in releases}
        for release, future in futures.items():
            try:
                venv = future.result()
            except (CIError, OSError) as error:
                log(f"=== transformers {release}: the venv could not be built: {error}")
                failed.append(f"{release} (venv)")
                continue
            ok, line = run_suites(release, venv / "bin" / "python", fixture, shared, logs, work)
            log(line)
            if not ok:
                failed.append(release)
    shutil.rmtree(work, ignore_errors=True)
    log(f"version matrix: {time.time() - start:.0f} s in all; logs in {logs}")
    if failed:
        log(f"version matrix FAILED: {', '.join(failed)}")
        return 1
    return 0


# -------------------------------------------------------------------------------------------------- try-latest


def newest(package: str, python: Path) -> str:
    out = run([python, "-m", "pip", "index", "versions", package], check=False).stdout
    match = re.search(r"Available versions: (.*)", out)
    return match.group(1).split(", ")[0] if match else "?"


def try_latest(with_main: bool) -> int:
    """The newest transformers, huggingface_hub and tokenizers (unlocked) against the matrix suites and, unless
    --no-main, the main suite; torch: $DIFFCLIP_TRY_TORCH, else CI's CPU build (see the report's torch line)."""
    hold_cache()
    start = time.time()
    logs = CACHE / "latest" / "logs"
    shutil.rmtree(CACHE / "latest", ignore_errors=True)
    logs.mkdir(parents=True)
    work = CACHE / "latest"
    torch_spec = os.environ.get("DIFFCLIP_TRY_TORCH")
    shared = None if torch_spec else torch_dir()
    newest_pkgs = ["transformers", "huggingface_hub", "tokenizers"]
    torch_req = [f"torch=={torch_spec}"] if torch_spec else []
    lines, ok = [], True

    python = new_venv(work / "venv-matrix", shared_torch=shared, log_file=logs / "venv-matrix.log")
    on_index = {name: newest(name, python) for name in [*newest_pkgs, "torch"]}
    command = [python, "-m", "pip", "install", *QUIET, "--upgrade", *newest_pkgs, *torch_req, "-r", SUITE_REQUIREMENTS]
    if shared is not None:
        (work / "torch.txt").write_text(f"torch=={TORCH}\n")
        command += ["-c", work / "torch.txt"]
    run(command, log_file=logs / "venv-matrix.log")
    got = freeze(python)
    versions = ", ".join(f"{n} {got.get(canonical(n), '?')} (newest on the index: {on_index[n]})" for n in on_index)
    lines.append(f"tried: {versions}")
    if not torch_spec:
        lines.append(
            f"torch: CI's CPU build {TORCH} (the newest CPU build this machine has; newer torch releases on the index "
            f"are CUDA builds of several GB: DIFFCLIP_TRY_TORCH={on_index['torch']} bash .ci/try_latest.sh tries one)"
        )
    fixture = make_fixture(logs)
    passed, line = run_suites("latest", python, fixture, shared, logs, work)
    ok &= passed
    lines.append(line.replace("transformers latest", f"transformers {got.get('transformers')} (matrix suites)"))

    if with_main:
        python = new_venv(work / "venv-main", shared_torch=shared, log_file=logs / "venv-main.log")
        command = [python, "-m", "pip", "install", *QUIET, "-e", f"{ROOT}[dev,docs]", *torch_req]
        if shared is not None:
            command += ["-c", work / "torch.txt"]
        run(command, log_file=logs / "venv-main.log")
        run([python, "-m", "pip", "install", *QUIET, "--upgrade", *newest_pkgs, *torch_req]
            + (["-c", work / "torch.txt"] if shared is not None else []), log_file=logs / "venv-main.log")  # fmt: skip
        env = clean_env(PATH=f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}", HF_HUB_OFFLINE="1")
        run([python, ROOT / "tests" / "_transformers_tests.py"], env=env, check=False, log_file=logs / "main.log")
        t0 = time.time()
        result = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", "tests"], env=env, check=False,
                     log_file=logs / "main.log")  # fmt: skip
        failures = [ln for ln in result.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
        ok &= result.returncode == 0
        lines.append(f"main suite: {counts(result.stdout)} [{time.time() - t0:.0f} s]")
        lines += [f"  {ln}" for ln in failures[:40]]
    verdict = "everything passed" if ok else "SOMETHING BROKE"
    lines.append(f"try-latest: {verdict} [{time.time() - start:.0f} s]; logs in {logs}")
    log("\n".join(lines))
    return 0 if ok else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    lock = sub.add_parser("lock", help="regenerate .ci/locks/ (main and every matrix release, or those named)")
    lock.add_argument("targets", nargs="*", help="`main` and/or transformers releases (default: all)")
    lock.add_argument("--upgrade", action="store_true", help="resolve afresh instead of keeping the current pins")
    sub.add_parser("check-lock", help="fail when the installed project needs something the main lock lacks")
    matrix_parser = sub.add_parser("run", help="the version matrix")
    matrix_parser.add_argument("releases", nargs="*")
    latest = sub.add_parser("try-latest", help="the newest releases against the suites")
    latest.add_argument("--no-main", action="store_true", help="only the matrix suites, not the main suite")
    args = parser.parse_args(argv)
    try:
        if args.command == "lock":
            LOCKS.mkdir(exist_ok=True)
            targets = args.targets or ["main", *RELEASES]
            for target in targets:
                if target == "main":
                    lock_main(args.upgrade)
                else:
                    lock_release(target, args.upgrade)
            return 0
        if args.command == "check-lock":
            check_lock()
            return 0
        if args.command == "run":
            env_releases = os.environ.get("DIFFCLIP_TRANSFORMERS_VERSIONS", "").split()
            return matrix(args.releases or env_releases or list(RELEASES))
        return try_latest(not args.no_main)
    except CIError as error:
        log(f"ERROR: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
