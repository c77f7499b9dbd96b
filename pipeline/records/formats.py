"""Names of the source formats, importable without loading any parser (DAG parse time)."""

FORMATS = ("canonical_parquet", "messaging", "canonical_csv", "asterisk", "freeswitch")
