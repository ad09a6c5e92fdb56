"""The report as a person sees it: headless Chromium loads it offline and every image shows."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

from helpers import require

# Chromium's own background services (updates, sign-in, time) may try to call home even with
# these flags; the proxy and resolver rules keep every such attempt on the loopback interface.
BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--no-pings",
    "--disable-breakpad",
    "--disable-client-side-phishing-detection",
    "--metrics-recording-only",
    "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,Translate,MediaRouter",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=127.0.0.1:9",
    "--hide-scrollbars",
]
BROWSER_SERVICE_HOSTS = ("google.com", "googleapis.com", "gvt1.com", "gstatic.com")

CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var all = Array.prototype.slice.call(document.images);
  var ok = all.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  var mark = document.createElement('div');
  mark.id = 'image-check';
  mark.textContent = 'loaded ' + ok.length + ' of ' + all.length + ' width ' +
    document.documentElement.scrollWidth + ' of ' + window.innerWidth;
  document.body.appendChild(mark);
  var health = Array.prototype.slice.call(document.querySelectorAll('th')).filter(
    function (h) { return h.textContent === 'health' && h.getBoundingClientRect().width > 0; });
  var cells = health.map(function (h) {
    var rows = h.closest('table').tBodies[0].rows;
    return Array.prototype.slice.call(rows).map(function (r) {
      return r.cells[h.cellIndex].textContent; }).join('|');
  });
  var note = document.createElement('div');
  note.id = 'health-check';
  note.textContent = 'health columns ' + health.length + ': ' + cells.join(' / ') + ' :end';
  document.body.appendChild(note);
});
</script>"""
WIDTHS = (1400, 420)
ARTIFACTS = Path(__file__).resolve().parents[2] / "runs" / "ci-artifacts"


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "chromium-headless-shell"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [browser, *BROWSER_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_report_renders_offline_with_every_image(tiny_study, tmp_path):
    browser = _browser()
    require(browser is not None, "headless Chromium", "scripts/install_chromium.sh")
    report = tiny_study / "report.html"
    page = report.read_text()
    assert "<script" not in page
    check = tmp_path / "check.html"
    check.write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"))
    netlog = tmp_path / "net.json"
    proc = _chromium(
        browser,
        tmp_path / "profile1",
        f"--log-net-log={netlog}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        check.as_uri(),
    )
    found = re.search(r'id="image-check">loaded (\d+) of (\d+) width', proc.stdout)
    assert found, proc.stderr[-2000:]
    loaded, total = map(int, found.groups())
    assert total >= 9 and loaded == total
    # every task's table shows the training monitor's health column, one word or more per row
    health = re.search(r'id="health-check">health columns (\d+): (.*?) :end<', proc.stdout)
    assert health, proc.stdout[-2000:]
    assert int(health.group(1)) == 2
    for column in health.group(2).split(" / "):
        cells = column.split("|")
        assert len(cells) == 3 and all(c.strip() and c != "–" for c in cells), column

    # nothing the page asked for left the file: only file: and data: URLs, besides the
    # browser's own service calls (which the flags above keep on loopback)
    urls = set(re.findall(r'"url":\s*"([^"]+)"', netlog.read_text()))
    page_urls = {u for u in urls if urlparse(u).scheme not in ("file", "data")}
    foreign = {
        u for u in page_urls if not (urlparse(u).hostname or "").endswith(BROWSER_SERVICE_HOSTS)
    }
    assert not foreign, foreign


def test_report_reads_at_1400_and_420_pixels(tiny_study, tmp_path):
    """A screenshot at a desktop and at a phone width (kept as CI artifacts); at 420 px the page
    itself does not scroll sideways (wide tables scroll inside their own box)."""
    browser = _browser()
    require(browser is not None, "headless Chromium", "scripts/install_chromium.sh")
    from PIL import Image

    page = (tiny_study / "report.html").read_text()
    check = tmp_path / "check.html"
    check.write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"))
    for width in WIDTHS:
        proc = _chromium(
            browser,
            tmp_path / f"profile-dom-{width}",
            f"--window-size={width},2000",
            "--virtual-time-budget=10000",
            "--dump-dom",
            check.as_uri(),
        )
        found = re.search(r"width (\d+) of (\d+)<", proc.stdout)
        assert found, proc.stderr[-2000:]
        scroll, inner = map(int, found.groups())
        assert scroll <= inner + 1, f"the page scrolls sideways at {width} px: {scroll} > {inner}"

        shot = tmp_path / f"report-{width}.png"
        proc = _chromium(
            browser,
            tmp_path / f"profile-shot-{width}",
            f"--screenshot={shot}",
            f"--window-size={width},3000",
            (tiny_study / "report.html").as_uri(),
        )
        assert shot.is_file(), proc.stderr[-2000:]
        with Image.open(shot) as image:
            assert image.size == (width, 3000)
            small = image.convert("RGB").resize((width // 4, 750))
            colours = small.getcolors(maxcolors=1 << 16)
            assert colours is None or len(colours) > 100  # text, tables and plots, not blank
        for folder in filter(None, (os.environ.get("OPTIMIST_SCREENSHOT_DIR"), ARTIFACTS)):
            Path(folder).mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, Path(folder) / shot.name)
