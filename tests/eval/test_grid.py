"""The grid: every combination once, with ids that never depend on order or machine."""

import pytest

from embodied.evaluate import cell_seeds
from embodied.grid import Cell, check_names, expand


def test_expand_is_the_full_product_in_order_without_duplicates():
    cells = expand(["a", "b"], ["CupCarry"], ["id", "ood-cup_mass-3"], [0, 1, 1])
    assert len(cells) == 2 * 1 * 2 * 2
    assert cells[0] == Cell("a", "CupCarry", "id", 0)
    assert cells[-1] == Cell("b", "CupCarry", "ood-cup_mass-3", 1)
    assert len({c.cell_id for c in cells}) == len(cells)


def test_cell_id_is_stable_and_round_trips():
    cell = Cell("state", "CupCarry", "ood-cup_mass-3", 0)
    assert cell.cell_id == "state/CupCarry/ood-cup_mass-3/0"
    assert Cell.from_id(cell.cell_id) == cell
    with pytest.raises(ValueError, match="agent/Task/split/seed"):
        Cell.from_id("state/CupCarry/0")


def test_unknown_names_list_the_valid_choices():
    check_names("tasks", ["CupCarry"], ["CupCarry", "Reach"])
    with pytest.raises(ValueError, match=r"unknown tasks \['Cup'\].*\['CupCarry', 'Reach'\]"):
        check_names("tasks", ["Cup", "Reach"], ["Reach", "CupCarry"])


def test_cell_seeds_depend_on_the_seed_alone_and_streams_differ():
    a, b = cell_seeds(0, 3, 2), cell_seeds(0, 3, 2)
    assert a == b
    assert cell_seeds(0, 5, 2).episodes[:3] == a.episodes  # more episodes extend the stream
    assert cell_seeds(1, 3, 2).episodes != a.episodes
    assert not set(a.episodes) & set(a.clips)
