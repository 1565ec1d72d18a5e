"""Rendered DICOMweb over real sockets (uvicorn on a free port, httpx as the client), on SQLite
and PostgreSQL: objects enter through STOW-RS and come back as JPEG and PNG images.

What each rendered image should hold is computed here from the pixel values the test wrote,
with the formulas of PS3.3 C.11.2.1.2 written out again (not the bridge's code), and, for the
same file and the same window, compared with what Orthanc renders:

- the DICOMweb plugin's ``/dicom-web/.../frames/1/rendered?window=c,w,linear`` computes the
  LINEAR function in floats and rounds, as the bridge does: equal within ±1 (in practice 0);
- Orthanc's own ``/instances/{id}/frames/0/rendered`` ignores a ``window`` parameter (it
  answers with the header's window); it takes ``window-center`` and ``window-width`` and maps
  them as LINEAR_EXACT does, truncating to the gray level below instead of rounding. The
  bridge's ``linear-exact`` is therefore compared with it: equal within ±1 (the truncation).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from fastapi import FastAPI
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import JPEGLSLossless, RLELossless, generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bridge.adapters.http.app import create_app
from bridge.config.settings import Settings
from bridge.store.archive_models import AuditRecord, Instance
from tests.dicom_factories import UID_ROOT, ct_slice
from tests.http_harness import Api, running_api
from tests.integration.test_dicomweb import part10, split_multipart, stow
from tests.orthanc_peer import DICOMWEB_PLUGIN, running_orthanc
from tests.referral_harness import log_in_everyone, make_directory

pytestmark = pytest.mark.integration

STUDIES = "/dicomweb/studies"
PNG = {"Accept": "image/png"}


@pytest.fixture
def app(settings: Settings, session_factory: sessionmaker[Session]) -> FastAPI:
    return create_app(settings, session_factory)


@pytest.fixture
def api(app: FastAPI, session_factory: sessionmaker[Session]) -> Iterator[Api]:
    with running_api(app, session_factory) as served:
        yield served


# ------------------------------------------------------------------------------ objects


def ct(values: npt.NDArray[Any], *, study_uid: str | None = None, series_uid: str | None = None,
       number: int = 1, **attributes: Any) -> Dataset:
    """A CT object holding ``values`` (rows × columns, or frames × rows × columns)."""
    frames = values.shape[0] if values.ndim == 3 else 1
    rows, columns = values.shape[-2:]
    ds = ct_slice(study_uid=study_uid or generate_uid(prefix=UID_ROOT), series_uid=series_uid,
                  number=number, rows=rows, columns=columns, **attributes)
    signed = values.dtype.kind == "i"
    ds.PixelRepresentation = 1 if signed else 0
    ds.BitsStored, ds.HighBit = (16, 15) if values.dtype.itemsize == 2 else (8, 7)
    ds.BitsAllocated = values.dtype.itemsize * 8
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = np.ascontiguousarray(values).astype(values.dtype.newbyteorder("<")).tobytes()
    return ds


def colour(pixels: npt.NDArray[np.uint8], *, planar: int = 0, photometric: str = "RGB",
           stored: npt.NDArray[np.uint8] | None = None) -> Dataset:
    """A secondary-capture-like colour object of ``pixels`` (rows × columns × 3)."""
    rows, columns, _ = pixels.shape
    ds = ct_slice(study_uid=generate_uid(prefix=UID_ROOT), rows=rows, columns=columns)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = photometric
    ds.PlanarConfiguration = planar
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    data = stored if stored is not None else pixels
    ds.PixelData = (data.transpose(2, 0, 1) if planar else data).tobytes()
    return ds


def hu_ramp(rows: int = 48, columns: int = 64) -> npt.NDArray[np.uint16]:
    """Stored values 0..4000 over the image (−1024..2976 HU with the CT rescale)."""
    grid = np.add.outer(np.arange(rows) * 37, np.arange(columns) * 53) % 4001
    return grid.astype(np.uint16)


def linear(x: npt.NDArray[np.float64], c: float, w: float) -> npt.NDArray[np.float64]:
    """PS3.3 C.11.2.1.2.1 with y in 0..255, rounded half up."""
    y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255
    y = np.where(x <= c - 0.5 - (w - 1) / 2, 0, np.where(x > c - 0.5 + (w - 1) / 2, 255, y))
    return np.floor(y + 0.5)


def image_of(body: bytes) -> npt.NDArray[np.int64]:
    return np.asarray(Image.open(io.BytesIO(body))).astype(np.int64)


def instance_path(ds: Dataset) -> str:
    return (f"{STUDIES}/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}")


def stored(client: httpx.Client, *objects: Dataset) -> None:
    response = stow(client, [part10(ds) for ds in objects])
    assert response.status_code == 200, response.text


# ------------------------------------------------------------------------------ pixels


def test_ct_16_bit_with_the_header_window_and_an_explicit_one(api: Api) -> None:
    values = hu_ramp()
    ds = ct(values, RescaleSlope="1", RescaleIntercept="-1024", WindowCenter=["40", "300"],
            WindowWidth=["400", "1500"])
    hu = values.astype(np.float64) - 1024
    with api.client("integration") as client:
        stored(client, ds)
        default = client.get(f"{instance_path(ds)}/rendered")
        header = client.get(f"{instance_path(ds)}/rendered", headers=PNG)
        explicit = client.get(f"{instance_path(ds)}/frames/1/rendered",
                              params={"window": "1000,2000,linear", "accept": "image/png"})
        bare = client.get(f"{instance_path(ds)}/frames/1/rendered",
                          params={"window": "1000,2000"}, headers=PNG)
    assert default.status_code == 200, default.text
    assert default.headers["content-type"] == "image/jpeg"
    assert image_of(default.content).shape == (48, 64)
    assert header.headers["content-type"] == "image/png"
    assert (image_of(header.content) == linear(hu, 40, 400)).all()  # the first pair
    assert (image_of(explicit.content) == linear(hu, 1000, 2000)).all()
    assert bare.content == explicit.content  # linear when the function is left out


def test_signed_pixels_rescale_and_the_whole_range_without_a_window(api: Api) -> None:
    values = (hu_ramp().astype(np.int32) - 2000).astype(np.int16)  # −2000..2000 stored
    ds = ct(values, RescaleSlope="0.5", RescaleIntercept="100", WindowCenter=None,
            WindowWidth=None)
    with api.client("integration") as client:
        stored(client, ds)
        windowed = client.get(f"{instance_path(ds)}/rendered",
                              params={"window": "100,1001"}, headers=PNG)
        whole = client.get(f"{instance_path(ds)}/rendered", headers=PNG)
    modality = values.astype(np.float64) * 0.5 + 100
    assert (image_of(windowed.content) == linear(modality, 100, 1001)).all()
    shown = image_of(whole.content)  # no window: the frame's range, black to white
    assert shown[values == values.min()].max() == 0
    assert shown[values == values.max()].min() == 255
    expected = np.floor((modality - modality.min()) / np.ptp(modality) * 255 + 0.5)
    assert np.abs(shown - expected).max() <= 1


def test_monochrome1_is_inverted(api: Api) -> None:
    values = hu_ramp()
    two = ct(values, WindowCenter="2000", WindowWidth="4001", RescaleIntercept="0",
             RescaleSlope="1")
    one = ct(values, WindowCenter="2000", WindowWidth="4001", RescaleIntercept="0",
             RescaleSlope="1", PhotometricInterpretation="MONOCHROME1")
    with api.client("integration") as client:
        stored(client, two, one)
        normal = image_of(client.get(f"{instance_path(two)}/rendered", headers=PNG).content)
        inverted = image_of(client.get(f"{instance_path(one)}/rendered", headers=PNG).content)
    assert (inverted == 255 - normal).all()
    assert inverted[values == 0].min() == 255  # the lowest value shows white


def test_rgb_planar_and_ybr(api: Api) -> None:
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    y, cb, cr = (pixels[..., i].astype(np.float64) for i in range(3))
    ybr_as_rgb = np.clip(np.floor(np.stack(
        (y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
         y + 1.772 * (cb - 128)), axis=-1) + 0.5), 0, 255)
    interleaved, planar = colour(pixels), colour(pixels, planar=1)
    ybr = colour(pixels, photometric="YBR_FULL")
    with api.client("integration") as client:
        stored(client, interleaved, planar, ybr)
        answers = [image_of(client.get(f"{instance_path(ds)}/rendered", headers=PNG).content)
                   for ds in (interleaved, planar, ybr)]
        jpeg = client.get(f"{instance_path(interleaved)}/rendered", params={"quality": "95"})
    assert (answers[0] == pixels).all()
    assert (answers[1] == pixels).all()
    assert np.abs(answers[2] - ybr_as_rgb).max() <= 1
    assert image_of(jpeg.content).shape == (20, 30, 3)


def test_multi_frame_instances_and_frame_lists(api: Api) -> None:
    frames = np.stack([hu_ramp(16, 24) + k * 100 for k in range(3)]).astype(np.uint16)
    ds = ct(frames, WindowCenter="2000", WindowWidth="4000", RescaleIntercept="0",
            RescaleSlope="1")
    with api.client("integration") as client:
        stored(client, ds)
        whole = client.get(f"{instance_path(ds)}/rendered", headers=PNG)
        second = client.get(f"{instance_path(ds)}/frames/2/rendered", headers=PNG)
        listed = client.get(f"{instance_path(ds)}/frames/3,1/rendered",
                            headers={"Accept": 'multipart/related; type="image/png"'})
        beyond = client.get(f"{instance_path(ds)}/frames/4/rendered")
        zero = client.get(f"{instance_path(ds)}/frames/0/rendered")
        twice = client.get(f"{instance_path(ds)}/frames/1,1/rendered")
    expected = [linear(f.astype(np.float64), 2000, 4000) for f in frames]
    assert whole.headers["content-type"].startswith('multipart/related; type="image/png"')
    parts = split_multipart(whole)
    assert [h["content-type"] for h, _ in parts] == ["image/png"] * 3
    assert all((image_of(body) == e).all() for (_, body), e in zip(parts, expected, strict=True))
    assert (image_of(second.content) == expected[1]).all()
    assert [(image_of(b) == expected[i]).all() for (_, b), i in
            zip(split_multipart(listed), (2, 0), strict=True)] == [True, True]
    assert beyond.status_code == 404
    assert beyond.json()["location"] == "frames"
    assert (zero.status_code, twice.status_code) == (400, 400)


@pytest.mark.parametrize("syntax", [JPEGLSLossless, RLELossless], ids=["jpeg-ls", "rle"])
def test_a_losslessly_compressed_object_renders_like_the_original(api: Api,
                                                                  syntax: str) -> None:
    values = hu_ramp(40, 40)
    original = ct(values, WindowCenter="1500", WindowWidth="2500", RescaleIntercept="0",
                  RescaleSlope="1")
    packed = ct(values, study_uid=original.StudyInstanceUID, number=2,
                WindowCenter="1500", WindowWidth="2500", RescaleIntercept="0",
                RescaleSlope="1")
    packed.compress(syntax, generate_instance_uid=False)
    with api.client("integration") as client:
        stored(client, original, packed)
        plain = client.get(f"{instance_path(original)}/rendered", headers=PNG)
        decoded = client.get(f"{instance_path(packed)}/rendered", headers=PNG)
        again = client.get(f"{instance_path(packed)}/rendered", headers=PNG)  # cached frame
    with api.session_factory() as session:
        kept = session.execute(select(Instance.transfer_syntax_uid).where(
            Instance.sop_instance_uid == packed.SOPInstanceUID)).scalar_one()
    assert kept == syntax
    assert decoded.status_code == 200, decoded.text
    assert (image_of(decoded.content) == image_of(plain.content)).all()
    assert again.content == decoded.content


def test_the_same_window_as_orthanc_renders(api: Api, tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    values = (rng.normal(1100, 500, (96, 128)).clip(0, 4095)).astype(np.uint16)
    ds = ct(values, RescaleSlope="1", RescaleIntercept="-1024", WindowCenter="40",
            WindowWidth="400")
    data = part10(ds)
    frame = f"{instance_path(ds)}/frames/1/rendered"
    with running_orthanc(tmp_path / "orthanc", plugins=[DICOMWEB_PLUGIN]) as orthanc, \
            api.client("integration") as client:
        orthanc_id = orthanc.http.post("/instances", content=data).json()["ID"]
        stored(client, ds)
        for center, width in ((40, 400), (300, 1500), (-600, 1200)):
            ours = client.get(frame, params={"window": f"{center},{width},linear"},
                              headers=PNG)
            # Orthanc does not decode %2C in a query: the commas go in as they are.
            plugin = orthanc.http.get(
                f"/dicom-web{frame.removeprefix('/dicomweb')}?window={center},{width},linear",
                headers=PNG)
            exact = client.get(frame, params={"window": f"{center},{width},linear-exact"},
                               headers=PNG)
            core = orthanc.http.get(f"/instances/{orthanc_id}/frames/0/rendered",
                                    params={"window-center": center, "window-width": width},
                                    headers=PNG)
            assert plugin.status_code == core.status_code == 200, plugin.text
            assert np.abs(image_of(ours.content) - image_of(plugin.content)).max() <= 1
            assert np.abs(image_of(exact.content) - image_of(core.content)).max() <= 1


# ------------------------------------------------------------------------------ geometry


def test_viewport_scaling_regions_and_thumbnail_sizes(api: Api) -> None:
    values = hu_ramp(48, 64)
    ds = ct(values, WindowCenter="2000", WindowWidth="4000", RescaleIntercept="0",
            RescaleSlope="1")
    path = instance_path(ds)

    def size(url: str, viewport: str | None = None) -> tuple[int, ...]:
        params = {"viewport": viewport} if viewport else None
        answer = client.get(url, params=params, headers=PNG)
        assert answer.status_code == 200, answer.text
        return tuple(image_of(answer.content).shape)

    with api.client("integration") as client:
        stored(client, ds)
        assert size(f"{path}/rendered") == (48, 64)
        assert size(f"{path}/rendered", "32,32") == (24, 32)  # fits, aspect kept
        assert size(f"{path}/rendered", "100,30") == (30, 40)
        assert size(f"{path}/rendered", "256,256") == (192, 256)  # rendered: enlarged
        assert size(f"{path}/rendered", "10,10,8,4,16,8") == (5, 10)
        assert size(f"{path}/rendered", "16,8,8,4,16,8") == (8, 16)
        assert size(f"{path}/rendered", "64,64,60,40,,") == (64, 32)  # 4x8 to the edge
        assert size(f"{path}/thumbnail") == (48, 64)  # never enlarged
        assert size(f"{path}/thumbnail", "32,32") == (24, 32)
        assert size(f"{path}/frames/1/thumbnail", "16,100") == (12, 16)
        crop = client.get(f"{path}/rendered", params={"viewport": "16,8,8,4,16,8"},
                          headers=PNG)
        flipped = client.get(f"{path}/rendered", params={"viewport": "16,8,8,4,-16,-8"},
                             headers=PNG)
    expected = linear(values[4:12, 8:24].astype(np.float64), 2000, 4000)
    assert (image_of(crop.content) == expected).all()
    assert (image_of(flipped.content) == expected[::-1, ::-1]).all()


def test_study_and_series_resources(api: Api) -> None:
    study = generate_uid(prefix=UID_ROOT)
    series = generate_uid(prefix=UID_ROOT)
    slices = [ct(hu_ramp(16, 16) + 300 * n, study_uid=study, series_uid=series, number=n,
                 WindowCenter="2000", WindowWidth="4000") for n in range(1, 6)]
    other = ct(hu_ramp(8, 8), study_uid=study, WindowCenter="2000", WindowWidth="4000")
    with api.client("integration") as client:
        stored(client, *slices, other)
        whole = client.get(f"{STUDIES}/{study}/rendered", headers=PNG)
        one_series = client.get(f"{STUDIES}/{study}/series/{series}/rendered")
        thumbnail = client.get(f"{STUDIES}/{study}/series/{series}/thumbnail", headers=PNG)
        middle = client.get(f"{instance_path(slices[2])}/rendered", headers=PNG)
        study_thumbnail = client.get(f"{STUDIES}/{study}/thumbnail")
    assert len(split_multipart(whole)) == 6
    parts = split_multipart(one_series)
    assert [h["content-type"] for h, _ in parts] == ["image/jpeg"] * 5
    assert thumbnail.content == middle.content  # the middle slice, 16x16 (not enlarged)
    assert study_thumbnail.headers["content-type"] == "image/jpeg"


# ------------------------------------------------------------------------------ refusals


def test_bad_parameters_unknown_resources_and_media_types(api: Api) -> None:
    ds = ct(hu_ramp(8, 8))
    path = instance_path(ds)
    with api.client("integration") as client:
        stored(client, ds)
        bad = {query: client.get(f"{path}/rendered?{query}") for query in (
            "window=40", "window=40,0", "window=40,0.5,linear", "window=a,400",
            "window=40,400,cubic", "window=40,400&window=50,400", "viewport=0,10",
            "viewport=10", "viewport=10,10,1,1,1", "viewport=10,10,-1,0,4,4",
            "viewport=10,10,0,0,0,4", "viewport=10,10,8,0,4,4", "quality=0",
            "quality=101", "quality=high", "annotation=everything")}
        thumbnail_region = client.get(f"{path}/thumbnail?viewport=10,10,0,0,4,4")
        sigmoid = client.get(f"{path}/rendered?window=40,0.5,sigmoid")
        annotated = client.get(f"{path}/rendered?annotation=patient,technique")
        ignored = client.get(f"{path}/rendered?charset=utf-8&iccprofile=no&vendor=1")
        gif = client.get(f"{path}/rendered", headers={"Accept": "image/gif"})
        dicom = client.get(f"{path}/rendered", headers={"Accept": "application/dicom"})
        param_wins = client.get(f"{path}/rendered?accept=image/png",
                                headers={"Accept": "image/gif"})
        unknown = client.get(f"{STUDIES}/{ds.StudyInstanceUID}/series/1.2.3/rendered")
        bad_uid = client.get(f"{STUDIES}/not-a-uid/thumbnail")
    for query, answer in bad.items():
        assert answer.status_code == 400, (query, answer.text)
        assert set(answer.json()) == {"error", "detail", "location"}, query
    assert bad["window=40"].json()["location"] == "window"
    assert bad["viewport=10,10,8,0,4,4"].json()["location"] == "viewport"
    assert bad["quality=0"].json()["location"] == "quality"
    assert thumbnail_region.status_code == 400  # a thumbnail takes vw,vh only
    assert sigmoid.status_code == 200  # widths above 0 are fine for SIGMOID
    assert annotated.status_code == 200
    assert "annotation" in annotated.headers["warning"]
    assert ignored.status_code == 200
    assert (gif.status_code, dicom.status_code) == (406, 406)
    assert gif.json()["error"] == "not_acceptable"
    assert param_wins.headers["content-type"] == "image/png"
    assert unknown.status_code == 404
    assert bad_uid.status_code == 400


def test_a_clinician_renders_only_their_studies_and_each_read_is_audited(api: Api) -> None:
    make_directory(api.session_factory)
    ds = ct(hu_ramp(8, 8))
    clinics = log_in_everyone(api.url)
    try:
        stored(clinics["rad"], ds)  # the radiologist's upload: theirs to see
        urls = [f"{instance_path(ds)}/rendered", f"{instance_path(ds)}/frames/1/thumbnail",
                f"{STUDIES}/{ds.StudyInstanceUID}/thumbnail",
                f"{STUDIES}/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/rendered"]
        own = [clinics["rad"].get(url) for url in urls]
        stranger = [clinics["gp2"].get(url) for url in urls]
    finally:
        clinics.close()
    assert [a.status_code for a in own] == [200] * 4
    assert [a.status_code for a in stranger] == [404] * 4
    with api.session_factory() as session:
        records = session.execute(select(AuditRecord).where(
            AuditRecord.action == "retrieve",
            AuditRecord.entity_id == ds.StudyInstanceUID)).scalars().all()
    by_actor = {r.actor for r in records}
    assert len(records) == 4 and len(by_actor) == 1  # the stranger found nothing to read
    assert {r.details["rendered"] for r in records} == {"image", "thumbnail"}
    assert all(r.details["path"].startswith(STUDIES) for r in records)


def test_a_stream_of_frame_reads_is_one_audit_record_per_window(api: Api) -> None:
    """A viewer scrolling asks for frame after frame: the first read is recorded (before the
    answer), the rest of the stream within ``audit_coalesce_seconds`` is the same access."""
    ds = ct(hu_ramp(8, 8))
    with api.client("integration") as client:
        stored(client, ds)
        answers = [client.get(f"{instance_path(ds)}/frames/1/rendered") for _ in range(5)]
    assert [a.status_code for a in answers] == [200] * 5
    with api.session_factory() as session:
        records = session.execute(select(AuditRecord).where(
            AuditRecord.action == "retrieve",
            AuditRecord.entity_id == ds.StudyInstanceUID)).scalars().all()
    assert len(records) == 1 and records[0].details["rendered"] == "image"
