"""The Colab bootstrap cell (tools/sync_bootstrap.py): every chapter starts with it, and it works.

``test_notebooks_start_with_the_bootstrap_cell`` is fast. ``test_bootstrap_in_a_fresh_venv`` (marked
``slow``, ~1-3 min) runs the cell the way Colab does, in IPython, in a new virtual environment that has
only ``requirements.txt`` installed:

- from ``notebooks/`` of a checkout, it uses the checkout without installing anything;
- elsewhere, with the package missing, it ``%pip install``s it: the test points the install at a copy of
  this checkout (``alexnet_lib @ file:///...``; the real cell installs from the GitHub URL in
  _config.yml, which CI cannot reach), then imports it and builds ``get_model("alexnet")``;
- with the package installed, it does nothing (no pip call).

Colab ships torch and torchvision preinstalled; a fresh venv would download them (with the CUDA wheels,
~5 GB and ~5 minutes here). So the venv gets those two, and exactly the distributions they require,
linked from the Python running the tests (which CI installs from requirements-dev.txt + constraints.txt);
everything else in requirements.txt pip installs into the venv. The venv never sees this Python's other
packages, nor its editable ``alexnet_lib``.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import sync_bootstrap  # noqa: E402

FROM_HOST = ["torch", "torchvision"]  # preinstalled on Colab


def test_notebooks_start_with_the_bootstrap_cell():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "sync_bootstrap.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_template_installs_from_the_configured_repository():
    url = sync_bootstrap.repository_url()
    cell = sync_bootstrap.render_cell()
    assert f'%pip install -q "alexnet_lib @ git+{url}"' in cell
    assert cell.count("\n") == 6 and cell.startswith(sync_bootstrap.MARKER)


def closure(names: list[str]) -> list[md.Distribution]:
    """The installed distributions ``names`` and, recursively, those they require (markers evaluated)."""
    seen: dict[str, md.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # an optional dependency that is not installed
        seen[name] = dist
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(seen.values())


def link_host_packages(names: list[str], dest: Path) -> None:
    """Symlink the top-level files and folders of ``names``' closure (dist-info included) into ``dest``."""
    dest.mkdir(parents=True)
    for dist in closure(names):
        base = Path(dist.locate_file(""))
        tops = {Path(f).parts[0] for f in dist.files or [] if not Path(f).parts[0].startswith("..")}
        for top in tops:
            src = base / top
            if src.exists() and not (dest / top).exists() and top != "__pycache__":
                (dest / top).symlink_to(src)


def run(cmd: list[str], cwd: Path | None = None, timeout: int = 900) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")})
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


# Runs in the venv: the cell in an IPython shell (as Colab does), with %pip counted; then the model.
DRIVER = textwrap.dedent("""
    import json, sys
    from IPython.core.interactiveshell import InteractiveShell
    cell = open(sys.argv[1]).read()
    shell = InteractiveShell.instance()
    pip_calls = []
    real_pip = shell.find_line_magic("pip")
    def pip(line):
        pip_calls.append(line)
        return real_pip(line)
    shell.register_magic_function(pip, "line", "pip")
    shell.run_cell(cell).raise_error()
    shell.run_cell("import alexnet_lib\\n"
                   "from alexnet_lib import count_parameters, get_model\\n"
                   "n_params = count_parameters(get_model('alexnet'))").raise_error()
    print(json.dumps({"pip_calls": pip_calls, "n_params": shell.user_ns["n_params"],
                      "module": shell.user_ns["alexnet_lib"].__file__}))
""")


@pytest.mark.slow
def test_bootstrap_in_a_fresh_venv(tmp_path):
    if any(f not in {d.metadata["Name"].lower() for d in md.distributions()} for f in FROM_HOST):
        pytest.skip("torch/torchvision are not installed here (pip install -r requirements.txt)")
    # A copy of the checkout to install from (what `git+<repository url>` gets on Colab).
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT, checkout, ignore=shutil.ignore_patterns(
        ".git", "_build", "_vendor", ".make", "node_modules", "test-artifacts", "*.egg-info", "__pycache__",
        ".venv", "venv", "data", "runs", ".ruff_cache", ".pytest_cache", ".benchmarks"))
    # The venv: torch/torchvision (and their requirements) linked from this Python, the rest installed.
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    py = venv / "bin" / "python"
    site = Path(run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    host = tmp_path / "host-packages"
    link_host_packages(FROM_HOST, host)
    (site / "colab-preinstalled.pth").write_text(f"{host}\n")
    run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r",
         str(ROOT / "requirements.txt"), "-c", str(ROOT / "constraints.txt")], cwd=ROOT)
    probe = "import importlib.util as u, sys; print(u.find_spec('alexnet_lib')); print(sys.path)"
    spec, path = run([str(py), "-c", probe], cwd=tmp_path).splitlines()[-2:]
    assert spec == "None", "alexnet_lib is importable in the fresh venv before the cell ran"
    assert sysconfig.get_paths()["purelib"] not in path, "the venv sees this Python's site-packages"

    target = f"alexnet_lib @ {checkout.as_uri()}"
    cell = tmp_path / "cell.py"
    cell.write_text(sync_bootstrap.render_cell(target))
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    expected = 60_965_224  # the paper's network (tests/test_models.py)

    # 1. In notebooks/ of a checkout: use it in place, install nothing.
    (checkout / "notebooks").mkdir(exist_ok=True)
    out = json.loads(run([str(py), str(driver), str(cell)], cwd=checkout / "notebooks").splitlines()[-1])
    assert out["pip_calls"] == [] and out["n_params"] == expected
    assert out["module"].startswith(str(checkout))

    # 2. Colab: no checkout around, package missing -> %pip install, then import.
    colab = tmp_path / "content"
    colab.mkdir()
    out = json.loads(run([str(py), str(driver), str(cell)], cwd=colab).splitlines()[-1])
    assert len(out["pip_calls"]) == 1 and checkout.as_uri() in out["pip_calls"][0], out
    assert out["n_params"] == expected
    assert out["module"].startswith(str(site)), f"imported from {out['module']}, not from the venv"

    # 3. Installed: the cell does nothing.
    out = json.loads(run([str(py), str(driver), str(cell)], cwd=colab).splitlines()[-1])
    assert out["pip_calls"] == [] and out["n_params"] == expected
