import json

import pandas as pd
import pytest

from reltune.embedding import shared_embedder
from reltune.errors import InputError
from reltune.io import read_json, read_parquet, write_json, write_parquet
from reltune.text import normalise_predicate, relation_sentence


def test_normalise_predicate():
    assert normalise_predicate("Interacts_with") == "interacts with"
    assert normalise_predicate("  sitting   on. ") == "sitting on"
    assert relation_sentence("man", "Riding,", "horse") == "man riding horse"


def test_atomic_write_leaves_nothing_on_crash(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    target = tmp_path / "t.parquet"
    write_parquet(pd.DataFrame({"a": [1]}), target)
    assert oct(target.stat().st_mode & 0o777) == "0o644"

    def half_write(table, where, **kwargs):
        open(where, "wb").write(b"PAR1 half")
        raise RuntimeError("crash mid-write")

    monkeypatch.setattr(pq, "write_table", half_write)
    with pytest.raises(RuntimeError):
        write_parquet(pd.DataFrame({"a": [2]}), target)
    assert pd.read_parquet(target)["a"].tolist() == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_read_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="bad.json"):
        read_json(bad)
    write_json({"x": 1}, tmp_path / "ok.json")
    assert json.loads((tmp_path / "ok.json").read_text()) == {"x": 1}
    write_parquet(pd.DataFrame({"a": [1]}), tmp_path / "t.parquet")
    with pytest.raises(InputError, match=r"missing columns \['b'\]"):
        read_parquet(tmp_path / "t.parquet", ["a", "b"])


def test_minilm_similarity_is_real_and_cached():
    embedder = shared_embedder()
    same = embedder.relation_similarity(["man"], ["riding"], ["riding"], ["horse"])
    assert same[0] == pytest.approx(1.0, abs=1e-5)
    close, far = embedder.relation_similarity(
        ["man", "man"], ["on", "eating"], ["sitting on", "wearing"], ["horse", "hat"]
    )
    assert 0.5 < close < 1.0 and far < close
    assert "man on horse" in embedder._cache


def test_parquet_round_trips_nested_arrow_columns(tmp_path):
    import pyarrow as pa

    table = pd.DataFrame({"box": pd.Series([[1.0, 2.0]], dtype=pd.ArrowDtype(pa.list_(pa.float64())))})
    write_parquet(table, tmp_path / "n.parquet")
    assert list(pd.read_parquet(tmp_path / "n.parquet")["box"][0]) == [1.0, 2.0]
