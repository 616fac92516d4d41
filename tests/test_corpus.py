"""Corpus builders (momu data build-corpus / build-molecules): evaluation molecules never survive, every row is
accounted for, output is deterministic and readable by the training readers."""

import csv
import gzip
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO, SAMPLE, shared_path
from momu.chem.columns import GRAPH_COLUMNS, columns_to_graphs, graphs_to_columns
from momu.chem.featurize import featurize_smiles
from momu.config import ConfigError, load_config
from momu.data.corpus import RemovalKeys, account_sources, group_pairs, mark_removed
from momu.data.corpus_config import CorpusConfig, MoleculesConfig, SourceSpec
from momu.data.corpus_sources import (
    annotate_batch,
    graph_key,
    read_pcdes,
    stereo_free_key,
)
from momu.data.readers import read_momu_corpus, read_pairs
from momu.pretrain.config import PretrainConfig
from rdkit import Chem

TEST_ROWS = [line.split("\t") for line in (SAMPLE / "chebi20" / "test_slice.tsv").read_text().splitlines()[1:31]]
VAL_ROWS = [line.split("\t") for line in (SAMPLE / "chebi20" / "validation_slice.tsv").read_text().splitlines()[1:11]]


def canon(smiles, isomeric=True):
    return Chem.MolToSmiles(Chem.MolFromSmiles(smiles), isomericSmiles=isomeric)


def write_tsv(path: Path, header, rows) -> str:
    path.write_text("\n".join("\t".join(map(str, r)) for r in [header] + rows) + "\n")
    return str(path)


# -- pure pieces -------------------------------------------------------------------------------------------------

def test_keys_canonical_stereo_free_and_graph():
    alanine_l, alanine_d = "C[C@H](N)C(=O)O", "C[C@@H](N)C(=O)O"
    assert canon(alanine_l) != canon(alanine_d)
    mol_l, mol_d = Chem.MolFromSmiles(alanine_l), Chem.MolFromSmiles(alanine_d)
    assert stereo_free_key(mol_l, "smiles") == stereo_free_key(mol_d, "smiles") == "CC(N)C(=O)O"
    assert stereo_free_key(mol_l, "inchikey") == stereo_free_key(mol_d, "inchikey") == "QNAYBMKLOCPYGJ"
    assert stereo_free_key(mol_l, "none") is None
    # The graph key is independent of atom order, and separates different skeletons...
    assert graph_key(featurize_smiles("OC(=O)c1ccccc1")) == graph_key(featurize_smiles("c1ccc(cc1)C(O)=O"))
    assert graph_key(featurize_smiles("OC(=O)c1ccccc1")) != graph_key(featurize_smiles("OC(=O)c1ccccn1"))
    # ...but not charge states (MoMu-corpus graphs carry no charges): documented, applied to graph rows only.
    assert graph_key(featurize_smiles("CC(=O)[O-]")) == graph_key(featurize_smiles("CC(=O)O"))


def test_annotate_rejects_bad_smiles_with_a_reason():
    batch = pa.table({"smiles": ["C1CC", "", "c1ccccc1", None], "cid": [None] * 4})
    out = annotate_batch(batch)
    assert out.column("reject_reason").to_pylist() == ["unparseable", "empty", "", "missing"]
    assert out.column("canonical").to_pylist() == [None, None, "c1ccccc1", None]


def test_removal_reason_order_and_graph_key_only_on_graph_rows():
    keys = RemovalKeys(cids=frozenset({"1"}), smiles=frozenset({"CCO"}), stereo=frozenset({"CC(N)C(=O)O"}),
                       graphs=frozenset({"CC(O)=O"}))
    batch = pa.table({
        "cid": ["1", "2", None, None, None, None],
        "canonical": ["CCO", "CCO", "C[C@H](N)C(=O)O", "CC(=O)[O-]", None, "CCC"],
        "stereo_key": ["CCO", "CCO", "CC(N)C(=O)O", "CC(=O)[O-]", None, "CCC"],
        "graph_key": [None, None, None, "CC(O)=O", "CC(O)=O", None],
        "reject_reason": [""] * 6,
    })
    assert mark_removed(batch, keys).column("removed_reason").to_pylist() == [
        "eval_cid", "eval_smiles", "eval_stereo_free", "", "eval_graph", ""]


def test_group_pairs_keeps_distinct_texts_and_drops_exact_duplicates():
    rows = pa.table({
        "source": ["a", "a", "b", "b"], "row": [0, 1, 0, 1], "source_id": ["10", "11", "7", "8"],
        "cid": ["10", "11", "10", "12"], "canonical": ["CCO", "CCN", "CCO", "CCO"], "graph_key": [None] * 4,
        "texts": [["Ethanol is an alcohol."], ["Ethylamine."], ["Ethanol  is an alcohol. "], ["Ethanol is a drink."]],
    })
    table, kept, duplicates = group_pairs(rows)
    assert duplicates == [("b", 0)] and kept == [("a", 0), ("a", 1), ("b", 1)]
    by_smiles = {r["smiles"]: r for r in table.to_pylist()}
    assert by_smiles["CCO"]["texts"] == ["Ethanol is an alcohol.", "Ethanol is a drink."]
    assert by_smiles["CCO"]["text_sources"] == ["a:10", "b:8"] and by_smiles["CCO"]["cids"] == ["10", "12"]
    assert by_smiles["CCO"]["source"] == "a,b" and by_smiles["CCO"]["cid"] == "10"
    assert table.column("smiles").to_pylist() == sorted(by_smiles)  # stable order
    assert len(set(table.column("id").to_pylist())) == 2


def test_accounting_refuses_rows_counted_twice_or_never(tmp_path):
    from momu.data.records import ReadReport

    spec = SourceSpec(name="a", path="x", format="chebi20")
    report = ReadReport("x", rows_read=2, rows_ok=2)
    annotated = pa.table({"source": ["a", "a"], "row": [0, 1], "source_id": ["1", "2"], "smiles": ["C", "CC"],
                          "reject_reason": ["", ""], "removed_reason": ["", ""]})
    accounts = account_sources([spec], {"a": report}, annotated, [("a", 0), ("a", 1)], [], "duplicate_pair")
    assert accounts["a"].kept == 2
    with pytest.raises(AssertionError, match="read 2 rows but accounted for 1"):
        account_sources([spec], {"a": report}, annotated, [("a", 0)], [], "duplicate_pair")
    with pytest.raises(AssertionError, match="counted twice"):
        account_sources([spec], {"a": report}, annotated, [("a", 0), ("a", 1)], [("a", 1)], "duplicate_pair")


def test_pcdes_reader_counts_malformed_rows_and_checks_the_header(tmp_path):
    path = write_tsv(tmp_path / "p.tsv", ["idx", "cid", "smiles", "description"],
                     [[1, 24142, "CCCC[Si](Cl)(Cl)Cl", "it is a silane."], [2, 7, "CCO"], [3, 8, "", "x"],
                      [4, "", "CCN", "it is an amine."]])
    table, report = read_pcdes(SourceSpec(name="p", path=path, format="pcdes"))
    assert report.rows_read == 4 and dict(report.malformed) == {"wrong_field_count": 1, "empty_smiles": 1}
    assert table.column("cid").to_pylist() == ["24142", None]
    bad = write_tsv(tmp_path / "bad.tsv", ["cid", "smiles", "description"], [])
    with pytest.raises(ValueError, match="expected the PCdes header"):
        read_pcdes(SourceSpec(name="p", path=bad, format="pcdes"))


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="no texts"):
        load_config(CorpusConfig, None, {"sources": [{"name": "z", "path": "z.csv", "format": "library"}]})
    with pytest.raises(ConfigError, match="give at least one source"):
        load_config(CorpusConfig, None, {})
    with pytest.raises(ConfigError, match="used twice"):
        load_config(MoleculesConfig, None, {"sources": [{"name": "z", "path": "a.csv", "format": "library"}],
                                            "removal": {"evaluation": [{"name": "z", "path": "t", "format": "chebi20"}]}})
    config = CorpusConfig(sources=[SourceSpec(name="a", path=str(tmp_path / "missing.tsv"), format="chebi20")])
    from momu.data.corpus_job import build_corpus

    with pytest.raises(FileNotFoundError, match="a: no such file"):
        build_corpus(config)


# -- the builders on small real slices (Ray Data) ---------------------------------------------------------------

@pytest.fixture(scope="module")
def slices(tmp_path_factory):
    """Evaluation: 30 ChEBI-20 test rows + 2 PCdes-style valid rows. Training sources built to collide with them
    in every way the builder must catch, plus ordinary rows and broken ones."""
    d = tmp_path_factory.mktemp("corpus")
    header = ["CID", "SMILES", "description"]
    ev = write_tsv(d / "test.txt", header, TEST_ROWS)
    pcdes_valid = write_tsv(d / "valid.tsv", ["idx", "cid", "smiles", "description"],
                            [[12001, 5950, "C[C@@H](C(=O)O)N", "it is L-alanine."],
                             [12002, 702, "CCO", "it is ethanol."]])
    stereo_row = TEST_ROWS[0]  # has stereo: its non-isomeric SMILES is a stereo variant
    assert canon(stereo_row[1]) != canon(stereo_row[1], isomeric=False)
    respelled = Chem.MolToSmiles(Chem.MolFromSmiles(TEST_ROWS[3][1]), rootedAtAtom=2, canonical=False)
    assert respelled != TEST_ROWS[3][1]
    chebi_train = VAL_ROWS + [
        [TEST_ROWS[1][0], "CCCCCCCCCC", "Same CID as a test molecule, another SMILES."],  # eval_cid
        ["900000002", respelled, "Another CID, the test SMILES written differently."],  # eval_smiles
        ["900000003", "C1CC(", "Unparseable SMILES."],  # rejected: unparseable
        ["900000004", "CCO", "too", "many fields"],  # rejected by the reader: wrong_field_count
        ["900000005", "CC(C)C(=O)O", "Isobutyric acid is a short-chain fatty acid."],
    ]
    train = write_tsv(d / "train.txt", header, chebi_train)
    pcdes_train = write_tsv(d / "pcdes_train.tsv", ["idx", "cid", "smiles", "description"], [
        [1, TEST_ROWS[2][0], TEST_ROWS[2][1], "it shares a CID and SMILES with a test molecule."],  # eval_cid
        [2, 900000010, canon(stereo_row[1], isomeric=False), "it is the stereo-free test molecule."],  # stereo
        [3, 900000011, "C[C@H](C(=O)O)N", "it is D-alanine."],  # stereo variant of the PCdes valid row
        [4, 900000012, "OC(=O)C(C)C", "Isobutyric acid is a short-chain fatty acid."],  # duplicate_pair
        [5, 900000005, "CC(C)C(=O)O", "it is a branched fatty acid."],  # same molecule, new text: kept
        [6, 900000013, "c1ccccc1O", "it is phenol."],
    ])
    # MoMu corpus (converted records): the 6 bundled molecules + one graph of a test molecule, no SMILES.
    corpus = read_momu_corpus(SAMPLE / "momu_corpus").table
    leaked = featurize_smiles(TEST_ROWS[5][1])
    extra = pa.table({"id": ["999"], "smiles": pa.nulls(1, pa.string()), "texts": [["A sugar alcohol paragraph."]],
                      "labels": pa.nulls(1, pa.list_(pa.float32())), "source": ["x"],
                      **graphs_to_columns([leaked])}, schema=corpus.schema)
    momu = d / "momu.parquet"
    pq.write_table(pa.concat_tables([corpus, extra]), momu)
    return {
        "dir": d, "stereo_row": stereo_row,
        "evaluation": [{"name": "chebi20_test", "path": ev, "format": "chebi20"},
                       {"name": "pcdes_valid", "path": pcdes_valid, "format": "pcdes"}],
        "sources": [{"name": "chebi", "path": train, "format": "chebi20"},
                    {"name": "pcdes", "path": pcdes_train, "format": "pcdes"},
                    {"name": "momu", "path": str(momu), "format": "momu_corpus"}],
    }


def eval_sets(slices):
    rows = [(r[0], r[1]) for r in TEST_ROWS] + [("5950", "C[C@@H](C(=O)O)N"), ("702", "CCO")]
    return ({cid for cid, _ in rows}, {canon(s) for _, s in rows}, {canon(s, False) for _, s in rows},
            {graph_key(featurize_smiles(s)) for _, s in rows})


def assert_no_evaluation_molecule(table: pa.Table, cids, smiles, stereo, graphs):
    """Checked with RDKit directly, not with the builder's own key columns."""
    for row in table.to_pylist():
        assert not set(row.get("cids") or [row.get("cid")]) & cids, row["id"]
        if row["smiles"] is not None:
            assert canon(row["smiles"]) not in smiles and canon(row["smiles"], False) not in stereo, row["id"]
    if "atom_type" in table.column_names:
        graph_rows = table.filter(table.column("atom_type").is_valid())
        for graph in columns_to_graphs(graph_rows.select(list(GRAPH_COLUMNS))):
            assert graph_key(graph) not in graphs


@pytest.mark.ray
def test_build_corpus_removes_evaluation_molecules_accounts_and_is_deterministic(ray_local, slices, tmp_path):
    from momu.cli import build_parser
    from momu.data.corpus_job import build_corpus
    from momu.data.pipeline import featurize_records
    from momu.pretrain.data import read_inputs

    config_path = tmp_path / "corpus.yaml"
    config_path.write_text(json.dumps({"sources": slices["sources"], "removal": {"evaluation": slices["evaluation"]}}))
    parser = build_parser()
    out = tmp_path / "a" / "pairs.parquet"
    args = parser.parse_args(["data", "build-corpus", "--config", str(config_path), "--output", str(out)])
    assert args.func(args) == 0
    manifest = json.loads((tmp_path / "a" / "pairs.manifest.json").read_text())
    table = pq.read_table(out)

    assert_no_evaluation_molecule(table, *eval_sets(slices))
    assert "999" not in {i.split(":")[-1] for i in table.column("id").to_pylist()}
    src = manifest["sources"]
    assert src["chebi"]["read"] == 15 and src["chebi"]["kept"] == 11
    assert src["chebi"]["removed_by_reason"] == {"eval_cid": 1, "eval_smiles": 1}
    assert src["chebi"]["rejected_by_reason"] == {"unparseable": 1, "wrong_field_count": 1}
    assert src["pcdes"]["removed_by_reason"] == {"duplicate_pair": 1, "eval_cid": 1, "eval_stereo_free": 2}
    assert src["pcdes"]["kept"] == 2 and src["momu"]["removed_by_reason"] == {"eval_graph": 1}
    assert src["momu"]["kept"] == 6
    for s in src.values():
        assert s["read"] == s["kept"] + s["removed"] + s["rejected"]
        assert len(s["sha256"]) == 64
    assert manifest["totals"]["read"] == sum(s["read"] for s in src.values())
    iso = {r["smiles"]: r for r in table.to_pylist()}[canon("CC(C)C(=O)O")]
    assert iso["texts"] == ["Isobutyric acid is a short-chain fatty acid.", "it is a branched fatty acid."]
    # 10 ordinary ChEBI-20 rows, isobutyric acid (2 texts), phenol, 6 MoMu-corpus graphs
    assert (manifest["output"]["molecules"], manifest["output"]["graph_only_molecules"]) == (18, 6)
    assert table.num_rows == 18 and len(set(table.column("id").to_pylist())) == 18

    # The training readers take it as is: read_pairs, and pretraining's ingest (no id dropped as duplicate).
    result = read_pairs(out)
    assert result.table.num_rows == table.num_rows and result.report.rows_malformed == 0
    pairs, report = read_inputs(PretrainConfig(data_paths=[str(out)]))
    assert pairs.num_rows == table.num_rows and "duplicate_ids_dropped" not in report.metadata
    featurized = featurize_records(pairs)
    assert featurized.column("reject_reason").to_pylist() == [""] * table.num_rows
    from momu.data.pairs import (
        load_pair_dataset,  # train-local: SMILES rows featurized, graph rows kept
    )

    dataset, _ = load_pair_dataset(str(out))
    assert len(dataset) == 18 and not dataset.rejected
    assert min(g.num_nodes for g in dataset.graphs) > 0

    again = tmp_path / "b" / "pairs.parquet"
    build_corpus(load_config(CorpusConfig, config_path, {"output": str(again)}))
    assert again.read_bytes() == out.read_bytes()


@pytest.mark.ray
def test_build_molecules_dedups_across_sources_and_feeds_graphcl(ray_local, slices, tmp_path):
    from momu.data.corpus_job import build_molecules
    from momu.pretrain.data import read_inputs

    d = tmp_path
    with gzip.open(d / "zinc.csv.gz", "wt") as f:
        csv.writer(f).writerows([["idx", "smiles", "ddvae_split"], [0, "c1ccccc1O", "train"],
                                 [1, canon(slices["stereo_row"][1], False), "train"], [2, "C1CC(", "test"],
                                 [3, "CCCCCCN", "valid"], [4, "NCCCCCC", "train"]])
    write_tsv(d / "superset.tsv", ["CID", "SMILES", "confirmed_train"],
              [[TEST_ROWS[4][0], "CCCCCCCCCCCCO", 1], [500, "Oc1ccccc1", 1], [501, "CC(=O)OC", 1]])
    config = MoleculesConfig(
        sources=[SourceSpec(name="zinc", path=str(d / "zinc.csv.gz"), format="library", id_column="idx"),
                 SourceSpec(name="chebi_train", path=str(d / "superset.tsv"), format="library", id_is_cid=True)],
        removal={"evaluation": slices["evaluation"]}, output=str(d / "mol.parquet"))
    manifest = build_molecules(config)
    table = pq.read_table(d / "mol.parquet")
    assert table.to_pylist()[0].keys() >= {"id", "source", "smiles", "cid", "sources"}
    assert sorted(table.column("smiles").to_pylist()) == sorted(canon(x) for x in ["c1ccccc1O", "CCCCCCN", "CC(=O)OC"])
    assert {r["smiles"]: (r["id"], r["sources"]) for r in table.to_pylist()}[canon("c1ccccc1O")] == \
        ("zinc:0", ["zinc", "chebi_train"])
    zinc, chebi = manifest["sources"]["zinc"], manifest["sources"]["chebi_train"]
    assert zinc["removed_by_reason"] == {"duplicate_smiles": 1, "eval_stereo_free": 1}
    assert zinc["rejected_by_reason"] == {"unparseable": 1} and zinc["kept"] == 2
    assert chebi["removed_by_reason"] == {"duplicate_smiles": 1, "eval_cid": 1} and chebi["kept"] == 1
    assert_no_evaluation_molecule(table, *eval_sets(slices))
    molecules, report = read_inputs(PretrainConfig(objective="graphcl", data_paths=[str(d / "mol.parquet")]))
    assert molecules.num_rows == 3 and report.rows_malformed == 0


# -- the real default configs over ../shared/data ---------------------------------------------------------------

def _real_eval_sets():
    cids, smiles, stereo, graphs = set(), set(), set(), set()
    for path, cid_col, smi_col in [(shared_path("chebi20", "test.txt"), 0, 1), (shared_path("pcdes", "test.tsv"), 1, 2),
                                   (shared_path("pcdes", "valid.tsv"), 1, 2)]:
        for line in path.read_text().splitlines()[1:]:
            fields = line.split("\t")
            cids.add(fields[cid_col])
            smiles.add(canon(fields[smi_col]))
            stereo.add(canon(fields[smi_col], False))
            graph = featurize_smiles(fields[smi_col], max_atoms=1 << 30)
            if graph:  # a few evaluation molecules have no graph (e.g. dative bonds): no graph key either
                graphs.add(graph_key(graph))
    return cids, smiles, stereo, graphs


@pytest.mark.slow
@pytest.mark.ray
def test_real_corpus_has_no_chebi20_test_or_pcdes_test_valid_molecule(ray_local, tmp_path, monkeypatch):
    from momu.data.corpus_job import build_corpus

    shared_path("pcdes", "train.tsv")
    monkeypatch.chdir(REPO)  # the config's paths are relative to the repository
    config = load_config(CorpusConfig, "configs/corpus_pairs.yaml", {"output": str(tmp_path / "pairs.parquet")})
    manifest = build_corpus(config)
    table = pq.read_table(tmp_path / "pairs.parquet")
    assert_no_evaluation_molecule(table, *_real_eval_sets())
    assert 12_000 < manifest["output"]["pairs"] - sum(len(t) for t in table.filter(
        table.column("smiles").is_null()).column("texts").to_pylist()) < 17_000
    for s in manifest["sources"].values():
        assert s["read"] == s["kept"] + s["removed"] + s["rejected"]


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.skipif(os.environ.get("MOMU_LONG_TESTS") != "1",
                    reason="canonicalising 410k molecules takes ~5 CPU-minutes, beyond the CI suite's budget; "
                           "MOMU_LONG_TESTS=1 runs it (the real pair-corpus test checks the same removal in CI)")
def test_real_molecule_set_has_no_evaluation_molecule(ray_local, tmp_path, monkeypatch):
    from momu.data.corpus_job import build_molecules

    shared_path("zinc250k", "zinc250k.csv.gz")
    monkeypatch.chdir(REPO)
    config = load_config(MoleculesConfig, "configs/corpus_molecules.yaml", {"output": str(tmp_path / "m.parquet")})
    manifest = build_molecules(config)
    table = pq.read_table(tmp_path / "m.parquet", columns=["smiles", "cid"])
    cids, smiles, stereo, _ = _real_eval_sets()
    assert not set(table.column("cid").drop_null().to_pylist()) & cids
    kept = table.column("smiles").to_pylist()
    assert not set(kept) & smiles  # output SMILES are canonical (RDKit), so set membership is exact
    assert not {canon(s, False) for s in kept} & stereo
    assert 350_000 < manifest["output"]["molecules"] < 420_000
