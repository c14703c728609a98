"""Small helpers shared by the studies and the CLI: JSON output, output folders, progress bars."""
from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, paths and non-finite floats into plain JSON values.

    Non-finite floats become ``None`` (JSON has no NaN); tuples become lists.
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(to_jsonable(obj), fh, indent=2, sort_keys=False)
        fh.write("\n")
    os.replace(tmp, path)
    return path


def check_outdir(outdir: str | os.PathLike, what: str = "output") -> Path:
    """``outdir`` as a Path, refused (naming ``what``) if it exists and is not a folder.

    Studies call it before any work, so a bad output path fails before a run, not after.
    """
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{what}: {out} exists and is not a directory")
    return out


def prepare_outdir(outdir: str | os.PathLike) -> Path:
    """Create the output folder of a study (parents included) and return it."""
    out = check_outdir(outdir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_study_outputs(outdir: str | os.PathLike, stem: str, module: str, doc: Any,
                        fill_h5: Callable[[Any], None], plot: Callable[[Path], Any]
                        ) -> dict[str, Path]:
    """Write a study's ``<stem>.json``, ``<stem>.h5`` and ``<stem>.png`` into ``outdir``.

    ``doc`` goes to the JSON file; ``fill_h5(f)`` fills the open ``h5py.File`` (its root
    attribute ``creator`` names the package version and ``module``), written under a
    temporary name and renamed only once complete; ``plot(path)`` draws the figure.  Returns
    the paths under the keys ``"json"``, ``"h5"``, ``"png"``.
    """
    import h5py

    from ._version import __version__

    out = prepare_outdir(outdir)
    paths = {ext: out / f"{stem}.{ext}" for ext in ("json", "h5", "png")}
    write_json(paths["json"], doc)
    tmp = paths["h5"].with_suffix(".h5.tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["creator"] = f"meanfield_gan {__version__} ({module})"
        fill_h5(f)
    os.replace(tmp, paths["h5"])
    plot(paths["png"])
    return paths


def want_progress(progress: bool | None) -> bool:
    """``None`` means: show a progress bar only when stderr is a terminal."""
    if progress is None:
        return sys.stderr.isatty()
    return bool(progress)
