"""What ``scripts/gpu-bench.sh`` carries to a bare GPU machine, and its checks. Standard
library only: ``unpack`` runs there before anything else is importable.

- ``pack`` (here, with network to the package index): ``.gpu-bench/tritonserver.tar.xz``,
  the pytriton wheel's ``tritonserver`` trimmed to what the python backend needs (the
  binary, ``libtritonserver`` and the libraries it links, the python backend and the stub
  for the GPU machine's Python; stripped: 106 MB -> about 25 MB compressed), and
  ``.gpu-bench/wheels/``, the wheels the GPU machine lacks for that Python.
- ``check`` (``--dry-run``): the pack is there and complete, and the tree plus the pack fit
  the 64 MiB that may travel.
- ``unpack`` (there): the server to ``DEST/triton``, the wheels into ``DEST/site``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PACK = REPO / ".gpu-bench"
CARRY_LIMIT = 64 * 1024 * 1024
PYTHON = "3.12"  # the GPU machine's (../shared/FACTS.md)
# what the GPU machine lacks (it has torch with CUDA, torchvision, transformers, numpy,
# Pillow): the Triton client and what the project's modules import
WHEELS = ["tritonclient==2.73.0", "grpcio==1.85.3", "protobuf==6.33.6",
          "python-rapidjson==1.25", "urllib3==2.8.0", "packaging==26.4",
          "pydantic==2.14.4", "pydantic-core==2.50.5", "pydantic-settings==2.16.3",
          "annotated-types==0.8.0", "typing-inspection==0.4.5", "python-dotenv==1.2.4",
          "typing-extensions==4.16.0", "ml-dtypes==0.5.4"]


def _site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def pack(python: str = PYTHON) -> dict[str, object]:
    """Write ``.gpu-bench/`` (the server for ``python``, and its wheels)."""
    site = _site_packages()
    src = site / "pytriton" / "tritonserver"
    libs = site / "nvidia_pytriton.libs"
    stub = src / "python_backend_stubs" / python / "triton_python_backend_stub"
    if not stub.exists():
        raise SystemExit(f"no python backend stub for {python} in {src} (pip install "
                         "nvidia-pytriton==0.7.0)")
    PACK.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "tritonserver"
        (home / "bin").mkdir(parents=True)
        (home / "lib").mkdir()
        backend = home / "backends" / "python"
        backend.mkdir(parents=True)
        shutil.copy2(src / "bin" / "tritonserver", home / "bin")
        for f in (src / "backends" / "python").iterdir():
            shutil.copy2(f, backend)
        stubs = home / "python_backend_stubs" / python
        stubs.mkdir(parents=True)
        shutil.copy2(stub, stubs)
        shutil.copytree(src / "caches", home / "caches")
        for lib in libs.iterdir():
            if not lib.name.startswith("libpython"):  # pytriton's own interpreter
                shutil.copy2(lib, home / "lib")
        if shutil.which("strip"):  # debug symbols are most of libtritonserver
            binaries = [home / "bin" / "tritonserver", stubs / stub.name,
                        *backend.glob("*.so"), *(home / "lib").iterdir()]
            subprocess.run(["strip", "--strip-unneeded", *map(str, binaries)], check=True)
        with tarfile.open(PACK / "tritonserver.tar.xz", "w:xz", preset=6) as tar:
            tar.add(home, arcname="tritonserver")
    manifest = {"python": python, "wheels": download_wheels(PACK / "wheels", WHEELS, python)}
    (PACK / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return {**manifest, "bytes": folder_bytes(PACK)}


def download_wheels(dest: Path, specs: list[str], python: str = PYTHON) -> list[str]:
    """Binary wheels of ``specs`` for the GPU machine's Python into ``dest`` (emptied)."""
    shutil.rmtree(dest, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--only-binary=:all:", "--python-version", python,
                    "--platform", "manylinux_2_28_x86_64", "--platform",
                    "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
                    "--platform", "any", "-d", str(dest), *specs], check=True)
    return sorted(p.name for p in dest.glob("*.whl"))


def extract_wheels(wheels: Path, site: Path) -> None:
    """Install wheels without pip: a wheel is a zip of its site-packages files."""
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(site)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tree_bytes() -> int:
    """Bytes of the project's tracked and untracked-but-not-ignored files (what travels)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                          "--exclude-standard"], cwd=REPO, capture_output=True, check=True)
    files = [REPO / f for f in out.stdout.decode().split("\0") if f]
    return sum(f.stat().st_size for f in files if f.is_file())


def check() -> dict[str, object]:
    """The dry run: every input present, and what travels under the limit."""
    problems = []
    manifest_file = PACK / "manifest.json"
    if not (PACK / "tritonserver.tar.xz").exists() or not manifest_file.exists():
        problems.append("no pack: run scripts/gpu-bench.sh --pack first")
        manifest: dict[str, Any] = {}
    else:
        manifest = json.loads(manifest_file.read_text())
        have = {p.name for p in (PACK / "wheels").glob("*.whl")}
        missing = [w for w in manifest.get("wheels", []) if w not in have]
        if missing:
            problems.append(f"wheels missing: {missing}")
        with tarfile.open(PACK / "tritonserver.tar.xz") as tar:
            names = set(tar.getnames())
        python = manifest.get("python", PYTHON)
        for need in ("tritonserver/bin/tritonserver",
                     "tritonserver/backends/python/libtriton_python.so",
                     f"tritonserver/python_backend_stubs/{python}/triton_python_backend_stub"):
            if need not in names:
                problems.append(f"{need} not in the pack")
    for need in ("triton_models/gpu/clip_image/config.pbtxt",
                 "triton_models/gpu/clip_text/config.pbtxt",
                 "moderation/serving/gpu_images.py", "moderation/devtools/gpu_bench.py"):
        if not (REPO / need).exists():
            problems.append(f"{need} missing")
    return {**carry_report(PACK, problems), "python": manifest.get("python")}


def carry_report(pack_dir: Path, problems: list[str]) -> dict[str, object]:
    """The dry run's verdict: ``problems`` found so far, plus whether the tree and the pack
    fit what may travel."""
    tree = tree_bytes()
    carried = folder_bytes(pack_dir) if pack_dir.exists() else 0
    if tree + carried > CARRY_LIMIT:
        problems = [*problems, f"tree {tree} + pack {carried} bytes > {CARRY_LIMIT}"]
    return {"ok": not problems, "problems": problems, "tree_bytes": tree,
            "pack_bytes": carried, "total_mib": round((tree + carried) / 2**20, 1),
            "limit_mib": CARRY_LIMIT // 2**20}


def unpack(dest: Path) -> None:
    """On the GPU machine: the server to ``dest/triton``, the wheels into ``dest/site``."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(dest / "triton", ignore_errors=True)
    with tarfile.open(PACK / "tritonserver.tar.xz") as tar:
        tar.extractall(dest / "triton", filter="tar")
    home = dest / "triton" / "tritonserver"
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    shutil.copy2(home / "python_backend_stubs" / py / "triton_python_backend_stub",
                 home / "backends" / "python")
    site = dest / "site"
    extract_wheels(PACK / "wheels", site)
    print(f"unpacked: {home} (server), {site} (wheels)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("action", choices=["pack", "check", "unpack"])
    ap.add_argument("--python", default=PYTHON, help="the GPU machine's Python (pack)")
    ap.add_argument("--dest", default="/tmp/gpu-bench", help="where to unpack")
    args = ap.parse_args()
    if args.action == "pack":
        print(json.dumps(pack(args.python), indent=2))
    elif args.action == "check":
        result = check()
        print(json.dumps(result, indent=2))
        return 0 if result["ok"] else 1
    else:
        unpack(Path(args.dest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
