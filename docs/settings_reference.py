"""
Write ``docs/reference/settings.md`` from the setting and feature-toggle annotations (``setting_name``,
``toggle_name``...) of ``academy_consumer/`` (the Open edX annotation style, found with code-annotations, the
tool ``make quality`` lints them with), so that the reference cannot drift from the code.

    python docs/settings_reference.py           # (re)write docs/reference/settings.md
    python docs/settings_reference.py --check   # exit 1, naming the problem, when it is stale or incomplete

Besides each annotation (name, default, description), the page says where the setting is read, found in the
code rather than written by hand:

- in ``academy_consumer/``: ``getattr(settings, "X")`` and ``settings.X`` in any module, and every call of a
  function with an upper-case string first argument in the modules that define settings (``conf.py``'s
  accessors ``_raw("X", ...)`` / ``_number("X", ...)``, ``settings.py``'s ``env("X")``, ``env_bool``,
  ``env_list``...);
- by the libraries the app runs on for it (Django's own settings, and ``getattr(settings, 'X')``,
  ``settings.X`` or ``SettingToggle('X')`` in edx-event-bus-kafka, openedx-events, edx-django-utils,
  edx-rest-api-client).

Its scope follows: a setting read by the app outside ``academy_consumer/settings.py`` is set in a host
service's settings too ("host and standalone"); one that only the standalone settings module takes from the
environment is "standalone" (in a host, the host's own setting, when a library or Django reads it).

``tests/test_settings_reference.py`` runs :func:`check`: it fails when a setting the code reads has no
annotation, when an annotation names a setting nothing reads, and when the page is not what this writes.
"""

import argparse
import ast
import importlib.util
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "academy_consumer"
OUTPUT = ROOT / "docs" / "reference" / "settings.md"
STANDALONE_MODULE = "settings.py"

# Modules of academy_consumer/ that define settings: any call there whose first argument is an upper-case
# string reads the setting of that name (conf.py's accessors, settings.py's env() helpers).
SETTINGS_MODULES = ("conf.py", STANDALONE_MODULE)
SETTING_NAME = re.compile(r"[A-Z][A-Z0-9_]{2,}")

# Read by the code but set by nobody: Django's DATABASES is built from DATABASE_URL (standalone) or is the
# host's own; ACADEMY_CONSUMER_SETTINGS_ERRORS is where the standalone module records the bad values it met.
NOT_USER_SETTINGS = frozenset({"DATABASES", "ACADEMY_CONSUMER_SETTINGS_ERRORS"})

# The libraries whose reads of an annotated setting the page names (distribution name: import name).
LIBRARIES = {
    "edx-event-bus-kafka": "edx_event_bus_kafka",
    "openedx-events": "openedx_events",
    "edx-django-utils": "edx_django_utils",
    "edx-rest-api-client": "edx_rest_api_client",
}


@dataclass
class Setting:
    """One annotated setting (or toggle), as the page shows it."""

    name: str
    default: str
    description: str
    annotated_in: str
    line: int
    kind: str = "setting"
    read_in: list = field(default_factory=list)       # academy_consumer modules, e.g. "conf.py"
    read_by: list = field(default_factory=list)       # libraries, e.g. "edx-event-bus-kafka"


def _one_line(text):
    """An annotation's text as one Markdown line: whitespace collapsed, RST ````literals```` as `literals`."""
    return re.sub(r"``(.+?)``", r"`\1`", " ".join(str(text).split()))


def _annotation_configs():
    """code-annotations' own configuration files of the setting and the feature-toggle annotations."""
    import code_annotations.contrib.config as contrib  # pylint: disable=import-outside-toplevel
    folder = Path(contrib.__file__).parent
    return {"setting": folder / "setting_annotations.yaml", "toggle": folder / "feature_toggle_annotations.yaml"}


def annotations(package=PACKAGE):
    """Every setting and toggle annotation group of ``package``, as :class:`Setting` by name."""
    # pylint: disable=import-outside-toplevel
    from code_annotations.base import AnnotationConfig
    from code_annotations.find_static import StaticSearch

    found = {}
    for kind, config_file in _annotation_configs().items():
        config = AnnotationConfig(str(config_file), verbosity=-1, source_path_override=str(package))
        results = StaticSearch(config).search()
        for items in results.values():
            group = {}
            for item in items + [None]:
                token = item and item["annotation_token"].split("_", 1)[1].rstrip(":")
                if item is None or token == "name":
                    if group:
                        _add(found, kind, group, package)
                    group = {}
                if item is not None:
                    group[token] = item
    return dict(sorted(found.items()))


def _add(found, kind, group, package):
    """Record one annotation group (``token -> code-annotations item``); a name annotated twice is an error."""
    name = str(group["name"]["annotation_data"]).strip()
    where = str(Path(group["name"]["filename"]))
    if not Path(where).is_absolute() and not (package / where).exists():
        where = str(Path(where).name)
    where = str(Path(os.path.relpath(package / where, package)))
    if name in found:
        raise ValueError(f"{name} is annotated twice: {found[name].annotated_in} and {where}")
    default = group.get("default", {}).get("annotation_data", "")
    found[name] = Setting(
        name=name, default=_one_line(default), kind=kind,
        description=_one_line(group.get("description", {}).get("annotation_data", "")),
        annotated_in=where, line=group["name"]["line_number"])


def _reads_in_tree(tree, settings_module):
    """Setting names ``tree`` reads (see the module docstring for the forms)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "settings":
            names.add(node.attr)
        if not isinstance(node, ast.Call) or not node.args:
            continue
        args = node.args
        if isinstance(node.func, ast.Name) and node.func.id == "getattr" and len(args) >= 2:
            if isinstance(args[0], ast.Name) and args[0].id == "settings":
                args = args[1:]
            else:
                continue
        elif not settings_module or not isinstance(node.func, ast.Name):
            continue  # a method's upper-case argument (DATABASES["default"].get("ENGINE")) reads no setting
        if isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
            names.add(args[0].value)
    return {name for name in names if SETTING_NAME.fullmatch(name)}


def reads(package=PACKAGE):
    """``{setting name: sorted module paths of package that read it}``.

    The standalone settings module takes every setting of ``conf.SETTING_NAMES`` (the accessors' ``@_reads``
    registry) from the environment in one loop, so where it names ``SETTING_NAMES``, each of them is read there.
    """
    from academy_consumer import conf  # pylint: disable=import-outside-toplevel
    found = {}
    for path in sorted(package.rglob("*.py")):
        relative = str(path.relative_to(package))
        if relative.startswith("migrations"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        names = _reads_in_tree(tree, relative in SETTINGS_MODULES)
        if relative == STANDALONE_MODULE and any(
                isinstance(node, ast.Attribute) and node.attr == "SETTING_NAMES" for node in ast.walk(tree)):
            names |= set(conf.SETTING_NAMES)
        for name in names:
            found.setdefault(name, []).append(relative)
    return {name: sorted(modules) for name, modules in sorted(found.items())}


def library_reads(names):
    """``{setting name: [library, ...]}`` for ``names`` read by Django itself or by one of ``LIBRARIES``."""
    # pylint: disable=import-outside-toplevel
    from django.conf import global_settings

    found = {name: ["Django"] for name in names if hasattr(global_settings, name)}
    for distribution, module in LIBRARIES.items():
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            continue
        text = "\n".join(path.read_text(encoding="utf-8") for folder in spec.submodule_search_locations
                         for path in sorted(Path(folder).rglob("*.py")) if "tests" not in path.parts)
        for name in names:
            pattern = (rf"getattr\(\s*settings,\s*['\"]{name}['\"]|settings\.{name}\b"
                       rf"|SettingToggle\(\s*['\"]{name}['\"]")
            if re.search(pattern, text):
                found.setdefault(name, []).append(distribution)
    return found


def collect(package=PACKAGE):
    """The annotated settings with where each is read, and the problems :func:`check` reports."""
    settings = annotations(package)
    code_reads = reads(package)
    problems = [f"{name} is read in {', '.join(modules)} but has no `.. setting_name:` annotation"
                for name, modules in code_reads.items() if name not in settings and name not in NOT_USER_SETTINGS]
    for name, setting in settings.items():
        setting.read_in = code_reads.get(name, [])
        if not setting.read_in:
            problems.append(f"{name} is annotated in {setting.annotated_in} but nothing in academy_consumer/ "
                            f"reads it")
    for name, libraries in library_reads(list(settings)).items():
        settings[name].read_by = libraries
    return settings, problems


def scope(setting):
    """``host and standalone``, or ``standalone`` (with what a host does instead)."""
    if any(module != STANDALONE_MODULE for module in setting.read_in):
        return "host and standalone"
    if setting.read_by:
        return "standalone (in a host: the host's own setting)"
    return "standalone only"


def _where(setting):
    """Where ``setting`` is read, as Markdown."""
    places = [f"`academy_consumer/{module}`" + (" (from the environment)" if module == STANDALONE_MODULE else "")
              for module in setting.read_in]
    return ", ".join(places + setting.read_by)


def render(settings):
    """The Markdown page."""
    lines = [
        "# Settings reference",
        "",
        "<!-- Generated by `python docs/settings_reference.py` (`make settings-reference`) from the",
        "     `.. setting_name:` / `.. toggle_name:` annotations of academy_consumer/. Do not edit by hand:",
        "     tests/test_settings_reference.py fails when this page and the code disagree. -->",
        "",
        "Every setting academy-consumer reads. **Scope**: *host and standalone* settings are read by the app",
        "itself, so a host service that adds `academy_consumer` to `INSTALLED_APPS` sets them in its own Django",
        "settings; *standalone* ones are taken from the environment by the standalone settings module",
        "(`academy_consumer.settings`, what the `academy-consumer` script and the Docker image use), where every",
        "setting is the environment variable of the same name, and an empty variable means the default. A bad",
        "value stops a command with one line naming the setting and exit 2.",
        "",
        "| setting | default | scope |",
        "|---|---|---|",
    ]
    lines += [f"| [`{s.name}`](#{s.name.lower()}) | {s.default or '(none)'} | {scope(s)} |" for s in settings.values()]
    for setting in settings.values():
        lines += [
            "",
            f"## {setting.name}",
            "",
            f"- Default: {setting.default or '(none)'}",
            f"- Scope: {scope(setting)}",
            f"- Read in: {_where(setting)}",
            f"- Annotated in: `academy_consumer/{setting.annotated_in}`"
            + (" (a toggle: `.. toggle_name:`)" if setting.kind == "toggle" else ""),
            "",
            setting.description,
        ]
    return "\n".join(lines) + "\n"


def check(package=PACKAGE, output=OUTPUT):
    """The problems: unannotated reads, annotations of nothing read, and a page that is not :func:`render`'s."""
    settings, problems = collect(package)
    expected = render(settings)
    current = output.read_text(encoding="utf-8") if output.exists() else None
    if current != expected:
        shown = output.relative_to(ROOT) if output.is_relative_to(ROOT) else output
        problems.append(f"{shown} is not what `python docs/settings_reference.py` writes: "
                        f"run it (make settings-reference)")
    return problems


def main(argv=None):
    """Write the page, or with ``--check`` report what is wrong with it (exit 1)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0].strip())
    parser.add_argument("--check", action="store_true", help="Write nothing; exit 1 if the page is stale.")
    options = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "academy_consumer.settings")
    sys.path.insert(0, str(ROOT))
    if options.check:
        problems = check()
        for problem in problems:
            print(f"settings reference: {problem}", file=sys.stderr)
        return 1 if problems else 0
    settings, problems = collect()
    for problem in problems:
        print(f"settings reference: {problem}", file=sys.stderr)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(render(settings), encoding="utf-8")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
