"""Property tests: negatives never contradict annotations, counts follow Eq. 1, qids ignore row order."""

from __future__ import annotations

import random

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from reltune.instructions.build import InstructionOptions, build_instructions

CATEGORY_MAP = {
    "on": "spatial",
    "near": "spatial",
    "has": "possessive",
    "wearing": "possessive",
    "riding": "semantic",
    "holding": "semantic",
}
EQ1 = {"spatial": {"possessive"}, "possessive": {"spatial", "semantic"}, "semantic": {"possessive"}}
ALL = {"spatial", "possessive", "semantic"}
LABELS = ["man", "horse", "tennis racket", "shirt"]


@st.composite
def scenes(draw) -> pd.DataFrame:
    rows = []
    for index in range(draw(st.integers(1, 4))):
        box_count = draw(st.integers(1, 4))
        boxes = []
        for _ in range(box_count):
            x1, y1 = draw(st.integers(0, 50)), draw(st.integers(0, 50))
            width, height = draw(st.integers(1, 50)), draw(st.integers(1, 50))
            boxes.append([float(x1), float(y1), float(x1 + width), float(y1 + height)])
        relations = draw(
            st.lists(
                st.tuples(
                    st.integers(0, box_count - 1),
                    st.integers(0, box_count - 1),
                    st.sampled_from(sorted(CATEGORY_MAP)),
                ),
                max_size=8,
            )
        )
        rows.append(
            {
                "image_id": f"i{index}",
                "image_path": f"i{index}.jpg",
                "width": 100,
                "height": 100,
                "boxes": boxes,
                "labels": [draw(st.sampled_from(LABELS)) for _ in range(box_count)],
                "relations": [{"subj": s, "obj": o, "predicate": p} for s, o, p in relations],
            }
        )
    return pd.DataFrame(rows)


options_strategy = st.builds(
    InstructionOptions,
    categories=st.just(True),
    negatives=st.sampled_from(["counter", "random"]),
    negatives_per_positive=st.sampled_from([1, 2]),
    seed=st.integers(0, 2**32),
)


def annotated_categories(scene_rows: pd.DataFrame) -> dict[tuple[str, int, int], set[str]]:
    pairs: dict[tuple[str, int, int], set[str]] = {}
    for image_id, relations in zip(scene_rows["image_id"], scene_rows["relations"]):
        for relation in relations:
            key = (image_id, relation["subj"], relation["obj"])
            pairs.setdefault(key, set()).add(CATEGORY_MAP[relation["predicate"]])
    return pairs


@settings(max_examples=50, deadline=None)
@given(scene_rows=scenes(), options=options_strategy)
def test_negatives_follow_eq1_and_never_contradict_a_positive(scene_rows, options):
    table = build_instructions(scene_rows, CATEGORY_MAP, options).table
    annotated = annotated_categories(scene_rows)
    positives = table[table["kind"] == "positive"]
    negatives = table[table["kind"] == "negative"]

    expected_positives = {
        (image_id, r["subj"], r["obj"], r["predicate"])
        for image_id, relations in zip(scene_rows["image_id"], scene_rows["relations"])
        for r in relations
    }
    got_positives = list(zip(positives["image_id"], positives["subj"], positives["obj"], positives["predicate"]))
    assert len(got_positives) == len(set(got_positives)) and set(got_positives) == expected_positives
    assert table["qid"].is_unique

    by_qid = positives.set_index("qid")
    for positive in positives.itertuples():
        pair = (positive.image_id, positive.subj, positive.obj)
        candidates = EQ1[positive.category] if options.negatives == "counter" else ALL - {positive.category}
        allowed = candidates - annotated[pair]
        mine = negatives[negatives["positive_qid"] == positive.qid]
        categories = list(mine["category"])
        assert len(categories) == len(set(categories)) == min(options.negatives_per_positive, len(allowed))
        assert set(categories) <= allowed  # never a category annotated on this ordered pair
        assert (mine["image_id"] == positive.image_id).all() and (mine["subj"] == positive.subj).all()
        assert (mine["obj"] == positive.obj).all() and mine["predicate"].isna().all()
    assert set(negatives["positive_qid"]) <= set(by_qid.index)

    for row in table.itertuples():
        subj_box, obj_box, union_box = list(row.subj_box), list(row.obj_box), list(row.union_box)
        assert union_box == [
            min(subj_box[0], obj_box[0]),
            min(subj_box[1], obj_box[1]),
            max(subj_box[2], obj_box[2]),
            max(subj_box[3], obj_box[3]),
        ]


def comparable(table: pd.DataFrame) -> set[tuple]:
    columns = ["qid", "image_id", "subj", "obj", "category", "kind", "predicate", "positive_qid", "prompt", "target"]
    return set(table[columns].astype(object).where(table[columns].notna(), None).itertuples(index=False, name=None))


@settings(max_examples=40, deadline=None)
@given(scene_rows=scenes(), options=options_strategy, shuffle_seed=st.integers(0, 1000))
def test_qids_and_choices_do_not_depend_on_row_order(scene_rows, options, shuffle_seed):
    shuffler = random.Random(shuffle_seed)
    shuffled = scene_rows.sample(frac=1.0, random_state=shuffle_seed).reset_index(drop=True)
    shuffled["relations"] = [shuffler.sample(list(relations), len(relations)) for relations in shuffled["relations"]]
    original = build_instructions(scene_rows, CATEGORY_MAP, options).table
    reordered = build_instructions(shuffled, CATEGORY_MAP, options).table
    assert comparable(original) == comparable(reordered)
