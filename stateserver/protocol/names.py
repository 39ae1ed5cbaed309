"""Validation of names that become object keys and directory names."""
from __future__ import annotations

import re

MAX_NAME_LENGTH = 128
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_name(kind: str, name: str) -> str:
    """Return ``name`` if it is safe as a path segment, else raise ``ValueError`` saying why.

    Allowed: 1 to 128 characters from ``A-Z a-z 0-9 _ . -``, starting with a letter or digit,
    which rules out ``..``, ``/``, NUL and hidden files.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"{kind} name must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"{kind} name is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}")
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"{kind} name {name[:40]!r} is malformed: use letters, digits, '_', '.' and '-', "
            "starting with a letter or digit"
        )
    return name
