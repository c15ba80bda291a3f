"""Events per second ingest accepts (answered 202 after RabbitMQ confirmed them), single-event
requests and batches of 500. The load comes from wrk, a C load generator (Python clients saturate
long before the service does), on the same 2-core machine.

    python -m bench.ingest_throughput
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.harness import BenchStack

SECONDS = 10
BATCH_SIZE = 500

_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
local f = io.open("{body}", "rb")
wrk.body = f:read("*all")
f:close()
local bad = 0
response = function(status, headers, body)
  if status ~= 202 then bad = bad + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("NON202 %d\\n", bad))
end
"""


def _interest(i: int) -> dict[str, object]:
    return {"source": "bench", "external_id": str(i), "topic": f"topic {i % 5000}", "kind": "likes"}


def _wrk(url: str, key: str, body: object, connections: int) -> float:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: `make bench` installs it (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        body_path = Path(tmp, "body.json")
        body_path.write_text(json.dumps(body))
        script = Path(tmp, "post.lua")
        script.write_text(_SCRIPT.replace("{key}", key).replace("{body}", str(body_path)))
        result = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{SECONDS}s", "-s", str(script), url],
            capture_output=True,
            text=True,
            check=True,
        )
    bad = re.search(r"NON202 (\d+)", result.stdout)
    if bad is None or int(bad[1]):
        raise RuntimeError(f"ingest answered other than 202:\n{result.stdout}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    assert found is not None, result.stdout
    return float(found[1])


def measure(stack: BenchStack) -> dict[str, float]:
    url = f"{stack.urls['ingest']}/v1/interests"
    single = _wrk(url, stack.api_key, _interest(1), connections=64)
    batch = {"items": [_interest(i) for i in range(BATCH_SIZE)]}
    batched_requests = _wrk(url, stack.api_key, batch, connections=8)
    return {
        "single_requests_per_s": single,
        "batched_events_per_s": batched_requests * BATCH_SIZE,
        "batched_requests_per_s": batched_requests,
    }


def main() -> None:
    from bench.harness import bench_stack

    with bench_stack("ingest") as stack:
        result = measure(stack)
    print(f"single-event requests: {result['single_requests_per_s']:,.0f} requests/s")
    print(
        f"batches of {BATCH_SIZE}: {result['batched_events_per_s']:,.0f} events/s "
        f"({result['batched_requests_per_s']:,.1f} requests/s)"
    )


if __name__ == "__main__":
    main()
