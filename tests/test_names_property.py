"""Generated case references, sources and file names, from a wide alphabet: distinct valid inputs
never share a key or a prefix, nothing escapes its place, and no identifier hidden in a name
reaches anything kept outside the encrypted original."""

from __future__ import annotations

import logging
import string
import unicodedata

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.cli import main as cli
from pipeline.core import layout
from pipeline.core.config import Settings
from pipeline.core.resources import Resources
from tests.helpers import all_text_outputs, assert_no_identifiers

#: Letters of several scripts, digits of several scripts, separators, dots, slashes, invisibles.
ALPHABET = (
    string.ascii_letters + string.digits + "._-/\\ +@~:()" + "éÅßİıſ" + "ＡＢｏ０１９"
    + "٠١٢٣٤٥٦٧٨٩" + "\u200b\u200d\u00a0\x00\n\t" + "中文"
)  # fmt: skip
names = st.text(ALPHABET, min_size=1, max_size=40)
numbers = st.from_regex(r"\A\+92 ?3[0-4][0-9] ?[1-9][0-9]{6}\Z", fullmatch=True)


def _valid(check, value: str) -> bool:  # type: ignore[no-untyped-def]
    try:
        check(value)
        return True
    except layout.LayoutError:
        return False


def _inside(key: str, prefix: str) -> bool:
    parts = key.split("/")
    return key.startswith(prefix) and ".." not in parts and "" not in parts[:-1] and "\\" not in key


@settings(max_examples=300, deadline=None)
@given(st.lists(names | st.from_regex(layout.CASE_PATTERN, fullmatch=True), unique=True))
def test_distinct_case_references_never_share_a_key_or_a_prefix(cases: list[str]) -> None:
    valid = [c for c in cases if _valid(layout.case, c)]
    keys = {layout.hold_key_name(c) for c in valid}
    prefixes = {layout.hold_prefix(c) for c in valid}
    exports = {layout.export_key(c, "20260101T000000Z") for c in valid}
    assert len(keys) == len(prefixes) == len(exports) == len(valid)
    for c in valid:
        assert _inside(layout.hold_prefix(c) + "hold.json", layout.HOLDS)
        assert len(layout.hold_prefix(c).split("/")) == 3
    for c in set(cases) - set(valid):
        with pytest.raises(layout.LayoutError):
            layout.hold_prefix(c)


@settings(max_examples=300, deadline=None)
@given(st.lists(names | st.from_regex(layout.SOURCE_PATTERN, fullmatch=True), unique=True))
def test_distinct_sources_never_share_a_folder_or_escape_it(sources: list[str]) -> None:
    valid = [s for s in sources if _valid(layout.source, s)]
    digest = "0" * 64
    bronze = {layout.bronze_key(s, digest) for s in valid}
    landing = {layout.landing_key(s, "x.csv") for s in valid}
    assert len(bronze) == len(landing) == len(valid)
    for s in valid:
        assert _inside(layout.bronze_key(s, digest), layout.BRONZE)
        assert len(layout.bronze_key(s, digest).split("/")) == 3
        assert not layout.identifier_shaped(s)


@settings(max_examples=300, deadline=None)
@given(st.lists(names, unique=True), numbers)
def test_file_labels_are_distinct_and_never_hold_an_identifier(
    files: list[str], number: str
) -> None:
    files = [*files, f"cdr-{number}.csv", f"{number}.csv"]
    labels = [layout.file_label(f) for f in files]
    assert len(set(labels)) == len(set(files))
    for label in labels:
        assert not layout.identifier_shaped(label) or label.startswith(layout.FILE_LABEL_PREFIX)
        assert "/" not in label and "\x00" not in label
        assert number.replace(" ", "")[-7:] not in label.replace(" ", "")


CSV = (
    "record_id,event_time,channel,direction,customer_id,origin,destination\n"
    "r-1,2025-03-02T10:00:00Z,sms,outbound,cust-1,InfoSMS,{number}\n"
    "r-2,2025-03-03T10:00:00Z,sms,outbound,cust-1,InfoSMS,+923339876544\n"
)


#: what may stand between a number's digits in a name: any run of characters that are neither
#: letters nor digits (spaces, dots, every dash and bracket, commas, middle dots, underscores,
#: combining marks), modifier letters (a lengthening mark, a tatweel; not those NFKC reads as a
#: letter, such as a superscript h) or invisible fillers
def _reads_as_a_separator(c: str) -> bool:
    return all(not r.isalnum() or unicodedata.category(r) == "Lm" for r in unicodedata.normalize("NFKC", c))  # fmt: skip


separators = st.text(
    st.characters(categories=["Pd", "Ps", "Pe", "Po", "Zs", "Sm", "Pc", "Mn", "Lm"]).filter(
        _reads_as_a_separator
    )
    | st.sampled_from("\u115f\u1160\u3164\uffa0"),
    max_size=3,
)
#: a digit as a name may show it: ASCII, full-width, superscript, circled, another script's
digit_marks = st.characters(categories=["Nd", "No"]).filter(
    lambda c: unicodedata.digit(unicodedata.normalize("NFKC", c)[:1], None) is not None
)


@settings(max_examples=300, deadline=None)
@given(st.lists(digit_marks, min_size=7, max_size=15), st.data())
def test_a_number_split_by_any_separators_is_identifier_shaped(digits: list[str], data) -> None:  # type: ignore[no-untyped-def]
    gaps = data.draw(st.lists(separators, min_size=len(digits) - 1, max_size=len(digits) - 1))
    written = digits[0] + "".join(g + d for g, d in zip(gaps, digits[1:], strict=True))
    name = f"cdr {written}.csv"
    assert layout.identifier_shaped(name), ascii(name)
    assert layout.file_label(name).startswith(layout.FILE_LABEL_PREFIX)


@pytest.mark.parametrize(
    "name", ["Master.csv", "late-2025.csv", "cdr_v1.2.3.csv", "データ2025年.csv", "ﾊﾟｰﾄ2025.csv"]
)
def test_names_with_few_digits_stay_readable(name: str) -> None:
    assert not layout.identifier_shaped(name) and layout.file_label(name) == name


file_names = st.builds(
    lambda pre, number, post: f"{pre}{number}{post}.csv",
    st.text(ALPHABET.replace("/", "").replace("\x00", ""), max_size=8),
    numbers | st.just("alice.secret@example.com"),
    st.text(ALPHABET.replace("/", "").replace("\x00", ""), max_size=8),
)


@settings(
    max_examples=6, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip
@given(
    source=names | st.from_regex(layout.SOURCE_PATTERN, fullmatch=True),
    case=names | st.from_regex(layout.CASE_PATTERN, fullmatch=True),
    file_name=file_names,
    number=numbers,
)
@example(source="pbx-karachi", case="FIA.2026.7", file_name="cdr-+92 300 1234567.csv",
         number="+923001234567")  # fmt: skip
@example(source="../gold/cdr/year=2026/month=08", case="../../x",
         file_name="alice.secret@example.com.csv", number="+923331234567")  # fmt: skip
@example(source="0", case="-:", file_name="١doX8@vaalice.secret@example.com.csv",
         number="+923001906030")  # fmt: skip
def test_generated_names_never_carry_an_identifier_into_what_is_kept(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
    source: str, case: str, file_name: str, number: str,
) -> None:  # fmt: skip
    root = tmp_path_factory.mktemp("names")
    env = {"CDR_STORE": str(root / "store"), "CDR_KEYRING": str(root / "keys"),
           "CDR_DATA_DOCS": str(root / "docs"), "CDR_DEFAULT_REGION": "PK"}  # fmt: skip
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    inbox = root / "in"
    inbox.mkdir()
    try:
        path = inbox / file_name
        path.write_text(CSV.format(number=number))
    except (OSError, ValueError):  # a name this file system cannot hold: nothing to test
        return
    before = sorted(p for p in root.rglob("*"))
    caplog.set_level(logging.INFO)
    capsys.readouterr()
    try:
        assert cli(["-v", "ingest", str(path), "--source", source]) == 0
        assert _valid(layout.source, source)
    except SystemExit as exit_:
        assert exit_.code == 2 and not _valid(layout.source, source)
    try:
        held = cli(["hold", "place", "--case", case, "--reason", "order", "--identifier", number])
    except SystemExit as exit_:  # a case written like an option (`-:`): argparse refuses it
        held = exit_.code
    assert held == (0 if _valid(layout.case, case) else 2)
    out = capsys.readouterr()

    store = root / "store"
    after = sorted(p for p in root.rglob("*"))
    outside = [p for p in after if p not in before and not p.is_relative_to(store)
               and not p.is_relative_to(root / "keys") and not p.is_relative_to(root / "docs")]  # fmt: skip
    assert outside == []  # nothing written outside the store, the keyring and Data Docs
    digits = number.replace(" ", "").lstrip("+")
    hidden = [digits, digits[-9:], "alice.secret"]
    res = Resources.from_settings(Settings.from_env())
    kept = [(k, t) for k, t in all_text_outputs(res.store) if not k.startswith("bronze/")]
    if _valid(layout.source, source):  # the file was ingested: the search is not vacuous
        assert any(k.startswith("gold/") for k, _ in kept)
        assert any(layout.file_label(file_name) in t for k, t in kept if k.startswith("seals/"))
    assert_no_identifiers(kept, hidden)
    assert_no_identifiers([("stdout", out.out), ("stderr", out.err), ("log", caplog.text)], hidden)
    caplog.clear()
