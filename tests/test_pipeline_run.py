"""``mobilekit run`` stops at the first failed step: nothing after it (package) runs, the summary lists it."""

from __future__ import annotations

import json

import pytest

from mobilekit.embedded_run import Pipeline, StepResult
from mobilekit.errors import MobilekitError


def fake_steps(ran: list[str], failing: str, error: Exception | None = None):
    """``Pipeline.steps`` replaced by steps that record that they ran; ``failing`` fails (or raises ``error``)."""

    def step(name: str):
        def run() -> StepResult:
            ran.append(name)
            if name == failing and error is not None:
                raise error
            return StepResult(name, 0.0, "below threshold" if name == failing else "fine", f"out/{name}", ok=name != failing)

        return name, run

    return lambda self: [step(name) for name in ("export", "parity", "benchmark", "package")]


@pytest.mark.parametrize("error", [None, MobilekitError("no photos in val/images")])
def test_run_stops_at_the_first_failed_step(monkeypatch, tmp_path, capsys, error):
    """A failed check exits 1, an error in a step 2; either way package never runs and summary.json
    and the table list the steps that did not run."""
    from mobilekit.cli import main

    ran: list[str] = []
    monkeypatch.setattr(Pipeline, "steps", fake_steps(ran, "parity", error))
    with pytest.raises(SystemExit) as exc:
        main(["run", "--out", str(tmp_path / "run")])
    assert exc.value.code == (2 if error else 1)
    assert ran == ["export", "parity"]
    steps = json.loads((tmp_path / "run" / "summary.json").read_text())["steps"]
    assert [(s["name"], s["ok"], s["ran"]) for s in steps] == [
        ("export", True, True), ("parity", False, True), ("benchmark", False, False), ("package", False, False)
    ]  # fmt: skip
    assert steps[1]["summary"] == ("error: no photos in val/images" if error else "below threshold")
    captured = capsys.readouterr()
    assert captured.out.count("not run: an earlier step failed") == 2
    last = captured.err.strip().splitlines()[-1]
    assert last == ("error: no photos in val/images" if error else f"error: the run stopped at parity: below threshold (see {tmp_path / 'run' / 'summary.json'})")


def test_run_without_failures_runs_every_step(monkeypatch, tmp_path):
    ran: list[str] = []
    monkeypatch.setattr(Pipeline, "steps", fake_steps(ran, failing=""))
    from mobilekit.embedded_run import PipelineConfig

    results = Pipeline(PipelineConfig(out=tmp_path / "run")).run()
    assert ran == ["export", "parity", "benchmark", "package"] and all(r.ok and r.ran for r in results)
