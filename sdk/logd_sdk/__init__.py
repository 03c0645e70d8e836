"""logd's Python client: Admin, Producer, Consumer (filled in by the SDK modules)."""
