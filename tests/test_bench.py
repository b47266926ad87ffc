"""The benchmark runs end to end in its quick form; its figures are not checked here."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CASES = {
    "webhook_ingest", "webhook_ingest_pg_redis", "change_to_screen", "change_to_screen_pg_redis",
    "idle_subscription", "graphql_read", "pay",
}
RUN_TIMEOUT_SECONDS = 120


@pytest.mark.timeout(RUN_TIMEOUT_SECONDS + 30)
def test_bench_quick_writes_every_case(tmp_path: Path) -> None:
    output = tmp_path / "latest.json"

    finished = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run"), "--quick", "--output", str(output)],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
    )

    assert finished.returncode == 0, finished.stdout + finished.stderr
    results = json.loads(output.read_text())
    assert set(results["cases"]) == CASES
    assert results["errors"] == {}
    assert results["run"]["mode"] == "quick"
    assert results["versions"]["python"]
    assert results["machine"]["cpu_count"] >= 1
    for name, case in results["cases"].items():
        assert case["rows"], f"{name} has no rows"
        for row in case["rows"]:
            assert math.isfinite(row["paystream"]), (name, row)
            assert row["paystream"] > 0, (name, row)
            assert math.isfinite(row["baseline"]), (name, row)
            assert row["baseline"] > 0, (name, row)
            assert row["met"] in (True, False, None), (name, row)
