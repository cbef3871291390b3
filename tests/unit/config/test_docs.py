"""The README links only to files that exist (the docs site's own links are checked by `mkdocs build --strict`)."""

import re

from paths import ROOT


def test_the_readme_links_resolve():
    text = (ROOT / "README.md").read_text()
    targets = {t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t and not t.startswith("#")}
    assert targets, "the README links nothing"
    missing = sorted(t for t in targets if not (ROOT / t).exists())
    assert not missing, missing


def test_every_docs_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert [p for p in pages if p not in nav] == []
