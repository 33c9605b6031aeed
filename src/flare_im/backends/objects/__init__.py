"""The object storage port (DESIGN.md §5): media files, chosen by ``object_store_url``."""
