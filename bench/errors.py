"""User-facing errors: one line naming the input and the fix; the CLI turns them into exit code 2.

The checks every command shares live here too, so each class of bad input is caught at one root: text
files that must be readable UTF-8, paths that must be (or become) regular files, numbers that must be finite.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path


class UserError(Exception):
    """A problem with what the user gave us (a file, a name, an argument), not a bug in the harness."""


ALIASES = {
    "learning_rate": "lr",
    "epochs": "max_steps",
    "steps": "max_steps",
    "seconds": "max_seconds",
    "samples": "max_samples",
    "wd": "weight_decay",
    "bs": "batch_size",
    "img_size": "image_size",
    "size": "image_size",
}


def did_you_mean(key: str, allowed) -> str:
    """ "did you mean 'lr'? " when `key` is close to one of `allowed`, or to a name users give it elsewhere
    (`learning_rate` for `lr`; difflib, as the registries' names), else ""."""
    import difflib

    allowed = [str(a) for a in allowed]
    names = {a: a for a in allowed} | {alias: target for alias, target in ALIASES.items() if target in allowed}
    close = difflib.get_close_matches(str(key), list(names), n=1)
    return f"did you mean {names[close[0]]!r}? " if close else ""


def read_text(path: Path, what: str, fix: str) -> str:
    """The UTF-8 text of `path`, or a UserError saying why it cannot be read (missing, a folder, no
    permission, not UTF-8 text) and `fix`."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        why = f"no such {what}"
    except IsADirectoryError:
        why = f"is a folder, not a {what}"
    except PermissionError:
        why = f"cannot read the {what} (permission denied)"
    except UnicodeDecodeError as exc:
        why = f"not a UTF-8 text {what} (byte {exc.start} is 0x{exc.object[exc.start]:02x}; a binary file?)"
    except OSError as exc:
        why = f"cannot read the {what} ({exc.strerror or exc})"
    raise UserError(f"{path}: {why} — {fix}")


def check_output_file(path: Path, flag: str) -> None:
    """Fail before any work when `path` cannot become a regular file: it is a folder, or a file stands where
    one of its parent folders must be, or the nearest existing parent is not writable."""
    if path.is_dir():
        raise UserError(f"{path}: is a folder — give a file path to {flag}")
    if path.exists() and not path.is_file():
        raise UserError(f"{path}: is not a regular file — give a file path to {flag}")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{path}: {parent} is a file, not a folder — give a file path to {flag} whose folders can exist")
    if not os.access(parent, os.W_OK):
        raise UserError(f"{path}: cannot write under {parent} (permission denied) — give a writable path to {flag}")


def nonfinite_numbers(value, path: str = "") -> list[str]:
    """Dotted paths of every NaN or infinite float inside nested dicts and lists (TOML allows nan and inf)."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [f"{path} = {value}"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in nonfinite_numbers(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in nonfinite_numbers(v, f"{path}[{i}]")]
    return []


def finite_float(text: str) -> float:
    """An argparse type: a finite number (argparse's float accepts nan and inf)."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    import argparse

    value = finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def check_target(path: Path, flag: str) -> None:
    """check_output_file, and its folder must exist already (views write beside what they read, never make folders)."""
    if not path.parent.is_dir():
        raise UserError(f"{path}: the folder {path.parent} does not exist — create it or give another {flag} path")
    check_output_file(path, flag)


def write_atomic(path: Path, data: bytes, flag: str) -> None:
    """`data` into `path` through a temporary file in its folder and os.replace: a reader never sees half a file."""
    temp = None
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as file:
            temp = Path(file.name)
            file.write(data)
        umask = os.umask(0)  # a temporary file is private (0600); the result gets a plain new file's mode
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, path)
    except OSError as exc:
        if temp is not None:
            temp.unlink(missing_ok=True)
        raise UserError(f"{path}: cannot write ({exc.strerror or exc}) — give a writable {flag} path") from None
