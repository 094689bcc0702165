"""Sensors from STAC: items' assets as one mosaic per modality, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pystac
import pytest

from sgma_cli.data.raster import inspect_raster
from sgma_cli.data.stac import parse_asset_option, read_stac
from sgma_cli.errors import RasterError, UsageError
from tests.data.test_sources import _same_pixels
from tests.tiled_region import RangeServer, TiledRegion, write_stac_items


class TestReadStac:
    def test_an_item_collection_with_relative_hrefs_is_a_mosaic(
        self, tiled_region: TiledRegion
    ) -> None:
        items = write_stac_items(tiled_region.root / "stac" / "items.json", tiled_region.rgb_tiles)
        found = read_stac(items, {"rgb": "visual"})
        source = found.sources["rgb"]
        assert len(source.members) == 9 and not source.remote
        assert source.members[0] == str(tiled_region.rgb_tiles[0].resolve())
        assert source.label == f"{items} asset 'visual' (9 items)"
        _same_pixels(source, tiled_region.merged / "rgb.tif")
        first = found.items[0]
        assert first.id == "rgb_r0c0"
        assert first.datetime == "2024-06-01T10:30:00+00:00"
        assert first.bbox is not None and 14.0 < first.bbox[0] < first.bbox[2] < 16.0
        assert first.describe().startswith("rgb_r0c0  [")

    def test_a_catalog_gives_every_item_under_it(self, tiled_region: TiledRegion) -> None:
        catalog = pystac.Catalog("region", "tiles")
        for tile in tiled_region.dsm_tiles:
            item = pystac.Item(
                tile.stem,
                None,
                None,
                None,
                {
                    "datetime": None,
                    "start_datetime": "2024-01-01T00:00:00Z",
                    "end_datetime": "2024-12-31T00:00:00Z",
                },
            )
            item.add_asset("dsm", pystac.Asset(str(tile)))
            catalog.add_item(item)
        catalog.normalize_hrefs(str(tiled_region.root / "catalog"))
        catalog.save(pystac.CatalogType.SELF_CONTAINED)
        found = read_stac(tiled_region.root / "catalog" / "catalog.json", {"dsm": "dsm"})
        assert sorted(i.id for i in found.items) == ["dsm_r0c0", "dsm_r1c0", "dsm_r1c1"]
        assert found.items[0].datetime == "2024-01-01T00:00:00Z/2024-12-31T00:00:00Z"
        assert found.items[0].bbox is None
        _same_pixels(found.sources["dsm"], tiled_region.merged / "dsm.tif")

    def test_an_item_collection_over_http_reads_its_assets_over_http(
        self, tiled_region: TiledRegion, range_server: RangeServer
    ) -> None:
        items = write_stac_items(tiled_region.root / "items.json", tiled_region.rgb_tiles)
        found = read_stac(range_server.url(items), {"rgb": "visual"})
        source = found.sources["rgb"]
        assert source.remote and source.members[0] == range_server.url(tiled_region.rgb_tiles[0])
        _same_pixels(source, tiled_region.merged / "rgb.tif")

    def test_an_item_without_the_asset_is_one_line(self, tiled_region: TiledRegion) -> None:
        items = write_stac_items(
            tiled_region.root / "items.json",
            tiled_region.rgb_tiles,
            drop={"rgb_r1c1": "visual"},
        )
        with pytest.raises(RasterError) as err:
            read_stac(items, {"rgb": "visual"})
        assert str(err.value) == (
            f"{items}: item 'rgb_r1c1' has no asset 'visual' (for rgb); its assets: thumbnail"
        )

    def test_a_missing_or_broken_catalog_is_one_line(
        self, tmp_path: Path, range_server: RangeServer
    ) -> None:
        url = range_server.url("nothing.json")
        with pytest.raises(RasterError) as err:
            read_stac(url, {"rgb": "visual"})
        assert str(err.value) == f"{url}: cannot read the STAC file (HTTP 404 not found)"
        with pytest.raises(RasterError, match="file not found"):
            read_stac(tmp_path / "nothing.json", {"rgb": "visual"})
        bad = tmp_path / "bad.json"
        bad.write_text("{not json")
        with pytest.raises(RasterError, match="not JSON"):
            read_stac(bad, {"rgb": "visual"})
        bad.write_text(json.dumps({"type": "Topology"}))
        with pytest.raises(RasterError, match="is not a STAC ItemCollection"):
            read_stac(bad, {"rgb": "visual"})
        bad.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
        with pytest.raises(RasterError, match="holds no items"):
            read_stac(bad, {"rgb": "visual"})


def test_asset_pairs_are_parsed_and_checked() -> None:
    assert parse_asset_option(["rgb=visual", " dsm = dsm "]) == {"rgb": "visual", "dsm": "dsm"}
    for bad in (["rgb"], ["rgb="], ["r-g=visual"], ["rgb=a", "rgb=b"]):
        with pytest.raises(UsageError):
            parse_asset_option(bad)
    with pytest.raises(UsageError, match="at least one --asset"):
        read_stac("items.json", {})


def test_inspect_accepts_a_stac_source(tiled_region: TiledRegion) -> None:
    items = write_stac_items(tiled_region.root / "items.json", tiled_region.dsm_tiles, key="dsm")
    info = inspect_raster(read_stac(items, {"dsm": "dsm"}).sources["dsm"])
    assert info.crs is not None and info.crs.to_epsg() == 3857
    assert np.isclose(info.nodata, -9999.0)
