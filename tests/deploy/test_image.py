"""The container image (Dockerfile, deploy/image/rootfs.py): what the issue asks of it,
read from the Dockerfile, and the runtime rootfs.py gathers, built here from this
machine's Python and run chrooted (as the final stage runs it). Building the image
itself needs podman and a base image: deploy/image/smoke.sh (docs/deployment.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import ROOT

pytestmark = pytest.mark.deploy

DOCKERFILE = ROOT / "Dockerfile"
ROOTFS = ROOT / "deploy" / "image" / "rootfs.py"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    joined, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            joined.append(pending.strip())
            pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in joined]


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    start = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[start:]


def test_the_final_stage_is_the_runtime_and_lkps_only() -> None:
    """No shell, package manager or build tool can be in it: it starts from scratch, and
    only copies from the build stage (and imports its modules, once, as a check)."""
    stage = final_stage()
    assert stage[0] == ("FROM", "scratch")
    copies = [args for word, args in stage if word in ("COPY", "ADD")]
    assert copies == ["--from=build /rootfs /", "--from=build /opt/lkps /opt/lkps"]
    [run] = [args for word, args in stage if word == "RUN"]
    assert run.endswith('["python3", "/tmp/rootfs.py", "--check"]')  # exec form: no shell
    settings = dict(stage)
    assert settings["USER"] == "10001:10001"
    assert settings["STOPSIGNAL"] == "SIGTERM"
    assert json.loads(settings["ENTRYPOINT"]) == ["lkps"]
    assert json.loads(settings["CMD"]) == ["serve"]
    assert "/api/health" in settings["HEALTHCHECK"]
    assert "CMD [" in settings["HEALTHCHECK"]  # exec form: the image has no shell
    # The chart's probes and preStop run what the image has: python3 and lkps on PATH.
    assert "PATH=/opt/lkps/bin:" in settings["ENV"]


def test_dependencies_come_from_the_lock_only() -> None:
    runs = " ".join(args for word, args in instructions() if word == "RUN")
    assert runs.count("uv sync") == 2 and runs.count("uv sync --locked") == 2
    assert "pip install" not in runs


def test_the_build_context_has_what_the_dockerfile_copies() -> None:
    allowed = {
        line.removeprefix("!")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    assert "deploy/image/rootfs.py" in allowed
    assert "uv.lock" in allowed


def base_python() -> str:
    """The interpreter a base image would have: Debian's where this machine has it."""
    base: str = getattr(sys, "_base_executable", sys.executable)
    return "/usr/bin/python3" if Path("/usr/bin/python3").exists() else base


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rootfs.py's runtime for a virtual environment at /opt/lkps made by that
    interpreter, with the environment copied in (the final stage's two COPYs)."""
    work = tmp_path_factory.mktemp("image")
    venv = Path("/opt/lkps")
    staged = work / "venv"
    subprocess.run([base_python(), "-m", "venv", "--without-pip", staged], check=True)
    dest = work / "rootfs"
    # rootfs.py reads the environment where the image has it; here it is staged
    # elsewhere, so it is given by its staged path (its interpreter link is the same).
    result = subprocess.run(
        [staged / "bin" / "python", ROOTFS, dest, staged],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    shutil.copytree(staged, dest / venv.relative_to("/"), symlinks=True)
    return dest


def test_the_runtime_is_the_interpreter_and_what_it_loads(rootfs: Path) -> None:
    interpreter = os.path.realpath(base_python())
    assert (rootfs / interpreter.lstrip("/")).is_file()
    libraries = {path.name for path in rootfs.rglob("*.so*")}
    assert {"libc.so.6", "libgcc_s.so.1"} <= libraries
    assert any(name.startswith("ld-linux") for name in libraries)
    assert not [path for path in rootfs.rglob("*") if path.name in ("pip", "ensurepip", "test")]
    assert not list(rootfs.rglob("_tkinter*"))
    # Bytecode for the standard library (a read-only root cannot take it later), none
    # for `python -O`.
    assert list(rootfs.rglob("__pycache__/os.cpython-*.pyc"))
    assert not list(rootfs.rglob("*.opt-[12].pyc"))
    for tool in ("sh", "bash", "apt", "apt-get", "dpkg", "gcc", "ldd", "ldconfig"):
        assert not list(rootfs.rglob(tool)), tool
    passwd = (rootfs / "etc" / "passwd").read_text()
    assert "lkps:x:10001:10001:" in passwd
    assert oct((rootfs / "tmp").stat().st_mode & 0o7777) == "0o1777"
    assert (rootfs / "etc" / "ld.so.cache").is_file()


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
def test_the_runtime_runs_chrooted_as_the_image_user(rootfs: Path) -> None:
    """The final stage's check (every compiled standard-library module imports), and TLS
    with the CA certificates, as user 10001 with nothing else on the filesystem."""
    shutil.copy(ROOTFS, rootfs / "tmp" / "rootfs.py")
    env = {"PATH": "/opt/lkps/bin:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    chroot = [shutil.which("chroot") or "chroot", "--userspec=10001:10001", str(rootfs)]
    check = subprocess.run(
        [*chroot, "python3", "/tmp/rootfs.py", "--check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "compiled modules import" in check.stdout
    tls = subprocess.run(
        [
            *chroot,
            "python3",
            "-c",
            "import ssl; print(ssl.create_default_context().cert_store_stats()['x509_ca'])",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert tls.returncode == 0, tls.stderr
    assert int(tls.stdout) > 50  # the system's CA certificates are found
