"""Checks of the options that name a file to write, run before a command does any work.

A job that publishes and consumes a whole file must not fail at the end
because its ``--output`` directory is missing, so every command checks its
output paths first and exits 2 with the option, the value and the fix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import typer
from rich.markup import escape

from rewardpilot.cli.context import console

# The suffixes `run --output` accepts, each with the format that write_results writes for it.
RESULT_SUFFIXES: dict[str, str] = {".csv": "CSV", ".jsonl": "JSON lines"}


class OutputPathError(ValueError):
    """An output path that cannot be written, with the option, the value and the fix in its message."""


def validate_output_path(path: Path, option: str, *, suffixes: dict[str, str] | None = None,
                         input_path: Path | None = None) -> None:
    """Raise OutputPathError unless ``path`` can be created or replaced.

    The parent directory must exist and be writable, ``path`` must not be a
    directory, an existing file there must be writable, and the name must end
    in one of ``suffixes`` (compared in any case) when they are given. With
    ``input_path``, ``path`` must also not be that file, which writing would
    destroy while it is read.

    NOTE: the checks see the file system as it is now. A directory removed
    or a disk that fills up later still makes the write fail.
    """
    option_value = f"{option} {str(path)!r}"
    try:
        _check_path(path, option_value, suffixes, input_path)
    except (OSError, RuntimeError) as exc:
        # OSError: a directory on the way that cannot be searched. RuntimeError: a symbolic link loop.
        raise OutputPathError(f"{option_value}: the path cannot be checked: {exc}; choose another path") from None


def _check_path(path: Path, option_value: str, suffixes: dict[str, str] | None, input_path: Path | None) -> None:
    if path.is_dir():
        raise OutputPathError(f"{option_value}: is a directory; give the path of a file in it")
    if suffixes is not None and path.suffix.lower() not in suffixes:
        accepted = " or ".join(f"{suffix} ({kind})" for suffix, kind in suffixes.items())
        raise OutputPathError(f"{option_value}: the file name must end in {accepted}; choose another name")

    # A symbolic link is written through, so its target's directory is the one that must exist.
    directory = path.resolve().parent if path.is_symlink() else path.parent
    if not directory.exists():
        raise OutputPathError(f"{option_value}: the directory {str(directory)!r} does not exist; "
                              "create it or choose another path")
    if not directory.is_dir():
        raise OutputPathError(f"{option_value}: {str(directory)!r} is a file, not a directory; choose another path")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputPathError(f"{option_value}: the directory {str(directory)!r} is not writable; "
                              "choose another path or change the directory's permissions")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"{option_value}: the file exists and is not writable; "
                              "choose another path or change the file's permissions")
    if input_path is not None and path.exists() and input_path.exists() and path.samefile(input_path):
        raise OutputPathError(f"{option_value}: is the input file, which writing would destroy; choose another path")


def check_output_path(path: Path | None, option: str, *, suffixes: dict[str, str] | None = None,
                      input_path: Path | None = None) -> None:
    """Exit 2 with an ``error:`` line naming the option, the value and the fix when ``path`` cannot be written.

    Does nothing when ``path`` is None (the option was not given). Commands
    with ``--json`` call it inside ``publish_cmd.shared_errors_as_json``,
    which turns the error into JSON on stdout.
    """
    if path is None:
        return
    try:
        validate_output_path(path, option, suffixes=suffixes, input_path=input_path)
    except OutputPathError as exc:
        _exit_with_error(str(exc))


def check_rejects_path(rejects: Path | None, source: Path) -> None:
    """Exit 2 like ``check_output_path`` when the rejects file of ``publish`` or ``run`` cannot be written.

    Checks ``--rejects`` when it is given, else the default path that
    ``producer.files.default_rejects_path`` names in the current directory.
    ``source`` is the input file, or ``-`` for stdin.
    """
    input_path = None if str(source) == "-" else source
    if rejects is not None:
        check_output_path(rejects, "--rejects", input_path=input_path)
        return

    from producer.files import default_rejects_path

    fix = "Pass --rejects PATH to write rejected rows elsewhere than the current directory."
    try:
        default = Path.cwd() / default_rejects_path(str(source))
    except OSError as exc:  # such as when the current directory was deleted
        _exit_with_error(f"the current directory, where the default rejects file goes, cannot be read: {exc}. {fix}")
    try:
        validate_output_path(default, "the default rejects file", input_path=input_path)
    except OutputPathError as exc:
        _exit_with_error(f"{exc}. {fix}")


def _exit_with_error(message: str) -> NoReturn:
    # soft_wrap: a long path is printed whole, not cut at the console's width.
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2) from None
