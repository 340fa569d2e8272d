"""/docs and /redoc work without internet: every file they load comes from the gateway."""

from __future__ import annotations

import re

import httpx
import pytest

#: Every URL a page loads: script and style sources, icons, and the schema it renders.
REFERENCE = re.compile(r"""(?:src|href|spec-url)="([^"]+)"|url: '([^']+)'""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_from_the_gateway(tiny_http: httpx.Client, page: str) -> None:
    r = tiny_http.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    refs = [a or b for a, b in REFERENCE.findall(r.text)]
    assert any(ref.endswith(".js") for ref in refs) and "/openapi.json" in refs
    external = [ref for ref in refs if "://" in ref or ref.startswith("//")]
    assert not external, f"{page} loads from other hosts: {external}"
    assert "https://" not in r.text and "http://" not in r.text
    for ref in refs:
        asset = tiny_http.get(ref)
        assert asset.status_code == 200, ref
        assert asset.content, ref


def test_swagger_ui_is_version_5(tiny_http: httpx.Client) -> None:
    # FastAPI's schema is OpenAPI 3.1, which Swagger UI renders from version 5 on.
    assert tiny_http.get("/openapi.json").json()["openapi"].startswith("3.1")
    html = tiny_http.get("/docs").text
    (js,) = re.findall(r'src="([^"]+swagger-ui-bundle\.js)"', html)
    assert re.search(r'"5\.\d+\.\d+"', tiny_http.get(js).text)
