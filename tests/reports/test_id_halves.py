"""Identity halves P / F of the warm-start protocol (reid_ir.data.imbalance.id_half)."""

from __future__ import annotations

import json

import pytest

from reid_ir.config import get_cfg
from reid_ir.data import imbalance as imb
from reid_ir.data.datasets import IMBALANCE_KEYS, register_datasets


def _records(num_ids: int, per_id: int = 6, first_pid: int = 1) -> list[tuple[str, int, int]]:
    return [
        (f"bounding_box_train/{pid:04d}_c{j % 3 + 1}s1_{j:06d}_01.jpg", pid, j % 3)
        for pid in range(first_pid, first_pid + num_ids)
        for j in range(per_id + pid % 5)
    ]


@pytest.mark.parametrize("num_ids", [2, 751, 750])
def test_halves_are_disjoint_cover_every_id_and_split_it_in_half(num_ids):
    pids = range(1, num_ids + 1)
    p, f = imb.id_half_pids(pids, "P"), imb.id_half_pids(pids, "F")
    assert not set(p) & set(f)
    assert sorted(p + f) == list(pids)
    assert len(p) == num_ids // 2 and len(f) == num_ids - num_ids // 2


def test_halves_are_deterministic_and_follow_the_documented_hash_rule():
    pids = list(range(1, 752))
    order = sorted(pids, key=lambda pid: imb._key(imb.ID_HALF_SEED, "id_half", pid))
    assert imb.id_half_pids(reversed(pids), "P") == sorted(order[:375])
    assert imb.id_half_pids(pids, "F") == sorted(order[375:])
    # not a contiguous block of pids: the halves are mixed over the id range
    assert min(imb.id_half_pids(pids, "P")) < 50 and max(imb.id_half_pids(pids, "P")) > 700


def test_restricting_records_keeps_whole_identities_in_their_order():
    records = _records(20)
    kept = imb.restrict_to_id_half(records, "F")
    assert {r[1] for r in kept} == set(imb.id_half_pids(range(1, 21), "F"))
    assert kept == [r for r in records if r in kept]
    assert all(
        sum(r[1] == pid for r in kept) == sum(r[1] == pid for r in records) for pid, *_ in kept
    )
    assert imb.restrict_to_id_half(records, "") == records


@pytest.mark.parametrize("profile", ["full", "long_tail", "balanced_control"])
def test_manifest_of_a_half_records_half_rule_and_seed(profile):
    records = _records(40)
    m = imb.make_manifest("market1501", records, profile, seed=3, id_half="F", rho=5.0)
    f_pids = set(imb.id_half_pids(range(1, 41), "F"))
    assert {int(k) for k in m["counts"]} <= f_pids
    if profile == "full":
        assert {int(k) for k in m["counts"]} == f_pids
    assert m["id_half"] == {
        "half": "F", "rule": imb.ID_HALF_RULE, "seed": imb.ID_HALF_SEED,
        "identities": 20, "images": sum(r[1] in f_pids for r in records),
    }  # fmt: skip
    assert m["source"] == {"images": len(records), "identities": 40}
    again = imb.make_manifest(
        "market1501", list(reversed(records)), profile, seed=3, id_half="F", rho=5.0
    )
    assert imb.dumps(again) == imb.dumps(m)


def test_the_split_seed_does_not_move_the_halves():
    records = _records(30)
    ids = [
        set(imb.make_manifest("market1501", records, "full", seed=s, id_half="P")["counts"])
        for s in (0, 7)
    ]
    assert ids[0] == ids[1]


def test_without_a_half_the_manifest_is_unchanged(tmp_path):
    records = _records(12)
    plain = imb.make_manifest("market1501", records, "long_tail", seed=0, rho=4.0)
    assert "id_half" not in plain
    assert plain == imb.make_manifest(
        "market1501", records, "long_tail", seed=0, id_half="", rho=4.0
    )
    path = imb.write_manifest(
        imb.make_manifest("market1501", records, "full", id_half="P"), tmp_path / "p.json"
    )
    assert imb.load_manifest(path)["id_half"]["half"] == "P"
    assert json.loads(path.read_text())["summary"]["identities"] == 6


def test_bad_half_is_refused_naming_the_key():
    with pytest.raises(
        ValueError, match=r"data.imbalance.id_half='Q': expected '' \(all identities\), 'P' or 'F'"
    ):
        imb.make_manifest("market1501", _records(4), "full", id_half="Q")
    with pytest.raises(ValueError, match="id_half='p'"):
        register_datasets(imbalance={"profile": "full", "id_half": "p"})
    with pytest.raises(ValueError, match="1 training identities"):
        imb.id_half_pids([5, 5], "P")


def test_id_half_is_a_config_key_passed_to_the_datasets():
    cfg = get_cfg()
    assert cfg.data.imbalance.id_half == "" and "id_half" in IMBALANCE_KEYS


def test_make_imbalance_split_tool_writes_a_half_manifest(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    from reid_ir.data.synthetic import generate_synthetic_dataset

    repo = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("mis", repo / "tools/make_imbalance_split.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    generate_synthetic_dataset(
        tmp_path / "market1501", layout="market", num_train_ids=10, num_test_ids=3,
        images_per_camera=2, num_cameras=2, num_distractors=0, image_size=(32, 16), seed=1,
    )  # fmt: skip
    argv = ["--root", str(tmp_path), "--profile", "full", "--id-half", "F"]
    assert tool.main([*argv, "--output", str(tmp_path / "f.json")]) == 0
    manifest = imb.load_manifest(tmp_path / "f.json")
    assert manifest["id_half"]["half"] == "F" and manifest["summary"]["identities"] == 5
    assert tool.split_name("market1501", manifest) == "market1501_halfF_full_seed0"
    capsys.readouterr()
