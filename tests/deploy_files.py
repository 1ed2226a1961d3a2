"""
docker-compose.yml and the Dockerfile, read the way Docker reads them, for the tests that check what runs
without a Docker engine (tests/test_compose.py, tests/test_image.py).

Only the syntax these two files use is understood; anything else fails loudly instead of being misread:
Compose interpolation of ``$$``, ``${NAME}``, ``${NAME:-default}`` and ``${NAME-default}``; Dockerfile
instructions with ``\\`` continuations, ``#`` comment lines, stages named ``FROM ... AS name``, exec-form
(JSON) ``ENTRYPOINT``/``CMD`` and ``ENV key=value ...``.
"""

import json
import re
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

_VARIABLE = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^${}]*))?\})")


def interpolate(text, env):
    """``text`` with Compose's variable interpolation done from ``env`` (a dict: the shell or the .env file)."""
    leftover = _VARIABLE.sub("", text)
    if "$" in leftover:
        raise ValueError(f"interpolation this reader does not know in {text!r}")

    def value(match):
        if match.group(1):
            return "$"
        name, operator, default = match.group(2), match.group(3), match.group(4)
        found = env.get(name)
        if (operator == ":-" and not found) or (operator == "-" and found is None):
            return default
        return found or ""

    return _VARIABLE.sub(value, text)


def _interpolated(node, env):
    """``node`` (a loaded YAML value) with every string in it interpolated from ``env``."""
    if isinstance(node, dict):
        return {key: _interpolated(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolated(value, env) for value in node]
    return interpolate(node, env) if isinstance(node, str) else node


def compose(env=None):
    """docker-compose.yml as Compose sees it with the variables ``env`` (none by default) set."""
    return _interpolated(yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8")), env or {})


def dockerignore_patterns():
    """The patterns of .dockerignore (comments and blank lines left out)."""
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


class Instruction:
    """One Dockerfile instruction: its stage (the ``AS`` name of the last ``FROM``), keyword and argument text."""

    def __init__(self, stage, keyword, text):
        self.stage, self.keyword, self.text = stage, keyword, text

    def exec_form(self):
        """The JSON array of an exec-form ``ENTRYPOINT`` / ``CMD``."""
        value = json.loads(self.text)
        assert isinstance(value, list) and all(isinstance(item, str) for item in value), self.text
        return value

    def words(self):
        """A shell-form ``RUN`` (after its ``--mount=`` flags) or a ``COPY`` as words."""
        words = shlex.split(self.text)
        while words and words[0].startswith("--mount="):
            words.pop(0)
        return words

    def __repr__(self):
        return f"<{self.stage}: {self.keyword} {self.text}>"


def dockerfile():
    """The Dockerfile's instructions, in order."""
    instructions, stage, pending = [], None, ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") or (not line.strip() and not pending):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, text = pending.strip().partition(" ")
        pending = ""
        keyword = keyword.upper()
        if keyword == "FROM":
            stage = text.split()[-1] if " as " in text.lower() else None
        instructions.append(Instruction(stage, keyword, " ".join(text.split()) if keyword != "RUN" else text.strip()))
    assert not pending, f"the Dockerfile ends in a continuation: {pending!r}"
    return instructions


def image_config():
    """What the runtime image starts with: ``{"env": {...}, "entrypoint": [...], "cmd": [...], "expose": [...],
    "workdir": ..., "user": ...}`` of the last stage."""
    instructions = dockerfile()
    last = instructions[-1].stage
    config = {"env": {}, "expose": []}
    for instruction in (i for i in instructions if i.stage == last):
        if instruction.keyword == "ENV":
            for word in shlex.split(instruction.text):
                name, equals, value = word.partition("=")
                assert equals, f"ENV {instruction.text!r}: only the key=value form is read here"
                config["env"][name] = value
        elif instruction.keyword in ("ENTRYPOINT", "CMD"):
            config[instruction.keyword.lower()] = instruction.exec_form()
        elif instruction.keyword == "EXPOSE":
            config["expose"] += instruction.text.split()
        elif instruction.keyword in ("WORKDIR", "USER"):
            config[instruction.keyword.lower()] = instruction.text
    return config


def pip_command(stage, subcommand):
    """The words of the one ``RUN pip <subcommand> ...`` of ``stage``."""
    found = [i.words() for i in dockerfile() if i.stage == stage and i.keyword == "RUN"
             and i.words()[:2] == ["pip", subcommand]]
    assert len(found) == 1, f"{len(found)} `RUN pip {subcommand}` in the Dockerfile's stage {stage!r}"
    return found[0]
