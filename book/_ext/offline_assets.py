"""Serve MathJax, RequireJS and the ipywidgets HTML manager from the built book itself.

Out of the box Sphinx loads MathJax, and MyST-NB loads RequireJS and ``@jupyter-widgets/html-manager``,
from CDNs: offline, or where those CDNs are blocked, math stays raw TeX and widgets stay blank.
``tools/vendor_assets.py`` (run by ``make book``) unpacks pinned copies into ``_vendor/html/`` with a
``_vendor/manifest.json``. When they are there, this extension

- points ``mathjax_path`` and ``nb_ipywidgets_js`` at ``_vendor/...``, unless ``_config.yml`` sets them
  itself. Sphinx takes a relative script path as relative to ``_static/``, hence ``../_vendor/...``;
  a page in a sub-folder gets ``../_static/../_vendor/...``, which the browser resolves to the site's
  ``_vendor/`` before it sends the request;
- gives the widget manager local URLs only: its fallback loader for widget modules that it does not
  bundle (``data-jupyter-widgets-cdn``) and the folder its webfonts are fetched from (RequireJS
  ``paths``), so no request leaves the book's own server;
- copies ``_vendor/html/`` to ``<html output>/_vendor/`` (not ``_static/``: every script there would be
  added to every page) before the pages are written, so Sphinx adds its ``?v=<checksum>`` to them.

When they are missing it keeps the CDN URLs and says so in an info line (the build runs with ``-W``).

Two fixes for errors that the browser test (tests/test_browser.py) found in the console on page load,
with or without the vendored copies: inline scripts that Sphinx 7.4 writes twice (sphinx-thebe's
``const THEBE_JS_URL`` twice is a SyntaxError), and ipywidgets calling MathJax 2's ``MathJax.Hub.Queue``
while the book loads MathJax 3 (see ``MATHJAX2_QUEUE_SHIM``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)

SITE_DIR = "_vendor"  # the folder inside the HTML output
FROM_STATIC = f"../{SITE_DIR}"  # the same, as a script path (Sphinx: relative to _static/)
WIDGET_MANAGER = "@jupyter-widgets/html-manager"


def _load_manifest(app) -> dict | None:
    root = Path(app.srcdir) / app.config.offline_assets_dir
    try:
        manifest = json.loads((root / "manifest.json").read_text())
        entries = manifest["entries"]
    except (OSError, ValueError, KeyError):
        return None
    if not all((root / "html" / entries[k]).is_file() for k in ("mathjax", "requirejs", "html-manager")):
        return None
    manifest["html"] = root / "html"
    return manifest


def _default_ipywidgets_js() -> dict:
    from myst_nb.core.config import ipywidgets_js_factory

    return ipywidgets_js_factory()


def on_config_inited(app, config) -> None:
    from sphinx.ext.mathjax import MATHJAX_URL

    manifest = _load_manifest(app)
    app.offline_assets = manifest
    if manifest is None:
        logger.info(
            "[offline_assets] no vendored MathJax/RequireJS/html-manager in %s/ (run `python "
            "tools/vendor_assets.py`): the pages load them from CDNs, so reading the book will need "
            "the network for math and widgets.", config.offline_assets_dir)
        return
    entries = manifest["entries"]
    if config.mathjax_path == MATHJAX_URL:
        config.mathjax_path = f"{FROM_STATIC}/{entries['mathjax']}"
    if getattr(config, "nb_ipywidgets_js", None) == _default_ipywidgets_js():
        config.nb_ipywidgets_js = {
            f"{FROM_STATIC}/{entries['requirejs']}": {},
            f"{FROM_STATIC}/{entries['html-manager']}": {},
        }
    logger.info("[offline_assets] the book serves %s itself, from %s/",
                ", ".join(manifest["packages"].values()), SITE_DIR)


# ipywidgets' controls typeset their description labels with the MathJax 2 API (MathJax.Hub.Queue) as
# soon as window.MathJax exists; the book loads MathJax 3, which has no Hub: "Cannot read properties of
# undefined (reading 'Queue')" on every page with both math and widgets. Give MathJax 3 that one call.
MATHJAX2_QUEUE_SHIM = """window.addEventListener("load", function () {
  var mj = window.MathJax;
  if (!mj || !mj.version || mj.version.charAt(0) !== "3" || mj.Hub) return;
  mj.Hub = {Queue: function (job) {
    var el = job && job[2], ready = (mj.startup && mj.startup.promise) || Promise.resolve();
    if (el) ready.then(function () { return mj.typesetPromise([el]); }).catch(console.warn);
  }};
});"""


def _drop_duplicate_scripts(scripts: list) -> None:
    """Sphinx 7.4 adds the inline scripts that extensions register after the builder starts twice
    (``prepare_writing`` re-adds them with filename ``''`` instead of ``None``, which defeats its own
    de-duplication); sphinx-thebe's ``const THEBE_JS_URL = ...`` twice is a SyntaxError on every page."""
    seen, keep = set(), []
    for js in scripts:
        attrs = getattr(js, "attributes", None) or {}
        key = (str(getattr(js, "filename", js) or ""), getattr(js, "priority", 500),
               tuple(sorted((k, str(v)) for k, v in attrs.items())))
        if key not in seen:
            seen.add(key)
            keep.append(js)
    scripts[:] = keep


def on_html_page_context(app, pagename, templatename, context, doctree) -> None:
    if app.builder.format != "html":
        return
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    _drop_duplicate_scripts(scripts)
    embeds = [js for js in scripts
              if str(getattr(js, "filename", "") or "").split("?")[0].endswith("/embed-amd.js")]
    if not embeds:  # a page without widgets
        return
    body = [MATHJAX2_QUEUE_SHIM]
    manifest = getattr(app, "offline_assets", None)
    if manifest is not None:
        # Keep every URL the widget manager builds on this site.
        pathto = context["pathto"]
        dist = f"{SITE_DIR}/{Path(manifest['entries']['html-manager']).parent.as_posix()}"
        for js in embeds:
            # Widget modules that embed-amd.js does not bundle (third-party widget libraries) would be
            # fetched from <cdn><package>@<version>/dist/: a local folder, so they fail here, visibly.
            js.attributes["data-jupyter-widgets-cdn"] = pathto(f"{SITE_DIR}/npm/", 1)
        # The manager's bundles fetch their webfonts (Font Awesome, for widget icons) from the folder of
        # the URL RequireJS gives their module: map those modules to the vendored dist/ folder. RequireJS
        # takes a global `require` object defined before it loads as its configuration; relative paths
        # are relative to the page (its default baseUrl).
        paths = {WIDGET_MANAGER: pathto(f"{dist}/html-manager", 1), f"{WIDGET_MANAGER}/dist": pathto(dist, 1)}
        body.insert(0, f"var require = {json.dumps({'paths': paths})};")
    app.add_js_file(None, body="\n".join(body), priority=450)


def on_builder_inited(app) -> None:
    manifest = getattr(app, "offline_assets", None)
    if manifest is None or app.builder.format != "html":
        return
    dest = Path(app.outdir) / SITE_DIR
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(manifest["html"], dest)


def setup(app):
    app.add_config_value("offline_assets_dir", "_vendor", "env", types=[str])
    app.connect("config-inited", on_config_inited, priority=900)
    app.connect("html-page-context", on_html_page_context, priority=900)
    app.connect("builder-inited", on_builder_inited)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
