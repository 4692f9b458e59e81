"""Planning a ``restore`` batch before anything is computed: inputs, output names, collisions.

Every input gets its own outputs: inputs whose outputs would share a name get distinct ones
(same stem in one folder: the input's ending joins the name, ``y.png`` -> ``y_png_denoised.tif``;
the same name in different folders: the outputs mirror the folders below their common parent,
``a/x.tif`` -> ``OUT/a/x_denoised.tif``); a batch that still collides is refused up front.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io.image import IMAGE_SUFFIXES, split_name

__all__ = ["Job", "collect_inputs", "output_names", "parse_output_dtype", "plan_jobs",
           "write_outputs"]


@dataclass
class Job:
    """One input and the files it writes (final first, then stage 2 and stage 1, then the
    removed part)."""

    source: Path
    targets: list[Path]

    def existing(self) -> list[Path]:
        return [t for t in self.targets if t.exists() or t.is_symlink()]


def _is_zarr(path: Path) -> bool:
    from ..io.zarr import is_zarr_path

    return is_zarr_path(path)


def collect_inputs(patterns: list[str]) -> tuple[list[Path], list[str]]:
    """Expand files, folders and globs; return the image files and the problems found."""
    files: list[Path] = []
    problems: list[str] = []
    for pattern in patterns:
        path = Path(pattern)
        if _is_zarr(path):
            files.append(path)
        elif path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                problems.append(f"{pattern}: folder holds no .tif/.tiff/.png/.jpg images")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif glob.has_magic(pattern):
            found = sorted(Path(p) for p in glob.glob(pattern)
                           if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                problems.append(f"{pattern}: no image matches this pattern")
            files.extend(found)
        else:
            problems.append(f"{pattern}: no such file or folder")
    unique = list(dict.fromkeys(p.resolve() for p in files))
    return unique, problems


def output_names(source: Path, suffix: str, stages: bool, stem: str | None = None,
                 removed: bool = False) -> list[str]:
    """Output file names for ``source``: ``<stem>_<suffix>`` + the right ending (then the
    stage outputs, then ``<stem>_removed`` with ``removed``).

    TIFF inputs give ``.tif`` (OME-TIFF: ``.ome.tif``), PNG/JPEG give ``.tif``, zarr stores
    give ``.zarr`` (OME-Zarr: ``.ome.zarr``).
    """
    base, ending = split_name(source)
    ending = ending.lower()
    if _is_zarr(source):
        out_ending = ".ome.zarr" if ending == ".ome.zarr" else ".zarr"
    else:
        out_ending = ".ome.tif" if ending.startswith(".ome.") else ".tif"
    name = f"{stem or base}_{suffix}"
    names = [name] + ([f"{name}_stage2", f"{name}_stage1"] if stages else [])
    names += [f"{stem or base}_removed"] if removed else []
    return [f"{n}{out_ending}" for n in names]


def _collisions(jobs: list[Job]) -> dict[Path, list[Job]]:
    """Output path -> the jobs writing it, for paths written by several jobs."""
    by_target: dict[Path, list[Job]] = defaultdict(list)
    for job in jobs:
        for target in job.targets:
            by_target[Path(os.path.normcase(target))].append(job)
    return {t: js for t, js in by_target.items() if len(js) > 1}


def _groups(jobs: list[Job]) -> list[list[Job]]:
    """The colliding groups, each job in at most one (the first it appears in)."""
    seen: set[int] = set()
    groups = []
    for group in _collisions(jobs).values():
        fresh = [job for job in group if id(job) not in seen]
        seen.update(id(job) for job in fresh)
        if len(fresh) > 1:
            groups.append(fresh)
    return groups


def plan_jobs(files: list[Path], out_dir: Path, suffix: str, stages: bool,
              removed: bool = False) -> list[Job]:
    """One :class:`Job` per input, with distinct outputs for every input (``removed``: also
    the removed part's file).

    Raises
    ------
    ValueError
        Inputs that would still write the same file (listed in the message).
    """
    jobs = [Job(f, [out_dir / n for n in output_names(f, suffix, stages, removed=removed)])
            for f in files]
    # 1. same stem, same folder, different endings: the ending joins the name
    for group in _groups(jobs):
        folders = {job.source.parent for job in group}
        if len(folders) == 1:
            for job in group:
                base, ending = split_name(job.source)
                stem = f"{base}_{ending.lstrip('.').replace('.', '_')}"
                job.targets = [out_dir / n for n in output_names(job.source, suffix, stages,
                                                                 stem, removed)]
    # 2. the same name in different folders: mirror the folders below their common parent
    for group in _groups(jobs):
        parents = [job.source.parent for job in group]
        common = Path(os.path.commonpath([str(p) for p in parents]))
        for job in group:
            relative = job.source.parent.relative_to(common)
            job.targets = [out_dir / relative / t.name for t in job.targets]
    remaining = _collisions(jobs)
    if remaining:
        pairs = "; ".join(f"{' and '.join(str(j.source) for j in js)} -> {target}"
                          for target, js in remaining.items())
        raise ValueError(f"several inputs would write the same output ({pairs}); restore "
                         "them into separate --out folders or rename them")
    return jobs


def parse_output_dtype(value: str, input_dtype: np.dtype) -> np.dtype:
    """The dtype asked for by ``--output-dtype`` (``same``: the input's)."""
    if value == "same":
        return np.dtype(input_dtype)
    try:
        dtype = np.dtype(value)
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "uif":
        raise ValueError(f"--output-dtype must be 'float32', 'same' (the input's) or an integer "
                         f"or float type such as uint8, uint16, float16; got {value!r}")
    return dtype


def write_outputs(job: Job, targets: list[Path], results: list, image, axes: str | None,
                  overwrite: bool) -> None:
    """Write the ``targets`` of ``job`` (its outputs still to write) as one unit.

    Every file goes to a temporary first; the commits happen once all are complete, the
    final output last, so a complete final output means a complete set.
    """
    from ..io.atomic import atomic_output
    from ..io.tiff import write_tiff

    with contextlib.ExitStack() as stack:
        staged = [(stack.enter_context(atomic_output(target, overwrite=overwrite)), result)
                  for target, result in zip(job.targets, results) if target in targets]
        for tmp, result in staged:
            write_tiff(tmp, result, axes, image, overwrite=True)
