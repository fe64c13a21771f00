"""The README as GitHub shows it: short, its links resolve, its set-up commands are the ones CI runs.

The pages under docs/ are checked by `mkdocs build --strict` in .ci/run (links, anchors, navigation); the README is
not part of that site, so its links are checked here.
"""

import re
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
INSTALL_AND_RUN = (
    'pip install torch==2.13.0 && pip install -e ".[dev]" && '
    'diffclip zero-shot --labels "two cats,a dog,a remote control" http://images.cocodataset.org/val2017/000000039769.jpg'
)
TEST_COMMAND = "HF_HUB_OFFLINE=1 python -m pytest -q tests"


def _prose(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def _github_anchors(text: str) -> set[str]:
    """GitHub's heading ids: lower case, punctuation other than '-' dropped, spaces turned into '-'."""
    headings = re.findall(r"^#{1,6} (.+)$", _prose(text), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def test_readme_fits_on_a_screen():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; keep it at most 200 and move detail to docs/"


def test_readme_keeps_the_set_up_commands_ci_runs():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert INSTALL_AND_RUN in lines
    assert TEST_COMMAND in lines
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_readme_links_resolve():
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", _prose(text))
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert any(link.startswith("docs/") for link in local), "the README links no docs/ page"
    broken = []
    for link in local:
        path, _, anchor = link.partition("#")
        target = ROOT / path if path else README
        if not target.is_file():
            broken.append(f"{link} (no file {path})")
        elif anchor and anchor not in _github_anchors(target.read_text(encoding="utf-8")):
            broken.append(f"{link} (no heading #{anchor} in {target.name})")
    assert not broken, f"README.md links that do not resolve: {broken}"


def test_every_docs_page_is_linked_from_the_readme():
    linked = set(re.findall(r"\]\((docs/[^)#\s]+)", README.read_text(encoding="utf-8")))
    pages = {f"docs/{page.name}" for page in (ROOT / "docs").glob("*.md") if page.name != "index.md"}
    assert pages <= linked, f"docs pages missing from the README's contents: {sorted(pages - linked)}"
