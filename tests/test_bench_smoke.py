"""The benchmark harness still runs: a seconds-long ``--quick`` run, and wrk's report parser.

Nothing here asserts a timing: only that every row of the table came out with numbers.
"""

from __future__ import annotations

import asyncio
import math
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from bench import celery_row, cpu, instructions, load, rawhttp, run
from bench.procs import baseline_proc, free_port

WRK_REPORT = """Running 5s test @ http://127.0.0.1:8080
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     6.90ms    1.02ms  30.12ms   93.16%
    Req/Sec     9.30k   420.11    9.90k    80.00%
  Latency Distribution
     50%    6.80ms
     75%    7.10ms
     90%    7.60ms
     99%    1.20s
  46270 requests in 5.00s, 10.01MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   9253.61
Transfer/sec:      2.00MB
"""

EXPECTED_ROWS = [
    "durable submit (synchronous=FULL)",
    "status GET",
    "driver status update",
    "cancel",
    "`since` page (limit=100)",
    "`latest`",
    "end-to-end at",
    "memory per idle websocket subscriber",
    "submit with",
    "`since` p50, 5,000 vs 1,000 jobs (T middle)",
    "`since` p50, 5,000 vs 1,000 jobs (T end)",
    "durable submit, PostgreSQL, 1 store process",
    "durable submit, PostgreSQL, `serve --workers 2`",
    "claim -> complete, 2 workers x 8 jobs, SQLite",
    "claim -> complete, 2 workers x 8 jobs, PostgreSQL",
]
CELERY_ROW = "task submit, Celery + Flower"
"""Present when the bench extra and Redis are (else the run says why it skipped the row)."""


def test_parse_wrk_report() -> None:
    result = load.parse_wrk(WRK_REPORT)
    assert result.requests == 46270
    assert result.seconds == 5.0
    assert result.rps == 9253.61
    assert result.p50_ms == 6.8
    assert result.p99_ms == 1200.0
    assert result.errors == 7


def test_parse_wrk_without_report_fails() -> None:
    with pytest.raises(RuntimeError, match="no report"):
        load.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_walk_renders_the_same_ids_as_the_lua_script() -> None:
    walk = load.Load("walk", "POST", "/jobs/ds/job/{id}/", body='{"j":"{id}"}', first=10, count=3)
    assert [walk.render(n)[1] for n in range(4)] == [
        "/jobs/ds/job/pre-10/",
        "/jobs/ds/job/pre-11/",
        "/jobs/ds/job/pre-12/",
        "/jobs/ds/job/pre-10/",
    ]
    assert walk.render(1)[2] == b'{"j":"pre-11"}'
    submit = load.Load("submit", dsid="ds", run="r1")
    method, path, body = submit.render(7)
    assert (method, path) == ("POST", "/ds/job/")
    assert orjson.loads(body or b"") == {"job": "r1-0-7", "request": {"n": 7}}


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
async def test_wrk_scripts_against_the_baseline() -> None:
    port = free_port()
    server = baseline_proc(port, core=None)
    await server.start()
    try:
        url = f"http://127.0.0.1:{port}"
        for spec in (
            load.Load("submit", dsid="ds", run="smoke"),
            load.Load("walk", "GET", "/ds/job/{id}/", count=5),
        ):
            result = await load.run_wrk(url, spec, "t", connections=4, duration=1, core=None)
            assert result.requests > 0
            assert result.errors == 0
    finally:
        await server.stop()


async def test_celery_row_says_in_one_line_why_it_cannot_run() -> None:
    not_installed = celery_row.missing()
    for url, why in (
        (f"redis://127.0.0.1:{free_port()}/15", "does not answer"),
        ("redis://127.0.0.1:6379", "names no dedicated Redis database"),
        ("redis://127.0.0.1:6379/0", "names no dedicated Redis database"),
    ):
        reason = await celery_row.unavailable(url)
        assert reason is not None and "\n" not in reason
        assert (not_installed or why) in reason, reason


def test_quick_run_produces_every_row(tmp_path: Path) -> None:
    # A sync test: the harness runs its own event loop (asyncio.run), as `python -m bench.run`.
    out = run.run_once(
        ["--quick", "--loadgen", "python", "--duration", "0.3", "--results-dir", str(tmp_path)]
    )
    results = orjson.loads(out.read_bytes())
    rows = results["rows"]
    measures = [row["measure"] for row in rows]
    skipped = results["raw"].get("celery_skipped")
    if skipped:
        assert skipped.startswith("celery row skipped: ") and "\n" not in skipped, skipped
    expected_rows = EXPECTED_ROWS if skipped else [*EXPECTED_ROWS, CELERY_ROW]
    for expected in expected_rows:
        assert any(m.startswith(expected) for m in measures), (expected, measures)
    assert len(rows) == len(expected_rows)
    for row in rows:
        numbers = [row[k] for k in ("ratio", "p50_ms", "p99_ms") if row[k] is not None]
        numbers += [v for v in row["numbers"].values() if isinstance(v, int | float)]
        assert numbers, row
        assert all(math.isfinite(x) for x in numbers), row
    assert results["table"].count("\n") == len(expected_rows) + 1
    # Each HTTP row says where the store's time went: CPU per request, loop and other threads.
    by_measure = {row["measure"].split(" (")[0]: row["numbers"] for row in rows}
    for measure in ("durable submit", "status GET", "driver status update", "cancel"):
        for key in ("cpu_us_per_request", "baseline_cpu_us_per_request"):
            split = by_measure[measure][key]
            assert all(math.isfinite(v) and v >= 0 for v in split.values()), (measure, split)
            assert abs(split["loop"] + split["threads"] - split["total"]) <= 0.2, (measure, split)
            assert split["system"] <= split["total"] + 0.1, (measure, split)
    assert len(results["cpu"]) >= 4, results["cpu"]


def test_cpu_per_request_splits_the_loop_from_the_other_threads() -> None:
    pid = 4242
    before = {pid: (100, 20), 4243: (50, 5)}
    after = {pid: (160, 30), 4243: (80, 15), 4250: (4, 1)}  # 4250 started during the load
    split = cpu.per_request(pid, before, after, requests=1000)
    assert split is not None
    tick_us = 1e6 / cpu.TICKS
    assert split.loop_us == pytest.approx(70 * tick_us / 1000)
    assert split.threads_us == pytest.approx((40 + 5) * tick_us / 1000)
    assert split.system_us == pytest.approx((10 + 10 + 1) * tick_us / 1000)
    assert split.total_us == pytest.approx(115 * tick_us / 1000)
    assert cpu.per_request(pid, before, {}, requests=10) is None, "the process was gone"
    assert cpu.per_request(pid, before, after, requests=0) is None


def test_cpu_threads_reads_this_process() -> None:
    import os

    readings = cpu.threads(os.getpid())
    assert os.getpid() in readings, "the main thread's id is the pid"
    assert all(user >= 0 and kernel >= 0 for user, kernel in readings.values())
    assert cpu.threads(2**22 + 12345) == {}, "no such process"


def test_raw_http_head_parser() -> None:
    head = rawhttp.parse_head(b"HTTP/1.1 201 Created\r\nContent-Length: 12\r\nX-A: b")
    assert (head.status, head.length, head.close) == (201, 12, False)
    head = rawhttp.parse_head(b"HTTP/1.1 400 Bad\r\ncontent-length: 0\r\nConnection: close")
    assert (head.status, head.length, head.close) == (400, 0, True)
    head = rawhttp.parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 1")
    assert head.close, "HTTP/1.0 closes unless it says keep-alive"
    head = rawhttp.parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive")
    assert not head.close
    for bad in (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked",
        b"HTTP/1.1 200 OK",
        b"SSH-2.0-OpenSSH",
    ):
        with pytest.raises(rawhttp.ResponseError):
            rawhttp.parse_head(bad)


async def test_raw_http_reply_in_pieces_and_two_in_one_read() -> None:
    loop = asyncio.get_running_loop()
    connection = rawhttp._Connection()
    reply = b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello"
    connection.waiter = loop.create_future()
    for i in range(len(reply)):
        connection.data_received(reply[i : i + 1])
    assert connection.waiter is None
    first = loop.create_future()
    connection.waiter = first
    connection.data_received(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 2")
    assert first.result() == 404
    second = loop.create_future()
    connection.waiter = second
    connection.data_received(b"00 OK\r\nContent-Length: 0\r\n\r\n")
    assert second.result() == 200


async def test_raw_http_pool_keeps_its_connection(aiohttp_server: Any) -> None:
    bodies: list[bytes] = []

    async def echo(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.json_response(
            {"n": len(bodies)}, status=201 if request.method == "POST" else 200
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    server = await aiohttp_server(app)
    pool = rawhttp.RawHttpPool("127.0.0.1", server.port)
    try:
        headers = {"Content-Type": "application/json"}
        for i in range(3):
            raw = pool.request_bytes("POST", f"/ds/job/{i}", headers, b'{"i":%d}' % i)
            assert await pool.request(raw) == 201
        assert await pool.request(pool.request_bytes("PUT", "/x", {}, b"")) == 200
        assert bodies == [b'{"i":0}', b'{"i":1}', b'{"i":2}', b""]
        assert len(pool._all) == 1, "one connection, kept alive and reused"
    finally:
        pool.close()


def test_callgrind_totals_are_read_from_the_end_of_a_dump(tmp_path: Path) -> None:
    dump = tmp_path / "x.callgrind.1"
    dump.write_text(
        "# callgrind format\nevents: Ir\nsummary: 0\n\nfn=(1) f\n3 12\ntotals: 123456\n"
    )
    assert instructions.read_total(dump) == 123456
    (tmp_path / "not.txt").write_text("nothing\n")
    with pytest.raises(ValueError):
        instructions.read_total(tmp_path / "not.txt")
    counts = [
        instructions.Count("store", "submit", 10, 5_000_000),
        instructions.Count("baseline", "submit", 10, 2_000_000),
    ]
    assert instructions.table(counts).splitlines()[-1] == "| submit | 500,000 | 200,000 | 0.400 |"


@pytest.mark.skipif(not instructions.available(), reason="valgrind is not installed")
def test_instruction_counts_of_the_store_and_the_baseline(tmp_path: Path) -> None:
    # A sync test: bench.instructions runs its own event loop, as `python -m bench.instructions`.
    out = instructions.main(
        ["--requests", "40", "--concurrency", "4", "--measures", "submit,status",
         "--results-dir", str(tmp_path)]
    )  # fmt: skip
    results = orjson.loads(out.read_bytes())
    per = {(c["server"], c["measure"]): c["per_request"] for c in results["counts"]}
    assert set(per) == {(s, m) for s in ("store", "baseline") for m in ("submit", "status")}
    # Each count is the server's own work: a store's durable submit takes more than its status
    # read, and more than the bare handler's reply to the same request.
    assert all(10_000 < n < 50_000_000 for n in per.values()), per
    assert per["store", "submit"] > per["store", "status"], per
    assert per["store", "submit"] > per["baseline", "submit"], per
