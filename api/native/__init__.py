"""The service's own routes besides the BentoML audio APIs: /status /vocabulary /logs /cache."""

from api.native.routes import router

__all__ = ["router"]
