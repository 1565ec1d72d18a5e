"""The HTTP API fuzzed against its own OpenAPI with schemathesis, for each role: whatever the
generated request (valid by the schema or not), no answer is a server error (5xx) and every
answer the schema describes matches it. A fixed seed and a few examples per operation in the
suite; ``make fuzz`` runs many more (``BRIDGE_FUZZ_EXAMPLES``)."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import FlakyStrategyDefinition
from prometheus_client import CollectorRegistry
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from sqlalchemy.orm import Session, sessionmaker

from bridge.adapters.http.app import create_app
from bridge.config.settings import Settings
from bridge.mapping.hl7.tables import load_hl7_tables
from bridge.services.hl7.ingest import HL7Ingest
from tests.http_harness import make_tokens

pytestmark = pytest.mark.integration
EXAMPLES = int(os.environ.get("BRIDGE_FUZZ_EXAMPLES", "5"))
ROLES = ("viewer", "integration", "admin")


def test_no_server_error_and_answers_match_the_schema(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    app_settings, sessions = settings, session_factory
    tokens = make_tokens(sessions)
    ingest = HL7Ingest(sessions, load_hl7_tables(app_settings.mappings_dir), app_settings)
    app = create_app(app_settings, sessions, reprocess=ingest.reprocess,
                     metrics_registry=CollectorRegistry())
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    only = os.environ.get("BRIDGE_FUZZ_ONLY", "")  # a part of the label, to replay one
    operations = [op for op in (result.ok() for result in schema.get_all_operations())
                  if only in op.label]
    assert only or len(operations) > 50
    for operation in operations:
        @given(case=operation.as_strategy())
        @hypothesis_settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case: schemathesis.Case) -> None:
            for role in ROLES:  # each generated request, as each role
                case.call_and_validate(
                    headers={"Authorization": f"Bearer {tokens[role]}"},
                    checks=[not_a_server_error, response_schema_conformance])

        try:
            fuzz()
        except FlakyStrategyDefinition:
            # Hypothesis could not replay schemathesis's generator for this operation: a fault
            # of the generation, not an answer of the bridge (nothing to report about it).
            continue
        except (Exception, BaseExceptionGroup) as exc:  # every operation is tried; all reported
            failures.append(f"{operation.label}: {_described(exc)[:1500]}")
    assert failures == [], "\n\n".join(failures)


def _described(exc: BaseException) -> str:
    """The failure and, for a group (hypothesis's flaky failures), what is inside it."""
    inner = getattr(exc, "exceptions", ())
    return "; ".join([str(exc), *(f"{type(e).__name__}: {e}" for e in inner)])
