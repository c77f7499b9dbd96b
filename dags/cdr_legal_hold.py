"""Airflow DAG `cdr_legal_hold`: wiring only; the work is in `pipeline.flows.holds`."""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from cdr_airflow.dag_defaults import dag_args
from pipeline.core.layout import CASE_PATTERN

DOC = """
### cdr_legal_hold — place or release a legal hold

Manual. A hold keeps records past their retention date for a case (litigation, an authority's
order, an investigation) and only as long as the obligation lasts. Fill the form:

- `action`: place or release; `case`: the case reference; `reason`: the order or claim;
- what it covers (at least one; together they must all match): `identifiers` (phone numbers or
  e-mail addresses, any written form; stored only as tokens, never in clear), `customer`
  (a business customer id), `date_from`/`date_to` (UTC, inclusive);
- `until`: the date the hold ends by itself (empty: until released);
- `default_region`: the country of national-format numbers (empty: the deployment's
  `CDR_DEFAULT_REGION`; without either, such a number is refused).

**Reads/writes** `holds/<case>/hold.json`. The next `cdr_retention` run copies covered records
to `holds/<case>/` under the hold's own key before purging a month, and purges a released or
expired hold. Placing and releasing are recorded in the audit log (counts, never identifiers).
"""


@dag(
    dag_id="cdr_legal_hold",
    schedule=None,
    doc_md=DOC,
    **dag_args(one_run_at_a_time=False, tags=["retention", "legal-hold"], retries=1),
    params={
        "action": Param("place", type="string", enum=["place", "release"]),
        "case": Param("", type="string", pattern=CASE_PATTERN, description="Case reference"),
        "reason": Param("", type="string", minLength=3, description="The order or claim"),
        "identifiers": Param([], type="array", items={"type": "string"},
                             description="Phone numbers or e-mail addresses (any written form)"),
        "default_region": Param(None, type=["null", "string"], pattern="^[A-Z]{2}$",
                                description="ISO country of national-format numbers (empty: the deployment's CDR_DEFAULT_REGION)"),
        "customer": Param(None, type=["null", "string"]),
        "date_from": Param(None, type=["null", "string"], format="date"),
        "date_to": Param(None, type=["null", "string"], format="date"),
        "until": Param(None, type=["null", "string"], format="date"),
    },
)  # fmt: skip
def cdr_legal_hold() -> None:
    @task
    def apply_hold(params=None) -> dict:  # type: ignore[no-untyped-def]
        from airflow.sdk.exceptions import AirflowFailException

        from cdr_airflow.settings import task_resources
        from pipeline.flows.holds import HoldRequest, run_hold

        try:
            return run_hold(task_resources(), HoldRequest.from_mapping(dict(params)))
        except ValueError as exc:  # a bad request: retrying cannot help
            raise AirflowFailException(str(exc)) from None

    apply_hold()


cdr_legal_hold()
