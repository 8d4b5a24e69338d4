from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vsp.data.norms import (
    COLOUR_PROPERTIES,
    CSLB_COLUMNS,
    FEATURE_CLASSES,
    FINE_GRAINED,
    MCRAE_BR_CLASSES,
    SHAPE_SIZE_PROPERTIES,
    Norms,
    fine_grained_type,
    load_cslb,
    load_mcrae,
    mcrae_fine_grained_type,
    split_relation,
    summary,
)
from vsp.errors import VspInputError

HEADER = "\t".join(CSLB_COLUMNS)


def row(concept: str, feature: str, pf, ftype: str = "visual perceptual", domain: str = "living") -> str:
    return "\t".join([domain, ftype, concept, feature, str(pf), feature, "p 1 2"])


def write_norms(path: Path, rows: list[str], header: str = HEADER, eol: str = "\r\n") -> Path:
    path.write_bytes((eol.join([header, *rows]) + eol).encode())
    return path


# ----------------------------------------------------------------------------------------------- real CSLB


@pytest.fixture(scope="module")
def cslb(cslb_path: Path) -> Norms:
    return load_cslb(cslb_path)


def cell(norms: Norms, concept: str, prop: str) -> float:
    return float(norms.pf[norms.concepts.index(concept), norms.properties.index(prop)])


def klass(norms: Norms, prop: str) -> str:
    return norms.feature_class[norms.properties.index(prop)]


def test_cslb_shape_and_order(cslb: Norms, cslb_path: Path) -> None:
    assert cslb.shape == (638, 390)
    assert cslb.binary.shape == cslb.pf.shape == (638, 390)
    assert cslb.binary.dtype == np.uint8 and cslb.pf.dtype == np.float32
    assert cslb.concepts == sorted(cslb.concepts) and len(set(cslb.concepts)) == 638
    assert cslb.properties == sorted(cslb.properties) and len(set(cslb.properties)) == 390
    assert cslb.source == str(cslb_path)
    assert "bat_(animal)" in cslb.concepts and "coffee_machine" in cslb.concepts
    assert "is green" in cslb.properties and "made of metal" in cslb.properties


def test_cslb_summary_counts(cslb: Norms) -> None:
    s = summary(cslb)
    assert set(s) == {"concepts", "properties", "feature_classes", "fine_grained"}
    assert s["concepts"] == 638 and s["properties"] == 390
    assert s["feature_classes"] == {
        "taxonomic": 46,
        "visual perceptual": 156,
        "other perceptual": 29,
        "functional": 94,
        "encyclopaedic": 65,
    }
    assert s["fine_grained"] == {
        "colour": 16,
        "shape/size": 13,
        "is": 170,
        "has": 102,
        "does": 70,
        "made-of": 19,
    }
    assert sum(s["fine_grained"].values()) == 390
    assert list(s["feature_classes"]) == list(FEATURE_CLASSES) and list(s["fine_grained"]) == list(
        FINE_GRAINED
    )


def test_cslb_binary_and_pf_agree(cslb: Norms) -> None:
    assert np.array_equal(cslb.binary, (cslb.pf > 0).astype(np.uint8))
    # PROVENANCE.md counts 6,932 kept rows; 2 of them are second rows of hamster/tarantula "has fur_hair"
    assert int(cslb.binary.sum()) == 6930
    assert cslb.pf[cslb.binary == 1].min() >= 5 and cslb.pf.max() <= 30
    assert cslb.binary.sum(axis=0).min() >= 5  # every property for >= 5 concepts
    per_concept = cslb.binary.sum(axis=1)
    assert per_concept.min() == 2 and per_concept.max() == 27


def test_cslb_arrays_read_only(cslb: Norms) -> None:
    with pytest.raises(ValueError):
        cslb.binary[0, 0] = 1
    with pytest.raises(ValueError):
        cslb.pf[0, 0] = 1.0


def test_cslb_duplicates_take_max_pf(cslb: Norms) -> None:
    assert cell(cslb, "hamster", "has fur_hair") == 18  # rows 18 and 13
    assert cell(cslb, "tarantula", "has fur_hair") == 19  # rows 19 and 11
    assert cell(cslb, "poison", "made of chemicals") == 11  # rows 11 and 3
    assert cell(cslb, "leopard", "is big_large") == 12  # rows 12 (encyclopaedic) and 2 (visual perceptual)


def test_cslb_mixed_class_properties_take_majority(cslb: Norms) -> None:
    assert klass(cslb, "does grow") == "functional"
    assert klass(cslb, "has seeds") == "visual perceptual"
    assert klass(cslb, "is a cat") == "taxonomic"
    assert klass(cslb, "is big_large") == "visual perceptual"
    assert klass(cslb, "is drunk from a glass") == "encyclopaedic"
    assert klass(cslb, "made of water_is watery") == "encyclopaedic"


def test_cslb_fine_grained(cslb: Norms) -> None:
    fine = dict(zip(cslb.properties, cslb.fine_grained, strict=True))
    # the authors' vocabularies, exactly: every entry is one of the 390 visual perceptual properties
    assert {p for p, t in fine.items() if t == "colour"} == COLOUR_PROPERTIES
    assert {p for p, t in fine.items() if t == "shape/size"} == SHAPE_SIZE_PROPERTIES
    assert len(COLOUR_PROPERTIES) == 16 and len(SHAPE_SIZE_PROPERTIES) == 13
    assert fine["is shiny"] == fine["is clear_transparent"] == "colour"
    assert fine["does come in colours"] == "does"  # has a colour word, but is not in the authors' list
    assert fine["is a bird"] == "is" and fine["has a long neck"] == "has"
    assert fine["made of silver"] == "made-of" and fine["does fly"] == "does"
    assert fine["is heavy"] == "is"  # other perceptual, not shape/size
    for p, t in fine.items():
        if t in ("colour", "shape/size"):
            assert klass(cslb, p) == "visual perceptual"


def test_cslb_other_thresholds(cslb_path: Path) -> None:
    # PROVENANCE.md: 2,725 features with PF >= 5; 832 occur for >= 5 concepts with no PF threshold
    assert len(load_cslb(cslb_path, min_pf=5, min_concepts=1).properties) == 2725
    assert len(load_cslb(cslb_path, min_pf=0, min_concepts=5).properties) == 832


# ----------------------------------------------------------------------------------------------- rules


@pytest.mark.parametrize(
    ("feature", "cls", "expected"),
    [
        ("is red", "visual perceptual", "colour"),
        ("is black and white", "visual perceptual", "colour"),
        ("does come in colours", "visual perceptual", "does"),
        ("is big_large", "visual perceptual", "shape/size"),
        ("is rectangular_square", "visual perceptual", "shape/size"),
        ("is shiny", "visual perceptual", "colour"),
        ("is clear_transparent", "visual perceptual", "colour"),
        ("Is  Red", "visual perceptual", "colour"),  # compared lower-cased, spaces collapsed
        ("is reddish", "visual perceptual", "is"),  # exact names, not words
        ("is round", "visual perceptual", "is"),
        ("has a long neck", "visual perceptual", "has"),
        ("made of silver", "visual perceptual", "made-of"),
        ("is a bird", "taxonomic", "is"),
        ("is light", "other perceptual", "is"),
        ("is orange", "encyclopaedic", "is"),
        ("does eat", "functional", "does"),
        ("has sugar", "encyclopaedic", "has"),
        ("made of chemicals", "encyclopaedic", "made-of"),
        ("comes in pairs", "visual perceptual", "does"),
        ("had a tail", "visual perceptual", "has"),
        ("found in gardens", "encyclopaedic", "is"),
    ],
)
def test_fine_grained_type(feature: str, cls: str, expected: str) -> None:
    assert fine_grained_type(feature, cls) == expected


def test_split_relation() -> None:
    assert split_relation("made of wood") == ("made-of", "wood")
    assert split_relation("is a bird") == ("is", "a bird")
    assert split_relation("island life") == ("does", "island life")  # "is" must be a whole word


def test_vocabularies_disjoint() -> None:
    assert not COLOUR_PROPERTIES & SHAPE_SIZE_PROPERTIES


# ----------------------------------------------------------------------------------------------- small CSLB


def test_duplicate_rule_synthetic(tmp_path: Path) -> None:
    rows = [row(f"c{i}", "is x", 6) for i in range(5)]
    rows += [row("c0", "is y", 3, "visual perceptual"), row("c0", "is y", 7, "encyclopaedic")]
    rows += [row(f"c{i}", "is y", 6, "encyclopaedic") for i in range(1, 5)]
    # equal PFs: class order decides (taxonomic before functional)
    rows += [row("c0", "is z", 8, "functional"), row("c0", "is z", 8, "taxonomic")]
    rows += [row(f"c{i}", "is z", 6, "functional") for i in range(1, 3)]
    rows += [row(f"c{i}", "is z", 6, "taxonomic") for i in range(3, 5)]
    n = load_cslb(write_norms(tmp_path / "norms.dat", rows))
    assert n.concepts == [f"c{i}" for i in range(5)] and n.properties == ["is x", "is y", "is z"]
    assert n.pf[0, 1] == 7 and n.pf[0, 2] == 8
    assert n.feature_class == [
        "visual perceptual",
        "encyclopaedic",
        "taxonomic",
    ]  # is z: 3 taxonomic, 2 functional


def test_class_tie_goes_to_class_order(tmp_path: Path) -> None:
    rows = [row(f"c{i}", "has q", 5, "encyclopaedic") for i in range(2)]
    rows += [row(f"c{i}", "has q", 5, "other perceptual") for i in range(2, 4)]
    n = load_cslb(write_norms(tmp_path / "norms.dat", rows), min_concepts=4)
    assert n.feature_class == ["other perceptual"]
    assert n.fine_grained == ["has"]


def test_filtering_synthetic(tmp_path: Path) -> None:
    rows = [row(f"c{i}", "is red", 5) for i in range(5)]  # kept
    rows += [row(f"c{i}", "is round", 4 if i == 0 else 9) for i in range(5)]  # 4 concepts with pf >= 5
    rows += [row("lonely", "has a tail", 30)]  # the only property of "lonely" is dropped, so is "lonely"
    path = write_norms(tmp_path / "norms.dat", rows, eol="\n")  # LF works too
    n = load_cslb(path)
    assert n.properties == ["is red"] and n.concepts == [f"c{i}" for i in range(5)]
    assert n.fine_grained == ["colour"]
    n2 = load_cslb(path, min_pf=4, min_concepts=5)
    assert n2.properties == ["is red", "is round"] and n2.fine_grained == ["colour", "is"]  # exact names
    assert n2.binary[:, 1].tolist() == [1, 1, 1, 1, 1] and n2.pf[0, 1] == 4


def test_extra_columns_and_blank_lines(tmp_path: Path) -> None:
    header = "concept\tfeature\tpf\tfeature type"
    rows = [f"c{i}\tis red\t5\tvisual perceptual" for i in range(5)] + [""]
    n = load_cslb(write_norms(tmp_path / "norms.dat", rows, header=header))
    assert n.shape == (5, 1)


def _expect_error(path: Path, line: int, *words: str, **kw) -> None:
    with pytest.raises(VspInputError) as err:
        load_cslb(path, **kw)
    msg = str(err.value)
    assert str(path) in msg and f"line {line}" in msg, msg
    for w in words:
        assert w in msg, msg


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.dat"
    p.write_bytes(b"")
    _expect_error(p, 1, "empty")


def test_header_only(tmp_path: Path) -> None:
    _expect_error(write_norms(tmp_path / "h.dat", []), 1, "no data rows")


def test_missing_column(tmp_path: Path) -> None:
    header = HEADER.replace("\tpf\t", "\tfreq\t")
    _expect_error(write_norms(tmp_path / "m.dat", [row("a", "is red", 5)], header=header), 1, "'pf'")


def test_non_numeric_pf(tmp_path: Path) -> None:
    rows = [row("a", "is red", 5), row("b", "is red", "five")]
    _expect_error(write_norms(tmp_path / "n.dat", rows), 3, "'five'")


def test_negative_pf(tmp_path: Path) -> None:
    _expect_error(write_norms(tmp_path / "neg.dat", [row("a", "is red", -1)]), 2, "'-1'")


def test_ragged_row(tmp_path: Path) -> None:
    rows = [row("a", "is red", 5), row("b", "is red", 5), "living\tvisual perceptual\tc\tis red\t5"]
    _expect_error(write_norms(tmp_path / "r.dat", rows), 4, "5 tab-separated fields")


def test_unknown_feature_type(tmp_path: Path) -> None:
    _expect_error(write_norms(tmp_path / "t.dat", [row("a", "is red", 5, "visual")]), 2, "'visual'")


def test_empty_concept(tmp_path: Path) -> None:
    _expect_error(write_norms(tmp_path / "e.dat", [row("a", "is red", 5), row("", "is red", 5)]), 3)


def test_not_utf8(tmp_path: Path) -> None:
    p = write_norms(tmp_path / "u.dat", [row("a", "is red", 5)])
    p.write_bytes(p.read_bytes() + row("caf\xe9", "is red", 5).encode("latin-1") + b"\r\n")
    _expect_error(p, 3, "UTF-8")


def test_nothing_left_after_filtering(tmp_path: Path) -> None:
    with pytest.raises(VspInputError, match="no property"):
        load_cslb(write_norms(tmp_path / "f.dat", [row("a", "is red", 5)]))


def test_bad_thresholds(tmp_path: Path) -> None:
    p = write_norms(tmp_path / "x.dat", [row("a", "is red", 5)])
    with pytest.raises(VspInputError, match="min_concepts"):
        load_cslb(p, min_concepts=0)
    with pytest.raises(VspInputError, match="min_pf"):
        load_cslb(p, min_pf=-1)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_cslb(tmp_path / "nope.dat")


# ----------------------------------------------------------------------------------------------- McRae


@pytest.fixture(scope="module")
def mcrae_path(shared_data: Path) -> Path:
    return shared_data / "mcrae" / "CONCS_FEATS_concstats_brm.xlsx"


def test_mcrae_real(mcrae_path: Path) -> None:
    n = load_mcrae(mcrae_path)
    assert n.shape == (539, 274)
    assert n.concepts == sorted(n.concepts) and n.properties == sorted(n.properties)
    assert np.array_equal(n.binary, (n.pf > 0).astype(np.uint8))
    assert n.pf[n.binary == 1].min() >= 5 and n.pf.max() <= 30
    assert n.binary.sum(axis=0).min() >= 5
    s = summary(n)
    assert sum(s["feature_classes"].values()) == 274 and sum(s["fine_grained"].values()) == 274
    assert all(v > 0 for v in s["feature_classes"].values())
    assert all(v > 0 for v in s["fine_grained"].values())
    fine = dict(zip(n.properties, n.fine_grained, strict=True))
    assert fine["is_red"] == "colour" and fine["is_small"] == "shape/size" and fine["a_bird"] == "is"
    assert fine["has_wings"] == "has" and fine["made_of_metal"] == "made-of" and fine["beh_-_flies"] == "does"
    assert fine["used_for_cutting"] == "is"
    assert n.feature_class[n.properties.index("a_bird")] == "taxonomic"


@pytest.mark.parametrize(
    ("feature", "cls", "br", "expected"),
    [
        ("is_red", "visual perceptual", "visual-colour", "colour"),
        ("is_round", "visual perceptual", "visual-form_and_surface", "shape/size"),
        ("different_sizes", "visual perceptual", "visual-form_and_surface", "shape/size"),
        ("has_a_long_neck", "visual perceptual", "visual-form_and_surface", "has"),
        ("made_of_wood", "visual perceptual", "visual-form_and_surface", "made-of"),
        ("an_animal", "taxonomic", "taxonomic", "is"),
        ("clothing", "taxonomic", "taxonomic", "is"),
        ("worn_on_feet", "functional", "function", "is"),
        ("hunted_by_people", "encyclopaedic", "encyclopaedic", "is"),
        ("beh_-_flies", "visual perceptual", "visual-motion", "does"),
        ("lives_in_water", "encyclopaedic", "encyclopaedic", "does"),
    ],
)
def test_mcrae_fine_grained_type(feature: str, cls: str, br: str, expected: str) -> None:
    assert mcrae_fine_grained_type(feature, cls, br) == expected


def test_mcrae_br_labels_map_to_classes() -> None:
    assert set(MCRAE_BR_CLASSES.values()) == set(FEATURE_CLASSES)


def _write_xlsx(path: Path, rows: list[list], sheet: str = "concepts_features") -> Path:
    openpyxl = pytest.importorskip("openpyxl")
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = sheet
    for r in rows:
        ws.append(r)
    wb.save(path)
    return path


MCRAE_HEADER = ["Concept", "Feature", "WB_Label", "BR_Label", "Prod_Freq"]


def test_mcrae_synthetic(tmp_path: Path) -> None:
    rows = [MCRAE_HEADER] + [[f"c{i}", "is_red", "x", "visual-colour", 10] for i in range(5)]
    rows += [["c0", "is_red", "x", "visual-colour", 12], [None, None, None, None, None]]
    n = load_mcrae(_write_xlsx(tmp_path / "m.xlsx", rows))
    assert n.shape == (5, 1) and n.pf[0, 0] == 12 and n.fine_grained == ["colour"]


def test_mcrae_malformed(tmp_path: Path) -> None:
    bad_pf = [
        MCRAE_HEADER,
        ["a", "is_red", "x", "visual-colour", 10],
        ["b", "is_red", "x", "visual-colour", "ten"],
    ]
    p = _write_xlsx(tmp_path / "pf.xlsx", bad_pf)
    with pytest.raises(VspInputError, match=r"row 3: Prod_Freq 'ten'") as err:
        load_mcrae(p)
    assert str(p) in str(err.value)
    p = _write_xlsx(tmp_path / "col.xlsx", [MCRAE_HEADER[:-1], ["a", "is_red", "x", "visual-colour"]])
    with pytest.raises(VspInputError, match=r"row 1: missing column\(s\) 'Prod_Freq'"):
        load_mcrae(p)
    p = _write_xlsx(tmp_path / "br.xlsx", [MCRAE_HEADER, ["a", "is_red", "x", "visual", 5]])
    with pytest.raises(VspInputError, match=r"row 2: unknown BR_Label 'visual'"):
        load_mcrae(p)
    p = _write_xlsx(tmp_path / "sheet.xlsx", [MCRAE_HEADER], sheet="other")
    with pytest.raises(VspInputError, match="no sheet 'concepts_features'"):
        load_mcrae(p)
    p = tmp_path / "not.xlsx"
    p.write_text("not a workbook")
    with pytest.raises(VspInputError, match="not a readable .xlsx"):
        load_mcrae(p)


# ------------------------------------------------------------------------------- hostile or broken inputs


def test_pf_with_underscores_is_not_read_as_a_number(tmp_path: Path) -> None:
    # Python's float() reads "1_2" as 12.0
    rows = [row("a", "is red", 5), row("b", "is red", "1_2")]
    _expect_error(write_norms(tmp_path / "us.dat", rows), 3, "'1_2'")


@pytest.mark.parametrize("value", ["1e308", "1e39", "1e7", "inf", "nan", "0x10", "\u0665"])
def test_non_finite_or_absurd_pf_is_refused(tmp_path: Path, value: str) -> None:
    # 1e308 is a finite float64 but inf as float32; \u0665 is ARABIC-INDIC DIGIT FIVE (float() reads 5.0)
    _expect_error(write_norms(tmp_path / "big.dat", [row("a", "is red", value)]), 2, repr(value))


def test_plain_decimal_pf_forms_are_read(tmp_path: Path) -> None:
    rows = [row(f"c{i}", "is red", v) for i, v in enumerate(["5", "5.0", "5.", "+5", "0.5e1"])]
    n = load_cslb(write_norms(tmp_path / "ok.dat", rows))
    assert n.shape == (5, 1) and n.pf[:, 0].tolist() == [5.0] * 5


def test_cr_only_line_endings_are_named(tmp_path: Path) -> None:
    p = write_norms(tmp_path / "mac.dat", [row(f"c{i}", "is red", 5) for i in range(5)], eol="\r")
    _expect_error(p, 1, "CR", "LF")


def test_duplicate_columns_are_refused(tmp_path: Path) -> None:
    header = HEADER + "\tpf"
    rows = [row(f"c{i}", "is red", 5) + "\t7" for i in range(5)]
    _expect_error(write_norms(tmp_path / "dup.dat", rows, header=header), 1, "'pf'", "5 and 8")
    header = HEADER.replace("domain", "concept")
    _expect_error(write_norms(tmp_path / "dup2.dat", rows, header=header), 1, "'concept'", "1 and 3")


def test_mcrae_absurd_pf_and_duplicate_columns(tmp_path: Path) -> None:
    p = _write_xlsx(tmp_path / "big.xlsx", [MCRAE_HEADER, ["a", "is_red", "x", "visual-colour", 1e308]])
    with pytest.raises(VspInputError, match=r"row 2: Prod_Freq"):
        load_mcrae(p)
    rows = [[*MCRAE_HEADER, "Concept"], ["a", "is_red", "x", "visual-colour", 5, "b"]]
    p = _write_xlsx(tmp_path / "dup.xlsx", rows)
    with pytest.raises(VspInputError, match=r"row 1: column 'Concept' appears more than once"):
        load_mcrae(p)


# ------------------------------------------------------------------------ fine-grained vocabularies


def test_cli_norms_json_counts_on_the_real_norms(cslb_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from vsp.cli import app

    res = CliRunner().invoke(app, ["norms", "--norms", str(cslb_path), "--json"])
    assert res.exit_code == 0, res.output
    fine = json.loads(res.stdout)["fine_grained"]
    assert fine == {"colour": 16, "shape/size": 13, "is": 170, "has": 102, "does": 70, "made-of": 19}


def test_own_vocabularies_from_files_and_lists(cslb_path: Path, tmp_path: Path, caplog) -> None:
    colours = tmp_path / "colours.txt"
    colours.write_text("# my colours\nis red\n\n  is GREEN  \ndoes come in colours\nis a bird\nis nowhere\n")
    shapes = tmp_path / "shapes.txt"
    shapes.write_text("is big_large\nis small\n")
    with caplog.at_level("WARNING", logger="vsp.data.norms"):
        n = load_cslb(cslb_path, colour_vocabulary=colours, shape_vocabulary=str(shapes))
    fine = dict(zip(n.properties, n.fine_grained, strict=True))
    assert {p for p, t in fine.items() if t == "colour"} == {"is red", "is green", "does come in colours"}
    assert {p for p, t in fine.items() if t == "shape/size"} == {"is big_large", "is small"}
    assert fine["is a bird"] == "is"  # named, but taxonomic: keeps its relation type
    assert fine["is shiny"] == "is" and fine["is long"] == "is"
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "2 of 5 colour vocabulary entries" in warned and "'is nowhere'" in warned
    assert "'is a bird' (not visual perceptual)" in warned
    # a list of names works the same; the defaults are the authors' lists
    same = load_cslb(cslb_path, colour_vocabulary=["is red", "is green", "does come in colours"])
    assert summary(same)["fine_grained"]["colour"] == 3 and summary(same)["fine_grained"]["shape/size"] == 13


def test_bad_vocabularies_are_refused(tmp_path: Path) -> None:
    norms = write_norms(tmp_path / "n.dat", [row(f"c{i}", "is red", 5) for i in range(5)])
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(VspInputError, match=r"empty.txt: no property names"):
        load_cslb(norms, colour_vocabulary=empty)
    with pytest.raises(VspInputError, match=r"'is red' in both the colour"):
        load_cslb(norms, shape_vocabulary=["is red"])
    with pytest.raises(FileNotFoundError):
        load_cslb(norms, colour_vocabulary=tmp_path / "missing.txt")


def test_cli_norms_vocabulary_files(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from vsp.cli import app

    rows = [row(f"c{i}", "is red", 5) for i in range(5)] + [row(f"c{i}", "is round", 6) for i in range(5)]
    norms = write_norms(tmp_path / "n.dat", rows)
    (tmp_path / "c.txt").write_text("is round\n")
    (tmp_path / "s.txt").write_text("is red\n")
    args = ["norms", "--norms", str(norms), "--json"]
    default = json.loads(CliRunner().invoke(app, args).stdout)["fine_grained"]
    assert default["colour"] == 1 and default["is"] == 1 and default["shape/size"] == 0
    res = CliRunner().invoke(
        app, [*args, "--colour-words", str(tmp_path / "c.txt"), "--shape-words", str(tmp_path / "s.txt")]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["fine_grained"] == {
        "colour": 1,
        "shape/size": 1,
        "is": 0,
        "has": 0,
        "does": 0,
        "made-of": 0,
    }
    bad = CliRunner().invoke(
        app, [*args, "--colour-words", str(tmp_path / "c.txt"), "--shape-words", str(tmp_path / "c.txt")]
    )
    assert bad.exit_code == 2 and "in both the colour" in bad.output


@pytest.mark.s3
def test_vocabulary_reads_s3(s3_uri: str) -> None:
    from vsp.data.norms import load_vocabulary, property_key
    from vsp.io.store import open_store

    open_store(s3_uri).write_bytes("colours.txt", b"# colours\nis red\n\nis_green\n")
    assert load_vocabulary(f"{s3_uri}/colours.txt") == {property_key("is red"), property_key("is_green")}
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        load_vocabulary(f"{s3_uri}/nope.txt")
