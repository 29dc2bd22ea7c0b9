"""The one relation-similarity construction (DESIGN §6): model and sentence as settings, checked at the CLI."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from reltune.embedding import (
    DEFAULT_MODEL,
    DEFAULT_SENTENCE,
    add_similarity_arguments,
    check_sentence,
    relation_text,
    resolve_model,
    shared_embedder,
    similarity_from_arguments,
    similarity_from_settings,
)
from reltune.errors import InputError


def test_sentence_fills_normalised_labels_and_keeps_the_template_words():
    assert relation_text("Yes, {s} {p} {o}", "Man", "Wearing_", "hat") == "Yes, man wearing hat"
    assert relation_text("{o} is {p} by {s}", "man", "HOLDING", "cup") == "cup is holding by man"
    assert relation_text(DEFAULT_SENTENCE, "man", "sitting  on", "bench") == "man sitting on bench"


@pytest.mark.parametrize("template", ["{s} {p}", "{s} {p} {o} {p}", "{s} {p} {o} {x}", "{0} {p} {o}", "{s {p} {o}"])
def test_a_sentence_must_name_s_p_o_once_each(template):
    with pytest.raises(ValueError):
        check_sentence(template)


def test_model_must_be_a_sentence_transformers_directory(tmp_path):
    assert resolve_model(DEFAULT_MODEL) == resolve_model("")  # the offline package
    with pytest.raises(InputError, match="not a directory"):
        resolve_model(str(tmp_path / "absent"))
    with pytest.raises(InputError, match="no modules.json or config.json"):
        resolve_model(str(tmp_path))


def test_the_template_changes_the_cosine_and_is_recorded():
    bare = similarity_from_settings(DEFAULT_MODEL, "{s} {p} {o}")
    authors = similarity_from_settings(DEFAULT_MODEL, "Yes, {s} {p} {o}")
    arguments = (["girl"], ["has"], ["with"], ["hair"])
    direct = shared_embedder().cosine(["Yes, girl has hair"], ["Yes, girl with hair"])
    assert authors(*arguments) == pytest.approx(direct)
    assert bare(*arguments) == pytest.approx(shared_embedder().cosine(["girl has hair"], ["girl with hair"]))
    # README: 0.969 bare vs 0.898 with "Yes,": the prefix moves this pair across the 0.95 threshold
    assert bare(*arguments)[0] >= 0.95 > authors(*arguments)[0]
    assert authors.record() == {"similarity_model": DEFAULT_MODEL, "similarity_sentence": "Yes, {s} {p} {o}"}
    assert bare.embedder is authors.embedder  # one model load per process
    assert np.allclose(bare(["man"], ["on"], ["on"], ["horse"]), 1.0)


def test_cli_flags_build_the_same_similarity_and_refuse_bad_values(capsys):
    parser = argparse.ArgumentParser(prog="reltune")
    add_similarity_arguments(parser)
    args = parser.parse_args(["--similarity-sentence", "Yes, {s} {p} {o}"])
    similarity = similarity_from_arguments(args)
    assert similarity.record() == {"similarity_model": DEFAULT_MODEL, "similarity_sentence": "Yes, {s} {p} {o}"}
    assert (parser.parse_args([]).similarity_model, parser.parse_args([]).similarity_sentence) == (DEFAULT_MODEL, DEFAULT_SENTENCE)
    with pytest.raises(SystemExit):
        parser.parse_args(["--similarity-sentence", "{p} only"])
    assert "must use {s}, {p} and {o} once each" in capsys.readouterr().err


def test_settings_are_checked_at_once_and_the_model_loads_on_first_use(tmp_path):
    with pytest.raises(InputError, match="not a directory"):
        similarity_from_settings(str(tmp_path / "absent"), DEFAULT_SENTENCE)
    with pytest.raises(InputError, match=r"^similarity.sentence: .*once each"):
        similarity_from_settings(DEFAULT_MODEL, "{s} {o}")
    similarity = similarity_from_settings(DEFAULT_MODEL, "Yes, {s} {p} {o}")
    assert similarity._embedder is None  # evaluating only exact matches never loads the model
    assert similarity(["man"], ["has"], ["wearing"], ["hat"])[0] < 1.0 and similarity._embedder is not None
