"""CDR anonymisation pipeline: seal, tokenise, tier and retain communication detail records."""

__version__ = "0.1.0"
