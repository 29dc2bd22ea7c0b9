"""Instruction tables from a hand-made scene: exact strings, exact counts, ablations, bad input."""

from __future__ import annotations

import pandas as pd
import pytest

from reltune.errors import InputError
from reltune.instructions.build import INSTRUCTION_COLUMNS, InstructionOptions, build_instructions

CATEGORY_MAP = {
    "on": "spatial",
    "near": "spatial",
    "wearing": "possessive",
    "has": "possessive",
    "riding": "semantic",
    "walking on": "semantic",
    "holding": "semantic",
}

MAN, HORSE = [10.0, 20.0, 50.0, 80.0], [30.0, 5.0, 90.0, 70.0]
HAT, STREET = [12.0, 15.0, 30.0, 25.0], [0.0, 60.0, 100.0, 100.0]


def scene_table(images: list[tuple[str, list, list, list[tuple[int, int, str]]]]) -> pd.DataFrame:
    """Scene rows in the DESIGN §4 schema from (image_id, boxes, labels, [(subj, obj, predicate)])."""
    return pd.DataFrame(
        {
            "image_id": [image_id for image_id, *_ in images],
            "image_path": [f"{image_id}.jpg" for image_id, *_ in images],
            "width": [100] * len(images),
            "height": [100] * len(images),
            "boxes": [boxes for _, boxes, _, _ in images],
            "labels": [labels for _, _, labels, _ in images],
            "relations": [
                [{"subj": s, "obj": o, "predicate": p} for s, o, p in relations] for *_, relations in images
            ],
        }
    )


def hand_made_scenes() -> pd.DataFrame:
    return scene_table(
        [
            (
                "img1",
                [MAN, HORSE, HAT, STREET],
                ["man", "horse", "cowboy hat", "street"],
                [
                    (0, 1, "riding"),  # pair (0,1): semantic + spatial
                    (0, 1, "on"),
                    (0, 2, "wearing"),  # pair (0,2): possessive only
                    (0, 2, "wearing"),  # repeat: merged into one positive
                    (0, 3, "Walking_on"),  # pair (0,3): semantic + possessive; normalised to "walking on"
                    (0, 3, "has"),
                    (2, 0, "on"),  # the reversed pair (2,0) is a different ordered pair
                ],
            ),
            ("img2", [[1.0, 2.0, 3.0, 4.0]], ["cup"], []),
            (
                "img3",
                [MAN, HORSE],
                ["man", "horse"],
                [(0, 1, "has"), (0, 1, "on"), (0, 1, "holding")],  # all three categories annotated
            ),
        ]
    )


def build(options: InstructionOptions = InstructionOptions(), scenes: pd.DataFrame | None = None):
    scenes = hand_made_scenes() if scenes is None else scenes
    return build_instructions(scenes, CATEGORY_MAP, options, dataset="toy", split="train", file="toy/train.parquet")


def negatives_of(table: pd.DataFrame) -> pd.DataFrame:
    """Each negative joined to the positive it counters."""
    positives = table[table["kind"] == "positive"].set_index("qid")
    negatives = table[table["kind"] == "negative"].copy()
    negatives["positive_predicate"] = positives.loc[negatives["positive_qid"], "predicate"].to_numpy()
    negatives["positive_image"] = positives.loc[negatives["positive_qid"], "image_id"].to_numpy()
    return negatives


def question_counts(table: pd.DataFrame) -> dict[tuple[str, str], int]:
    return {key: int(value) for key, value in table.groupby(["category", "kind"]).size().items()}


def test_columns_and_exact_template_strings():
    table = build().table
    assert list(table.columns) == list(INSTRUCTION_COLUMNS)
    riding = table[(table["kind"] == "positive") & (table["predicate"] == "riding")].iloc[0]
    assert riding["prompt"] == (
        "Is there a prominent semantic relation between man (subject) and horse (object) in the image?"
    )
    assert riding["target"] == "Yes, man riding horse."
    assert riding["category"] == "semantic"
    assert pd.isna(riding["positive_qid"])
    assert (riding["image_id"], riding["subj"], riding["obj"]) == ("img1", 0, 1)
    assert (riding["subj_label"], riding["obj_label"]) == ("man", "horse")
    assert list(riding["subj_box"]) == MAN and list(riding["obj_box"]) == HORSE
    assert list(riding["union_box"]) == [10.0, 5.0, 90.0, 80.0]

    counter = table[table["positive_qid"] == riding["qid"]]
    assert len(counter) == 1
    negative = counter.iloc[0]
    assert negative["kind"] == "negative" and negative["category"] == "possessive" and pd.isna(negative["predicate"])
    assert negative["prompt"] == (
        "Is there a prominent possessive relation between man (subject) and horse (object) in the image?"
    )
    assert negative["target"] == "No, there is no prominent possessive relation between man and horse."
    assert list(negative["union_box"]) == [10.0, 5.0, 90.0, 80.0]

    # Multi-word labels and normalised predicates go into the sentence as they are.
    walking = table[table["predicate"] == "walking on"].iloc[0]
    assert walking["target"] == "Yes, man walking on street."
    reversed_on = table[(table["image_id"] == "img1") & (table["subj"] == 2) & (table["predicate"] == "on")].iloc[0]
    assert reversed_on["prompt"] == (
        "Is there a prominent spatial relation between cowboy hat (subject) and man (object) in the image?"
    )
    assert reversed_on["target"] == "Yes, cowboy hat on man."
    assert list(reversed_on["union_box"]) == [10.0, 15.0, 50.0, 80.0]


def test_counter_negative_counts_are_exact():
    result = build()
    table = result.table
    positives = table[table["kind"] == "positive"]
    # 7 relations in img1 with one repeat -> 6 positives, plus 3 in img3.
    assert len(positives) == 9
    assert sorted(positives["predicate"]) == sorted(
        ["riding", "on", "wearing", "walking on", "has", "on", "has", "on", "holding"]
    )
    negatives = negatives_of(table)
    columns = ["positive_image", "positive_predicate", "subj", "category"]
    got = sorted(negatives[columns].itertuples(index=False, name=None))
    wearing_category = negatives.loc[negatives["positive_predicate"] == "wearing", "category"].item()
    assert wearing_category in ("spatial", "semantic")
    assert got == sorted(
        [
            ("img1", "riding", 0, "possessive"),
            ("img1", "on", 0, "possessive"),
            ("img1", "wearing", 0, wearing_category),
            ("img1", "has", 0, "spatial"),  # semantic is annotated on (0,3): only spatial is left
            ("img1", "on", 2, "possessive"),
        ]
    )
    counts = question_counts(table)
    assert counts[("spatial", "positive")] == 3
    assert counts[("possessive", "positive")] == 3
    assert counts[("semantic", "positive")] == 3
    assert counts[("possessive", "negative")] == 3
    assert counts.get(("spatial", "negative"), 0) + counts.get(("semantic", "negative"), 0) == 2

    report = result.report
    assert report["images"] == 3 and report["images_without_relations"] == 1
    assert report["relations"] == 10 and report["duplicate_relations_merged"] == 1
    assert (report["positives"], report["negatives"], report["negatives_requested"]) == (9, 5, 9)
    assert report["questions"]["possessive"] == {"positive": 3, "negative": 3}
    assert report["positives_per_predicate"] == {
        "on": 3,
        "has": 2,
        "holding": 1,
        "riding": 1,
        "walking on": 1,
        "wearing": 1,
    }
    # riding and on(0,1) counter the same pair with the same possessive question.
    assert report["negatives_repeating_a_question"] == 1
    missing = sorted((p["image_id"], p["predicate"], p["reason"]) for p in report["positives_without_negative"])
    possessive_blocked = "possessive blocked: the pair has an annotated positive in that category"
    assert missing == [
        ("img1", "walking on", possessive_blocked),
        ("img3", "has", "spatial and semantic blocked: the pair has an annotated positive in that category"),
        ("img3", "holding", possessive_blocked),
        ("img3", "on", possessive_blocked),
    ]
    assert report["missing_negatives_by_reason"] == {
        possessive_blocked: 3,
        "spatial and semantic blocked: the pair has an annotated positive in that category": 1,
    }


def test_possessive_choice_follows_the_seed():
    def wearing_negative(seed: int) -> str:
        negatives = negatives_of(build(InstructionOptions(seed=seed)).table)
        return negatives.set_index("positive_predicate").loc["wearing", "category"]

    chosen = {seed: wearing_negative(seed) for seed in range(12)}
    assert set(chosen.values()) == {"spatial", "semantic"}
    assert wearing_negative(3) == chosen[3]


def test_two_counter_negatives_per_positive():
    result = build(InstructionOptions(negatives_per_positive=2))
    negatives = negatives_of(result.table)
    per_positive = negatives.groupby("positive_qid")["category"].apply(sorted)
    by_predicate = {
        (row.positive_image, row.positive_predicate, row.subj): per_positive[row.positive_qid]
        for row in negatives.drop_duplicates("positive_qid").itertuples()
    }
    assert by_predicate == {
        ("img1", "riding", 0): ["possessive"],
        ("img1", "on", 0): ["possessive"],
        ("img1", "wearing", 0): ["semantic", "spatial"],
        ("img1", "has", 0): ["spatial"],
        ("img1", "on", 2): ["possessive"],
    }
    assert negatives["qid"].is_unique and len(negatives) == 6
    assert result.report["negatives_requested"] == 18
    eq1_only = "Eq. 1 allows only possessive for a spatial positive"
    assert result.report["missing_negatives_by_reason"][eq1_only] == 2  # on(0,1), on(2,0)


def test_random_negatives_use_any_category_the_pair_lacks():
    negatives = negatives_of(build(InstructionOptions(negatives="random")).table)
    got = {(row.positive_image, row.positive_predicate, row.subj): row.category for row in negatives.itertuples()}
    assert set(got) == {
        ("img1", "riding", 0),
        ("img1", "on", 0),
        ("img1", "wearing", 0),
        ("img1", "walking on", 0),  # no counter-negative, but spatial is free for a random one
        ("img1", "has", 0),
        ("img1", "on", 2),
    }
    assert got[("img1", "riding", 0)] == "possessive"
    assert got[("img1", "walking on", 0)] == "spatial"
    assert got[("img1", "on", 2)] in ("possessive", "semantic")
    # Over seeds the reversed `on` pair is countered by both free categories.
    drawn = {
        negatives_of(build(InstructionOptions(negatives="random", seed=seed)).table)
        .set_index(["positive_predicate", "subj"])
        .loc[("on", 2), "category"]
        for seed in range(12)
    }
    assert drawn == {"possessive", "semantic"}

    two = negatives_of(build(InstructionOptions(negatives="random", negatives_per_positive=2)).table)
    assert len(two) == 8
    reversed_on = (two["positive_predicate"] == "on") & (two["subj"] == 2)
    assert sorted(two.loc[reversed_on, "category"]) == ["possessive", "semantic"]


def test_no_negatives_and_naive_questions():
    none = build(InstructionOptions(negatives="none"))
    assert set(none.table["kind"]) == {"positive"} and len(none.table) == 9
    assert none.report["negatives_requested"] == 0 and none.report["positives_without_negative"] == []

    naive = build(InstructionOptions(categories=False, negatives="none")).table
    riding = naive[naive["predicate"] == "riding"].iloc[0]
    assert riding["prompt"] == "Is there a relation between man (subject) and horse (object) in the image?"
    assert riding["target"] == "Yes, man riding horse."
    assert riding["category"] == "semantic"  # still the predicate's category
    # Same positives and qids as with categories: only the question text changes.
    assert sorted(naive["qid"]) == sorted(none.table["qid"])

    with pytest.raises(ValueError, match="categories=false needs negatives=none"):
        InstructionOptions(categories=False, negatives="counter")
    with pytest.raises(ValueError, match="negatives_per_positive must be 1 or 2"):
        InstructionOptions(negatives_per_positive=3)
    with pytest.raises(ValueError, match="negatives must be one of"):
        InstructionOptions(negatives="hard")


def test_qids_depend_on_split_and_dataset():
    scenes = hand_made_scenes()
    train = build_instructions(scenes, CATEGORY_MAP, dataset="toy", split="train").table
    test = build_instructions(scenes, CATEGORY_MAP, dataset="toy", split="test").table
    other = build_instructions(scenes, CATEGORY_MAP, dataset="other", split="train").table
    assert set(train["qid"]).isdisjoint(test["qid"]) and set(train["qid"]).isdisjoint(other["qid"])
    assert train["qid"].str.fullmatch(r"[0-9a-f]{20}").all()


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (
            [("a", [MAN, HORSE], ["man", "horse"], [(0, 2, "on")])],
            r"\[image a\]: relation obj index 2 out of range for 2 boxes",
        ),
        ([("a", [MAN, HORSE], ["man", "horse"], [(-1, 1, "on")])], r"\[image a\]: relation subj index -1 out of range"),
        ([("a", [MAN, HORSE], ["man"], [])], r"\[image a\]: 1 labels for 2 boxes"),
        (
            [("a", [MAN], ["man"], []), ("b", [MAN, [1.0, 2.0, 3.0]], ["man", "x"], [])],
            r"\[image b\]: box 1 has 3 coordinates",
        ),
        ([("a", [MAN, HORSE], ["man", "horse"], [(0, 1, "flying")])], r"predicates with no category: 'flying'"),
        ([("a", [MAN, HORSE], ["man", "horse"], [(0, 1, "  ")])], r"\[image a\]: relation has an empty predicate"),
        (
            [("a", [MAN], ["man"], []), ("a", [MAN], ["man"], [])],
            r"\[row 1, image a\]: image_id appears more than once",
        ),
        ([("a", [MAN, HORSE], ["man", None], [])], r"\[image a\]: a box has no label"),
        ([("a", [MAN, HORSE], ["man", "horse"], [(0, 1, None)])], r"\[image a\]: relation has no predicate"),
        (
            [("a", [MAN, [0.0, float("nan"), 1.0, 1.0]], ["man", "x"], [])],
            r"\[image a\]: box 1 has a missing or non-finite",
        ),
    ],
)
def test_bad_scenes_name_file_and_image(images, message):
    with pytest.raises(InputError, match=r"^toy/train\.parquet.*" + message):
        build(scenes=scene_table(images))


def test_missing_column_is_named():
    with pytest.raises(InputError, match=r"missing columns \['relations'\]"):
        build(scenes=hand_made_scenes().drop(columns=["relations"]))


def test_scenes_without_any_relation_give_an_empty_table():
    result = build(scenes=scene_table([("a", [MAN], ["man"], []), ("b", [], [], [])]))
    assert list(result.table.columns) == list(INSTRUCTION_COLUMNS) and len(result.table) == 0
    assert result.report["images_without_relations"] == 2


def test_pyarrow_backed_and_numpy_backed_scene_tables_give_the_same_rows(tmp_path):
    hand_made_scenes().to_parquet(tmp_path / "scenes.parquet", index=False)
    from_objects = build(scenes=pd.read_parquet(tmp_path / "scenes.parquet")).table
    from_arrow = build(scenes=pd.read_parquet(tmp_path / "scenes.parquet", dtype_backend="pyarrow")).table
    assert len(from_objects) == 14  # 9 positives + 5 counter-negatives
    pd.testing.assert_frame_equal(from_objects, from_arrow)
