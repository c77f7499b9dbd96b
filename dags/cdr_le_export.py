"""Airflow DAG `cdr_le_export`: wiring only; the work is in `pipeline.flows.export`."""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from cdr_airflow.dag_defaults import dag_args
from pipeline.core.layout import CASE_PATTERN
from pipeline.records.schema import CHANNELS

DOC = """
### cdr_le_export — law-enforcement disclosure package

Manual, run by a compliance officer for a lawful request. Fill the form: the case reference,
the requesting authority, the legal basis (statute or order), who requested it and who approved
it (two different people), the end users' phone numbers or e-mail addresses (any written form),
the period (UTC dates, inclusive), optionally the channels and the country of national-format
numbers (`default_region`, empty: the deployment's `CDR_DEFAULT_REGION`), and the authority's
public key (PEM, X25519 or RSA of at least 2048 bits).

A request with a missing field, the same requester and approver, a reversed or future period,
an unreadable identifier or an unusable key is refused before any data is read; the refusal is
recorded in the audit log and the run fails without retrying. The task is not retried on other
errors either (a retry would build a second package for the same request): rerun it once the
cause (for instance the store being unreachable) is fixed.

**Reads** the period's silver partitions and vault (legal-hold copies for purged months).
**Writes** `exports/<case>/package-<time>.cdrx` (encrypted for the authority) and its `.json`
description. The audit log records the case, requester, approver, counts and package digest,
never the identifiers. The authority checks the package with
`python -m pipeline verify-export PACKAGE --private-key … --seal-public-key …`.
"""


@dag(
    dag_id="cdr_le_export",
    schedule=None,
    doc_md=DOC,
    **dag_args(one_run_at_a_time=False, tags=["law-enforcement", "export"], retries=0),
    params={
        "case": Param("", type="string", pattern=CASE_PATTERN, description="Case reference"),
        "authority": Param("", type="string", minLength=2, description="Requesting authority"),
        "legal_basis": Param("", type="string", minLength=3,
                             description="Statute or order the request rests on"),
        "requested_by": Param("", type="string", minLength=2, description="Who requested it"),
        "approved_by": Param("", type="string", minLength=2,
                             description="Who approved it (a different person)"),
        "identifiers": Param([], type="array", items={"type": "string"}, minItems=1,
                             description="Phone numbers or e-mail addresses (any written form)"),
        "date_from": Param("", type="string", format="date", description="Period start (UTC)"),
        "date_to": Param("", type="string", format="date",
                         description="Period end, inclusive (UTC)"),
        "default_region": Param(None, type=["null", "string"], pattern="^[A-Z]{2}$",
                                description="ISO country of national-format numbers (empty: the deployment's CDR_DEFAULT_REGION)"),
        "channels": Param([], type="array", items={"type": "string", "enum": list(CHANNELS)},
                          description="Only these channels (empty: all)"),
        "recipient_key": Param("", type="string", pattern="^-----BEGIN PUBLIC KEY-----",
                               description="The authority's public key (PEM)"),
    },
)  # fmt: skip
def cdr_le_export() -> None:
    @task(retries=0)
    def export_package(params=None) -> dict:  # type: ignore[no-untyped-def]
        from airflow.sdk.exceptions import AirflowFailException

        from cdr_airflow.settings import task_resources
        from pipeline.flows.export import run_export
        from pipeline.flows.export_request import ExportRequest, RequestError

        res = task_resources()
        try:
            return run_export(res, ExportRequest.from_mapping(dict(params))).public()
        except RequestError as exc:  # a refused request: retrying cannot help
            raise AirflowFailException(str(exc)) from None

    export_package()


cdr_le_export()
