"""The REST API is a contract: schemathesis runs every check against the app's own OpenAPI spec.

All phases (examples, coverage, fuzzing, stateful) and all checks, bounded in examples, over a
small library with a tiny random model: any server error, undocumented status code, response
that breaks its schema, schema-valid request refused or schema-invalid request accepted, or
undeclared method not answered with 405 + Allow, is a failure listed with its request.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("schemathesis")

MAX_EXAMPLES = 3  # per operation and phase; the coverage phase adds its ~350 boundary cases regardless


def _hooks():
    spec = importlib.util.spec_from_file_location("schemathesis_hooks", Path(__file__).with_name("schemathesis_hooks.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_schemathesis(app, headers: dict[str, str] | None = None, max_examples: int = MAX_EXAMPLES,
                     path: str | None = None, method: str | None = None) -> list[str]:
    """Every distinct failure schemathesis finds, as 'operation | check | request -> status body' lines."""
    import schemathesis
    from schemathesis.config import SchemathesisConfig
    from schemathesis.engine import events, from_schema

    header_lines = "".join(f'"{k}" = "{v}"\n' for k, v in (headers or {}).items())
    config = SchemathesisConfig.from_str(
        f"seed = 7\nmax-failures = 50\n[generation]\nmax-examples = {max_examples}\n"
        f"[checks]\nenabled = true\n"
        # In-process only, schemathesis mines string constants from the app's Python modules ("chunked",
        # "OPTIONS") and drops them into schema-valid fields, image files included; a run over HTTP (the
        # way users run it) has no such pool, so the test matches that.
        f"[analysis.constants]\nenabled = false\n" + (f"[headers]\n{header_lines}" if headers else ""))
    hooks = _hooks()
    saved = hooks.register()
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
        if path is not None:
            schema = schema.include(path=path, method=method)
        failures: dict[tuple[str, str, str], str] = {}
        errors: list[str] = []
        finished = None
        for event in from_schema(schema).execute():
            if isinstance(event, (events.ScenarioFinished, events.FuzzScenarioFinished)):
                recorder = event.recorder
                for case_id, checks in recorder.checks.items():
                    for check in checks:
                        if check.failure_info is None:
                            continue
                        case = recorder.cases[case_id].value
                        interaction = recorder.interactions.get(case_id)
                        response = interaction.response if interaction is not None else None
                        got = f"{response.status_code} {response.content[:200]!r}" if response is not None else "-"
                        key = (recorder.label, check.name, check.failure_info.failure.title)
                        failures.setdefault(key, f"{case.method} {case.formatted_path} query={case.query} "
                                                 f"body={str(case.body)[:150]}...{str(case.body)[-100:]} media={case.media_type} -> {got} [{getattr(case.meta, 'phase', None)}]")
            elif isinstance(event, (events.NonFatalError, events.FatalError)):
                errors.append(str(getattr(event, "info", None) or getattr(event, "exception", event))[:500])
            elif isinstance(event, events.EngineFinished):
                finished = event
    finally:
        hooks.unregister(saved)
    assert finished is not None and finished.stop_reason == "completed", finished
    return [f"{label} | {check} | {title} | {example}" for (label, check, title), example in failures.items()] + errors


@pytest.fixture()
def contract_limits():
    """Small ceilings keep the generated boundary values (a maximal upload, a maximal base64 image) cheap."""
    from clipforge.server.limits import ServerLimits

    return ServerLimits(max_upload_bytes=60_000, max_text_chars=300, max_labels=5, max_labels_chars=100, max_top_k=50,
                        max_page_size=40, max_thumb_size=128)


def test_schemathesis_all_checks_find_nothing(make_client, contract_limits):
    client = make_client(limits=contract_limits)
    failures = run_schemathesis(client.app)
    assert failures == [], "\n".join(failures)


def test_schemathesis_all_checks_with_a_token(make_client, contract_limits):
    client = make_client(token="s3cret", limits=contract_limits)
    spec = client.get("/openapi.json").json()
    upload = spec["paths"]["/api/images"]["post"]
    assert "401" in upload["responses"] and upload["security"]  # the token is part of the contract
    # Only the upload depends on the token; the other operations were covered above.
    failures = run_schemathesis(client.app, headers={"Authorization": "Bearer s3cret"}, max_examples=4,
                                path="/api/images", method="POST")
    assert failures == [], "\n".join(failures)
