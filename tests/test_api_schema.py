"""Property-based fuzzing of the API's OpenAPI schema with schemathesis, in-process, against the app on the
simulated cell (real MuJoCo; stand-in grounding of tests/fake_grounding.py): no server errors, every status code
returned is documented, every response matches its schema, and invalid requests are refused.

Valid requests may still be refused for what they ask (400: an unsupported command or invalid sequence; 409:
the robot's state; 429: a full queue); the positive-data check is told so. Bounded: a few examples per operation.
GET /stream is left out (an endless MJPEG stream; tests/test_api.py reads a bounded one).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fake_grounding import TEST_TOKEN, stand_in_app
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.config import SchemathesisConfig
from schemathesis.generation.modes import GenerationMode

from pipeline.jobs.sim_cell import SimCell
from pipeline.jobs.sim_config import SimCellConfig

pytestmark = [pytest.mark.slow, pytest.mark.render]

CONFIG = SchemathesisConfig.from_dict(
    {
        "headers": {"Authorization": f"Bearer {TEST_TOKEN}"},
        "checks": {
            "positive_data_acceptance": {"expected-statuses": ["2xx", "400", "404", "409", "429"]},
            # 413: a body over the size limit is refused before it is read
            "negative_data_rejection": {"expected-statuses": ["400", "401", "404", "405", "409", "413", "422", "429"]},
        },
    }
)


@pytest.fixture(scope="module")
def api_schema() -> Iterator[Any]:
    cell = SimCell(SimCellConfig(seed=3, pace=0, names=("red cube", "green cup", "blue can")))
    app = stand_in_app(cell, queue_capacity=2)
    try:
        with TestClient(app):  # runs the lifespan: the job runner works while the fuzzer calls
            yield schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG).exclude(path="/stream")
    finally:
        cell.close()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_honours_its_schema(api_schema: Any, mode: GenerationMode) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/pick", "/sequence", "/jobs/{job_id}/choose", "/stop", "/health"}
    skipped: set[str] = set()
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case: Any) -> None:
            case.call_and_validate()

        try:
            run()
        except Unsatisfiable:
            if mode == GenerationMode.POSITIVE:
                raise
            skipped.add(operation.path)  # nothing of this operation can be made invalid (no body, no parameters)
    assert not skipped & {"/pick", "/sequence", "/jobs/{job_id}/choose", "/scene/reset"}
