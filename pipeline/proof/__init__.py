"""What proves the records: seals and signed entries, per-record commitments, the audit log, encryption, and the recipient's side of a package (no flow imported)."""
