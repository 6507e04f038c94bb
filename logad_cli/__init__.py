"""The `logad` command line (kept outside logad/ so the core stays free of CLI and stream imports)."""
