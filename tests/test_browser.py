"""The web page (server/static/index.html) in a real headless Chromium, against the real API.

The server runs in-process (uvicorn in a thread, on a free loopback port) over a fresh index
of the sample PDFs, with an API key, so every request the page makes, images included, must
carry the key. Chromium is Debian's (`apt-get install chromium`), driven by the playwright
Python package; without either the tests skip (`playwright install` is never needed).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from vdr import Index
from vdr.encoders.textgrid import TextGridEncoder
from vdr.server.app import create_app

from conftest import SAMPLES, make_pdf, running_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

CHROMIUM = Path(os.environ.get("VDR_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
API_KEY = "browser-test-key"
QUERY = "quarterly generation per site"
TIMEOUT_MS = 30_000

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    ),
]
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is not installed (pip install playwright)"
)

# SHA-256 of an <img>'s decoded pixels, read back through a canvas (blob: images are
# same-origin, so the canvas stays readable).
PIXEL_DIGEST = """async (img) => {
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(img, 0, 0);
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
  const digest = await crypto.subtle.digest("SHA-256", pixels);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}"""


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory, encoder: TextGridEncoder) -> Iterator[str]:
    """The app over a fresh index of the sample PDFs, served by uvicorn in a thread."""
    del encoder  # loaded once per session; the Index reuses it
    with Index(tmp_path_factory.mktemp("browser") / "index") as index:
        assert not index.add([SAMPLES]).skipped
        with running_server(create_app(index, api_key=API_KEY)) as url:
            yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, driven by playwright."""
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=TIMEOUT_MS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture()
def tab(browser: Browser, server_url: str) -> Iterator[Page]:
    """A fresh tab on the web page, with the API key entered; fails on uncaught JS errors."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    opened.set_default_timeout(TIMEOUT_MS)
    crashes: list[str] = []
    opened.on("pageerror", lambda error: crashes.append(str(error)))
    opened.goto(f"{server_url}/")
    # Without the key the page says so, visibly, and opens the key field.
    message = opened.get_by_test_id("message")
    sync_api.expect(message).to_be_visible()
    sync_api.expect(message).to_contain_text("API key")
    opened.locator("#api-key").fill(API_KEY)
    opened.locator("#api-key").press("Enter")
    sync_api.expect(opened.get_by_test_id("document")).to_have_count(3)
    yield opened
    context.close()
    assert not crashes, f"uncaught errors in the page: {crashes}"


def wait_loaded(tab: Page, image: Locator) -> None:
    """Wait until `image` has a decoded picture."""
    tab.wait_for_function(
        "(img) => img.complete && img.naturalWidth > 0", arg=image.element_handle()
    )


def test_search_results_and_heatmap_chips(tab: Page, tmp_path: Path) -> None:
    """Searching shows page thumbnails (loaded through fetch with the key); opening the top
    result shows the whole-query heatmap; a word chip swaps in that word's heatmap (other
    pixels) and highlights itself; the whole-query chip brings the first heatmap back."""
    expect = sync_api.expect
    tab.get_by_test_id("query-input").fill(QUERY)
    tab.get_by_test_id("query-input").press("Enter")
    results = tab.get_by_test_id("results").get_by_test_id("result")
    expect(results.first).to_be_visible()
    assert results.count() >= 1
    tab.wait_for_function(
        """() => {
          const images = [...document.querySelectorAll('[data-testid="result"] img')];
          return images.length > 0 && images.every((i) => i.complete && i.naturalWidth > 0);
        }"""
    )
    top = results.first
    expect(top).to_contain_text("page ")
    expect(top).to_contain_text("score ")
    assert top.locator("img").evaluate("(img) => img.src.startsWith('blob:')")
    tab.screenshot(path=str(tmp_path / "results.png"), full_page=True)

    top.click()
    view = tab.get_by_test_id("page-view")
    expect(view).to_be_visible()
    heatmap = tab.get_by_test_id("heatmap")
    chips = view.get_by_test_id("chip")
    whole = view.locator('[data-testid="chip"][data-token="all"]')
    word = view.locator('[data-testid="chip"][data-token="1"]')
    expect(chips).to_have_count(1 + len(QUERY.split()))
    expect(whole).to_have_attribute("aria-pressed", "true")
    expect(heatmap).to_have_attribute("data-token", "all")
    wait_loaded(tab, heatmap)
    first_src = heatmap.get_attribute("src")
    first_pixels = heatmap.evaluate(PIXEL_DIGEST)

    word.click()
    expect(heatmap).to_have_attribute("data-token", "1")
    wait_loaded(tab, heatmap)
    expect(word).to_have_attribute("aria-pressed", "true")
    expect(whole).to_have_attribute("aria-pressed", "false")
    assert heatmap.get_attribute("src") != first_src
    assert heatmap.evaluate(PIXEL_DIGEST) != first_pixels, "the word's heatmap looks the same"
    tab.screenshot(path=str(tmp_path / "word-heatmap.png"), full_page=True)

    whole.click()
    expect(heatmap).to_have_attribute("data-token", "all")
    wait_loaded(tab, heatmap)
    expect(whole).to_have_attribute("aria-pressed", "true")
    assert heatmap.evaluate(PIXEL_DIGEST) == first_pixels
    expect(tab.locator('[data-testid="message"].error')).to_have_count(0)


def test_upload_error_and_delete(tab: Page, tmp_path: Path) -> None:
    """Uploading a PDF indexes it and lists it; a file that is no PDF shows the server's
    error detail; deleting (after the confirmation) takes the document off the list."""
    expect = sync_api.expect
    documents = tab.get_by_test_id("document")
    pdf = make_pdf(tmp_path / "lighthouse_log.pdf", [[("Lighthouse lamp service log", 72, 90, 14)]])
    tab.get_by_test_id("upload-input").set_input_files(str(pdf))
    tab.get_by_test_id("upload-button").click()
    expect(tab.get_by_test_id("upload-status")).to_contain_text("Added lighthouse_log.pdf")
    expect(documents).to_have_count(4)
    expect(tab.get_by_test_id("documents")).to_contain_text("lighthouse_log.pdf")

    bogus = tmp_path / "bogus.pdf"
    bogus.write_text("this is not a PDF")
    tab.get_by_test_id("upload-input").set_input_files(str(bogus))
    tab.get_by_test_id("upload-button").click()
    message = tab.get_by_test_id("message")
    expect(message).to_contain_text("cannot be indexed")
    expect(message).to_contain_text("422")
    expect(documents).to_have_count(4)

    tab.once("dialog", lambda dialog: dialog.accept())
    uploaded = documents.filter(has_text="lighthouse_log.pdf")
    uploaded.get_by_test_id("delete-button").click()
    expect(documents).to_have_count(3)
    expect(message).to_contain_text("Deleted lighthouse_log.pdf")


def test_two_files_uploaded_through_the_page_each_show_their_outcome(
    tab: Page, tmp_path: Path
) -> None:
    """Two files picked at once: a PDF and a file that is no PDF. The PDF is indexed and
    listed, the other is named with the server's reason; each has its line in the outcomes."""
    expect = sync_api.expect
    good = make_pdf(
        tmp_path / "beekeeping.pdf", [[("Beekeeping hive inspection notes", 72, 90, 14)]]
    )
    second = make_pdf(tmp_path / "ferry.pdf", [[("Ferry timetable winter crossings", 72, 90, 14)]])
    tab.get_by_test_id("upload-input").set_input_files([str(good), str(second)])
    tab.get_by_test_id("upload-button").click()
    outcomes = tab.get_by_test_id("upload-outcome")
    expect(outcomes).to_have_count(2)
    expect(outcomes.nth(0)).to_have_text("beekeeping.pdf: indexed (1 page)")
    expect(outcomes.nth(1)).to_have_text("ferry.pdf: indexed (1 page)")
    documents = tab.get_by_test_id("document")
    expect(documents).to_have_count(5)

    bogus = tmp_path / "minutes.pdf"
    bogus.write_text("minutes of the meeting, not a PDF")
    third = make_pdf(tmp_path / "quarry.pdf", [[("Quarry blasting schedule", 72, 90, 14)]])
    tab.get_by_test_id("upload-input").set_input_files([str(bogus), str(third)])
    tab.get_by_test_id("upload-button").click()
    expect(outcomes).to_have_count(2)
    expect(outcomes.nth(0)).to_have_attribute("data-status", "refused")
    expect(outcomes.nth(0)).to_have_text(
        "minutes.pdf: not indexed: not a PDF file: no PDF header, and poppler cannot read it"
    )
    expect(outcomes.nth(1)).to_have_text("quarry.pdf: indexed (1 page)")
    expect(documents).to_have_count(6)
    refused = tab.get_by_test_id("refused-document").filter(has_text="minutes.pdf")
    expect(refused).to_have_count(1)
    expect(refused).to_contain_text("not a PDF file")

    for name in ("beekeeping.pdf", "ferry.pdf", "quarry.pdf"):
        tab.once("dialog", lambda dialog: dialog.accept())
        documents.filter(has_text=name).get_by_test_id("delete-button").click()
    tab.once("dialog", lambda dialog: dialog.accept())
    refused.get_by_test_id("delete-button").click()
    expect(documents).to_have_count(3)
    expect(refused).to_have_count(0)


def test_the_url_keeps_the_search_and_the_open_page(tab: Page, server_url: str) -> None:
    """A search puts its query in the URL; opening a result adds it; Back closes it; reloading
    shows the same results; a hit links its PDF at its page; more pages page through."""
    expect = sync_api.expect
    tab.get_by_test_id("query-input").fill(QUERY)
    tab.get_by_test_id("query-input").press("Enter")
    results = tab.get_by_test_id("results").get_by_test_id("result")
    expect(results.first).to_be_visible()
    assert tab.url == f"{server_url}/?q=quarterly+generation+per+site"
    first_pages = [r.get_attribute("data-page") for r in results.all()]

    link = tab.get_by_test_id("pdf-link").first
    top = results.first.get_attribute("data-page")
    doc_id, page = top.rsplit("-", 1)
    assert link.get_attribute("href") == f"/documents/{doc_id}/file#page={page}"
    fetched = tab.request.get(
        f"{server_url}/documents/{doc_id}/file", headers={"X-API-Key": API_KEY}
    )
    assert fetched.ok and fetched.body().startswith(b"%PDF-")

    results.first.click()
    expect(tab.get_by_test_id("page-view")).to_be_visible()
    expect(tab).to_have_url(f"{server_url}/?q=quarterly+generation+per+site&open={top}")
    tab.go_back()
    expect(tab.get_by_test_id("page-view")).to_be_hidden()
    expect(tab).to_have_url(f"{server_url}/?q=quarterly+generation+per+site")

    tab.reload()  # the key lives in sessionStorage: the tab keeps it
    expect(tab.get_by_test_id("query-input")).to_have_value(QUERY)
    expect(results.first).to_be_visible()
    assert [r.get_attribute("data-page") for r in results.all()] == first_pages

    # Six sample pages fit one page of results: no pager. A URL asking for page 2 shows none.
    expect(tab.get_by_test_id("next-results")).to_be_hidden()
    tab.goto(f"{server_url}/?q=quarterly+generation+per+site&p=2")
    expect(tab.locator("#summary")).to_contain_text("no")
    expect(results).to_have_count(0)
    expect(tab.get_by_test_id("prev-results")).to_be_hidden()


def test_api_docs_render_offline_with_the_key_scheme(browser: Browser, server_url: str) -> None:
    """/docs draws Swagger UI from vdr's own assets with every other host blocked, and its
    Authorize dialog offers the API key."""
    expect = sync_api.expect
    context = browser.new_context()
    outside: list[str] = []

    def only_loopback(route: sync_api.Route) -> None:
        if route.request.url.startswith(server_url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_loopback)
    docs = context.new_page()
    docs.set_default_timeout(TIMEOUT_MS)
    docs.goto(f"{server_url}/docs")
    expect(docs.locator(".swagger-ui .information-container")).to_contain_text("vdr")
    expect(docs.locator(".opblock-summary-path", has_text="/search")).to_be_visible()
    docs.locator("button.authorize").click()
    expect(docs.locator(".auth-container").first).to_contain_text("X-API-Key")
    context.close()
    assert outside == [], f"/docs reached outside the server: {outside}"
