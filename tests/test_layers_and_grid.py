"""Input contract of the core: band matching, units, S2 offset, target grid."""

from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, osr

from conftest import LOCATION_A
from fusedeo.errors import BandMismatchError, GridError
from fusedeo.raster.bands import Sensor, canonical_band_name, channel_index
from fusedeo.raster.layers import LayerSpec, inspect_layer
from fusedeo.raster.stack import build_season_stack
from fusedeo.reporting import LoggingReporter

S2_SUMMER = LOCATION_A / "s2l2a_summer.tif"
S1_SUMMER = LOCATION_A / "s1_summer.tif"


def spec(path: Path, sensor: Sensor = Sensor.S2L2A, season: str = "summer") -> LayerSpec:
    return LayerSpec(f"{sensor.name}_{season.upper()}", season, sensor, str(path))


def copy_with(path: Path, source: Path, values: np.ndarray, data_type: int,
              nodata: float | None = None) -> Path:
    """Write ``values`` with the georeference and band descriptions of ``source``."""
    original = gdal.Open(str(source))
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), original.RasterXSize, original.RasterYSize,
                                                   values.shape[0], data_type)
    dataset.SetGeoTransform(original.GetGeoTransform())
    dataset.SetProjection(original.GetProjection())
    for index in range(values.shape[0]):
        band = dataset.GetRasterBand(index + 1)
        band.SetDescription(original.GetRasterBand(index + 1).GetDescription())
        if nodata is not None:
            band.SetNoDataValue(nodata)
        band.WriteArray(values[index])
    dataset = None
    return path


@pytest.mark.parametrize(("text", "sensor", "expected"), [
    ("B02", Sensor.S2L2A, "B02"),
    ("B2", Sensor.S2L2A, "B02"),
    ("b8a", Sensor.S2L2A, "B8A"),
    ("B08 (842 nm)", Sensor.S2L1C, "B08"),
    ("red", Sensor.S2L2A, "B04"),
    ("swir16", Sensor.S2L2A, "B11"),
    ("B10", Sensor.S2L1C, "B10"),
    ("B10", Sensor.S2L2A, None),
    ("Band 1", Sensor.S2L2A, None),
    ("VV", Sensor.S1, "VV"),
    ("sigma0_vh_db", Sensor.S1, "VH"),
    ("", Sensor.S1, None),
])
def test_canonical_band_name(text, sensor, expected):
    assert canonical_band_name(text, sensor) == expected


def test_fixture_bands_matched_and_filled():
    reporter = LoggingReporter()
    layer = inspect_layer(spec(S2_SUMMER), "auto", reporter)
    assert layer.band_indices["B02"] == 1
    assert layer.band_indices["B12"] == 10
    assert layer.filled_bands == ["B01", "B09"]
    assert any("B01, B09 missing" in text for level, text in reporter.messages if level == "warning")


def test_full_count_without_descriptions_assumes_order(tmp_path):
    original = gdal.Open(str(S2_SUMMER))
    dataset = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "t12.tif"), 64, 64, 12, gdal.GDT_UInt16)
    dataset.SetGeoTransform(original.GetGeoTransform())
    dataset.SetProjection(original.GetProjection())
    for index in range(12):
        dataset.GetRasterBand(index + 1).WriteArray(np.full((64, 64), 100 * (index + 1), dtype=np.uint16))
    dataset = None
    reporter = LoggingReporter()
    layer = inspect_layer(spec(tmp_path / "t12.tif"), "without_offset", reporter)
    assert layer.band_indices["B01"] == 1
    assert layer.band_indices["B12"] == 12
    assert any("assuming the 12 bands are in the standard order" in text for _, text in reporter.messages)
    values, _ = build_season_stack([spec(tmp_path / "t12.tif")], "without_offset", 16, 16, reporter).read(0, 0, 4, 4)
    assert values[1, channel_index(Sensor.S2L2A, "B09"), 0, 0] == 1000.0
    assert values[1, channel_index(Sensor.S2L2A, "B11"), 0, 0] == 1100.0


def test_duplicate_band_descriptions_rejected(tmp_path):
    path = tmp_path / "dup.tif"
    gdal.Translate(str(path), str(S2_SUMMER), bandList=[1, 1])
    with pytest.raises(BandMismatchError, match=r"bands 1 and 2 are both described as B02"):
        inspect_layer(spec(path), "auto", LoggingReporter())


def test_float_reflectance_scaled_to_dn(tmp_path):
    dn = gdal.Open(str(S2_SUMMER)).ReadAsArray().astype(np.float32)
    path = copy_with(tmp_path / "reflectance.tif", S2_SUMMER, dn / 10000.0, gdal.GDT_Float32)
    reporter = LoggingReporter()
    stack = build_season_stack([spec(path)], "without_offset", 16, 16, reporter)
    values, _ = stack.read(0, 0, 64, 64)
    summer = 1
    np.testing.assert_allclose(values[summer, channel_index(Sensor.S2L2A, "B04")], dn[2], atol=0.5)
    assert any("multiplying by 10000" in text for level, text in reporter.messages if level == "warning")


def test_s1_linear_power_converted_to_db(tmp_path):
    decibels = gdal.Open(str(S1_SUMMER)).ReadAsArray()
    path = copy_with(tmp_path / "linear.tif", S1_SUMMER, 10 ** (decibels / 10), gdal.GDT_Float32)
    reporter = LoggingReporter()
    layer = inspect_layer(spec(path, Sensor.S1), "auto", reporter)
    assert layer.to_db
    assert any("linear power" in text for level, text in reporter.messages if level == "warning")
    stack = build_season_stack([spec(path, Sensor.S1)], "auto", 8, 8, reporter)
    values, _ = stack.read(0, 0, 32, 32)
    reference = build_season_stack([spec(S1_SUMMER, Sensor.S1)], "auto", 8, 8, reporter).read(0, 0, 32, 32)[0]
    # Bilinear resampling in linear power and in dB differ slightly; within 1 dB.
    np.testing.assert_allclose(values[1, 0], reference[1, 0], atol=1.0)


def test_s1_warped_to_s2_grid():
    reporter = LoggingReporter()
    stack = build_season_stack([spec(S2_SUMMER), spec(S1_SUMMER, Sensor.S1)], "auto", 16, 16, reporter)
    assert (stack.grid.width, stack.grid.height, stack.grid.pixel_size) == (64, 64, 10.0)
    values, valid = stack.read(0, 0, 64, 64)
    s1 = gdal.Open(str(S1_SUMMER)).ReadAsArray()
    # The centre of 10 m pixel (10, 10) lies at 20 m pixel coordinate 4.75 in both
    # axes, so bilinear weights are 0.25 for pixel 4 and 0.75 for pixel 5.
    weights = np.array([0.25, 0.75])
    expected = weights @ s1[0, 4:6, 4:6] @ weights
    vv = values[1, channel_index(Sensor.S1, "VV")]
    assert vv[10, 10] == pytest.approx(expected, abs=1e-3)
    dn = gdal.Open(str(S2_SUMMER)).ReadAsArray()
    np.testing.assert_array_equal(values[1, channel_index(Sensor.S2L2A, "B08")], dn[6].astype(np.float32))
    assert np.isnan(values[1, channel_index(Sensor.S2L2A, "B01")]).all()
    assert valid[1].all()
    assert not valid[0].any()


def test_offset_read_from_product_metadata(tmp_path):
    product = tmp_path / "S2B_MSIL2A_20230601.SAFE"
    granule = product / "GRANULE" / "L2A_T31UDS" / "IMG_DATA"
    granule.mkdir(parents=True)
    (product / "MTD_MSIL2A.xml").write_text(
        "<Level-2A_User_Product><General_Info><Product_Info><PROCESSING_BASELINE>05.09</PROCESSING_BASELINE>"
        "</Product_Info></General_Info><Product_Image_Characteristics><BOA_ADD_OFFSET_VALUES_LIST>"
        "<BOA_ADD_OFFSET band_id='0'>-1000</BOA_ADD_OFFSET></BOA_ADD_OFFSET_VALUES_LIST>"
        "</Product_Image_Characteristics></Level-2A_User_Product>")
    dn = gdal.Open(str(S2_SUMMER)).ReadAsArray()
    shifted = np.where(dn > 0, dn + 1000, 0).astype(np.uint16)
    path = copy_with(granule / "stack.tif", S2_SUMMER, shifted, gdal.GDT_UInt16, nodata=0)
    reporter = LoggingReporter()
    stack = build_season_stack([spec(path)], "auto", 16, 16, reporter)
    values, _ = stack.read(0, 0, 64, 64)
    np.testing.assert_array_equal(values[1, channel_index(Sensor.S2L2A, "B03")], dn[1].astype(np.float32))
    assert any("add-offset values [-1000.0]: subtracting 1000 DN" in text for _, text in reporter.messages)


def test_auto_offset_without_metadata_warns_on_high_floor(tmp_path):
    dn = gdal.Open(str(S2_SUMMER)).ReadAsArray()
    path = copy_with(tmp_path / "shifted.tif", S2_SUMMER, (dn + 1000).astype(np.uint16), gdal.GDT_UInt16)
    reporter = LoggingReporter()
    layer = inspect_layer(spec(path), "auto", reporter)
    assert layer.offset_dn == 0.0
    assert any("suggests that the offset is present" in text for level, text in reporter.messages
               if level == "warning")


def test_geographic_layer_reprojected_to_utm(tmp_path):
    geographic = tmp_path / "wgs84.tif"
    gdal.Warp(str(geographic), str(S2_SUMMER), dstSRS="EPSG:4326")
    reporter = LoggingReporter()
    stack = build_season_stack([spec(geographic)], "auto", 16, 16, reporter)
    srs = osr.SpatialReference(wkt=stack.grid.crs_wkt)
    assert srs.GetAuthorityCode(None) == "32631"
    degrees = abs(gdal.Open(str(geographic)).GetGeoTransform()[5])
    assert stack.grid.pixel_size == round(degrees * 110_574.0, 1)
    assert any("geographic CRS" in text and "EPSG:32631" in text for level, text in reporter.messages
               if level == "warning")


def test_extent_outside_layers_rejected():
    from fusedeo.raster.grid import Bounds

    with pytest.raises(GridError, match=r"EXTENT: .* does not overlap the layers' common area"):
        build_season_stack([spec(S2_SUMMER)], "auto", 16, 16, LoggingReporter(),
                           extent=Bounds(0, 0, 10, 10))


def test_sentinel1_layer_given_as_s2_named():
    with pytest.raises(BandMismatchError, match=r"look like Sentinel-1 bands; give this layer as S1_SUMMER "
                                                r"instead of S2L2A_SUMMER"):
        inspect_layer(spec(S1_SUMMER, Sensor.S2L2A), "auto", LoggingReporter())


def test_sentinel2_layer_given_as_s1_named():
    with pytest.raises(BandMismatchError, match=r"look like Sentinel-2 bands; give this layer as S2L2A_SUMMER "
                                                r"or S2L1C_SUMMER"):
        inspect_layer(spec(S2_SUMMER, Sensor.S1), "auto", LoggingReporter())
