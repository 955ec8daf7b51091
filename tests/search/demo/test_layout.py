"""The demo's cache naming, its reset, and its choice of dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import FIXTURE

from search.demo import layout as layout_module
from search.demo.layout import DemoLayout, DemoOptions, choose_dataset, layout_for, reset_outputs


def test_layout_for_names_the_cache_for_what_it_holds(tmp_path: Path) -> None:
    first = layout_for(tmp_path, FIXTURE, DemoOptions(limit=100))
    assert first.cache.parent == tmp_path / "caches"
    assert first.cache.name.startswith("fairface-dlib-resnet-")
    assert first.cache.name.endswith("-limit100-views1")
    assert layout_for(tmp_path, FIXTURE, DemoOptions(limit=100)) == first
    others = [
        layout_for(tmp_path, FIXTURE, DemoOptions(limit=8)),
        layout_for(tmp_path, FIXTURE, DemoOptions(limit=100, augment_views=0)),
        layout_for(tmp_path, FIXTURE, DemoOptions(limit=100, base="vggface", weights="random:0")),
        layout_for(tmp_path, FIXTURE, DemoOptions(limit=100, base="vggface", weights="random:1")),
        layout_for(tmp_path, tmp_path / "fairface", DemoOptions(limit=100)),
    ]
    assert len({first.cache, *(other.cache for other in others)}) == 6


def test_reset_outputs_keeps_only_the_cache(tmp_path: Path) -> None:
    layout = DemoLayout(tmp_path, tmp_path / "caches" / "c")
    folders = (layout.cache, layout.artifacts, layout.export / "report", layout.paper_export)
    for folder in folders:
        folder.mkdir(parents=True)
        (folder / "x").write_text("x", encoding="utf-8")
    layout.database.write_text("db", encoding="utf-8")
    tmp_path.joinpath("study.db-journal").write_text("j", encoding="utf-8")
    assert reset_outputs(layout) == ["study.db", "artifacts", "export", "export-paper"]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "caches",
        "caches/c",
        "caches/c/x",
    ]


def test_choose_dataset_without_shared_images_falls_back_to_the_fixture_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(layout_module, "SHARED_FAIRFACE", tmp_path / "absent")
    chosen = choose_dataset(None)
    assert chosen.root == layout_module.FIXTURE_FAIRFACE
    assert chosen.note == (
        f"{tmp_path / 'absent'} is absent, so the demo falls back to the fixture's 56 images: too few for "
        "meaningful accuracies; pass --dataset ROOT with a FairFace root for real figures."
    )
    assert choose_dataset(FIXTURE).note is None
