"""The documentation: a short README that links every page, links that resolve inside the
repository, and a command reference that is the CLI's own ``--help``."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 150
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def markdown_files() -> list[Path]:
    skip = {".venv", ".venv-chain", "weights", "reference", "runs", ".pytest_cache"}
    return sorted(p for p in ROOT.rglob("*.md") if not (set(p.relative_to(ROOT).parts[:-1]) & skip)
                  or p == ROOT / "weights" / "README.md")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower().replace("_", "_"))
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen, fenced = set(), {}, False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if fenced or not line.startswith("#"):
            continue
        s = slug(line.lstrip("#"))
        n = seen.get(s, 0)
        seen[s] = n + 1
        found.add(s if n == 0 else f"{s}-{n}")
    return found


def links(path: Path) -> list[str]:
    text, out, fenced = path.read_text(), [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced:
            out += [a or b for a, b in LINK.findall(line)]
    return out


def broken_links(files: list[Path], root: Path = ROOT) -> list[str]:
    bad = []
    for md in files:
        for target in links(md):
            if re.match(r"[a-z]+:", target):       # http(s), mailto: outside links are fine
                continue
            file, _, anchor = target.partition("#")
            dest = (md.parent / file).resolve() if file else md
            rel = f"{md.relative_to(root)}: {target}"
            if root not in dest.parents and dest != root:
                bad.append(f"{rel} points outside the repository")
            elif not dest.exists():
                bad.append(f"{rel}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                bad.append(f"{rel}: no heading with that anchor")
    return bad


def test_readme_is_short_and_maps_every_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(ROOT / "README.md")}
    pages = set((ROOT / "docs").glob("*.md"))
    assert pages, "docs/ holds no page"
    assert {p.resolve() for p in pages} - linked == set(), "link every docs/ page from the README"
    for name in ("LICENSE", "CHANGELOG.md"):
        assert (ROOT / name).is_file(), name


def test_every_link_resolves_inside_the_repository():
    files = markdown_files()
    assert len(files) >= 10, files
    assert broken_links(files) == []
    for md in files:
        assert "../shared" not in md.read_text(), f"{md} names a path outside the repository"


def test_the_link_check_can_fail(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Real heading\n")
    bad = tmp_path / "README.md"
    bad.write_text("[ok](docs/a.md#real-heading) [gone](docs/b.md) [anchor](docs/a.md#nope) "
                   "[out](../elsewhere.md) [web](https://example.org)\n")
    found = broken_links([bad], tmp_path)
    assert [f.split(": ", 1)[1] for f in found] == [
        "docs/b.md: no such file", "docs/a.md#nope: no heading with that anchor",
        "../elsewhere.md points outside the repository"], found


def test_command_reference_is_the_clis_help():
    pytest.importorskip("click")
    from stylex_port.cli import command_reference

    page = ROOT / "docs" / "commands.md"
    assert page.read_text() == command_reference(), (
        "docs/commands.md is stale: python cli.py command-reference > docs/commands.md")
