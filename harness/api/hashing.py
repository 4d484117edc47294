"""Content hashes that name what a run read: data files, model folders, checkpoints, vector files.

One routine for all of them, so that a stored hash means the same thing wherever it appears.
``sampled`` reads each file's name, size and first and last MiB: cheap on 15 GB weights and it
changes whenever they are rewritten; otherwise every byte is read.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable

MIB = 1 << 20


def digest_files(files: Iterable[str | os.PathLike], *, sampled: bool) -> "hashlib._Hash":
    """sha256 over each file's ``name:size`` and its bytes (all of them, or the first and last MiB)."""
    digest = hashlib.sha256()
    for file in map(Path, files):
        size = file.stat().st_size
        digest.update(f"{file.name}:{size}".encode())
        with open(file, "rb") as fh:
            if not sampled:
                while chunk := fh.read(MIB):
                    digest.update(chunk)
                continue
            digest.update(fh.read(MIB))
            if size > 2 * MIB:
                fh.seek(-MIB, os.SEEK_END)
                digest.update(fh.read())
    return digest


def file_sha256(path: str | os.PathLike) -> str:
    """The plain sha256 of one file's bytes (as ``sha256sum`` prints it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()
