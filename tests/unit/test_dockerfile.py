"""The Dockerfile (no Docker engine here: its key lines) and the wheel it installs.

The wheel is built from exactly what the Dockerfile copies into its build stage, symlinks kept as
Docker's ``COPY`` keeps them, so a file missing from the image's build context fails here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the last ``FROM`` stage (the image that runs)."""
    steps = instructions()
    last = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last:]


def test_runtime_image_key_lines() -> None:
    steps = instructions()
    assert all(args.startswith("python:3.11-slim") for word, args in steps if word == "FROM")
    final = dict(final_stage())
    user = [args for word, args in final_stage() if word == "USER"]
    assert user and user[-1] not in ("root", "0"), "the store must not run as root"
    assert final["VOLUME"] == "/data"
    assert final["EXPOSE"] == "8080"
    env = " ".join(args for word, args in final_stage() if word == "ENV")
    assert "JOBQUEUE_STORE_DATA_DIR=/data" in env and "JOBQUEUE_STORE_HOST=0.0.0.0" in env
    assert final["CMD"] == '["jobqueue-store", "serve"]'
    health = final["HEALTHCHECK"]
    assert "/healthz" in health and '"python"' in health and "curl" not in health


def test_installs_the_package_without_dev_dependencies() -> None:
    runs = " ".join(args for word, args in instructions() if word == "RUN")
    assert re.search(r"pip install \"?\.(\[fast\])?\"?", runs)
    assert "-e " not in runs and "--editable" not in runs
    assert "test" not in runs, "no test or dev extras in the image"


def test_dockerignore_keeps_secrets_and_state_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "data", "**/root_keys.json"):
        assert entry in ignored


def test_wheel_from_the_build_context_has_the_package_data(tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    for word, args in instructions():
        if word != "COPY" or args.startswith("--from"):
            continue
        *sources, _ = args.split()
        for source in sources:
            src = ROOT / source
            if src.is_dir():
                shutil.copytree(
                    src,
                    context / source,
                    symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                )
            else:
                shutil.copy2(src, context / source)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), "."],
        cwd=context,
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("jobqueue_store-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    schemas = sorted((ROOT / "schemas").glob("*.json"))
    assert schemas
    for schema in schemas:
        assert f"jobqueue_store/schemas/{schema.name}" in names
    sql = sorted((ROOT / "jobqueue_store" / "storage" / "sql").glob("*/*.sql"))
    assert sql
    for migration in sql:
        assert f"jobqueue_store/storage/sql/{migration.parent.name}/{migration.name}" in names
    assert "jobqueue_store/py.typed" in names
    assert not any(n.startswith("tests/") for n in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "jobqueue-store = jobqueue_store.cli:main" in text
