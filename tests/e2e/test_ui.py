"""The web UI in headless Chromium against a real server: upload, job progress, streamed cited answers,
failures with reasons, documents, jobs and admin pages, at desktop and phone width."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from tests.e2e.conftest import copy_fixture

pytestmark = pytest.mark.slow

QUESTION = "Which Python version does Ragserve need?"


def _upload(page: Page, collection: str, *files: Path) -> None:
    page.goto("/#/upload")
    page.locator("#page-upload").get_by_label("Collection").fill(collection)
    page.locator("#upload-files").set_input_files([str(f) for f in files])


# The extractive generator sends a whole answer in a few milliseconds, too fast to watch it grow. This re-chunks
# the SSE body the page receives into small, delayed pieces (like a slow network), in the page's own fetch.
SLOW_STREAM = """
const realFetch = window.fetch;
window.fetch = async (...args) => {
  const response = await realFetch(...args);
  if (!(response.headers.get("content-type") || "").startsWith("text/event-stream")) return response;
  const signal = args[1] && args[1].signal;
  const slow = response.body.pipeThrough(new TransformStream({
    async transform(chunk, controller) {
      for (let i = 0; i < chunk.length; i += BYTES) {
        if (signal && signal.aborted) throw signal.reason;  // as a real aborted fetch body would
        controller.enqueue(chunk.slice(i, i + BYTES));
        await new Promise((resolve) => setTimeout(resolve, 40));
      }
    },
  }));
  return new Response(slow, { status: response.status, headers: response.headers });
};
"""


def _slow_streams(page: Page, bytes_per_tick: int) -> None:
    page.add_init_script(SLOW_STREAM.replace("BYTES", str(bytes_per_tick)))


def _drop_files(page: Page, collection: str, *files: Path) -> None:
    """Drop files on the upload zone, as dragging them from the desktop does."""
    page.goto("/#/upload")
    page.locator("#page-upload").get_by_label("Collection").fill(collection)
    payload = [{"name": f.name, "data": base64.b64encode(f.read_bytes()).decode()} for f in files]
    transfer = page.evaluate_handle(
        """(files) => {
            const transfer = new DataTransfer();
            for (const { name, data } of files) {
                const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
                transfer.items.add(new File([bytes], name));
            }
            return transfer;
        }""",
        payload,
    )
    page.dispatch_event("#dropzone", "dragenter", {"dataTransfer": transfer})
    expect(page.locator("#dropzone")).to_have_class(re.compile(r"\bover\b"))
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": transfer})


def _file_row(page: Page, name: str) -> Locator:
    return page.locator("#upload-list li").filter(has=page.locator(".file-name", has_text=name))


def test_upload_ask_and_open_citation(page: Page, tmp_path: Path, artifacts: Path) -> None:
    _slow_streams(page, 24)
    guide = copy_fixture("guide.md", tmp_path, "operator-guide.md")
    broken = copy_fixture("garbage.pdf", tmp_path, "broken.pdf")
    _drop_files(page, "handbook", guide, broken)

    good, bad = _file_row(page, "operator-guide.md"), _file_row(page, "broken.pdf")
    expect(good.locator(".badge")).to_have_text("Done", timeout=30_000)
    expect(good.locator("progress")).to_have_attribute("value", "100")
    expect(bad.locator(".badge")).to_have_text("Failed", timeout=30_000)
    expect(bad.locator(".job-errors")).to_contain_text(re.compile(r"broken\.pdf: .+"))
    page.screenshot(path=artifacts / "desktop-upload.png", full_page=True)

    # The Jobs page lists both jobs of this session with their outcome and the failure's reason.
    page.get_by_role("link", name="Jobs").click()
    expect(page.locator("#jobs-list > li")).to_have_count(2)
    expect(page.locator("#jobs-list")).to_contain_text("broken.pdf: ")
    page.screenshot(path=artifacts / "desktop-jobs.png", full_page=True)

    page.get_by_role("link", name="Chat").click()
    page.locator("#page-chat").get_by_label("Collection").select_option("handbook")
    page.get_by_label("Your question").fill(QUESTION)
    page.keyboard.press("Enter")
    streaming = page.locator("#chat-log article[aria-busy=true] .msg-text.streaming")
    expect(streaming).to_contain_text(re.compile(r"\w+ \w+"), timeout=20_000)
    expect(page.get_by_role("button", name="Stop")).to_be_visible()

    answer = page.locator("#chat-log article").last
    expect(answer.get_by_role("button", name="Copy answer")).to_be_visible(timeout=20_000)  # shown when done
    expect(answer).not_to_have_attribute("aria-busy", "true")
    expect(answer.locator(".msg-text")).to_contain_text("3.11")
    marker = answer.locator(".msg-text button.cite").first
    expect(marker).to_have_text(re.compile(r"\[\d+\]"))
    expect(page.locator("#chat-log")).to_have_attribute("aria-live", "polite")

    marker.click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#citation-quote")).to_contain_text("Python 3.11")
    expect(dialog).to_contain_text("operator-guide.md")
    page.screenshot(path=artifacts / "desktop-citation.png")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    page.screenshot(path=artifacts / "desktop-chat.png")

    # The conversation survives a reload within the browser session.
    page.reload()
    expect(page.locator("#chat-log .msg-user .msg-text")).to_have_text(QUESTION)
    expect(page.locator("#chat-log article .cite").first).to_be_visible()

    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("button", name="Copy answer").click()
    expect(page.locator("#toast")).to_have_text("Answer copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert "3.11" in copied
    assert "Sources:\n[1] " in copied

    # "Open document" from a citation shows the document's chunks with the cited one marked.
    page.locator("#chat-log article .msg-text .cite").first.click()
    page.get_by_role("link", name="Open document").click()
    chunks = page.get_by_role("dialog", name=re.compile("operator guide", re.IGNORECASE))
    expect(chunks.locator(".chunk.cited")).to_contain_text("Python 3.11")


def test_stop_generation(page: Page, tmp_path: Path) -> None:
    _slow_streams(page, 4)
    _upload(page, "stop", copy_fixture("guide.md", tmp_path, "stop-guide.md"))
    expect(_file_row(page, "stop-guide.md").locator(".badge")).to_have_text("Done", timeout=30_000)
    page.get_by_role("link", name="Chat").click()
    page.locator("#page-chat").get_by_label("Collection").select_option("stop")
    page.get_by_label("Your question").fill(QUESTION)
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("button", name="Send")).to_be_disabled()
    expect(page.locator("#chat-log .streaming")).to_contain_text(re.compile(r"\w+"), timeout=20_000)
    page.get_by_role("button", name="Stop").click()
    answer = page.locator("#chat-log article").last
    expect(answer).to_contain_text("Stopped.")
    expect(answer.locator(".cite")).to_have_count(0)  # the citations event never arrived
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    expect(page.get_by_role("button", name="Send")).to_be_enabled()


def test_documents_view_chunks_and_delete(page: Page, server_url: str, artifacts: Path) -> None:
    notes = "Backups run nightly at 02:00.\n\nRestores are tested every quarter by the platform team."
    files = {"files": ("backups.txt", notes.encode(), "text/plain")}
    accepted = httpx.post(f"{server_url}/v1/documents", data={"collection": "ops"}, files=files).json()
    for _ in range(300):
        if httpx.get(f"{server_url}/v1/jobs/{accepted['job_id']}").json()["status"] == "succeeded":
            break
        page.wait_for_timeout(100)

    page.goto("/#/documents?collection=ops")
    row = page.locator("#documents-body tr").filter(has_text="backups.txt")
    expect(row).to_have_count(1)
    page.get_by_label("Filter").fill("nothing-matches-this")
    expect(row).to_have_count(0)
    page.get_by_label("Filter").fill("backups")
    expect(row).to_have_count(1)

    row.get_by_role("button", name=re.compile("View chunks")).click()
    dialog = page.get_by_role("dialog")
    expect(dialog.locator(".chunk").first).to_contain_text("Backups run nightly")
    page.screenshot(path=artifacts / "desktop-document.png")
    dialog.get_by_role("button", name="Close").click()

    page.get_by_label("Filter").fill("")
    page.screenshot(path=artifacts / "desktop-documents.png", full_page=True)
    row.get_by_role("button", name=re.compile("Delete")).click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    expect(page.locator("#toast")).to_contain_text("Deleted backups.txt")
    assert httpx.get(f"{server_url}/v1/documents/{accepted['document_ids'][0]}").status_code == 404


def test_admin_status_metrics_and_api_key(page: Page, artifacts: Path) -> None:
    page.goto("/#/admin")
    expect(page.locator("#admin-status")).to_contain_text("ready")
    expect(page.locator("#admin-metrics")).to_contain_text("Chunks written")
    expect(page.locator("#auth-state")).to_contain_text("not enabled")
    page.screenshot(path=artifacts / "desktop-admin.png", full_page=True)

    page.get_by_label("API key").fill("secret-key-1")
    page.get_by_role("button", name="Save key").click()
    expect(page.locator("#api-key-status")).to_have_text("Key saved for this session.")
    with page.expect_request("**/v1/collections") as sent:
        page.get_by_role("link", name="Chat").click()
    assert sent.value.headers.get("authorization") == "Bearer secret-key-1"
    page.reload()
    with page.expect_request("**/v1/documents?*") as listed:
        page.get_by_role("link", name="Documents").click()
    assert listed.value.headers.get("authorization") == "Bearer secret-key-1"


def test_keyboard_navigation(page: Page) -> None:
    page.goto("/")
    expect(page.get_by_label("Your question")).to_be_focused()
    page.keyboard.press("Shift+Tab")  # back through the page to the skip link and the navigation
    page.locator(".nav a", has_text="Upload").focus()
    page.keyboard.press("Enter")
    expect(page).to_have_title("Upload · ragserve")
    expect(page.get_by_role("heading", name="Upload documents")).to_be_focused()
    expect(page.locator('.nav a[aria-current="page"]')).to_have_text("Upload")


def test_phone_width(phone_page: Page, tmp_path: Path, artifacts: Path) -> None:
    page = phone_page
    _upload(page, "phone", copy_fixture("guide.md", tmp_path, "phone-guide.md"))
    expect(_file_row(page, "phone-guide.md").locator(".badge")).to_have_text("Done", timeout=30_000)
    page.screenshot(path=artifacts / "phone-upload.png", full_page=True)

    page.get_by_role("link", name="Chat").click()
    page.locator("#page-chat").get_by_label("Collection").select_option("phone")
    page.get_by_label("Your question").fill(QUESTION)
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#chat-log article .msg-text .cite").first).to_be_visible(timeout=20_000)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the chat page scrolls sideways at phone width ({width}px)"
    page.screenshot(path=artifacts / "phone-chat.png")

    page.get_by_role("link", name="Documents").click()
    expect(page.locator("#documents-body tr").first).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.screenshot(path=artifacts / "phone-documents.png", full_page=True)

    page.get_by_role("link", name="Admin").click()
    expect(page.locator("#admin-status")).to_contain_text("ready")
    page.screenshot(path=artifacts / "phone-admin.png", full_page=True)
