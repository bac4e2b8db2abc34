"""The benchmarks' smoke runs (figures 2-5b, HTTP ingestion): each runs end to end on tiny
data and writes its results file. Timings are never asserted: only that every figure was
measured."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from embedded.servers import EmbeddedServers


@pytest.mark.parametrize(
    "bench", ["fallback", "api_load", "freshness", "http_ingest", "customer_reads"]
)
async def test_smoke_run_measures_every_figure_and_writes_json(
    bench: str, servers: EmbeddedServers, tmp_path: Path
) -> None:
    output = tmp_path / f"{bench}.json"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("INTERACTION_SUMMARY_")},
        "KAFKA_BOOTSTRAP_SERVERS": servers.kafka_bootstrap,
        "DATABASE_URL": servers.database_url,
        "REDIS_URL": servers.redis_url,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", f"bench.{bench}", "--smoke", "--output", str(output),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode == 0, out.decode(errors="replace")[-4000:]

    results = json.loads(output.read_text())
    assert results["smoke"] is True
    assert results["machine"]["cores"] and results["machine"]["packages"]
    assert results["figures"], "no figure measured"
    for figure in results["figures"]:
        assert figure["value"] > 0, figure
        if figure["ceiling"] is not None:
            assert figure["ceiling"] > 0 and figure["ratio"] > 0, figure
