"""GET /v1/collections, and the web UI's page and assets served by the API process."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.integration.helpers import ingest


def test_collections_list_names_with_document_counts(client: TestClient) -> None:
    assert client.get("/v1/collections").json() == {"collections": []}
    ingest(client, [{"text": "Cats sleep a lot."}, {"text": "Dogs bark."}], collection="pets")
    ingest(client, [{"text": "Rockets burn fuel."}])
    assert client.get("/v1/collections").json() == {
        "collections": [{"name": "default", "document_count": 1}, {"name": "pets", "document_count": 2}]
    }


def test_ui_page_and_assets(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script type="module" src="/ui/js/app.js">' in page.text

    script = client.get("/ui/js/app.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert client.get("/ui/styles.css").headers["content-type"].startswith("text/css")


def test_ui_assets_stay_inside_their_folder(client: TestClient) -> None:
    for path in ("/ui/missing.js", "/ui/../api/app.py", "/ui/%2e%2e/api/app.py", "/ui/..%2fsettings.py"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
