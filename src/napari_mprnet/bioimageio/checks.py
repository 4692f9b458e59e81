"""Checks of what a user gives to the bioimage.io export, before anything is computed or
written: one plain sentence per problem, naming the argument (the CLI shows its flag).

The rules are bioimage.io's (format 0.5), written out so that the messages say what to do;
the finished package is still validated with bioimageio.spec (:func:`spec_problems`), in a
temporary folder, before it is written where it was asked for.
"""

from __future__ import annotations

import math
import os
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["ExportError", "check_arguments", "package_name", "spec_problems"]

#: Characters bioimage.io allows in a model name.
NAME_CHARACTERS = frozenset(string.ascii_letters + string.digits + "_+- ()")
NAME_LENGTH = (5, 128)
DESCRIPTION_LENGTH = 1024
_GITHUB_USER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_URL = re.compile(r"^https?://[^\s/$.?#][^\s]*$")
#: The fields of rdf.yaml that come from the user, by the argument that sets them.
_RDF_FIELDS = {"name": "name", "description": "description", "authors": "authors",
               "license": "license", "tags": "tags", "version": "version",
               "git_repo": "git_repo"}


class ExportError(ValueError):
    """Everything wrong with an export's arguments: ``problems`` holds (argument, sentence)
    pairs; the message is one line per problem, "argument sentence"."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(f"{arg} {text}" for arg, text in self.problems))


def package_name(text: str, fallback: str = "MPRNet model") -> str:
    """``text`` made a valid bioimage.io name: other characters become spaces, runs of
    spaces one, at most 64 characters; ``fallback`` if fewer than 5 remain."""
    cleaned = "".join(ch if ch in NAME_CHARACTERS else " " for ch in str(text or ""))
    cleaned = " ".join(cleaned.split())[:64].strip()
    return cleaned if len(cleaned) >= NAME_LENGTH[0] else fallback


def _name_problems(name: Any) -> list[str]:
    if not isinstance(name, str) or not name.strip():
        return ["must be a non-empty text"]
    name = name.strip()
    low, high = NAME_LENGTH
    out = []
    if len(name) < low:
        out.append(f"must have at least {low} characters, got {len(name)} ('{name}')")
    if len(name) > high:
        out.append(f"must have at most {high} characters, got {len(name)}")
    bad = sorted(set(name) - NAME_CHARACTERS)
    if bad:
        out.append("may only contain letters, digits, spaces and _ + - ( ); remove "
                   + " ".join(repr(ch) for ch in bad))
    return out


def _author_problems(authors: Any) -> list[str]:
    from .content import authors as author_entries

    try:
        entries = author_entries(authors)
    except ValueError as err:
        return [str(err).replace("an author is", "each must be", 1)]
    out = []
    for entry in entries:
        name = str(entry.get("name", ""))
        if "/" in name or "\\" in name:
            out.append(f"names may not contain '/' or '\\', got '{name}'")
        handle = entry.get("github_user")
        if handle is not None and not _GITHUB_USER.match(str(handle)):
            out.append(f"'{handle}' is not a GitHub user name (letters, digits and single "
                       "hyphens, at most 39 characters)")
        email = entry.get("email")
        if email is not None and not _EMAIL.match(str(email)):
            out.append(f"'{email}' is not an e-mail address")
    return out


def _license_problems(license: Any) -> list[str]:
    if not isinstance(license, str) or not license.strip():
        return ["must be an SPDX license identifier such as BSD-3-Clause, MIT or CC-BY-4.0"]
    try:
        from bioimageio.spec._internal.license_id import DeprecatedLicenseId, LicenseId
    except ImportError:  # without bioimageio.spec: not checked here
        return []
    for kind in (LicenseId, DeprecatedLicenseId):
        try:
            kind(license)
        except ValueError:
            continue
        return []
    return [(f"'{license}' is not an SPDX license identifier (see https://spdx.org/licenses/; "
            "for example BSD-3-Clause, MIT or CC-BY-4.0)")]


def _version_problems(version: Any) -> list[str]:
    if version is None:
        return []
    try:
        from bioimageio.spec._internal.version_type import Version
    except ImportError:
        return []
    try:
        Version(str(version))
    except ValueError:
        return [f"'{version}' is not a version number such as 1.0 or 0.2.1"]
    return []


def _is_range(value: Any) -> bool:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(low) and math.isfinite(high) and low < high


def check_arguments(*, path: Path, overwrite: bool, name: Any, description: Any,
                    authors: Any, license: Any, tags: Any, version: Any, git_repo: Any,
                    input_range: Any, halo: Any, tile: Any, min_size: Any,
                    size_multiple: int, smallest: int) -> None:
    """Raise :class:`ExportError` listing every problem with these export arguments
    (FileExistsError first if ``path`` exists and ``overwrite`` is False)."""
    if path.is_file() and not overwrite:
        raise FileExistsError(f"'{path}' exists; pass overwrite=True to replace it")
    problems: list[tuple[str, str]] = []

    def add(arg: str, texts: list[str]) -> None:
        problems.extend((arg, text) for text in texts)

    if path.suffix.lower() != ".zip":
        add("path", [f"must be a .zip file, got '{path}'"])
    elif path.is_dir():
        add("path", [f"'{path}' is a folder"])
    add("name", _name_problems(name))
    if not isinstance(description, str) or not description.strip():
        add("description", ["must be a non-empty text"])
    elif len(description.strip()) > DESCRIPTION_LENGTH:
        add("description", [(f"must have at most {DESCRIPTION_LENGTH} characters, got "
                            f"{len(description.strip())}")])
    add("authors", _author_problems(authors))
    add("license", _license_problems(license))
    if tags is not None and (isinstance(tags, str) or not all(
            isinstance(t, str) and t.strip() for t in tags)):
        add("tags", ["must be a list of non-empty words"])
    add("version", _version_problems(version))
    if git_repo is not None and not _URL.match(str(git_repo)):
        add("git_repo", [f"must be an http(s) URL, got '{git_repo}'"])
    if input_range is not None and not _is_range(input_range):
        add("input_range", [(f"must be two finite numbers LOW HIGH with LOW < HIGH, got "
                            f"{input_range!r}")])
    if isinstance(halo, bool) or not isinstance(halo, int) or halo < 0 or halo % 4:
        add("halo", [f"must be a non-negative multiple of 4, got {halo!r}"])
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 0 or tile % size_multiple:
        add("tile", [f"must be 0 or a positive multiple of {size_multiple}, got {tile!r}"])
    if min_size is not None and (isinstance(min_size, bool) or not isinstance(min_size, int)
                                 or min_size < smallest or min_size % size_multiple):
        add("min_size", [(f"must be a multiple of {size_multiple}, at least {smallest}, got "
                         f"{min_size!r}")])
    if problems:
        raise ExportError(problems)


def spec_problems(package: str | os.PathLike) -> list[tuple[str, str]]:
    """bioimageio.spec's objections to a written package, as (argument or rdf field,
    sentence) pairs; empty when it is valid or bioimageio.spec is not installed."""
    try:
        from bioimageio.spec import load_description
        from bioimageio.spec.model.v0_5 import ModelDescr
    except ImportError:
        return []
    descr = load_description(str(package), perform_io_checks=False)  # offline
    if isinstance(descr, ModelDescr):
        return []
    problems = []
    for error in descr.validation_summary.errors:
        loc = [str(part) for part in error.loc]
        arg = _RDF_FIELDS.get(loc[0], "package") if loc else "package"
        where = ".".join(loc[1:] if arg != "package" else loc)
        problems.append((arg, f"is not accepted by bioimage.io: {error.msg}"
                              + (f" (at {where})" if where else "")))
    return problems or [("package", (f"is not accepted by bioimage.io: "
                                    f"{descr.validation_summary.status}"))]
