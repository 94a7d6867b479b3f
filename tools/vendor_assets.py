#!/usr/bin/env python3
"""Fetch the scripts the rendered book needs, so that its pages work without a CDN.

The HTML pages need MathJax (math), RequireJS and the ipywidgets HTML manager (widgets rendered from the
widget state saved in the notebooks). Out of the box Sphinx and MyST-NB load them from CDNs. This script
takes pinned versions of the three npm packages from the npm registry (``npm pack``: the package
tarballs only, checked against the sha512 integrity pinned below; npm's cache makes a second run work
with the network unplugged), and unpacks the files a page loads into ``_vendor/html/``. The local Sphinx
extension ``book/_ext/offline_assets.py`` then points the pages at copies of them that it puts into the
built site (``_build/html/_vendor/``), and falls back to the CDNs, saying so, when they are missing.

    python tools/vendor_assets.py            # vendor (no-op when already done); exit 0 even if npm fails
    python tools/vendor_assets.py --strict   # exit 1 when the assets cannot be vendored
    python tools/vendor_assets.py --force    # fetch and unpack again

``_vendor/`` is ignored by git: it is rebuilt from the pins below on every fresh clone.
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "_vendor"
HTML = VENDOR / "html"  # copied as a whole to <site>/_vendor/ by book/_ext/offline_assets.py
MANIFEST = VENDOR / "manifest.json"

# name: (npm package, version, integrity from the registry, entry file, files kept (globs in the package))
# html-manager 1.x is the one for ipywidgets 8 (@jupyter-widgets/controls 5, base 6; its embed-amd.js also
# bundles the ipywidgets 7 models); MyST-NB's default is 1.0.6 from a CDN.
PACKAGES: dict[str, tuple[str, str, str, str, list[str]]] = {
    "mathjax": (
        "mathjax",
        "3.2.2",
        "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
        "es5/tex-mml-chtml.js",
        # The component Sphinx loads, plus what it loads on demand: TeX/MathML extensions (autoload),
        # the CHTML fonts, the menu and the accessibility/speech parts the menu can switch on.
        ["LICENSE", "es5/tex-mml-chtml.js", "es5/input/tex/*", "es5/input/mml/*", "es5/output/chtml/*",
         "es5/ui/*", "es5/a11y/*", "es5/sre/*"],
    ),
    "requirejs": (
        "requirejs",
        "2.3.8",
        "sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw==",
        "require.js",
        ["require.js", "package.json"],
    ),
    "html-manager": (
        "@jupyter-widgets/html-manager",
        "1.0.15",
        "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
        "dist/embed-amd.js",
        # embed-amd.js bundles RequireJS modules @jupyter-widgets/base, controls (and their 7.x versions)
        # and the manager; the webfonts are Font Awesome's, for widget icons, fetched next to it.
        ["package.json", "dist/embed-amd.js", "dist/embed.js.LICENSE.txt", "dist/*.woff2", "dist/*.woff",
         "dist/*.ttf", "dist/*.eot", "dist/*.svg"],
    ),
}


def site_dir(name: str) -> str:
    """Folder of a package inside ``_vendor/html`` (and ``<site>/_vendor``): versioned, so cache-safe."""
    return f"{name}-{PACKAGES[name][1]}"


def pins_digest() -> str:
    return hashlib.sha256(json.dumps(PACKAGES, sort_keys=True).encode()).hexdigest()[:16]


def is_current() -> bool:
    try:
        manifest = json.loads(MANIFEST.read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("pins") == pins_digest() and all(
        (HTML / entry).is_file() for entry in manifest.get("entries", {}).values()
    )


def check_integrity(tarball: Path, integrity: str) -> None:
    algo, _, expected = integrity.partition("-")
    digest = base64.b64encode(hashlib.new(algo, tarball.read_bytes()).digest()).decode()
    if digest != expected:
        raise RuntimeError(f"{tarball.name}: {algo} is {digest}, the pin says {expected}")


def npm_pack(specs: list[str], dest: Path) -> list[dict]:
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed (Debian: apt-get install npm; or Node.js >= 18)")
    cmd = [npm, "pack", "--json", "--prefer-offline", "--ignore-scripts", "--pack-destination", str(dest),
           *specs]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd[1:])}` failed:\n{proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout)


def unpack(tarball: Path, patterns: list[str], dest: Path) -> int:
    """Extract the files of ``tarball`` (an npm tarball: everything under ``package/``) that match."""
    count = 0
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar.getmembers():
            if not member.isfile() or not member.name.startswith("package/"):
                continue
            rel = member.name[len("package/"):]
            if ".." in Path(rel).parts or not any(fnmatch.fnmatch(rel, p) for p in patterns):
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            count += 1
    return count


def vendor() -> dict:
    with tempfile.TemporaryDirectory(prefix="vendor-") as tmp:
        tmp = Path(tmp)
        specs = [f"{pkg}@{version}" for pkg, version, *_ in PACKAGES.values()]
        packed = {(d["name"], d["version"]): tmp / d["filename"] for d in npm_pack(specs, tmp)}
        staging = VENDOR / "html.new"
        shutil.rmtree(staging, ignore_errors=True)
        entries, versions = {}, {}
        for name, (pkg, version, integrity, entry, patterns) in PACKAGES.items():
            tarball = packed[(pkg, version)]
            check_integrity(tarball, integrity)
            n = unpack(tarball, patterns, staging / site_dir(name))
            entries[name] = f"{site_dir(name)}/{entry}"
            versions[name] = f"{pkg}@{version}"
            if not (staging / entries[name]).is_file():
                raise RuntimeError(f"{pkg}@{version}: {entry} missing from the package")
            print(f"vendor_assets: {pkg}@{version}: {n} files")
        shutil.rmtree(HTML, ignore_errors=True)
        staging.rename(HTML)
    manifest = {"pins": pins_digest(), "packages": versions, "entries": entries}
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strict", action="store_true", help="exit 1 when the assets cannot be vendored")
    parser.add_argument("--force", action="store_true", help="fetch and unpack even when up to date")
    args = parser.parse_args(argv)
    if is_current() and not args.force:
        print(f"vendor_assets: {HTML.relative_to(ROOT)} is up to date")
        return 0
    VENDOR.mkdir(exist_ok=True)
    try:
        vendor()
    except Exception as exc:  # noqa: BLE001 - any failure means: fall back to the CDNs
        fallback = ("the book keeps the copies vendored before" if MANIFEST.is_file() else "the book will "
                    "load them from CDNs: reading it will need the network for math and widgets")
        print(f"vendor_assets: could not vendor MathJax/RequireJS/html-manager: {exc}\n"
              f"vendor_assets: {fallback}.", file=sys.stderr)
        return 1 if args.strict else 0
    size = sum(f.stat().st_size for f in HTML.rglob("*") if f.is_file())
    print(f"vendor_assets: {HTML.relative_to(ROOT)} ready ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
