"""`reidkd data check` on a correct and on a deliberately broken Market-1501 fixture."""
from helpers import reidkd


def market_fixture(root, jpeg):
    folder = root / "Market-1501-v15.09.15"
    files = {
        "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg", "0007_c6s2_000123_02.jpg"],
        "query": ["0001_c1s1_001051_00.jpg", "0004_c2s1_001051_00.jpg"],
        "bounding_box_test": ["-1_c1s1_000401_03.jpg", "0000_c3s1_000151_01.jpg", "0001_c5s1_001351_02.jpg",
                              "0004_c4s1_001351_02.jpg"],
    }
    for sub, names in files.items():
        for i, n in enumerate(names):
            jpeg(folder / sub / n, i)
    return folder


def test_correct_fixture_prints_the_table_and_exits_0(tmp_path, jpeg):
    market_fixture(tmp_path, jpeg)
    result = reidkd("data", "check", "market1501", "--root", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "market1501: OK" in out and "problem" not in out
    assert "official images" in out and "12936" in out and "(differs)" in out  # a fixture, not the full set
    train = next(line for line in out.splitlines() if line.startswith("train"))
    assert train.split()[:4] == ["train", "3", "2", "3"]  # images, ids, cameras


def test_broken_fixture_names_each_problem_on_one_line_and_exits_1(tmp_path, jpeg):
    folder = market_fixture(tmp_path, jpeg)
    jpeg(folder / "bounding_box_train" / "IMG_0042.jpg")  # misnamed
    (folder / "bounding_box_test" / "0001_c5s1_001351_02.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")  # corrupt
    (folder / "bounding_box_test" / "0004_c4s1_001351_02.jpg").unlink()  # query id 4 has no gallery image left
    result = reidkd("data", "check", "market1501", "--root", str(tmp_path))
    assert result.returncode == 1
    problems = [line for line in result.stdout.splitlines() if line.startswith("problem:")]
    assert len(problems) == 3, result.stdout
    assert "naming pattern" in problems[0] and "IMG_0042.jpg" in problems[0]
    assert "absent from the gallery" in problems[1] and "4" in problems[1]
    assert "cannot be decoded" in problems[2] and "0001_c5s1_001351_02.jpg" in problems[2]
    assert "market1501: 3 problems" in result.stdout


def test_missing_folder_is_one_problem_line(tmp_path, jpeg):
    folder = market_fixture(tmp_path, jpeg)
    for f in (folder / "query").iterdir():
        f.unlink()
    (folder / "query").rmdir()
    result = reidkd("data", "check", "market1501", "--root", str(tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    problems = [line for line in result.stdout.splitlines() if line.startswith("problem:")]
    assert len(problems) == 1 and str(folder / "query") in problems[0]


def test_check_passes_loader_options_and_reports_camera_less_data(tmp_path, jpeg):
    rows = [("a.jpg", 1, "train"), ("b.jpg", 1, "train"), ("c.jpg", 2, "query"), ("d.jpg", 2, "gallery")]
    for i, (name, _, _) in enumerate(rows):
        jpeg(tmp_path / name, i)
    (tmp_path / "list.csv").write_text("path,id,camera,split\n" + "".join(f"{n},{p},,{s}\n" for n, p, s in rows))
    result = reidkd("data", "check", "custom_csv", "--root", str(tmp_path), "--set", "data.custom_csv.path=list.csv")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no camera ids" in result.stdout and "custom_csv: OK" in result.stdout
    unknown = reidkd("data", "check", "nosuchset", "--root", str(tmp_path))
    assert unknown.returncode == 2 and "unknown dataset" in unknown.stderr


def test_truncated_jpeg_is_a_problem(tmp_path, jpeg):
    folder = market_fixture(tmp_path, jpeg)
    victim = folder / "bounding_box_test" / "0000_c3s1_000151_01.jpg"
    jpeg(victim, 7, size=64)
    victim.write_bytes(victim.read_bytes()[:-200])  # decodes with a warning, rows missing
    result = reidkd("data", "check", "market1501", "--root", str(tmp_path))
    assert result.returncode == 1
    problems = [line for line in result.stdout.splitlines() if line.startswith("problem:")]
    assert len(problems) == 1 and "truncated" in problems[0] and victim.name in problems[0], result.stdout
