"""``/docs``: Swagger UI, served from the installed ``swagger-ui-bundle-v2`` package when present (it works
with no internet, as a self-hosted service must), else from FastAPI's default CDN."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"


def local_swagger_ui() -> Path | None:
    """The directory of a bundled Swagger UI 5 (which renders OpenAPI 3.1), or ``None``."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    path = Path(getattr(swagger_ui_bundle, "swagger_ui_path", ""))
    if not (path / "swagger-ui-bundle.js").is_file() or "swagger-ui-4" in path.name:
        return None  # Swagger UI 4 cannot render the OpenAPI 3.1 document FastAPI writes
    return path


def install(app: FastAPI) -> None:
    """Add ``GET /docs`` (the app must be built with ``docs_url=None``)."""
    assets = local_swagger_ui()
    if assets is not None:
        app.mount(ASSETS_URL, StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        title = f"{app.title} API"
        openapi_url = app.openapi_url or "/openapi.json"
        if assets is None:
            return get_swagger_ui_html(openapi_url=openapi_url, title=title)
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=title,
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon-32x32.png",
        )
