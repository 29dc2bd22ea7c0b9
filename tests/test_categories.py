import json
from pathlib import Path

import pytest

from reltune.errors import InputError
from reltune.instructions.categories import available_category_maps, load_category_map, predicate_categories

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "label_lists.json"


@pytest.mark.parametrize(
    "dataset,key,count",
    [("vg150", "vg150_predicates", 50), ("gqa200", "gqa200_predicates", 100), ("oiv6", "oiv6_predicates", 30), ("oiv4", "oiv4_predicates", 9)],
)
def test_every_real_predicate_is_mapped(dataset, key, count):
    mapping = load_category_map(dataset)
    assert len(mapping) == count
    if REFERENCE.is_file():  # the shared reference lists sit beside the checkout
        predicates = json.loads(REFERENCE.read_text())[key]
        assert set(predicate_categories(dataset, predicates)) == set(predicates)


def test_known_examples_and_underscores():
    assert predicate_categories("vg150", ["on", "wearing", "riding"]) == {
        "on": "spatial", "wearing": "possessive", "riding": "semantic"}
    assert predicate_categories("oiv6", ["interacts_with"]) == {"interacts_with": "semantic"}


def test_unmapped_predicate_names_it_and_the_dataset():
    with pytest.raises(InputError, match=r"dataset 'vg150': 'flying over'"):
        predicate_categories("vg150", ["on", "flying over"])
    with pytest.raises(InputError, match="no predicate category map for dataset 'nope'"):
        predicate_categories("nope", ["on"])
    assert {"vg150", "gqa200", "oiv4", "oiv6"} <= set(available_category_maps())
