"""The results store: durable appends, torn-line repair, resume by cell id."""

import json

import pytest

from embodied.results import ResultsStore


def line(cell_id: str, value: float = 1.0) -> dict:
    return {"cell_id": cell_id, "embodied": {"success_rate": value}}


def test_append_reload_and_done_ids(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(line("a/T/id/0"))
    store.append(line("a/T/id/1", 0.5))
    again = ResultsStore(tmp_path)
    assert again.done_ids() == {"a/T/id/0", "a/T/id/1"}
    assert again.lines()[1]["embodied"]["success_rate"] == 0.5
    raw = (tmp_path / "results.jsonl").read_text().splitlines()
    assert [json.loads(r)["cell_id"] for r in raw] == ["a/T/id/0", "a/T/id/1"]


def test_a_torn_last_line_is_cut_off_and_appending_continues(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(line("a/T/id/0"))
    with open(store.path, "ab") as f:
        f.write(b'{"cell_id": "a/T/id/1", "embo')  # the write a crash interrupted
    with pytest.warns(UserWarning, match="torn last line"):
        repaired = ResultsStore(tmp_path)
    assert repaired.done_ids() == {"a/T/id/0"}
    repaired.append(line("a/T/id/1"))
    rows = [json.loads(r) for r in store.path.read_text().splitlines()]
    assert [r["cell_id"] for r in rows] == ["a/T/id/0", "a/T/id/1"]


def test_a_cell_cannot_be_written_twice(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(line("a/T/id/0"))
    with pytest.raises(ValueError, match="already"):
        store.append(line("a/T/id/0"))


def test_nan_is_refused_so_the_file_stays_strict_json(tmp_path):
    with pytest.raises(ValueError):
        ResultsStore(tmp_path).append(line("a/T/id/0", float("nan")))
    assert ResultsStore(tmp_path).done_ids() == set()


def test_a_corrupt_complete_line_is_an_error_naming_it(tmp_path):
    (tmp_path / "results.jsonl").write_text('{"cell_id": "x"}\nnot json\n')
    with pytest.raises(ValueError, match=r"results.jsonl:2"):
        ResultsStore(tmp_path)


def test_config_and_version_sit_beside_the_results(tmp_path):
    store = ResultsStore(tmp_path)
    store.write_config("episodes: 3\n")
    store.write_version()
    assert (tmp_path / "config.yaml").read_text() == "episodes: 3\n"
    version = json.loads((tmp_path / "version.json").read_text())
    assert version["embodied-ood"] == "0.1.0" and "mujoco" in version
    assert not list(tmp_path.glob(".*.tmp"))
