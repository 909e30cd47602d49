"""docs/ is the project's own reference (issue 13): the five files exist, every `docs/X.md §Name`
citation in the project names a real section, and compatibility.md names tests that exist."""
import re
import subprocess

import pytest

DOCS = ("formats", "labels", "postprocessing", "compatibility", "architecture", "refusals")
TEXT_SUFFIXES = (".py", ".md", ".j2", ".yaml", ".yml", ".sh", ".txt", ".cfg", ".ini", ".toml")
CITATION = re.compile(r"docs/(\w+)\.md`?\s*§\s*([^\n]*)")


def tracked_text_files(repo_root):
    """The project's tracked text files (git ls-files; a plain walk outside a git checkout)."""
    try:
        out = subprocess.run(["git", "ls-files"], cwd=repo_root, capture_output=True, text=True, check=True).stdout
        paths = [repo_root / line for line in out.splitlines()]
    except (OSError, subprocess.CalledProcessError):
        paths = [p for p in repo_root.rglob("*") if not any(part.startswith((".", "build")) for part in
                                                          p.relative_to(repo_root).parts)]
    return [p for p in paths if p.is_file() and (p.suffix in TEXT_SUFFIXES or p.name == "Makefile")]


def headings(repo_root, name):
    text = (repo_root / "docs" / f"{name}.md").read_text()
    return [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")]


@pytest.mark.parametrize("name", DOCS)
def test_each_doc_exists_with_sections(repo_root, name):
    assert len(headings(repo_root, name)) >= 4


def test_every_docs_citation_names_a_section(repo_root):
    sections = {name: headings(repo_root, name) for name in DOCS}
    bad, cited = [], 0
    for path in tracked_text_files(repo_root):
        for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for doc, rest in CITATION.findall(line):
                if rest.startswith("Name`"):           # the convention itself, as the docs explain it
                    continue
                cited += 1
                if doc not in sections or not any(rest.startswith(h) for h in sections[doc]):
                    bad.append(f"{path.relative_to(repo_root)}:{lineno}: docs/{doc}.md §{rest[:40]}")
    assert cited >= 10
    assert not bad, "unknown sections (see the headings of docs/*.md):\n" + "\n".join(bad)


def test_compatibility_names_tests_that_exist(repo_root):
    text = (repo_root / "docs" / "compatibility.md").read_text()
    checked = 0
    for line in text.splitlines():
        current = None
        for match in re.finditer(r"`(test_\w+\.py)(?:::(\w+))?`|`::(\w+)`", line):
            if match.group(1):
                current = repo_root / "tests" / match.group(1)
                assert current.is_file(), match.group(1)
            function = match.group(2) or match.group(3)
            if function:
                assert current is not None and re.search(rf"def {function}\(", current.read_text()), \
                    f"{current.name}::{function}"
                checked += 1
    assert checked > 40
    for bench in re.findall(r"`(\w+\.py)`", text.split("## Benchmarks", 1)[1]):
        assert (repo_root / "benchmarks" / bench).is_file(), bench


def test_no_file_cites_the_team_folder(repo_root):
    """The project cites its own docs/: no tracked file mentions the shared spec folder or the
    third-party data folder, except the tests' data loader, and no section is cited by number
    (docs/ sections have names)."""
    pattern = re.compile(r"(?<![\w.])" + "spec" + "/|" + re.escape(".." + "/shared") + "|" + "\u00a7" + r"\s?\d")
    bad = [f"{path.relative_to(repo_root)}:{lineno}: {line.strip()[:80]}"
           for path in tracked_text_files(repo_root) if path.relative_to(repo_root).as_posix() != "tests/conftest.py"
           for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1) if pattern.search(line)]
    assert not bad, "cite docs/*.md instead:\n" + "\n".join(bad)
