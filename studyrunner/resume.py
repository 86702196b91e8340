"""Where a launch lives and how ``--resume`` finds it again.

Every launch gets its own Ray experiment folder ``<storage>/<study>-<UTC time>`` holding Tune's state
and :data:`STATE_FILE`: the study snapshot, the MLflow ids and the pids of the Ray processes this
launch started (so a later ``--cleanup`` or ``--resume`` can stop what a killed driver left behind).
Paths may be local folders or ``s3://``-style URIs (pyarrow filesystems).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .study import load_study

STATE_FILE = "studyrunner.json"


class LaunchError(RuntimeError):
    """A problem with the launch itself (paths, resume, cluster resources); exit code 2."""


def storage_path(path: str | None) -> str:
    if path is None:
        return str(Path("ray_results").resolve())
    if "://" in path:
        return path
    return str(Path(path).expanduser().resolve())


def filesystem(path: str):
    """(pyarrow filesystem, path inside it) of a local path or a URI."""
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(path) if "://" in path else (pyarrow.fs.LocalFileSystem(), path)


def new_experiment_name(storage: str, study_name: str) -> str:
    """``<study>-<UTC time>``: one Ray experiment folder per launch (a second launch never overwrites)."""
    import pyarrow.fs

    name = f"{study_name}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    fs, fs_path = filesystem(storage)
    taken = {i.base_name for i in fs.get_file_info(pyarrow.fs.FileSelector(fs_path, allow_not_found=True))}
    suffix, candidate = 1, name
    while candidate in taken:
        suffix += 1
        candidate = f"{name}-{suffix}"
    return candidate


def write_state(experiment_path: str, state: dict[str, Any]) -> None:
    fs, fs_path = filesystem(experiment_path)
    fs.create_dir(fs_path, recursive=True)
    with fs.open_output_stream(f"{fs_path}/{STATE_FILE}") as out:
        out.write(json.dumps(state, indent=2, default=str).encode())


def read_state(experiment_path: str) -> dict[str, Any] | None:
    fs, fs_path = filesystem(experiment_path)
    try:
        with fs.open_input_stream(f"{fs_path}/{STATE_FILE}") as src:
            return json.loads(src.read().decode())
    except (FileNotFoundError, OSError):
        return None


def find_launch(storage: str, study_file: str, resume: str) -> tuple[str, str, dict[str, Any]]:
    """(storage path, experiment folder name, saved state) of the launch to resume: the folder given
    to --resume, or (``resume == "latest"``) the newest launch of this study under the storage path."""
    if resume != "latest":
        path = storage_path(resume).rstrip("/")
        state = read_state(path)
        if state is None:
            raise LaunchError(f"--resume {resume}: no {STATE_FILE} there; pass a folder printed by an "
                              f"earlier launch, or --resume alone for the newest launch under --storage-path")
        parent, _, name = path.rpartition("/")
        return parent, name, state
    import pyarrow.fs

    name = load_study(study_file).name
    fs, fs_path = filesystem(storage)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(fs_path, allow_not_found=True))
    launches = sorted(i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory
                      and i.base_name.startswith(f"{name}-"))
    for candidate in reversed(launches):
        state = read_state(f"{storage.rstrip('/')}/{candidate}")
        if state is not None and state["study"]["name"] == name:
            return storage, candidate, state
    raise LaunchError(f"--resume: no earlier launch of study {name!r} under {storage} (folders {name}-*/ "
                      f"with {STATE_FILE}); pass --storage-path if it ran elsewhere")
