"""build_app(): the FastAPI app the service mounts at "/" — native routes, error handlers, the Gradio UI."""

from __future__ import annotations

import fastapi
import gradio as gr

from api.errors import install_error_handlers
from api.deps import current_service
from api.native import router as native_router
from api.openai import build_router as openai_router


def build_app(ui_blocks: gr.Blocks) -> fastapi.FastAPI:
    """The native routes and the UI at /ui on one app (BentoML serves /docs.json, / and the probes itself).

    The UI's upload limit is set on ``ui_blocks.max_file_size`` when the service starts (Gradio reads it
    per request), so this needs no configuration at import time.
    """
    web = fastapi.FastAPI(title="editx-serve", docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(web)
    web.include_router(native_router)
    web.include_router(openai_router(current_service))  # /v1: answers its errors in OpenAI's shape itself
    return gr.mount_gradio_app(web, ui_blocks, path="/ui", footer_links=["api"], show_error=True)
