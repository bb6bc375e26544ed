"""`make audit`: check moot's dependencies for known vulnerabilities with pip-audit.

Run with the project's venv python (it reads what is installed there):

    .venv/bin/python scripts/audit-deps.py PATH/TO/pip-audit

Two sets, each pinned to the versions installed in the venv:

* runtime: what moot and its user-facing extras (every extra but ``dev``)
  pull in. A known vulnerability here FAILS (exit 1).
* dev/test: what ``moot[dev]`` adds (pytest, mypy, the docs tools, the
  clients the tests use). Reported, never failing: it does not ship.

When the advisory database cannot be reached (pip-audit fails, or cannot
look up a single package), it says so and exits 0: the audit reports
without blocking. Packages it could not look up are always listed.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import subprocess
import sys
import tempfile

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

SERVICE = os.environ.get("AUDIT_SERVICE", "pypi")  # PyPI's JSON API: reached wherever pip is


def closure(project: str, extras: set[str]) -> dict[str, str]:
    """Installed name -> version of everything ``project[extras]`` needs (not ``project`` itself)."""
    found: dict[str, str] = {}
    todo = [(project, frozenset(extras))]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        dist = metadata.distribution(name)
        if name != project:
            found[canonicalize_name(name)] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            environments = [{"extra": extra} for extra in wanted] or [{"extra": ""}]
            if req.marker is not None and not any(req.marker.evaluate(env) for env in environments):
                continue
            if canonicalize_name(req.name) == canonicalize_name(project):  # moot[all] names other extras
                todo.append((project, frozenset(req.extras)))
                continue
            try:
                metadata.distribution(req.name)
            except metadata.PackageNotFoundError:
                raise SystemExit(f"audit: {req.name} (needed by {name}) is not installed; run make test's "
                                 f"install first (pip install -e '.[all,dev]')") from None
            todo.append((req.name, frozenset(req.extras)))
    return found


def audit(pip_audit: str, label: str, pins: dict[str, str]) -> tuple[list[str], list[str], bool]:
    """(vulnerabilities found, packages not looked up, whether the database answered at all)."""
    with tempfile.TemporaryDirectory(prefix="moot-audit-") as tmp:
        requirements = os.path.join(tmp, "requirements.txt")
        report = os.path.join(tmp, "report.json")
        with open(requirements, "w", encoding="utf-8") as out:
            out.writelines(f"{name}=={version}\n" for name, version in sorted(pins.items()))
        run = subprocess.run([pip_audit, "--vulnerability-service", SERVICE, "--requirement", requirements,
                              "--no-deps", "--disable-pip", "--progress-spinner", "off", "--format", "json",
                              "--output", report], capture_output=True, text=True, check=False)
        try:
            with open(report, encoding="utf-8") as data:
                dependencies = json.load(data)["dependencies"]
        except (OSError, ValueError, KeyError):
            last = (run.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"audit: {label}: pip-audit could not reach the advisory database ({SERVICE}): {last}")
            return [], sorted(pins), False
    found = [f"{dep['name']} {dep['version']}: {vuln['id']}"
             f"{' (fixed in ' + ', '.join(vuln['fix_versions']) + ')' if vuln.get('fix_versions') else ''}"
             for dep in dependencies for vuln in dep.get("vulns", [])]
    skipped = [f"{dep['name']}: {dep['skip_reason']}" for dep in dependencies if "skip_reason" in dep]
    return found, skipped, len(skipped) < len(dependencies)


def main() -> int:
    if len(sys.argv) != 2:
        raise SystemExit("usage: audit-deps.py PATH/TO/pip-audit")
    pip_audit = sys.argv[1]
    user_extras = {extra for extra in metadata.metadata("moot").get_all("Provides-Extra") or [] if extra != "dev"}
    runtime = closure("moot", user_extras)
    dev = {name: version for name, version in closure("moot", {"dev"}).items() if name not in runtime}
    failed = False
    for label, pins, blocking in (("runtime", runtime, True), ("dev/test", dev, False)):
        found, skipped, answered = audit(pip_audit, label, pins)
        print(f"audit: {label} dependencies ({len(pins)} packages, extras "
              f"{','.join(sorted(user_extras)) if blocking else 'dev'}): "
              f"{len(found)} known vulnerabilities, {len(skipped)} not looked up")
        for line in found:
            print(f"  VULNERABLE {line}")
        if not answered:
            print(f"audit: WARNING: {label}: the advisory database gave no answer for any package; "
                  f"not blocking (check the network, or AUDIT_SERVICE=osv)")
        elif skipped:
            for line in skipped:
                print(f"  not audited: {line}")
        if found and blocking:
            failed = True
        elif found:
            print(f"audit: WARNING: {label}: vulnerable packages above (not shipped with moot; not blocking)")
    if failed:
        print("audit: FAILED: a runtime dependency has a known vulnerability: raise its lower bound in "
              "pyproject.toml to a fixed version (or pin around it) and rerun make audit")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
