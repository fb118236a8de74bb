"""The results store: durable appends, torn-line repair, resume by cell id; the one results
line type and reader the store and the report share; the one atomic writer."""

import json

import pytest

import embodied
from embodied.atomic import write_atomic
from embodied.grid import Cell
from embodied.report import load_run
from embodied.results import ResultLine, ResultsStore, read_results


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
    assert version["embodied-ood"] == embodied.__version__ and "mujoco" in version
    assert not list(tmp_path.glob(".*.tmp"))


# ------------------------------------------------------------ one line type, one reader
def measured(cell: Cell, success: float = 1.0) -> dict:
    rows = [{"success": True, "dropped": False}]
    return ResultLine.of(
        cell,
        family="scripted",
        version="0.1.0",
        embodied={"episodes": 1, "success_rate": success, "drop_rate": 0.0, "per_episode": rows},
    ).to_json()


def test_a_results_line_round_trips_and_derives_its_split_fields():
    cell = Cell("scripted", "CupCarry", "ood-cup_mass-3", 2)
    line = measured(cell)
    assert list(line)[:3] == ["cell_id", "agent", "task"]
    assert line["cell_id"] == "scripted/CupCarry/ood-cup_mass-3/2"
    assert (line["shift"], line["severity"], line["look"], line["work"]) == (
        "cup_mass",
        3,
        False,
        True,
    )
    back = ResultLine.from_json(json.loads(json.dumps(line)))
    assert back.to_json() == line and isinstance(back, Cell)
    with pytest.raises(ValueError, match="does not match"):
        ResultLine.from_json({**line, "cell_id": "other/CupCarry/id/0"})
    with pytest.raises(ValueError, match="unknown shift 'cup_mas'"):
        ResultLine.from_json(
            {**line, "split": "ood-cup_mas-3", "cell_id": "scripted/CupCarry/ood-cup_mas-3/2"}
        )


def test_store_and_report_keep_the_same_line_of_a_cell_written_twice(tmp_path):
    cell = Cell("scripted", "CupCarry", "id", 0)
    first, second = measured(cell, 1.0), measured(cell, 0.0)
    (tmp_path / "results.jsonl").write_text(f"{json.dumps(first)}\n{json.dumps(second)}\n")
    read = read_results(tmp_path / "results.jsonl")
    assert read.lines == [first] and read.duplicates == [cell.cell_id]
    assert ResultsStore(tmp_path).lines() == [first]
    run = load_run(tmp_path)
    assert [c.successes for c in run.cells] == [1]
    assert isinstance(run.cells[0], Cell) and run.cells[0].cell_id == cell.cell_id
    assert any("appears more than once; the first line is used" in w for w in run.warnings)


def test_the_reader_sets_aside_malformed_and_torn_lines(tmp_path):
    good = measured(Cell("a", "CupCarry", "id", 0))
    path = tmp_path / "results.jsonl"
    path.write_text(f'{json.dumps(good)}\nnot json\n[1, 2]\n{{"cell_id": "x", "emb')
    read = read_results(path)
    assert read.lines == [good] and read.torn == len('{"cell_id": "x", "emb')
    assert [n for n, _ in read.malformed] == [2, 3]
    run = load_run(tmp_path)  # the report leaves them out and says so
    assert len(run.cells) == 1 and sum("skipped" in w for w in run.warnings) == 3
    with pytest.raises(ValueError, match=r"results.jsonl:2 is not a JSON line"):
        ResultsStore(tmp_path)  # the store will not append on top of them


# ------------------------------------------------------------ one atomic writer
def test_write_atomic_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "model.zip"
    write_atomic(target, b"old")
    assert write_atomic(target, lambda p: p.write_bytes(b"new"), ".tmp.zip") == target
    assert target.read_bytes() == b"new" and oct(target.stat().st_mode & 0o777) == "0o644"

    def fails(path):
        assert path.name.startswith(".model.zip.") and path.name.endswith(".tmp.zip")
        path.write_bytes(b"half")
        raise RuntimeError("the writer broke")

    with pytest.raises(RuntimeError, match="broke"):
        write_atomic(target, fails, ".tmp.zip")
    assert target.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["model.zip"]
