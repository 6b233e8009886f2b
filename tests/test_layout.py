"""The shape of the code: who may import whom, and one installed import name.

- The coordinator (``server/``) never imports a site module (``client/``) or simulation code
  (``simulations/``), and the site never imports the coordinator or simulation code: both sides
  share only ``protocol/`` for their messages.
- No import cycle between folders: ``core/`` is at the bottom, ``fedsynth/`` (the CLI) at the top.
- The installed distribution exposes ``fedsynth`` only, so a user's own ``models/`` or
  ``server.py`` shadows nothing.
"""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FEDSYNTH = str(Path(sys.executable).parent / "fedsynth")


def folders() -> list[str]:
    """The root folders installed as ``fedsynth.<name>`` (pyproject's package-dir), plus ``fedsynth/``."""
    import tomllib

    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    return sorted({path.split("/")[0] for path in mapping.values()})


def folder_imports() -> dict[str, dict[str, list[str]]]:
    """folder -> imported folder -> the importing files (every import statement, at any depth)."""
    known = set(folders())
    graph: dict[str, dict[str, list[str]]] = {}
    for folder in known:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
                names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
                for name in names:
                    parts = name.split(".")
                    if parts[0] != "fedsynth":
                        continue
                    target = parts[1] if len(parts) > 1 and parts[1] in known else "fedsynth"
                    if target != folder:
                        graph.setdefault(folder, {}).setdefault(target, []).append(str(path.relative_to(ROOT)))
    return graph


def test_coordinator_and_sites_share_only_the_protocol():
    graph = folder_imports()
    for side, forbidden in (("server", ("client", "simulations")), ("client", ("server", "simulations"))):
        for other in forbidden:
            assert other not in graph.get(side, {}), f"{side}/ imports {other}/: {graph[side][other]}"
    assert "protocol" in graph["server"] and "protocol" in graph["client"]


def test_no_import_cycle_between_folders():
    graph = folder_imports()

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), {}):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    cycles = [(a, b, graph[a][b][:2]) for a in graph for b in graph[a] if a in reachable(b)]
    assert not cycles, f"folder import cycles (folder, imported folder, files): {cycles}"
    assert "core" not in graph or set(graph["core"]) == set(), "core/ must import no other folder"
    assert not any("fedsynth" in targets for targets in graph.values()), "only fedsynth/ may import the CLI"


def test_the_distribution_installs_one_import_name():
    dist = importlib.metadata.distribution("fedsynth")
    top_level = (dist.read_text("top_level.txt") or "").split()
    assert top_level == ["fedsynth"]
    for folder in folders():
        if folder == "fedsynth":
            continue
        found = subprocess.run([sys.executable, "-c", f"import {folder}"], cwd="/", capture_output=True, text=True)
        assert found.returncode != 0 and "No module named" in found.stderr, f"'{folder}' is importable on its own"


SHADOWS = {
    "models/__init__.py": "raise ImportError('the user models package was imported')\n",
    "server.py": "raise ImportError('the user server.py was imported')\n",
    "client/__init__.py": "raise ImportError('the user client package was imported')\n",
    "metrics/__init__.py": "raise ImportError('the user metrics package was imported')\n",
    "privacy.py": "raise ImportError('the user privacy.py was imported')\n",
}


def test_a_users_own_models_server_client_and_metrics_shadow_nothing(tmp_path):
    for name, text in SHADOWS.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    # The CLI and every subpackage import from a folder whose own modules would fail if imported.
    code = (
        "import fedsynth.cli, fedsynth.server.federation, fedsynth.client.client_app, fedsynth.metrics.evaluate, "
        "fedsynth.models.gan, fedsynth.privacy.budget; print('ok')"
    )
    imported = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert imported.returncode == 0 and imported.stdout.strip() == "ok", imported.stderr[-2000:]
    # The installed command, run from that folder, works (a quick command that imports the CLI's modules).
    ran = subprocess.run([FEDSYNTH, "schema", "check", "--help"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert ran.returncode == 0 and "Traceback" not in ran.stderr, ran.stderr[-2000:]
