"""The web page in a real headless Chromium (selenium): type a text query, submit, see the top molecules drawn as
SVG with their scores and ids (the same as the index searched directly); then the SMILES box; then the caption
panel (the caption and the known molecule it came from, both drawn); then the generate panel (new molecules for a
description, drawn and ranked, the same as momu.generate run directly; editing shows one molecule per lambda).

Needs the Debian packages `chromium` and `chromium-driver` (CI installs them with .ci/install-browser) and the
`selenium` package (dev extra); without them the test skips and says what is missing.
"""

import shutil

import pytest

from serving_helpers import TINY_GENERATE, build_assets, free_port, start_app, stop_app

APP = "momu_web_test"

pytestmark = pytest.mark.slow


def _browser_or_skip():
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not found: install the Debian packages chromium and chromium-driver "
                    "(.ci/install-browser does it when run as root or with sudo) to run the web page test")
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1600", "--no-proxy-server"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


@pytest.fixture(scope="module")
def site(ray_local, small_model, tmp_path_factory):
    from momu.serve.config import ServeConfig

    browser = _browser_or_skip()
    try:
        assets = build_assets(small_model, tmp_path_factory.mktemp("web"), n=80)
        config = ServeConfig(model=str(assets.model_dir), molecule_index=str(assets.molecule_index_dir),
                             text_index=str(assets.text_index_dir), caption_pool=str(assets.caption_pool_dir),
                             generate=TINY_GENERATE)
        url = start_app(config, APP, free_port())
        try:
            yield browser, url, assets
        finally:
            stop_app(APP)
    finally:
        browser.quit()


def test_text_query_shows_molecule_drawings(site, small_model):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from momu.index import RetrievalIndex

    browser, url, assets = site
    browser.get(url + "/")
    assert "MoMu" in browser.title
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: "80 texts" in b.find_element(By.ID, "model-line").text)  # /v1/models answered

    query = "The molecule is a monocarboxylic acid anion"
    box = browser.find_element(By.ID, "query")
    box.clear()
    box.send_keys(query)
    k = browser.find_element(By.ID, "k")
    k.clear()
    k.send_keys("6")
    browser.find_element(By.ID, "search-button").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "text-status"), "of"))
    cards = browser.find_elements(By.CSS_SELECTOR, "#molecule-results figure.molecule")
    assert len(cards) == 6
    drawings = browser.find_elements(By.CSS_SELECTOR, "#molecule-results figure.molecule svg")
    assert len(drawings) == 6 and all(d.size["width"] > 50 and d.size["height"] > 50 for d in drawings)
    assert all(d.find_elements(By.CSS_SELECTOR, "path") for d in drawings)  # bonds are drawn
    # The page shows the index's top molecules for the query, best first, with scores.
    index = RetrievalIndex.load(assets.molecule_index_dir)
    scores, rows = index.search(small_model.embed_texts([query]).numpy(), 6)
    shown_ids = [c.get_attribute("data-id") for c in cards]
    expected = [r["id"] for r in index.rows(rows[0])]
    assert sorted(shown_ids) == sorted(expected) or shown_ids == expected
    shown_scores = [float(c.find_element(By.CSS_SELECTOR, ".score").text) for c in cards]
    assert shown_scores == sorted(shown_scores, reverse=True)
    assert shown_scores[0] == pytest.approx(float(scores[0][0]), abs=1e-3)
    assert f"6 of {len(index)} molecules" in browser.find_element(By.ID, "text-status").text

    # An empty-after-trim query is refused by the server and the page shows the reason.
    box.clear()
    box.send_keys("   ")
    browser.find_element(By.ID, "search-button").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "text-status"), "must not be empty"))
    assert "query" in browser.find_element(By.ID, "text-status").text
    assert not browser.find_elements(By.CSS_SELECTOR, "#molecule-results figure")


def test_smiles_box_shows_descriptions(site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    browser, url, assets = site
    browser.get(url + "/")
    wait = WebDriverWait(browser, 30)
    box = browser.find_element(By.ID, "smiles")
    box.send_keys("OC(=O)c1ccccc1O")
    browser.find_element(By.ID, "smiles-button").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "smiles-status"), "descriptions"))
    assert browser.find_elements(By.CSS_SELECTOR, "#text-results .query-molecule svg")
    assert browser.find_element(By.CSS_SELECTOR, "#text-results .query-molecule code").text == "O=C(O)c1ccccc1O"
    items = browser.find_elements(By.CSS_SELECTOR, "#text-results ol.texts li")
    assert len(items) == 5
    known = {" ".join(t.split()) for t in assets.texts}
    texts = [" ".join(i.find_element(By.CSS_SELECTOR, ".description").text.split()) for i in items]
    assert all(t in known for t in texts), texts
    # An invalid SMILES is reported with its reason, not a broken page.
    box.clear()
    box.send_keys("C1CC(")
    browser.find_element(By.ID, "smiles-button").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "smiles-status"), "invalid SMILES"))
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "422" not in e["message"]]
    assert not severe, severe


def test_caption_panel_shows_caption_and_neighbour(site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from momu.caption.retrieval import RetrievalCaptioner

    browser, url, assets = site
    browser.get(url + "/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: "caption pool" in b.find_element(By.ID, "model-line").text)
    direct = RetrievalCaptioner(assets.caption_pool_dir)
    query = "CC(=O)Oc1ccccc1C(=O)O"
    expected = direct.caption_smiles([query])[0]
    box = browser.find_element(By.ID, "caption-smiles")
    box.send_keys(query)
    browser.find_element(By.ID, "caption-button").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "caption-status"), "caption from"))
    shown = " ".join(browser.find_element(By.CSS_SELECTOR, "#caption-result .caption-text").text.split())
    assert shown == " ".join(expected.caption.split())
    neighbour = browser.find_element(By.CSS_SELECTOR, "#caption-result figure.neighbour")
    assert neighbour.get_attribute("data-id") == expected.neighbour.id
    assert float(neighbour.find_element(By.CSS_SELECTOR, ".score").text) == pytest.approx(
        expected.neighbour.similarity, abs=1e-3)
    drawings = browser.find_elements(By.CSS_SELECTOR, "#caption-result figure svg")
    assert len(drawings) == 2 and all(d.find_elements(By.CSS_SELECTOR, "path") for d in drawings)
    assert "nearest known molecule" in browser.find_element(By.CSS_SELECTOR, "#caption-result .caption-label").text
    # A molecule of the pool is its own neighbour; an unreadable SMILES shows its reason.
    box.clear()
    box.send_keys(assets.smiles[2])
    browser.find_element(By.ID, "caption-button").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "caption-status"), "similarity 1.000"))
    box.clear()
    box.send_keys("C1CC(")
    browser.find_element(By.ID, "caption-button").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "caption-status"), "invalid SMILES"))
    assert "smiles[0]" in browser.find_element(By.ID, "caption-status").text
    assert not browser.find_elements(By.CSS_SELECTOR, "#caption-result figure")


def test_generate_panel_shows_ranked_molecules(site, small_model):
    from rdkit import Chem
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from momu.generate.ga import generate
    from momu.generate.pool import load_pool
    from momu.serve.config import ServeGenerate
    from serving.deployments import generate_config

    browser, url, assets = site
    browser.get(url + "/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda b: "generation from a pool of" in b.find_element(By.ID, "model-line").text)
    text = "The molecule is an aromatic carboxylic acid."
    browser.find_element(By.ID, "generate-text").send_keys(text)
    n = browser.find_element(By.ID, "generate-n")
    n.clear()
    n.send_keys("4")
    browser.find_element(By.ID, "generate-button").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "generate-status"), "evaluations"))
    status = browser.find_element(By.ID, "generate-status").text
    assert status.startswith("4 molecules: 40 evaluations") and "stopped by evaluations" in status
    cards = browser.find_elements(By.CSS_SELECTOR, "#generate-results figure.molecule")
    assert len(cards) == 4
    assert [c.find_element(By.CSS_SELECTOR, ".rank").text for c in cards] == ["#1", "#2", "#3", "#4"]
    drawings = browser.find_elements(By.CSS_SELECTOR, "#generate-results figure svg")
    assert len(drawings) == 4 and all(d.find_elements(By.CSS_SELECTOR, "path") for d in drawings)
    scores = [float(c.find_element(By.CSS_SELECTOR, ".score").text) for c in cards]
    assert scores == sorted(scores, reverse=True)
    shown = [c.get_attribute("data-smiles") for c in cards]
    assert all(Chem.MolFromSmiles(s) is not None for s in shown)
    assert [c.find_element(By.CSS_SELECTOR, "code.smiles").text for c in cards] == shown
    # The page shows what the library finds with the server's settings (an evaluation-bound, seeded search).
    config = generate_config(ServeGenerate(**TINY_GENERATE), str(assets.model_dir), 4, 10.0)
    direct = generate(small_model, text, config, pool=load_pool(TINY_GENERATE["pool"], TINY_GENERATE["exclude"]))
    assert shown == [r["smiles"] for r in direct["results"]]
    assert scores[0] == pytest.approx(direct["results"][0]["total"], abs=1e-3)

    # Editing: one molecule per lambda of the server's sweep, labelled with it.
    edit_box = browser.find_element(By.ID, "generate-edit")
    edit_box.send_keys("c1ccccc1O")
    browser.find_element(By.ID, "generate-button").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "generate-status"), "best per lambda for editing Oc1ccccc1"))
    labels = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#generate-results figure .rank")]
    assert labels == ["λ 0", "λ 1"]
    # A bad edit SMILES is refused by the server and the page shows the field and the reason.
    edit_box.clear()
    edit_box.send_keys("C1CC(")
    browser.find_element(By.ID, "generate-button").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "generate-status"), "invalid SMILES"))
    assert browser.find_element(By.ID, "generate-status").text.startswith("edit:")
    assert not browser.find_elements(By.CSS_SELECTOR, "#generate-results figure")
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "422" not in e["message"]]
    assert not severe, severe
