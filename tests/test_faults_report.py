"""The fault suite's arithmetic (faults/report.py), on hand-made request records: what its
--check and docs/reliability.md call recovered."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from faults.load import Record  # noqa: E402
from faults.report import Result, analyse, describe  # noqa: E402


def _analysed(
    answers: list[tuple[float, int]], faults: list[float], sent: dict[int, float] | None = None
) -> Result:
    """One app process answering ``(end time, status)``, each request sent 10 ms before
    its answer unless ``sent`` says when (by its index); faults at ``faults``."""
    starts = sent or {}
    records = [
        Record(0, i, 0, starts.get(i, end - 0.01), end, status)
        for i, (end, status) in enumerate(answers)
    ]
    result = Result("double", "two kills", "sentinel", "replicated", ["flask"])
    return analyse(result, records=records, clients=[], stored={}, fault_times=faults, servers=1)


def test_an_outage_that_runs_into_the_next_fault_counts_until_the_next_200() -> None:
    """Errors from the first fault on, right up to the second (a Sentinel failing over the
    new primary itself), then 200s again 1.5 s after the second: the first fault's recovery
    is 5.5 s (its outage ran on through the second fault), not "never" and not 1.5 s."""
    answers = [(1.0, 200), (3.5, 503), (5.0, 503), (6.9, 503), (7.2, 503), (8.5, 200)]
    result = _analysed(answers, faults=[3.0, 7.0])
    assert result.recovery_per_fault == [[5.5], [1.5]]
    assert result.recovery == [5.5] and result.recovered
    assert "after fault 1: 5.5 s" in describe(result)


def test_a_long_outage_is_not_hidden_by_a_second_fault() -> None:
    """Failing from the first fault (3 s) until 60.5 s, the second fault at 60 s: 57.5 s."""
    answers = [(1.0, 200), *((3.0 + t, 503) for t in range(1, 58)), (60.5, 200)]
    result = _analysed(answers, faults=[3.0, 60.0])
    assert result.recovery == [57.5]


def test_no_200_after_the_last_fault_is_never() -> None:
    result = _analysed([(1.0, 200), (3.5, 503), (4.0, 200), (7.5, 503)], faults=[3.0, 7.0])
    assert result.recovery_per_fault == [[1.0], [None]]
    assert result.recovery == [None] and not result.recovered
    assert "after fault 2: never" in describe(result)


def test_the_worst_recovered_fault_counts() -> None:
    answers = [(3.5, 503), (5.5, 200), (7.2, 503), (7.6, 200)]
    result = _analysed(answers, faults=[3.0, 7.0])
    assert result.recovery_per_fault[0] == [2.5]
    assert result.recovery == [2.5] and result.recovered


def test_a_request_counts_under_the_fault_it_was_sent_under() -> None:
    """In flight at the first fault (sent at 2.9 s), it fails only at 9.0 s, after the
    second fault (7 s); the next 200 comes at 13.0 s: the first fault's outage is 10 s."""
    answers = [(1.0, 200), (9.0, 0), (11.0, 503), (13.0, 200)]
    result = _analysed(answers, faults=[3.0, 7.0], sent={1: 2.9})
    assert result.recovery_per_fault[0] == [10.0]
    assert result.recovery == [10.0]
