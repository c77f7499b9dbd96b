"""What each quarantine reason means, in one line an operator can act on.

A row's reason is a code, optionally with the field it concerns (`bad_timestamp:event_time`):
codes name fields, never values, so the explanations do too.
"""

from __future__ import annotations

#: reason code → what happened to the row, and why it was not kept
MEANINGS: dict[str, str] = {
    "bad_json": "the line is not a complete JSON object (cut off or malformed)",
    "bad_json_document": "the JSON document cannot be read as records",
    "bad_type": "a JSON value of the wrong type for the field",
    "bad_encoding": "the row's bytes are not valid in the file's text encoding",
    "wrong_column_count": "more or fewer columns than the file's header or format allows",
    "bad_timestamp": "a time the source wrote that is not a real date and time",
    "bad_number": "a numeric field that is not a number",
    "out_of_range": "a time before 1990 or from 2100 on, or a duration over a week",
    "future_timestamp": "dated after the run's day plus one day of tolerance (a wrong clock)",
    "missing_id": "no record ID, and the format gives none to derive",
    "missing_timestamp": "no time of the communication",
    "missing_destination": "no destination, so the record cannot be routed or kept whole",
    "unparseable_number": "an address that is neither a phone number, e-mail, SIP user nor sender ID",
    "invalid_number": "a number no country's numbering plan allows",
    "bad_value": "a missing or unreadable channel, direction or duration",
    "duplicate_record_id": "a record ID already kept, in this file or an earlier one of its source",
    "ambiguous_identifier": "a value that reads as more than one kind of address",
}


def meaning(reason: str) -> str:
    """The one-line meaning of a reason (`code` or `code:field`), naming the field if any."""
    code, _, field = reason.partition(":")
    text = MEANINGS.get(code)
    if text is None:
        return "see the reason codes in docs/formats.md"
    return f"{text} ({field})" if field else text
