"""The paper's role facts survive the move into the project's config format."""

import csv

import pytest
from helpers import SHARED, compose_cfg

from persona_bench.config.errors import ConfigError
from persona_bench.config.schema import RoleConfig, RoleSetConfig
from persona_bench.inputs.roles import build_roles

CATEGORY = {"family": "family", "romantic": "romantic", "school": "school", "social": "social", "work": "work",
            "AI": "ai", "other occupations": "occupation"}
RENAMED = {"governer": "governor", "software enginner AI": "software engineer AI"}


def paper_roles():
    return {r.name: r for r in build_roles(compose_cfg(["role_set=paper"]).role_set)}


@pytest.mark.skipif(not (SHARED / "role_info.csv").exists(), reason="paper data not beside the checkout")
def test_paper_role_set_matches_role_info_csv():
    ours = paper_roles()
    rows = list(csv.DictReader(open(SHARED / "role_info.csv", encoding="utf-8")))
    assert len(rows) == len(ours) == 162
    for row in rows:
        name = RENAMED.get(row["role"].strip(), row["role"].strip())
        r = ours[name]
        assert r.category == CATEGORY[row["role cate"]]
        assert r.domain == (row["occupation cate"].strip().replace(" ", "_") or None)
        assert r.gender == row["gender"]
        assert r.interpersonal == (row["interpersonal"] == "1")
        assert r.frequency == pytest.approx(float(row["N-gram Frequency (2018-2019)"]), rel=1e-12)


def test_role_subsets():
    counts = {name: len(build_roles(compose_cfg([f"role_set={name}"]).role_set))
              for name in ("paper", "interpersonal", "occupational", "ai", "gendered", "demo")}
    assert counts == {"paper": 162, "interpersonal": 50, "occupational": 91, "ai": 20, "gendered": 50, "demo": 8}


def test_domains_give_aligned_subjects():
    r = paper_roles()
    assert "professional_law" in r["lawyer"].subjects and "clinical_knowledge" in r["doctor"].subjects
    assert r["friend"].subjects == ()


@pytest.mark.parametrize("role,message", [
    ({"name": ""}, "name is empty"),
    ({"name": "pirate", "category": "buccaneer"}, "category='buccaneer'"),
    ({"name": "pirate", "gender": "x"}, "gender='x'"),
    ({"name": "pirate", "domain": "piracy"}, "domain='piracy'"),
])
def test_bad_role_file_is_named(role, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        build_roles(RoleSetConfig(name="mine", roles=[RoleConfig(**role)]))


def test_empty_selection_and_unknown_names():
    cfg = compose_cfg(["role_set=paper"]).role_set
    cfg.select = {"category": "ai", "interpersonal": True}
    with pytest.raises(ConfigError, match="selects no role"):
        build_roles(cfg)
    cfg = compose_cfg(["role_set.names=[doctor,wizard]"]).role_set
    with pytest.raises(ConfigError, match="'wizard'"):
        build_roles(cfg)
