import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from vsp.cli import app

runner = CliRunner()


def test_norms_json_on_real_cslb(cslb_path):
    res = runner.invoke(app, ["norms", "--norms", str(cslb_path), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["concepts"] == 638 and out["properties"] == 390
    assert out["feature_classes"] == {
        "taxonomic": 46,
        "visual perceptual": 156,
        "other perceptual": 29,
        "functional": 94,
        "encyclopaedic": 65,
    }
    assert sum(out["fine_grained"].values()) == 390


def test_norms_bad_file_names_file_and_line(tmp_path):
    bad = tmp_path / "norms.dat"
    bad.write_text(
        "domain\tfeature type\tconcept\tfeature\tpf\r\nx\tvisual perceptual\tcat\thas fur\tlots\r\n"
    )
    res = runner.invoke(app, ["norms", "--norms", str(bad)])
    assert res.exit_code == 2
    assert "norms.dat" in res.output and "2" in res.output


def test_images_validate_reports_exactly_the_two_bad_files(tmp_path):
    root = tmp_path / "imgs"
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 50, 4), dtype=np.uint8), mode="CMYK").save(
        root / "cat" / "cmyk.jpg"
    )
    Image.fromarray(rng.integers(0, 255, (40, 50), dtype=np.uint8), mode="L").save(root / "dog" / "grey.png")
    (root / "cat" / "empty.jpg").write_bytes(b"")
    (root / "dog" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    res = runner.invoke(app, ["images", "validate", "--images", str(root), "--json"])
    assert res.exit_code == 1
    report = json.loads(res.stdout)
    bad = sorted(u["uri"].rsplit("/", 1)[1] for u in report["unreadable"])
    assert bad == ["corrupt.png", "empty.jpg"]
    assert report["n_images"] == 4 and report["n_readable"] == 2


def test_extract_refuses_other_configuration_on_same_store(tmp_path):
    from vsp.data.synthetic import generate_world

    world = generate_world(tmp_path / "w", n_concepts=4, images_per_concept=1, seed=0)
    args = [
        "extract",
        "--images",
        str(world.images_root),
        "--store",
        str(tmp_path / "s"),
        "--models",
        "alexnet",
        "--weights",
        "random",
        "--no-ray",
    ]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "4 images" in first.stdout
    assert "extract: 100%" in first.stderr and "1/1" in first.stderr  # the stage's progress bar (1 unit)
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "nothing to do" in again.stdout
    other = runner.invoke(app, [*args, "--seed", "1"])
    assert other.exit_code == 3
    assert "extract.seed" in other.output  # the run record names the run-file key that differs


def test_comma_separated_options_drop_blanks_and_convert():
    from vsp.cli.app import csv_list

    assert csv_list(None) is None and csv_list("") is None
    assert csv_list(" alexnet, ,resnet34,") == ("alexnet", "resnet34")
    assert csv_list("0.01, 1", float) == (0.01, 1.0)
