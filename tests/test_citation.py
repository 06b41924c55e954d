from pathlib import Path

import yaml

CITATION = Path(__file__).resolve().parents[1] / "CITATION.cff"


def test_citation_cff_parses():
    meta = yaml.safe_load(CITATION.read_text(encoding="utf-8"))
    assert meta["cff-version"] == "1.2.0"
    assert meta["type"] == "software"
    assert "numpyro-ssm" in meta["title"]
    assert meta["authors"]
    years = {(ref["authors"][0]["family-names"], ref["year"]) for ref in meta["references"]}
    for expected in [
        ("Rabiner", 1989),
        ("Hassan", 2021),
        ("Särkkä", 2021),
        ("Yaghoobi", 2022),
        ("Zucchini", 2016),
        ("Durbin", 2012),
        ("Phan", 2019),
        ("Talts", 2018),
        ("Säilynoja", 2022),
    ]:
        assert expected in years
