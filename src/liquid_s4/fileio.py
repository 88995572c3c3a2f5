"""Writing files without ever leaving a partial one: every file the library writes (checkpoints, saved
models, configs, metrics) goes through `atomic_write`, and every folder written as a whole (the
preprocessing cache entries) through `atomic_directory`."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> None:
    """Call `write(tmp)` on a temporary file in the directory of `path`, flush it to disk, then rename
    it over `path` (atomic on POSIX and Windows): a reader sees the old file or the new one, never a
    partial one, whatever happens during the write. On failure the temporary file is removed and the
    exception propagates; an existing `path` is left as it was."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path))
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """`atomic_write` of a text file (UTF-8)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """`atomic_write` of `obj` as indented JSON with a final newline."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, prefix: str = ".tmp-"):
    """Yield a new temporary folder (named `prefix`...) next to `path` to fill; when the block ends
    without an error, any existing `path` is removed and the folder renamed to `path`, so a reader
    finds the whole folder or none. On an error the temporary folder is removed and the exception
    propagates."""
    path = os.fspath(path)
    tmp = tempfile.mkdtemp(prefix=prefix, dir=os.path.dirname(os.path.abspath(path)))
    try:
        yield tmp
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
