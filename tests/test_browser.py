"""Every page of the built book, opened in headless Chromium with no network but 127.0.0.1.

Per page: the page loads; MathJax typesets every math element (no raw TeX, no MathJax error); every
image loads; every widget saved in the notebook renders from its stored state; the console shows no
error and no exception; no request leaves 127.0.0.1 and none fails. Notebook pages also carry their
Colab, Binder, Live Code (Thebe) and download buttons. A screenshot of each page is saved under
``test-artifacts/screenshots/`` and a summary in ``test-artifacts/browser-report.json``.

Needs Chromium (Debian: ``apt-get install chromium``; or set $CHROMIUM); skipped without it. Builds the
book once per session, or uses ``BOOK_HTML`` (see ``book_fixtures.py``).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from book_fixtures import built_book, toc_pages  # noqa: F401 - built_book is a fixture
from chromium_cdp import Browser, CDPError, SiteServer, find_chromium

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
PAGE_TIMEOUT = 60.0  # seconds for one page to load and settle: generous, CI's 2 cores are shared
PAGES = toc_pages() + ["genindex", "search"]

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get "
                                "install chromium; or set CHROMIUM=/path/to/chrome)")

# Runs in the page once it has loaded; resolves to {problems: [...], info: {...}}.
CHECK_PAGE_JS = r"""
(async (timeoutMs) => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const deadline = Date.now() + timeoutMs;
  const left = () => Math.max(0, deadline - Date.now());
  const timeout = (what) => sleep(left()).then(() => { throw new Error(what + ": timed out"); });
  const problems = [], info = {};
  const short = (s) => (s || "").replace(/\s+/g, " ").trim().slice(0, 100);

  // Math: every element Sphinx marked as math holds a typeset MathJax container.
  const math = [...document.querySelectorAll(".math")];
  info.math = math.length;
  if (math.length) {
    // MathJax is a deferred script: it has run (or failed to load) by the load event.
    if (!window.MathJax || !MathJax.startup || !MathJax.startup.promise) {
      problems.push(`MathJax did not load, the page has ${math.length} math elements`);
    } else {
      try {
        await Promise.race([MathJax.startup.promise, timeout("MathJax typesetting")]);
        info.mathjax = MathJax.version;
      } catch (e) { problems.push(String(e)); }
      const raw = math.filter((el) => !el.querySelector("mjx-container"));
      raw.slice(0, 5).forEach((el) => problems.push("math not typeset: " + short(el.textContent)));
      if (raw.length > 5) problems.push(`... and ${raw.length - 5} more math elements not typeset`);
    }
  }
  document.querySelectorAll("mjx-merror").forEach((el) =>
    problems.push("MathJax error: " + short(el.getAttribute("data-mjx-error") || el.textContent)));
  // Raw TeX delimiters left in the prose (outside code, outputs and typeset math).
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {acceptNode: (n) =>
    n.parentElement.closest("pre, code, script, style, textarea, mjx-container, .highlight, .math")
      ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (/\$\$|\\\(|\\\)|\\\[|\\\]|\\begin\{/.test(n.textContent))
      problems.push("raw TeX in the text: " + short(n.textContent));
  }

  // Images: all of them, also those below the fold or in closed dropdowns.
  const imgs = [...document.images];
  imgs.forEach((img) => { if (img.loading === "lazy") img.loading = "eager"; });
  const loaded = await Promise.all(imgs.map((img) => Promise.race([
    img.decode().then(() => true, () => false), sleep(left()).then(() => false)])));
  imgs.forEach((img, i) => {
    const svg = /\.svg(\?|#|$)/i.test(img.currentSrc || img.src);
    if (!loaded[i] || (!svg && img.naturalWidth === 0))
      problems.push("image did not load: " + (img.getAttribute("src") || "").slice(0, 120));
  });
  info.images = imgs.length;

  // Widgets: the HTML manager puts a .widget-subarea with the rendered view before each view script.
  const views = [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')];
  const rendered = (v) => {
    const area = v.previousElementSibling;
    return !!(area && area.classList.contains("widget-subarea") && area.querySelector(".jupyter-widgets"));
  };
  while (views.some((v) => !rendered(v)) && left()) await sleep(100);
  views.forEach((v) => {
    if (!rendered(v)) {
      let id = "?"; try { id = JSON.parse(v.textContent).model_id; } catch (e) {}
      problems.push("widget missing (not rendered from the saved state): model " + id);
    }
  });
  document.querySelectorAll(".widget-subarea").forEach((area) => {
    if (/Failed to (create|load)|Error (creating|loading)/.test(area.textContent))
      problems.push("widget error: " + short(area.textContent));
  });
  info.widgets = views.length;
  info.widget_elements = document.querySelectorAll(".widget-subarea .jupyter-widgets").length;

  // Launch and download buttons (the theme puts them in the header of notebook pages).
  info.links = [...document.querySelectorAll("a[href]")].map((a) => a.href)
    .filter((h) => /colab\.research|mybinder|_sources\//.test(h));
  info.thebe_button = !!document.querySelector(".btn-launch-thebe, .thebe-launch-button");
  const download = document.querySelector("a.btn-download-source-button");
  info.download = download ? download.href : null;
  info.download_status = download ? (await fetch(download.href)).status : null;
  info.title = document.title;
  return {problems, info};
})
"""


def repository() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]


@pytest.fixture(scope="module")
def site(built_book):  # noqa: F811 - the imported fixture
    server = SiteServer(built_book)
    yield server
    server.close()


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(exist_ok=True)
    b = Browser(CHROMIUM, timeout=PAGE_TIMEOUT, log=ARTIFACTS / "chromium.log")
    yield b
    b.close()


@pytest.fixture(scope="module")
def report():
    results: dict = {}
    yield results
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "browser-report.json").write_text(json.dumps(results, indent=2) + "\n")


def console_problems(events: list[dict], site_url: str) -> tuple[list[str], list[str], int]:
    """(errors, warnings, number of requests) from the DevTools events of one page.

    The browser's own request for /favicon.ico (the book has no icon; a browser asks the server root
    for one, and does not show that in a page's console) is not the page's."""
    errors, warnings, requests = [], [], 0
    origin = urlsplit(site_url).netloc
    favicon = site_url + "favicon.ico"
    for ev in events:
        method, p = ev["method"], ev.get("params", {})
        if favicon in json.dumps(p):
            continue
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            if p.get("type") in ("error", "assert"):
                errors.append(f"console.{p['type']}: {text[:300]}")
            elif p.get("type") == "warning":
                warnings.append(text[:300])
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            text = d.get("exception", {}).get("description") or d.get("text", "")
            errors.append(f"exception: {text[:500]}")
        elif method == "Log.entryAdded":
            entry = p.get("entry", {})
            line = f"{entry.get('source')}: {entry.get('text', '')[:300]} {entry.get('url', '')}".strip()
            if entry.get("level") == "error":
                errors.append(line)
            elif entry.get("level") == "warning":
                warnings.append(line)
        elif method == "Network.requestWillBeSent":
            url = p.get("request", {}).get("url", "")
            requests += 1
            if not url.startswith(("data:", "blob:", "about:")) and urlsplit(url).netloc != origin:
                errors.append(f"request leaves 127.0.0.1: {url[:200]}")
        elif method == "Network.responseReceived":
            status = p.get("response", {}).get("status", 0)
            if status >= 400:
                errors.append(f"HTTP {status}: {p['response'].get('url', '')[:200]}")
        elif method == "Network.loadingFailed" and not p.get("canceled"):
            errors.append(f"request failed: {p.get('errorText')} ({p.get('type')})")
    return errors, warnings, requests


def test_assets_are_served_by_the_book(built_book):  # noqa: F811
    """The site carries its own MathJax/RequireJS/html-manager; no page loads them from a CDN."""
    vendored = built_book / "_vendor"
    assert vendored.is_dir(), ("the book was built without vendored assets (tools/vendor_assets.py could "
                               "not fetch them): its pages need CDNs for math and widgets")
    assert not list((built_book / "_static").rglob("_vendor")), "vendored scripts must not be in _static/"
    cdn = re.compile(r'<script[^>]+src="https?://[^"]*(mathjax|require|html-manager)', re.I)
    for page in built_book.rglob("*.html"):
        if "_vendor" in page.parts or "_sources" in page.parts:
            continue
        match = cdn.search(page.read_text(encoding="utf-8"))
        assert match is None, f"{page.relative_to(built_book)} loads {match.group(0)} from a CDN"


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_offline(page, site, browser, report, built_book):  # noqa: F811
    html = built_book / f"{page}.html"
    assert html.is_file(), f"{page}: not in the built book"
    started = time.monotonic()
    tab = browser.new_page()
    try:
        tab.goto(site.url + f"{page}.html")
        result = tab.evaluate(f"{CHECK_PAGE_JS}({int(PAGE_TIMEOUT * 1000)})", timeout=PAGE_TIMEOUT + 30)
        browser.drain(0.3)  # late console messages
        shot = SCREENSHOTS / (page.replace("/", "__") + ".png")
        tab.screenshot(shot)
        errors, warnings, requests = console_problems(tab.events(), site.url)
    except CDPError as exc:
        pytest.fail(f"{page}: {exc}")
    finally:
        tab.close()
    problems = result["problems"] + errors
    info = result["info"]
    if page.startswith("notebooks/"):
        repo = repository()
        slug = urlsplit(repo["url"]).path.strip("/")
        branch = repo.get("branch", "main")
        source = f"{repo.get('path_to_book') or ''}{page}.ipynb".lstrip("/")
        colab = f"https://colab.research.google.com/github/{slug}/blob/{branch}/{source}"
        binder = f"https://mybinder.org/v2/gh/{slug}/{branch}?urlpath=tree/{source}"
        for name, url in [("Colab", colab), ("Binder", binder)]:
            if url not in info["links"]:
                problems.append(f"no {name} launch button ({url})")
        if not info["thebe_button"]:
            problems.append("no Live Code (Thebe) button")
        download, status = info["download"] or "", info["download_status"]
        if not download.endswith(f"_sources/{page}.ipynb") or status != 200:
            problems.append(f"no working .ipynb download button ({download}: HTTP {status})")
    report[page] = {**info, "problems": problems, "warnings": warnings, "requests": requests,
                    "screenshot": str(shot.relative_to(ROOT)),
                    "seconds": round(time.monotonic() - started, 2)}
    assert not problems, f"{page}:\n  " + "\n  ".join(problems)


# ---- the explorers (alexnet_lib.explore): in-page JavaScript, no kernel ------------------------------

# Runs in a page once it has loaded; resolves to {problems: [...], explorers: [{name, controls, changed}]}.
# Per explorer: it started; every control is labelled and keyboard-focusable; moving each control (input
# and change events, clicks) changes its text or its canvases (buttons that restore a setting may not);
# nothing is wider than its box or the window.
EXPLORE_JS = r"""
(async (timeoutMs) => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const deadline = Date.now() + timeoutMs;
  const problems = [], explorers = [];
  const roots = () => [...document.querySelectorAll(".axe[data-explorer]")];
  while (roots().some((r) => r.getAttribute("data-ready") !== "1") && Date.now() < deadline) await sleep(100);
  // A cheap fingerprint of what an explorer shows: its text and the pixels of its canvases.
  const hash = (s) => {
    let h = 0;
    for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) | 0;
    return h;
  };
  const state = (root) => root.innerText + "|" +
    [...root.querySelectorAll("canvas")].map((c) => hash(c.toDataURL())).join(",");
  const settle = () => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 20)));
  const fire = (el, type) => el.dispatchEvent(new Event(type, {bubbles: true}));
  // Buttons that may leave the explorer as it is (they restore a setting it may already have).
  const idleOk = /^(reset|paper|preset-)/;
  for (const root of roots()) {
    const name = root.getAttribute("data-explorer"), info = {name, controls: 0, changed: 0};
    if (root.getAttribute("data-ready") !== "1") { problems.push(`${name}: did not start`); continue; }
    // Every control: keyboard-focusable and labelled.
    const controls = [...root.querySelectorAll("input, select, button")];
    info.controls = controls.length;
    for (const el of controls) {
      const label = el.id && root.querySelector(`label[for="${el.id}"]`);
      const accName = (label && label.textContent.trim()) || el.getAttribute("aria-label") ||
        (el.tagName === "BUTTON" && el.textContent.trim());
      if (!accName) problems.push(`${name}: control without a label: ${el.outerHTML.slice(0, 80)}`);
      el.focus();
      if (document.activeElement !== el) problems.push(`${name}: control not focusable: ${accName}`);
      el.blur();
    }
    const start = state(root);
    for (const el of controls) {
      const before = state(root), what = el.getAttribute("data-name") || el.id;
      if (el.tagName === "SELECT") {
        if (el.options.length < 2) continue;
        el.selectedIndex = (el.selectedIndex + 1) % el.options.length; fire(el, "change");
      } else if (el.type === "checkbox") {
        el.click();
      } else if (el.type === "range" || el.type === "number") {
        const v = Number(el.value), step = Number(el.step) || 1;
        const max = el.max === "" ? Infinity : Number(el.max);
        const min = el.min === "" ? -Infinity : Number(el.min);
        // a few steps up (down at the top), to a value the explorer reacts to
        let nv = v + 3 * step; if (nv > max) nv = v - 3 * step; nv = Math.max(min, Math.min(max, nv));
        el.value = String(nv); fire(el, "input"); fire(el, "change");
      } else if (el.tagName === "BUTTON") {
        el.click();
      }
      await settle();
      if (state(root) !== before) info.changed += 1;
      else if (!(el.tagName === "BUTTON" && idleOk.test(what)))
        problems.push(`${name}: moving "${what}" changed nothing`);
    }
    if (info.changed === 0 || (state(root) === start && info.changed < 2))
      problems.push(`${name}: nothing changed`);
    // Readable at 200% zoom: nothing wider than the explorer's box (tables scroll inside their own box).
    info.overflow = root.scrollWidth - root.clientWidth;
    if (info.overflow > 1) problems.push(`${name}: ${info.overflow}px wider than its box`);
    const right = root.getBoundingClientRect().right, vw = document.documentElement.clientWidth;
    if (right > vw + 1) problems.push(`${name}: reaches ${Math.round(right)}px, past the ${vw}px window`);
    explorers.push(info);
  }
  return {problems, explorers};
})
"""
EXPLORER_BUDGET = 1_000_000  # bytes of explorer payload (data + script + style) on one page
ZOOM_WIDTH = 640  # CSS pixels: a 1280 px window at 200% zoom
EXPLORER_RE = re.compile(r'<script type="application/json" id="(axe-[^"]+)-data">(.*?)</script>\s*'
                         r"<script>(.*?)</script>", re.S)
NOTEBOOK_PAGES = [p for p in PAGES if p.startswith("notebooks/")]


def explorer_payloads(html: str) -> dict[str, int]:
    """Bytes of each explorer's data and script in a built page (its style element is counted too)."""
    style = len(re.search(r"<style>\.axe\{.*?</style>", html, re.S).group(0)) if ".axe{" in html else 0
    return {m.group(1): len(m.group(2).encode()) + len(m.group(3).encode()) + style
            for m in EXPLORER_RE.finditer(html)}


def test_explorers_on_the_chapter_pages(built_book, report):  # noqa: F811
    """At least 6 of the 8 chapters (chapter 1 included) carry an in-page explorer, each page under budget."""
    pages = {}
    for page in NOTEBOOK_PAGES:
        sizes = explorer_payloads((built_book / f"{page}.html").read_text(encoding="utf-8"))
        if sizes:
            pages[page] = sizes
    report["explorer_payload_bytes"] = {p: sum(s.values()) for p, s in pages.items()}
    assert "notebooks/01_convolution_arithmetic" in pages
    assert len(pages) >= 6, f"explorers on {sorted(pages)} only"
    for page, sizes in pages.items():
        assert sum(sizes.values()) < EXPLORER_BUDGET, f"{page}: {sizes}"


@pytest.mark.parametrize("page", NOTEBOOK_PAGES)
def test_explorers_respond_offline(page, site, browser, report, built_book):  # noqa: F811
    """Every explorer on the page starts, reacts to each of its controls and logs no error, with no kernel
    and no network, in a window as narrow as a 1280 px one at 200% zoom."""
    if not explorer_payloads((built_book / f"{page}.html").read_text(encoding="utf-8")):
        pytest.skip("no explorer on this page")
    tab = browser.new_page(width=ZOOM_WIDTH)
    try:
        tab.goto(site.url + f"{page}.html")
        result = tab.evaluate(f"{EXPLORE_JS}({int(PAGE_TIMEOUT * 1000)})", timeout=PAGE_TIMEOUT + 60)
        browser.drain(0.3)
        errors, _, _ = console_problems(tab.events(), site.url)
    except CDPError as exc:
        pytest.fail(f"{page}: {exc}")
    finally:
        tab.close()
    report[f"{page} (explorers)"] = result
    problems = result["problems"] + errors
    assert result["explorers"], f"{page}: no explorer found in the page"
    assert not problems, f"{page}:\n  " + "\n  ".join(problems)
