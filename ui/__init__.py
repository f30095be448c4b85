"""Gradio UI of editx-serve, mounted by the BentoML service at /ui."""

from ui.app import build_ui

__all__ = ["build_ui"]
