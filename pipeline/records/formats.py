"""Names of the source formats, importable without loading any parser (DAG parse time)."""

FORMATS = ("canonical_parquet", "messaging", "canonical_csv", "asterisk", "freeswitch")

#: documented column orders of the headerless PBX CSVs, shared by the ingest parser and the
#: independent reference reader (a constant table, so sharing it shares no parsing code)
ASTERISK = [
    "accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp",
    "lastdata", "start", "answer", "end", "duration", "billsec", "disposition", "amaflags",
    "uniqueid", "userfield",
]  # fmt: skip
FREESWITCH = [
    "caller_id_name", "caller_id_number", "destination_number", "context", "start_stamp",
    "answer_stamp", "end_stamp", "duration", "billsec", "hangup_cause", "uuid", "bleg_uuid",
    "accountcode", "read_codec", "write_codec",
]  # fmt: skip

#: dial-plan contexts of calls that came in from outside (case-insensitive), for both PBXs
INBOUND_CONTEXT = r"(?i)^(from-(pstn|trunk|external|did)|public|inbound|incoming)"

#: a leap second (`23:59:60`, with or without a fraction) and what it is read as: the last
#: instant of its minute, so that it never moves a record into the next minute, month or year
#: (a documented normal-course change; ingest and the reference readers read it alike)
LEAP_SECOND = r"(\d{2}:\d{2}):60(?:[.,]\d*)?"
LEAP_SECOND_AS = "59.999999"
