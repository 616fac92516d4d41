"""Caption metrics (momu.caption): MolT5's recipe, its golden scores, the file reader and `momu evaluate caption`."""

import argparse
import gzip
import hashlib
import json
import math

import pytest
from conftest import REPO, shared_path

from momu.caption.metrics import (BUNDLED_VOCAB, bleu, caption_tokens, load_tokenizer, rouge, score_captions,
                                  strip_cls_prefix)
from momu.caption.predictions import read_predictions
from momu.caption import wordnet as wn

CAPTIONS = [
    "The molecule is a 3beta-hydroxy steroid that is 5alpha-cholestane substituted by a hydroxy group.",
    "The molecule is a monocarboxylic acid anion that is the conjugate base of lactic acid.",
    "The molecule is a tetrasaccharide. It has a role as a plant metabolite.",
]


@pytest.fixture(scope="module")
def wordnet_reader():
    try:
        return wn.load_wordnet()
    except wn.WordNetMissingError as err:
        pytest.skip(f"METEOR needs WordNet 3.0, which is not installed here (.ci/install-wordnet): {err}")


def meteor_identical(n_tokens: int) -> float:
    """nltk METEOR of a caption against itself: F-mean 1, one chunk, fragmentation penalty 0.5 * (1/n)^3."""
    return 100 * (1 - 0.5 * (1 / n_tokens) ** 3)


# -- tokens ------------------------------------------------------------------------------------------------------

def test_bundled_vocab_is_scibert_scivocab_uncased():
    assert hashlib.sha256(BUNDLED_VOCAB.read_bytes()).hexdigest() == (
        "f0a650346e51ede8996710f79ba65d83fdb8da05b159f17037b74ba4e3a36c6f")
    assert len(load_tokenizer().get_vocab()) == 31090


def test_scibert_wordpieces_lowercased_and_special_tokens_dropped():
    tokens = caption_tokens(["The molecule is a 3beta-hydroxy steroid that is 5alpha-cholestane.",
                             "Café [CLS] déjà [SEP] x", ""])
    assert tokens == [
        ["the", "molecule", "is", "a", "3", "##beta", "-", "hydroxy", "steroid", "that", "is", "5", "##alpha",
         "-", "chol", "##est", "##ane", "."],
        ["caf", "##e", "de", "##ja", "x"],
        [],
    ]


def test_tokens_equal_molt5_per_text_tokenize_and_truncate_at_512():
    tokenizer = load_tokenizer()
    long_caption = " ".join(CAPTIONS * 30)  # ~700 WordPieces
    texts = CAPTIONS + ["[CLS] The molecule.", long_caption]
    ours = caption_tokens(texts)
    for text, got in zip(texts, ours):
        # MolT5: tokenize with truncation/padding to 512, then drop [PAD]/[CLS]/[SEP]. transformers 5's tokenize()
        # ignores truncation, so the reference is cut to 512 by hand (transformers 4 cuts it itself).
        molt5 = tokenizer.tokenize(text, truncation=True, max_length=512, padding="max_length")[:512]
        assert got == [t for t in molt5 if t not in ("[PAD]", "[CLS]", "[SEP]")]
    assert len(ours[-1]) == 512
    assert len(caption_tokens([long_caption], max_length=20)[0]) == 20


def test_missing_vocab_file_names_the_field(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab_file"):
        caption_tokens(["x"], vocab_file=str(tmp_path / "nope.txt"))


# -- scores ------------------------------------------------------------------------------------------------------

def test_identical_captions_score_100(wordnet_reader):
    scores = score_captions(CAPTIONS, list(CAPTIONS))
    assert scores.rows == 3
    for value in (scores.bleu2, scores.bleu4, scores.rouge1, scores.rouge2, scores.rougeL):
        assert value == pytest.approx(100.0)
    lengths = [len(t) for t in caption_tokens(CAPTIONS)]
    assert scores.meteor == pytest.approx(sum(meteor_identical(n) for n in lengths) / 3)


def test_empty_output_scores_zero_and_shortens_the_corpus(wordnet_reader):
    only_empty = score_captions([CAPTIONS[0]], [""])
    assert (only_empty.bleu2, only_empty.bleu4, only_empty.rouge1, only_empty.rougeL, only_empty.meteor) == (0, 0, 0, 0, 0)

    mixed = score_captions(CAPTIONS[:2], [CAPTIONS[0], ""])
    n0, n1 = (len(t) for t in caption_tokens(CAPTIONS[:2]))
    # Every n-gram of the first output matches, but nltk counts an empty output as 1 n-gram of each order in the
    # precision denominators (max(1, count)), and the brevity penalty is exp(1 - r/c) with c = n0.
    bp = math.exp(1 - (n0 + n1) / n0)
    p = [(n0 - k) / (n0 - k + 1) for k in range(4)]
    assert mixed.bleu2 == pytest.approx(100 * bp * math.sqrt(p[0] * p[1]))
    assert mixed.bleu4 == pytest.approx(100 * bp * math.prod(p) ** 0.25)
    assert mixed.rouge1 == pytest.approx(50.0) and mixed.rougeL == pytest.approx(50.0)
    assert mixed.meteor == pytest.approx(meteor_identical(n0) / 2)


def test_cls_prefix_dropped_as_molt5_reader_does():
    assert strip_cls_prefix("[CLS] The molecule") == "The molecule"
    assert strip_cls_prefix("[CLS]The molecule") == "[CLS]The molecule"
    with_prefix = score_captions(CAPTIONS, ["[CLS] " + c for c in CAPTIONS], with_meteor=False)
    assert with_prefix.rouge1 == pytest.approx(100.0) and with_prefix.bleu4 == pytest.approx(100.0)
    assert with_prefix.meteor is None


def test_partial_overlap_bleu_and_rouge_by_hand():
    ref, hyp = "a b c d".split(), "a b x d".split()
    # unigram precision 3/4, bigram 1/3 (a b); same length so no brevity penalty.
    b2, b4 = bleu([ref], [hyp])
    assert b2 == pytest.approx(100 * math.sqrt(3 / 4 * 1 / 3))
    assert b4 == pytest.approx(0.0, abs=1e-100)  # no 4-gram match, no smoothing: nltk uses a tiny float, not 0
    r1, r2, rl = rouge(["a b c d"], ["a b x d"])
    assert (r1, r2, rl) == pytest.approx((75.0, 100 / 3, 75.0))


def test_bad_inputs_raise_one_clear_error():
    with pytest.raises(ValueError, match="2 references but 1 predictions"):
        score_captions(CAPTIONS[:2], CAPTIONS[:1])
    with pytest.raises(ValueError, match=r"predictions\[1\] is NoneType"):
        score_captions(CAPTIONS[:2], [CAPTIONS[0], None], with_meteor=False)
    with pytest.raises(ValueError, match="no captions"):
        score_captions([], [])


# -- golden: MolT5's released predictions on ChEBI-20 test --------------------------------------------------------

GOLDEN = {  # BLEU-2, BLEU-4, ROUGE-1, ROUGE-2, ROUGE-L, METEOR (x100), as published for MolT5's recipe
    "small": (53.15, 44.49, 62.10, 46.99, 56.39, 55.75),
    "base": (55.08, 46.44, 63.39, 48.47, 57.68, 57.45),
    "large": (58.77, 50.23, 65.29, 50.84, 59.29, 61.42),
}


@pytest.mark.parametrize("size", [
    "small",
    pytest.param("base", marks=pytest.mark.slow),
    pytest.param("large", marks=pytest.mark.slow),
])
def test_molt5_golden_scores(size):
    data = read_predictions(shared_path("molt5_predictions", f"molt5-{size}-smiles2caption.txt"))
    assert len(data.references) == 3300
    try:
        wn.load_wordnet()
        has_wordnet = True
    except wn.WordNetMissingError:
        has_wordnet = False
    s = score_captions(data.references, data.predictions, with_meteor=has_wordnet)
    expected = GOLDEN[size]
    got = (s.bleu2, s.bleu4, s.rouge1, s.rouge2, s.rougeL)
    assert got == pytest.approx(expected[:5], abs=0.01)
    if not has_wordnet:
        pytest.skip("BLEU/ROUGE match; METEOR not checked: WordNet 3.0 not installed (.ci/install-wordnet)")
    assert s.meteor == pytest.approx(expected[5], abs=0.01)


# -- reading prediction files --------------------------------------------------------------------------------------

def test_reads_molt5_tsv_with_quotes_and_empty_output(tmp_path):
    path = tmp_path / "preds.txt"
    path.write_text('SMILES\tground truth\toutput\nCCO\tThe "ethanol" molecule.\t\nC\tMethane.\tThe molecule is "x\n\n')
    data = read_predictions(path)
    assert data.references == ['The "ethanol" molecule.', "Methane."]
    assert data.predictions == ["", 'The molecule is "x']


def test_reads_our_tsv_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "p.tsv").write_text("id\tground_truth\tcaption\n1\tA b.\tA c.\n")
    assert read_predictions(tmp_path / "p.tsv").predictions == ["A c."]
    pq.write_table(pa.table({"smiles": ["C", "CC"], "ground_truth": ["A.", "B."], "caption": ["A.", ""]}),
                   tmp_path / "p.parquet")
    data = read_predictions(tmp_path / "p.parquet")
    assert (data.references, data.predictions) == (["A.", "B."], ["A.", ""])


def test_bad_prediction_files_raise_one_clear_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pytest.raises(FileNotFoundError, match="predictions: .*missing.txt not found"):
        read_predictions(tmp_path / "missing.txt")
    cases = {
        "no_pred.tsv": ("SMILES\tground truth\nC\tA.\n", "none of the prediction columns 'output' / 'caption'"),
        "two_refs.tsv": ("ground truth\tground_truth\toutput\nA\tA\tA\n", "several of the ground-truth columns"),
        "tab.tsv": ("SMILES\tground truth\toutput\nC\tA.\tB\tC\n", "line 2 has 4 fields, the header has 3"),
        "short.tsv": ("SMILES\tground truth\toutput\nC\tA.\n", "line 2 has 2 fields"),
        "header_only.tsv": ("SMILES\tground truth\toutput\n", "no rows"),
        "empty.tsv": ("", "none of the ground-truth columns"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=message):
            read_predictions(tmp_path / name)
    (tmp_path / "latin1.tsv").write_bytes("ground truth\toutput\ncaf\xe9\tx\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        read_predictions(tmp_path / "latin1.tsv")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(ValueError, match="not a readable Parquet file"):
        read_predictions(tmp_path / "bad.parquet")
    pq.write_table(pa.table({"ground_truth": ["A.", "B."], "caption": ["A.", None]}), tmp_path / "null.parquet")
    with pytest.raises(ValueError, match="row 2: column 'caption' is None"):
        read_predictions(tmp_path / "null.parquet")


# -- WordNet set-up ---------------------------------------------------------------------------------------------

def test_lexnames_from_man_page_match_wordnet_30():
    if not wn.LEXNAMES_MAN_PAGE.is_file():
        pytest.skip(f"{wn.LEXNAMES_MAN_PAGE} not installed (wordnet-base; .ci/install-wordnet)")
    text = gzip.open(wn.LEXNAMES_MAN_PAGE, "rt").read()
    assert wn.parse_lexnames_man_page(text) == wn.LEXNAMES_30
    lines = wn.lexnames_text().splitlines()
    assert len(lines) == 45
    assert lines[0] == "00\tadj.all\t3" and lines[3] == "03\tnoun.Tops\t1"
    assert lines[29] == "29\tverb.body\t2" and lines[44] == "44\tadj.ppl\t3"


def test_missing_wordnet_names_the_install_script_and_bleu_rouge_still_work(tmp_path, monkeypatch):
    monkeypatch.setenv("WNSEARCHDIR", str(tmp_path / "no-wordnet"))
    monkeypatch.setenv("MOMU_NLTK_DATA", str(tmp_path / "nltk_data"))
    with pytest.raises(wn.WordNetMissingError, match=r"\.ci/install-wordnet"):
        score_captions(CAPTIONS, CAPTIONS)
    scores = score_captions(CAPTIONS, CAPTIONS, with_meteor=False)
    assert scores.rouge1 == pytest.approx(100.0) and scores.meteor is None


def test_nltk_data_folder_built_once(tmp_path):
    if not (wn.dict_dir() / "data.noun").is_file():
        pytest.skip(f"WordNet not installed at {wn.dict_dir()} (.ci/install-wordnet)")
    root = wn.build_nltk_wordnet(tmp_path)
    folder = root / "corpora" / "wordnet"
    assert sorted(p.name for p in folder.iterdir()) == sorted([*wn.DICT_FILES, "lexnames"])
    assert not (folder / "data.noun").is_symlink()  # nltk >= 3.9 refuses links that leave its data folders
    stamp = (folder / "lexnames").stat().st_mtime_ns
    assert wn.build_nltk_wordnet(tmp_path) == root
    assert (folder / "lexnames").stat().st_mtime_ns == stamp


# -- command line ------------------------------------------------------------------------------------------------

def _parser():
    from momu.caption.cli import register

    parser = argparse.ArgumentParser(prog="momu")
    sub = parser.add_subparsers(dest="command", required=True)
    groups = {name: sub.add_parser(name).add_subparsers(dest="target", required=True)
              for name in ("evaluate", "finetune", "predict", "index")}
    register(sub, groups)
    return parser


def test_cli_evaluate_caption_json_and_output(tmp_path, capsys):
    path = tmp_path / "preds.txt"
    path.write_text("SMILES\tground truth\toutput\n" + "".join(f"C\t{c}\t{c}\n" for c in CAPTIONS)
                    + f"CC\t{CAPTIONS[0]}\t\n")
    out = tmp_path / "out" / "metrics.json"
    args = _parser().parse_args(["evaluate", "caption", "--predictions", str(path), "--json", "--output", str(out),
                                 "--meteor", "false"])
    assert args.func(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed["rows"] == 4 and printed["meteor"] is None
    assert printed["rouge1"] == pytest.approx(75.0)
    assert printed["config"] == {"vocab_file": None, "max_length": 512, "meteor": False}


def test_cli_evaluate_caption_table(tmp_path, capsys, wordnet_reader):
    path = tmp_path / "preds.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"ground_truth": CAPTIONS, "caption": CAPTIONS}), path)
    args = _parser().parse_args(["evaluate", "caption", "--predictions", str(path),
                                 "--vocab_file", str(REPO / "data" / "scibert_vocab" / "vocab.txt")])
    assert args.func(args) == 0
    table = capsys.readouterr().out
    assert "3 rows of" in table
    for label in ("BLEU-2", "BLEU-4", "ROUGE-1", "ROUGE-2", "ROUGE-L"):
        assert f"{label:<8} 100.00" in table
    assert "METEOR   " in table and "not computed" not in table


def test_cli_missing_predictions_file(tmp_path):
    args = _parser().parse_args(["evaluate", "caption", "--predictions", str(tmp_path / "none.txt")])
    with pytest.raises(FileNotFoundError, match="none.txt not found"):
        args.func(args)
