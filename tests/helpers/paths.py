"""Where the repository is, for tests that read its committed files."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def link_items(folder: Path) -> None:
    """The committed rows' per-item folders beside a copy of their results file in `folder` (rows name their items
    file relative to the results file)."""
    for items in (ROOT / "results").glob("*_items"):
        if not (folder / items.name).exists():
            (folder / items.name).symlink_to(items)


def copy_rows(source: Path, path: Path) -> Path:
    """A copy of a committed results file at `path`, its items linked beside it."""
    path.write_bytes(source.read_bytes())
    link_items(path.parent)
    return path
