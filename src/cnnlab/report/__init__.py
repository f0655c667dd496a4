"""Reports for people: per-layer model summaries and tables."""
