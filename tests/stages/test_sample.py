"""The sample stage under torchrun: the networks are shared out and the gathered table is the single-process one."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import run, stage_command

pytestmark = pytest.mark.slow


def test_two_processes_score_every_network_exactly_as_one(supernet_project):
    project = supernet_project
    run(stage_command("sample"), project)
    one = (project / "results/samples.csv").read_text()
    (project / "results/samples.csv").unlink()
    result = run(stage_command("sample", processes=2), project)
    assert "on 2 process(es)" in result.stdout
    # Each network is calibrated on the shuffle its index gives it, whichever rank scores it.
    assert (project / "results/samples.csv").read_text() == one
    table = pd.read_csv(project / "results/samples.csv")
    assert len(table) == 12 and table.arch.is_unique
    assert {"synflow", "jacov"} <= set(table.columns)  # sample.proxies, each network's zero-cost proxies
