"""The benchmark's run order: rounds, each engine's round opening with an untimed run."""
from fusion.codegen.bench import alternate


def test_alternate_rounds_and_counts():
    log = []
    tf, to = alternate([lambda: log.append("f"), lambda: log.append("o")], runs=7, burst=3)
    assert len(tf) == len(to) == 7
    # round sizes 3, 3, 1; each engine's burst starts with one untimed run
    assert "".join(log) == "ffff" "oooo" "ffff" "oooo" "ff" "oo"
    assert all(t >= 0 for t in tf + to)
