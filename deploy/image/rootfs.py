"""Assemble the image's root filesystem: the Python runtime LKPS's virtual environment
runs on, and nothing else.

    python3 deploy/image/rootfs.py DEST VENV
    python3 deploy/image/rootfs.py --check          (in the final image)

Run by the Dockerfile's build stage with the base image's `python3` (the interpreter the
virtual environment VENV was made with). DEST receives, at their own paths, the
interpreter, its standard library (without its tests, IDLE, Tk, ensurepip, lib2to3 and
the base's own site-packages, where pip lives; compiled where the base has no bytecode),
every shared library that the
interpreter, the standard library's extensions and VENV's extensions load (their `ldd`
closure, with the dynamic loader and `libgcc_s`, which glibc loads when a thread exits),
the CA certificates and the few files glibc and Python read from /etc, an `/etc/passwd`
with root and the image's user `lkps` (10001), an empty `/tmp`, and the directories and
files a container runtime mounts over. The final stage starts from `scratch` with DEST
and VENV: no shell, no package manager, no compiler; about 50 MB where a Debian base
with Python is 170 MB.

VENV itself is not copied (the Dockerfile copies it as a layer of its own); a library it
needs from the system that `ldd` cannot find fails the build rather than the first
request, and so does, with `--check` in the final stage, any compiled module of the
standard library or VENV that does not import there. Standard library only: it runs on
whichever base image the build names.
"""

from __future__ import annotations

import compileall
import importlib
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path

USER_ID = 10001
HOME = "/var/lib/lkps"

# Standard-library directories nothing in LKPS imports (tests, GUIs, installers, 2to3)
# and the base's own site-packages (pip, setuptools): build tools, not a runtime.
STDLIB_EXCLUDED = frozenset(
    {
        "test",
        "idlelib",
        "tkinter",
        "turtledemo",
        "ensurepip",
        "lib2to3",
        "site-packages",
        "dist-packages",
    }
)


# Left out wherever they are: Tk's bindings (they would pull in X11), the test suites
# some standard-library packages carry (unittest/test, ctypes/test, ...), and bytecode
# for `python -O`, which LKPS never runs with.
def left_out(path: str) -> bool:
    name = os.path.basename(path)
    return (
        name.startswith("_tkinter.")
        or name in ("test", "tests", "idle_test")
        or name.endswith((".opt-1.pyc", ".opt-2.pyc"))
    )


# Files of the base that the runtime reads when they exist: TLS trust (OpenSSL's default
# directory links into /etc/ssl), name resolution, the loader's search path, and
# Debian's sitecustomize hook.
SYSTEM_FILES = (
    "/etc/ssl",
    "/usr/lib/ssl",
    "/usr/share/ca-certificates",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    f"/etc/python{sys.version_info.major}.{sys.version_info.minor}",
)
ELF_MAGIC = b"\x7fELF"


class RootFilesystem:
    """DEST, filled path by path as in the running system: a symbolic link is copied as
    a link and its target follows, so /lib64 or /usr/bin/python3 resolve the same way.
    Nothing is written through a link already in DEST (an absolute one would point out
    of it): each path lands under its parent's real path."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.seen: set[str] = set()
        self.files: list[str] = []

    def place(self, path: str) -> Path:
        """Where `path` itself (not what it links to) goes in DEST."""
        parent, name = os.path.split(path)
        return self.dest / os.path.realpath(parent).lstrip("/") / name

    @staticmethod
    def copy_link(path: str, target: Path) -> str:
        """The link `path` made again at `target`; the path it names (which the caller
        copies as well)."""
        link = os.readlink(path)
        if not os.path.lexists(target):
            os.symlink(link, target)
        return os.path.join(os.path.dirname(path), link)

    def add(self, path: str) -> None:
        """Copy `path`: a file, a link and its target, or a directory and all it holds."""
        path = os.path.normpath(path)
        if path in self.seen or not os.path.lexists(path) or left_out(path):
            return
        self.seen.add(path)
        self.add_directory(os.path.dirname(path))
        target = self.place(path)
        if os.path.islink(path):
            self.add(self.copy_link(path, target))
        elif os.path.isdir(path):
            target.mkdir(exist_ok=True)
            shutil.copystat(path, target)
            for entry in sorted(os.listdir(path)):
                self.add(os.path.join(path, entry))
        else:
            shutil.copy2(path, target)
            self.files.append(path)

    def add_directory(self, path: str) -> None:
        """A directory on the way to a copied path (or the link it is, and the directory
        that link names), without the rest of its contents."""
        if path in self.seen or path == "/":
            return
        self.seen.add(path)
        self.add_directory(os.path.dirname(path))
        target = self.place(path)
        if os.path.islink(path):
            self.add_directory(os.path.normpath(self.copy_link(path, target)))
        else:
            target.mkdir(exist_ok=True)
            shutil.copystat(path, target)


def base_interpreter(venv: str) -> str:
    """The interpreter as the virtual environment names it: where its `bin/python`'s
    chain of links (python -> python3 -> /usr/bin/python3 ...) first leaves it."""
    path = os.path.join(venv, "bin", "python")
    inside = venv.rstrip("/") + "/"
    while os.path.islink(path):
        path = os.path.normpath(os.path.join(os.path.dirname(path), os.readlink(path)))
        if not path.startswith(inside):
            return path
    base: str = getattr(sys, "_base_executable", sys.executable)
    return base  # an environment made with copies: the base's own interpreter


def stdlib_directories() -> list[str]:
    """Where the standard library is: its pure modules (os's directory) and its compiled
    ones (lib-dynload), by the interpreter's own paths (in a virtual environment
    `sysconfig` may name the environment's instead)."""
    directories = [os.path.dirname(os.__file__)]
    directories += [entry for entry in sys.path if entry.endswith("lib-dynload")]
    return sorted(set(directories))


def stdlib_entries() -> list[str]:
    """The standard library's top-level entries that the runtime needs."""
    return [
        os.path.join(directory, entry)
        for directory in stdlib_directories()
        for entry in sorted(os.listdir(directory))
        if entry not in STDLIB_EXCLUDED and not entry.startswith("config-")
    ]


def is_elf(path: str) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == ELF_MAGIC


def venv_elf_files(venv: str) -> list[str]:
    """The virtual environment's compiled extensions and the libraries wheels bundle."""
    return [
        os.path.join(root, name)
        for root, _, names in os.walk(venv)
        for name in names
        if not os.path.islink(os.path.join(root, name)) and is_elf(os.path.join(root, name))
    ]


def shared_libraries(binaries: Iterable[str]) -> set[str]:
    """What the dynamic loader loads for `binaries`, by `ldd`; a library it cannot find
    fails the build."""
    libraries: set[str] = set()
    missing: list[str] = []
    for binary in binaries:
        result = subprocess.run(  # noqa: S603 (the base image's ldd, on its own files)
            ["ldd", binary],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:  # a static binary, or not for this machine
            continue
        for line in result.stdout.splitlines():
            words = line.split()
            if "=>" in words:
                resolved = words[words.index("=>") + 1]
                if resolved == "not":
                    missing.append(f"{binary}: {words[0]}")
                elif resolved.startswith("/"):
                    libraries.add(resolved)
            elif words and words[0].startswith("/"):  # the loader itself
                libraries.add(words[0])
    if missing:
        sys.exit("libraries not found:\n  " + "\n  ".join(missing))
    return libraries


def gcc_runtime() -> list[str]:
    """libgcc_s, which glibc opens only when a thread exits (no binary names it)."""
    result = subprocess.run(
        ["ldconfig", "-p"],  # noqa: S607 (the base image's ldconfig)
        capture_output=True,
        text=True,
        check=True,
    )
    return [
        line.rsplit("=> ", 1)[1]
        for line in result.stdout.splitlines()
        if line.strip().startswith("libgcc_s.so.1 ") and "=> " in line
    ][:1]


def compile_stdlib(dest: Path) -> None:
    """Bytecode for every standard-library module that has none (the python images
    delete theirs; Debian's are kept): on a read-only root filesystem nothing can write
    it later, and each worker process would compile what it imports at every start."""
    for directory in stdlib_directories():
        compileall.compile_dir(
            str(dest / directory.lstrip("/")), ddir=directory, quiet=1, workers=0
        )


def write_users(dest: Path) -> None:
    """root and lkps, the image's user (a fixed number: Kubernetes' runAsNonRoot checks
    numbers), with no login shell."""
    etc = dest / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/sbin/nologin\n"
        f"lkps:x:{USER_ID}:{USER_ID}:lkps:{HOME}:/sbin/nologin\n"
    )
    (etc / "group").write_text(f"root:x:0:\nlkps:x:{USER_ID}:\n")
    for directory, mode in (("tmp", 0o1777), (HOME.lstrip("/"), 0o755), ("root", 0o700)):
        (dest / directory).mkdir(parents=True, exist_ok=True)
        (dest / directory).chmod(mode)


def write_mount_points(dest: Path) -> None:
    """What a container runtime mounts over, present even where it cannot create it (a
    read-only root filesystem)."""
    for directory in ("dev", "proc", "sys", "run"):
        (dest / directory).mkdir(mode=0o755, exist_ok=True)
    for file in ("hosts", "hostname", "resolv.conf"):
        (dest / "etc" / file).touch(mode=0o644)


def check() -> None:
    """Import every compiled module of the standard library and of the environment
    (but the test suites packages ship): each loads its shared libraries, so a missing
    one fails here, at build time."""
    failed: list[str] = []
    dynload = [Path(entry) for entry in sys.path if entry.endswith("lib-dynload")]
    names: set[str] = set()
    for root in [*dynload, Path(sysconfig.get_path("platlib"))]:
        for extension in root.rglob("*.so"):
            parts = extension.relative_to(root).parts
            package, module = parts[:-1], parts[-1].split(".")[0]
            if any(part in ("test", "tests") or "." in part for part in package):
                continue  # a test suite's, or a library a wheel bundles (`foo.libs/`)
            if module.startswith(("_test", "_xxtest", "xxlimited", "_ctypes_test")):
                continue
            names.add(".".join((*package, module)))
    for name in sorted(names):
        try:
            importlib.import_module(name)
        except Exception as error:  # each failure is reported
            failed.append(f"{name}: {type(error).__name__}: {error}")
    if failed:
        sys.exit("compiled modules that do not import:\n  " + "\n  ".join(failed))
    print(f"{len(names)} compiled modules import")


def main() -> None:
    if sys.argv[1:] == ["--check"]:
        check()
        return
    dest, venv = Path(sys.argv[1]), sys.argv[2]
    dest.mkdir(parents=True, exist_ok=True)
    rootfs = RootFilesystem(dest)
    rootfs.add(base_interpreter(venv))
    for entry in stdlib_entries():
        rootfs.add(entry)
    for entry in SYSTEM_FILES:
        rootfs.add(entry)
    binaries = [file for file in rootfs.files if is_elf(file)] + venv_elf_files(venv)
    for library in sorted(shared_libraries(binaries)) + gcc_runtime():
        if not library.startswith(venv.rstrip("/") + "/"):
            rootfs.add(library)
    write_users(dest)
    write_mount_points(dest)
    compile_stdlib(dest)
    # The loader's cache for the libraries DEST holds (a base may keep libpython in a
    # directory only /etc/ld.so.conf names, as the python images do in /usr/local/lib).
    subprocess.run(["ldconfig", "-r", str(dest)], check=True)  # noqa: S603, S607
    print(f"{dest}: {len(rootfs.files)} files")


if __name__ == "__main__":
    main()
