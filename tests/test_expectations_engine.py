"""The batch evaluator gives Great Expectations' own verdict and counts (differential test),
merges batches into the file's verdict, and refuses what it cannot evaluate exactly."""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import json
import warnings
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pipeline.records import detector
from pipeline.records.expectations_engine import SuiteError, SuiteTally, compile_suite
from pipeline.records.quality import load_suite_json

SUITES = ("silver", "gold", "silver_identifiers")
KINDS = ["msisdn", "email", "sip", "shortcode", "x"]
UTC = dt.UTC
EDGE_TIMES = [
    dt.datetime(1990, 1, 1, tzinfo=UTC),
    dt.datetime(1989, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    dt.datetime(2100, 1, 1, tzinfo=UTC),
    dt.datetime(2100, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
    dt.datetime(2025, 3, 15, 12, tzinfo=UTC),
]
EDGE_INTS = [-1, 0, 1, 604800, 604801, 2**40]
# Characters the suites' patterns care about, and a few that engines disagree on.
ALPHABET = "0123456789+-() .@_abzAZé٣\n\x1c\t"


def _regexes() -> list[tuple[str, str]]:
    """Every (type, pattern) of the shipped suites."""
    found = set()
    for name in SUITES:
        for e in load_suite_json(name)["expectations"]:
            if "regex" in e["kwargs"]:
                found.add((e["type"], e["kwargs"]["regex"]))
    return sorted(found)


def _cond(text: str | None) -> dict[str, str]:
    return {"row_condition": text, "condition_parser": "pandas"} if text else {}


CONDITIONS = [None, 'kind == "msisdn"', 'kind in ["msisdn", "email", "sip"]', 'kind != "sip"']


def differential_suite() -> dict[str, Any]:
    """Every expectation type the suites use, on columns with nulls and edge values, with and
    without each form of row condition."""
    exps: list[dict[str, Any]] = [
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "record_id"}},
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "n"}},
        {"type": "expect_compound_columns_to_be_unique", "kwargs": {"column_list": ["kind", "record_id"]}},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "kind", "value_set": ["msisdn", "email", "sip"]}},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "flag", "value_set": [True]}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "n", "min_value": 0, "max_value": 604800}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "t", "min_value": "1990-01-01T00:00:00+00:00", "max_value": "2100-01-01T00:00:00+00:00"}},
    ]  # fmt: skip
    for cond in CONDITIONS:
        for kind in ("expect_column_values_to_not_be_null", "expect_column_values_to_be_null"):
            exps.append({"type": kind, "kwargs": {"column": "text", **_cond(cond)}})
        exps.append(
            {
                "type": "expect_column_values_to_be_unique",
                "kwargs": {"column": "text", **_cond(cond)},
            }
        )
    for kind, regex in _regexes():
        for cond in (None, 'kind == "msisdn"'):
            exps.append({"type": kind, "kwargs": {"column": "text", "regex": regex, **_cond(cond)}})
    for n, e in enumerate(exps):
        e["meta"] = {"n": n}  # GX reorders results: paired by this
    return {"name": "differential", "expectations": exps}


@functools.cache
def _gx_batch() -> Any:
    from pipeline.records.quality import quiet_context

    source = quiet_context().data_sources.add_pandas("d")
    return source.add_dataframe_asset("d").add_batch_definition_whole_dataframe("d")


def _gx_results(suite: dict[str, Any], frame: pl.DataFrame) -> list[Any]:
    import great_expectations as gx

    batch = _gx_batch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = batch.get_batch(
            batch_parameters={"dataframe": frame.to_arrow().to_pandas()}
        ).validate(gx.ExpectationSuite(**json.loads(json.dumps(suite))), result_format="SUMMARY")
    return list(result.results)


def _evaluate(suite: dict[str, Any], frame: pl.DataFrame, cut: int) -> list[Any]:
    tally = SuiteTally(compile_suite(suite))
    for part in (frame.slice(0, cut), frame.slice(cut)):
        tally.add(part)
    return tally.results()


def _assert_same(suite: dict[str, Any], frame: pl.DataFrame, cut: int) -> None:
    ours = _evaluate(suite, frame, cut)
    theirs = _gx_results(suite, frame)
    assert len(ours) == len(theirs)
    for config, success, result, error in ours:
        gx_result = next(r for r in theirs if r.expectation_config.meta == config["meta"])
        where = f"{config['type']} {config['kwargs']}"
        assert error is None and not gx_result.exception_info.get("raised_exception"), where
        assert success == gx_result.success, where
        for name in ("element_count", "unexpected_count", "missing_count", "unexpected_percent"):
            assert result.get(name) == pytest.approx(gx_result.result.get(name)), (where, name)


texts = st.one_of(st.none(), st.text(ALPHABET, max_size=24), st.sampled_from(
    ["+923001234567", "+923001234567\n", "call 0300-7654321", "a@b.example", "msisdn.v1.AAAAAAAAAAAAAAAAAAAAAA",
     "12345", "ACME Bank", "0300 7654321", "0092300123456", "user\x1cname", "usér"]
))  # fmt: skip
rows = st.fixed_dictionaries(
    {
        "record_id": st.one_of(st.none(), st.sampled_from(["r1", "r2", "r3", "r4"])),
        "kind": st.one_of(st.none(), st.sampled_from(KINDS)),
        "n": st.one_of(st.none(), st.sampled_from(EDGE_INTS), st.integers(-10, 10**6)),
        "t": st.one_of(st.none(), st.sampled_from(EDGE_TIMES)),
        "flag": st.one_of(st.none(), st.booleans()),
        "text": texts,
    }
)
SCHEMA = {
    "record_id": pl.String,
    "kind": pl.String,
    "n": pl.Int64,
    "t": pl.Datetime("us", "UTC"),
    "flag": pl.Boolean,
    "text": pl.String,
}


# GX takes about a second an example: no shrinking (a failure is reported as generated).
@settings(
    max_examples=40,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    data=st.lists(rows, min_size=1, max_size=40),
    cut=st.integers(0, 40),
    engine=st.sampled_from(["python re", "polars"]),
)
@pytest.mark.slow
def test_the_evaluator_gives_gx_verdict_and_counts(
    data: list[dict[str, Any]], cut: int, engine: str
) -> None:
    """Both regex engines the evaluator uses (Python's for a batch of few distinct values,
    polars' for many) against GX."""
    from pipeline.records import expectations_engine

    kept = expectations_engine.PYTHON_REGEX_DISTINCT
    expectations_engine.PYTHON_REGEX_DISTINCT = kept if engine == "python re" else -1
    try:
        _assert_same(differential_suite(), pl.DataFrame(data, schema=SCHEMA), cut)
    finally:
        expectations_engine.PYTHON_REGEX_DISTINCT = kept


def test_a_frame_of_nulls_only() -> None:
    data = [dict.fromkeys(SCHEMA)] * 3
    _assert_same(differential_suite(), pl.DataFrame(data, schema=SCHEMA), 1)


def test_a_repeat_across_batches_counts_every_occurrence_as_gx_does() -> None:
    frame = pl.DataFrame({"record_id": ["a", "b", None, "c", "a", "a", "b"]})
    suite = {"name": "u", "expectations": [{"type": "expect_column_values_to_be_unique", "kwargs": {"column": "record_id"}}]}  # fmt: skip
    for cut in range(len(frame) + 1):
        ((_, success, result, _),) = _evaluate(suite, frame, cut)
        assert not success and result["unexpected_count"] == 5 and result["missing_count"] == 1


def test_repeats_counted_in_memory_and_spilled_to_disk_agree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A small file's fingerprints stay in memory; a big one's go to bucket files once past
    `MEMORY_PAIRS`. Both give GX's count (every occurrence of a repeated value)."""
    from pipeline.records import expectations_engine

    frame = pl.DataFrame({"record_id": [f"r{i % 700}" for i in range(1000)] + [None] * 5})
    suite = {"name": "u", "expectations": [{"type": "expect_column_values_to_be_unique", "kwargs": {"column": "record_id"}}]}  # fmt: skip
    counts = []
    spills: list[int] = []
    real = expectations_engine.Repeats._spill
    monkeypatch.setattr(
        expectations_engine.Repeats, "_spill", lambda r: spills.append(1) or real(r)
    )
    for memory in (1 << 20, 64):
        monkeypatch.setattr(expectations_engine, "MEMORY_PAIRS", memory)
        spills.clear()
        tally = SuiteTally(compile_suite(suite))
        for part in frame.iter_slices(100):
            tally.add(part)
        ((_, _, result, _),) = tally.results()
        spilled = bool(spills)
        counts.append((result["unexpected_count"], spilled))
    assert counts == [(600, False), (600, True)]  # 300 values twice: 600 rows


@pytest.mark.parametrize(
    "batches",
    [
        [[0, 1, 2], [3, 4], [7, 9, 10]],  # increasing, with and without gaps: nothing repeats
        [[0, 1, 2], [3, 5], [5, 6]],  # the last batch starts on the one before's last value
        [[0, 1, 2], [4, 6, 8], [9, 1], [2]],  # a run, a gapped run, then back into both
        [[10, 11], [3, 3], [12]],  # a repeat inside one batch, below what came before
        [[-5, -3, 2**40], [2**40 + 1, -3]],
    ],
)
def test_an_increasing_integer_key_is_proved_unique_without_fingerprints_until_it_is_not(
    batches: list[list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file's `leaf_index` comes in strictly increasing batches: those are kept as runs, not
    fingerprinted. A batch out of order turns the runs kept so far into fingerprints, and the
    count is GX's (every occurrence of a repeated value) however the batches came."""
    from pipeline.records import expectations_engine

    hashed: list[int] = []
    real = expectations_engine.Repeats._fingerprint
    monkeypatch.setattr(
        expectations_engine.Repeats,
        "_fingerprint",
        lambda r, k: hashed.append(len(k)) or real(r, k),
    )
    suite = {"name": "u", "expectations": [{"type": "expect_column_values_to_be_unique", "kwargs": {"column": "leaf_index"}}]}  # fmt: skip
    tally = SuiteTally(compile_suite(suite), index_column=None)
    for batch in batches:
        tally.add(pl.DataFrame({"leaf_index": batch}, schema={"leaf_index": pl.Int64}))
    ((_, success, result, _),) = tally.results()
    values = pl.Series([v for batch in batches for v in batch])
    expected = int(values.is_duplicated().sum())
    assert result["unexpected_count"] == expected and success == (expected == 0)
    ordered = all(a < b for a, b in itertools.pairwise(values))
    assert bool(hashed) != ordered  # fingerprints only once the order broke


def test_an_unsigned_key_beyond_int64_is_counted_not_taken_for_a_run() -> None:
    """2**64 - 1 then 0 would read as -1 then 0 in 64-bit signed integers: increasing."""
    suite = {"name": "u", "expectations": [{"type": "expect_column_values_to_be_unique", "kwargs": {"column": "n"}}]}  # fmt: skip
    tally = SuiteTally(compile_suite(suite), index_column=None)
    for batch in ([2**64 - 1, 0], [0]):
        tally.add(pl.DataFrame({"n": batch}, schema={"n": pl.UInt64}))
    ((_, success, result, _),) = tally.results()
    assert not success and result["unexpected_count"] == 2


def test_gapped_runs_beyond_the_fingerprints_memory_are_fingerprinted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Runs with gaps keep their values: past the memory fingerprints would take they are
    fingerprinted instead (which spill to disk), and the count is still exact."""
    from pipeline.records import expectations_engine

    monkeypatch.setattr(expectations_engine, "MEMORY_PAIRS", 4)
    suite = {"name": "u", "expectations": [{"type": "expect_column_values_to_be_unique", "kwargs": {"column": "leaf_index"}}]}  # fmt: skip
    tally = SuiteTally(compile_suite(suite), index_column=None)
    for start in range(0, 4000, 400):  # every third value: gapped, increasing
        tally.add(pl.DataFrame({"leaf_index": list(range(start, start + 400, 3))}))
    tally.add(pl.DataFrame({"leaf_index": [0, 3, 5]}))
    ((_, success, result, _),) = tally.results()
    assert not success and result["unexpected_count"] == 4


def test_failures_name_record_ids_never_values() -> None:
    frame = pl.DataFrame(
        {"record_id": ["r1", "r2", "r3"], "text": ["ok", "call 0300-7654321", "ok"]}
    )
    phone = detector.pattern("PK")
    suite = {"name": "p", "expectations": [{"type": "expect_column_values_to_not_match_regex", "kwargs": {"column": "text", "regex": phone}}]}  # fmt: skip
    ((_, success, result, _),) = _evaluate(suite, frame, 1)
    assert not success and result["partial_unexpected_index_list"] == [{"record_id": "r2"}]
    assert "7654321" not in json.dumps(result)


@pytest.mark.parametrize(
    ("expectation", "message"),
    [
        ({"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}}, "expect_table_row_count_to_be_between"),
        ({"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "a", "value_set": [1], "parse_strings_as_datetimes": True}}, "parse_strings_as_datetimes"),
        ({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "a", "row_condition": "b > 3", "condition_parser": "pandas"}}, "row condition"),
        ({"type": "expect_column_values_to_match_regex", "kwargs": {"column": "a", "regex": "(?<=x)y"}}, "cannot be evaluated"),
    ],
)  # fmt: skip
def test_what_the_evaluator_cannot_run_is_refused_when_the_suite_loads(
    expectation: dict[str, Any], message: str
) -> None:
    with pytest.raises(SuiteError, match=message):
        compile_suite({"name": "s", "expectations": [expectation]})


@pytest.mark.parametrize("name", [*SUITES, "original_form"])
def test_every_shipped_suite_compiles(name: str) -> None:
    assert len(compile_suite(load_suite_json(name)).checks) == len(
        load_suite_json(name)["expectations"]
    )
