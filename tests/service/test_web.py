"""The web page is served by the API, offline (no external resources), and its styles feed works."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from service.app import STATIC_DIR


def test_index_and_assets_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    for element_id in ("photo", "style-picker", "stylize-button", "result", "download", "train-form", "loss-curve"):
        assert f'id="{element_id}"' in html, element_id
    assert 'name="viewport"' in html  # phone-sized screens
    for asset, kind in (("/ui/app.js", "javascript"), ("/ui/app.css", "text/css")):
        response = client.get(asset)
        assert response.status_code == 200 and kind in response.headers["content-type"], asset
        assert asset in html


def test_the_page_loads_nothing_from_other_hosts() -> None:
    for path in (p for p in STATIC_DIR.iterdir() if p.is_file()):  # the page's own files
        text = path.read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//", text), path.name
        assert not re.search(r"(fetch|import)\(\s*[\"'`]https?://", text), path.name


def test_styles_feed_the_gallery(client: TestClient) -> None:
    styles = client.get("/v1/styles").json()
    assert styles
    for style in styles:
        assert style["summary"]
        for url in (style["style_url"], style["preview_url"]):
            response = client.get(url)
            assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg", url


def test_the_api_reference_works_offline(client: TestClient) -> None:
    """``/docs`` loads Swagger UI from the API itself (FastAPI's page loads it from a CDN: blank
    on a machine without internet access)."""
    page = client.get("/docs")
    assert page.status_code == 200 and "/openapi.json" in page.text
    urls = re.findall(r"(?:src|href)=[\"']([^\"']+)", page.text)
    assert urls and all(url.startswith("/ui/vendor/swagger-ui/") for url in urls), urls
    for url in urls:
        assert client.get(url).status_code == 200, url
    assert client.get("/redoc").status_code == 404
