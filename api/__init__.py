"""FastAPI application and web control page (not yet implemented; see the product-surface issue)."""
