"""HTTP layer of editx-serve: routers, request/response models and error mapping (no model code)."""
