"""Building blocks that read and shape CDRs: sources, the canonical schema, normalising, tokenising, the transform, tier writing, bronze, data quality, search."""
