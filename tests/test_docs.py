"""
The documentation against the repository and the code, without a stack: the README stays short and keeps the
two fresh-machine commands CI runs; every relative link of the README and of docs/ resolves to a file (and a
heading, when it names one); every page of docs/ is linked from the index docs/README.md, so each is within two
clicks of the README; every management command has its section in docs/reference/commands.md; every Prometheus
metric the code defines is in docs/reference/metrics-and-endpoints.md.
"""

import ast
import re
from pathlib import Path

import pytest
from django.core.management import get_commands

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
COMMANDS_PAGE = DOCS / "reference" / "commands.md"
METRICS_PAGE = DOCS / "reference" / "metrics-and-endpoints.md"
README_MAX_LINES = 150
# A Markdown link or image, [text](target); an rST link, `text <target>`_.
MD_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
RST_LINK = re.compile(r"`[^`<]*<([^>`]+)>`_")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
PROMETHEUS_TYPES = {"Counter": "_total", "Gauge": "", "Histogram": "", "Summary": "", "Info": "_info", "Enum": ""}


def _markdown_pages():
    return [README, *sorted(DOCS.rglob("*.md")), ROOT / "bench" / "README.md"]


def _links(path):
    """The link targets of a page, code blocks left out (their brackets are not links)."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return MD_LINK.findall(text) + (RST_LINK.findall(text) if path.suffix == ".rst" else [])


def _slug(heading):
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path):
    """The anchors of a Markdown page's headings (a repeated heading gets -1, -2... as on GitHub)."""
    anchors, seen = set(), {}
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M):
        slug = _slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_the_readme_is_short_and_keeps_the_two_fresh_machine_commands_ci_runs():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    assert re.search(r"^make demo\b", text, re.M) and re.search(r"^make test\b", text, re.M)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r'^stage "make test on SQLite[^"]*" .*\bmake test$', ci, re.M)
    assert re.search(r'^stage "make demo[^"]*" .*\bmake demo$', ci, re.M)


@pytest.mark.parametrize("page", [*_markdown_pages(), *sorted(DOCS.rglob("*.rst"))],
                         ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in _links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_every_docs_page_is_linked_from_the_index():
    index = DOCS / "README.md"
    linked = {(index.parent / target.partition("#")[0]).resolve() for target in _links(index)}
    pages = {page.resolve() for page in DOCS.rglob("*.md") if page != index}
    pages.add((DOCS / "decisions" / "README.rst").resolve())
    assert not pages - linked, sorted(str(page.relative_to(ROOT)) for page in pages - linked)
    assert "docs/README.md" in README.read_text(encoding="utf-8")


def test_every_command_has_its_section():
    commands = {name for name, app in get_commands().items() if app == "academy_consumer"} | {"devstack"}
    assert {"consume_academy_events", "reconcile_academies", "dead_letters", "consumer_lag"} <= commands
    sections = set(re.findall(r"^## (\S+)\s*$", COMMANDS_PAGE.read_text(encoding="utf-8"), re.M))
    assert not commands - sections, sorted(commands - sections)


def _metric_names():
    """Every Prometheus metric constructed in academy_consumer/, as it is scraped (a counter with ``_total``)."""
    names = set()
    for path in (ROOT / "academy_consumer").rglob("*.py"):
        calls = [node for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                 if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args]
        for call in calls:
            first = call.args[0]
            if call.func.id in PROMETHEUS_TYPES and isinstance(first, ast.Constant) and isinstance(first.value, str):
                suffix = PROMETHEUS_TYPES[call.func.id]
                names.add(first.value if first.value.endswith(suffix) else first.value + suffix)
    return names


def test_every_metric_is_documented():
    names = _metric_names()
    assert {"academy_consumer_events_total", "academy_consumer_lag", "academy_consumer_host_signals_total",
            "academy_consumer_host_receiver_errors_total"} <= names
    page = METRICS_PAGE.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(academy_consumer_\w+)` \|", page, re.M))
    assert names == documented, {"undocumented": sorted(names - documented), "gone": sorted(documented - names)}
