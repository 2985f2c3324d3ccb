"""The helpers of benchmarks/cpu_vs_llamacpp.sh: ratios and targets, CPU shares, the start-up probe."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from benchmarks.probe import cpu_share, first_token_seconds, is_running
from benchmarks.side_by_side import SKEWED_EXIT_CODE, app, compare_rows, load_levels, rows_markdown, skewed_rows
from tests.conftest import LiveServer, wait_until


def level(concurrency: int, output_throughput: float, ttft_p50: float) -> dict[str, Any]:
    return {"concurrency": concurrency, "output_throughput": output_throughput, "ttft_ms": {"p50": ttft_p50}}


FIREBOX = {1: level(1, 150.0, 40.0), 8: level(8, 300.0, 90.0), 32: level(32, 600.0, 1000.0)}
LLAMACPP = {1: level(1, 100.0, 50.0), 8: level(8, 200.0, 80.0), 32: level(32, 200.0, 2500.0)}


def test_ratios_and_targets() -> None:
    rows = {row.metric: row for row in compare_rows(FIREBOX, LLAMACPP, startup=(4.0, 1.5))}
    assert list(rows) == [
        "output tok/s, c=1",
        "output tok/s, c=8",
        "output tok/s, c=32",
        "TTFT p50 ms, c=32",
        "start-up to first token, s",
    ]
    assert rows["output tok/s, c=1"].ratio == pytest.approx(1.5) and rows["output tok/s, c=1"].is_met
    assert rows["output tok/s, c=8"].is_met is None and rows["output tok/s, c=8"].target == ""
    assert rows["output tok/s, c=32"].ratio == pytest.approx(3.0) and rows["output tok/s, c=32"].is_met
    assert rows["TTFT p50 ms, c=32"].ratio == pytest.approx(0.4) and rows["TTFT p50 ms, c=32"].is_met
    assert rows["start-up to first token, s"].is_met is False  # 4.0 > 1.5 + 2


def test_missed_targets_and_unshared_levels() -> None:
    slow = {c: level(c, 100.0, 5000.0) for c in (1, 32)}
    rows = {row.metric: row for row in compare_rows(slow, LLAMACPP, startup=(3.0, 1.5))}
    assert "output tok/s, c=8" not in rows
    assert not rows["output tok/s, c=1"].is_met and not rows["TTFT p50 ms, c=32"].is_met
    assert rows["start-up to first token, s"].is_met
    with pytest.raises(ValueError):
        compare_rows({2: level(2, 1.0, 1.0)}, LLAMACPP, startup=(1.0, 1.0))


def write_results(path: Path, levels: list[dict[str, Any]], other_pct: float | None = None) -> Path:
    document: dict[str, Any] = {"levels": levels, "client_cpu_s": 1.0}
    if other_pct is not None:
        document["cpu_share"] = {"server": 90.0, "client": 1.0, "other": other_pct}
    path.write_text(json.dumps(document))
    return path


def test_levels_merge_across_files_with_their_runs_cpu_share(tmp_path: Path) -> None:
    first = write_results(tmp_path / "a.json", [FIREBOX[1]], other_pct=2.0)
    second = write_results(tmp_path / "b.json", [FIREBOX[8], FIREBOX[32]], other_pct=40.0)
    levels = load_levels([first, second])
    assert sorted(levels) == [1, 8, 32]
    assert levels[1]["cpu_share"]["other"] == 2.0 and levels[32]["cpu_share"]["other"] == 40.0
    rows = compare_rows(levels, LLAMACPP, startup=(1.0, 1.0))
    assert rows[0].other_work_pct == (2.0, None)
    assert [r.metric for r in skewed_rows(rows)] == ["output tok/s, c=8", "output tok/s, c=32", "TTFT p50 ms, c=32"]


def test_compare_command_writes_summaries(tmp_path: Path) -> None:
    args = ["compare", "--firebox-startup", "2", "--llamacpp-startup", "1", "--out-dir", str(tmp_path)]
    for c in (1, 8, 32):
        args += ["--firebox", str(write_results(tmp_path / f"f{c}.json", [FIREBOX[c]], other_pct=1.0))]
        args += ["--llamacpp", str(write_results(tmp_path / f"l{c}.json", [LLAMACPP[c]], other_pct=30.0))]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "warning" in result.output and "idle machine" in result.output  # llama.cpp's runs were skewed
    assert len(json.loads((tmp_path / "summary.json").read_text())) == 5
    markdown = (tmp_path / "summary.md").read_text()
    assert markdown.startswith("| metric | firebox | llama.cpp |") and "| 3.00x |" in markdown
    assert "| 1% / 30% |" in markdown


def test_cpu_share_command_annotates_the_results_file(tmp_path: Path) -> None:
    results = write_results(tmp_path / "r.json", [FIREBOX[1]])
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    args = ["cpu-share", "--results", str(results), "--busy-ticks", str(8 * ticks_per_s)]
    args += ["--total-ticks", str(10 * ticks_per_s), "--server-ticks", str(5 * ticks_per_s)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "server 50%, client 10%, other work 20%" in result.output
    share = json.loads(results.read_text())["cpu_share"]
    assert share == pytest.approx({"server": 50.0, "client": 10.0, "other": 20.0})
    assert CliRunner().invoke(app, [*args, "--max-other-pct", "25"]).exit_code == 0
    assert CliRunner().invoke(app, [*args, "--max-other-pct", "15"]).exit_code == SKEWED_EXIT_CODE
    without_file = [a for a in args if a not in ("--results", str(results))] + ["--client-cpu-s", "3"]
    assert "client 30%, other work 0%" in CliRunner().invoke(app, without_file).output


def test_cpu_share_never_negative() -> None:
    share = cpu_share(busy_ticks=100, total_ticks=200, server_ticks=99, client_cpu_s=1.0)
    assert share.other == 0.0
    with pytest.raises(ValueError):
        cpu_share(1, 0, 0, 0.0)


def test_probe_returns_once_a_completion_is_served(server: LiveServer) -> None:
    started = time.time()
    assert first_token_seconds(server.url, server.engine.name, started, timeout=10) >= 0
    assert server.engine.submitted[-1].sampling.max_tokens == 1
    with pytest.raises(TimeoutError):
        first_token_seconds(server.url, "accounts/nobody/models/missing", started, timeout=0.3)


def test_probe_command_prints_start_up_and_its_own_cpu(server: LiveServer) -> None:
    args = ["probe", "--base-url", server.url, "--model", server.engine.name, "--started-at", str(time.time())]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    startup, probe_cpu = map(float, result.output.split())
    assert startup >= 0 and probe_cpu > 0
    failed = CliRunner().invoke(app, [*args[:4], "m", "--started-at", str(time.time()), "--timeout", "0.2"])
    assert failed.exit_code == 1


def test_probe_gives_up_when_the_server_process_is_gone() -> None:
    assert is_running(os.getpid())
    child = subprocess.Popen(["true"])
    assert wait_until(lambda: not is_running(child.pid))  # exited, not yet reaped: a zombie
    with pytest.raises(RuntimeError):
        first_token_seconds("http://127.0.0.1:9", "m", time.time(), timeout=30, pid=child.pid)
    child.wait()
    assert not is_running(child.pid)


def test_markdown_has_one_line_per_row() -> None:
    rows = compare_rows(FIREBOX, LLAMACPP, (2.0, 1.0))
    assert len(rows_markdown(rows).splitlines()) == 2 + len(rows)
