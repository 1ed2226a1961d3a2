"""
What the tox env `host` checks before the suite runs (``python check_installed.py [--install] HOST_PINS
[EXTRA_PINS...]``):

* with ``--install``, first: academy-consumer installed the normal way, as a host installs it (the wheel tox
  built, ``TOX_PACKAGE``, uninstalled, then ``pip install`` of it: its dependencies resolved, not ``--no-deps``,
  against pip's constraint, the host's pins, so an install that would move a pin fails); tox itself installs
  a package's dependencies and the package in two steps, the package with ``--no-deps``;
* every pin of HOST_PINS (a host's ``pip freeze``) is still installed at its version: installing academy-consumer
  moved none of them;
* nothing else is installed but academy-consumer itself, the repository's development-only dev stack and the pins
  of EXTRA_PINS (the test-only packages the host lacks, ``requirements/host-test.txt``): what academy-consumer
  needs at run time is all in the host's pins.

Prints one line per problem and exits 1 if there is any; prints one summary line and exits 0 otherwise.
"""

import os
import re
import subprocess
import sys
from importlib.metadata import distributions

OWN = "academy-consumer"
DEV_ONLY = {"academy-consumer-devstack"}  # devstack/, installed by every tox env for the tests, never by the package
TOOLS = {"pip"}  # the virtualenv's own (the host pins no version of it)


def canonical(name):
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path):
    """``{name: version}`` of the ``name==version`` lines of a requirements file."""
    pins = {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;#]+)", line)
            if match:
                pins[canonical(match.group(1))] = match.group(2)
    return pins


def install_normally():
    """``pip install`` the wheel tox built, as a host installs the package (after removing tox's install of it)."""
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "uninstall", "--yes", OWN], check=True)
    wheels = os.environ["TOX_PACKAGE"].split(os.pathsep)
    return subprocess.run([*pip, "install", *wheels], check=False).returncode


def main(host_path, *extra_paths):
    """Check the installed distributions against the pins; 0 if all is well, else 1."""
    if host_path == "--install":
        if install_normally():
            print(f"check_installed: pip install of {OWN} failed beside the host's pins")
            return 1
        host_path, *extra_paths = extra_paths
    host = read_pins(host_path)
    allowed = dict(host)
    for path in extra_paths:
        allowed.update(read_pins(path))
    installed = {canonical(dist.metadata["Name"]): dist.version for dist in distributions()}
    problems = [f"host pin {name}=={version} is {'missing' if name not in installed else installed[name]}"
                for name, version in sorted(host.items())
                if name not in TOOLS and installed.get(name) != version]
    problems += [f"{name} {version} is installed, and neither the host nor the test-only pins hold it"
                 for name, version in sorted(installed.items())
                 if name not in allowed and name not in TOOLS and name != OWN and name not in DEV_ONLY]
    if OWN not in installed:
        problems.append(f"{OWN} is not installed")
    for problem in problems:
        print(f"check_installed: {problem}")
    if problems:
        return 1
    print(f"check_installed: the {len(host)} pins of {host_path} are installed at their versions, "
          f"{OWN} {installed[OWN]} beside them, nothing else but the test-only pins")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
