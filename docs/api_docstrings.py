"""A griffe extension for the API reference (mkdocs.yml, mkdocstrings): each documented
parameter shows the default of the function's signature, and Sphinx cross-reference roles
(``:func:`~napari_mprnet.restore```) read as plain code (``restore``).

Without it the numpy docstring parser guesses defaults from the docstring text: the first
value of a ``{"a", "b"}`` choice (``restore(task=...)`` would read "denoise" where the default
is None, the model's own task) or the first name's default for grouped parameters
(``patch_size, batch_size : int``). The signature is the truth; the docstring says what the
values mean.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_SPHINX_ROLE = re.compile(r":(?:mod|func|class|meth|attr|data|exc|obj):`(~?)([^`]+)`")


def _plain_role(match: re.Match) -> str:
    target = match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if match.group(1) else target}`"


def _signature_owner(obj: griffe.Object) -> griffe.Object | None:
    if obj.is_function:
        return obj
    if obj.is_class and "__init__" in obj.members:
        return obj.members["__init__"]
    return None


def _tidy_docstring(obj: griffe.Object) -> None:
    owner = _signature_owner(obj)
    if obj.docstring is None:
        return
    obj.docstring.value = _SPHINX_ROLE.sub(_plain_role, obj.docstring.value)
    if owner is None:
        return
    defaults = {parameter.name: parameter.default for parameter in owner.parameters}
    for section in obj.docstring.parsed:
        if section.kind is griffe.DocstringSectionKind.parameters:
            for parameter in section.value:
                if parameter.name in defaults:
                    parameter.value = defaults[parameter.name]


class TidyDocstrings(griffe.Extension):
    """Signature defaults and plain cross-references in every docstring of the package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        _tidy_docstring(pkg)
        pending = [pkg]
        while pending:
            obj = pending.pop()
            for member in obj.members.values():
                if member.is_alias:
                    continue
                if member.is_module or member.is_class:
                    pending.append(member)
                if member.is_function or member.is_class or member.is_module:
                    _tidy_docstring(member)
