"""Burned-in annotation rules (``mappings/deid/pixels.yaml``): is an object suspect, which
rule cleans it, and the blanking of native pixel data (every frame, every sample)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

from bridge.mapping.tables import TableError, read_table


@dataclass(frozen=True, slots=True)
class CleanRule:
    name: str
    regions: tuple[tuple[int, int, int, int], ...]
    modality: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    rows: int | None = None
    columns: int | None = None
    sop_class: str | None = None

    def matches(self, ds: Dataset) -> bool:
        return (_same(self.modality, ds.get("Modality"))
                and _same(self.manufacturer, ds.get("Manufacturer"))
                and _same(self.model, ds.get("ManufacturerModelName"))
                and (self.rows is None or self.rows == ds.get("Rows"))
                and (self.columns is None or self.columns == ds.get("Columns"))
                and (self.sop_class is None or self.sop_class == str(ds.get("SOPClassUID", ""))))


@dataclass(frozen=True, slots=True)
class PixelRules:
    suspect_sop_classes: frozenset[str]
    suspect_devices: tuple[tuple[str, str | None], ...]
    clean_rules: tuple[CleanRule, ...]


@dataclass(frozen=True, slots=True)
class Verdict:
    """``send`` as is, ``clean`` with ``rule``, or ``hold`` with ``reason``."""

    decision: str
    reason: str = ""
    rule: CleanRule | None = None


def _same(wanted: str | None, value: object) -> bool:
    return wanted is None or wanted.strip().casefold() == str(value or "").strip().casefold()


def suspicion(ds: Dataset, rules: PixelRules) -> str | None:
    """Why the pixels may show text, or None."""
    if str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES":
        return "Burned In Annotation is YES"
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class in rules.suspect_sop_classes:
        return f"SOP class {UID(sop_class).name} may burn text in"
    manufacturer = str(ds.get("Manufacturer", "") or "").strip().casefold()
    model = str(ds.get("ManufacturerModelName", "") or "").strip().casefold()
    for device, device_model in rules.suspect_devices:
        if device.casefold() == manufacturer and (device_model is None
                                                  or device_model.casefold() == model):
            return f"device {ds.get('Manufacturer')} {ds.get('ManufacturerModelName', '')} " \
                   "burns text in"
    return None


def verdict(ds: Dataset, rules: PixelRules, *, has_pixels: bool) -> Verdict:
    """``has_pixels``: the object has Pixel Data (``ds`` may be its header only)."""
    reason = suspicion(ds, rules)
    if reason is None:
        return Verdict("send")
    for rule in rules.clean_rules:
        if rule.matches(ds):
            if ds.file_meta.TransferSyntaxUID.is_compressed:
                return Verdict("hold", f"{reason}; rule {rule.name} needs native pixel data")
            if not has_pixels:
                return Verdict("hold", f"{reason}; rule {rule.name}: no pixel data to clean")
            return Verdict("clean", reason, rule)
    return Verdict("hold", f"{reason}; no pixel cleaning rule matches")


def blank(ds: Dataset, rule: CleanRule) -> None:
    """Set the rule's regions to 0 in ``ds.PixelData`` (native, any frames and samples)."""
    rows, columns = int(ds.Rows), int(ds.Columns)
    samples = int(ds.get("SamplesPerPixel", 1))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    bits = int(ds.BitsAllocated)
    if bits not in (8, 16):
        raise ValueError(f"pixel cleaning handles 8 and 16 bits allocated, not {bits}")
    dtype = np.uint8 if bits == 8 else np.dtype("<u2")
    pixels = np.frombuffer(ds.PixelData, dtype=dtype).copy()
    planar = int(ds.get("PlanarConfiguration", 0) or 0)
    shape = (frames, samples, rows, columns) if planar and samples > 1 else \
        (frames, rows, columns, samples)
    pixels = pixels[:frames * rows * columns * samples].reshape(shape)
    for x, y, width, height in rule.regions:
        if planar and samples > 1:
            pixels[:, :, y:y + height, x:x + width] = 0
        else:
            pixels[:, y:y + height, x:x + width, :] = 0
    data = pixels.tobytes()
    if len(data) % 2:
        data += b"\0"
    ds.PixelData = data


@cache
def load_pixel_rules(mappings_dir: Path) -> PixelRules:
    table = read_table(mappings_dir / "deid" / "pixels.yaml")
    rules: list[CleanRule] = []
    for entry in table.get("clean_rules") or []:
        try:
            rules.append(CleanRule(
                name=str(entry["name"]),
                regions=tuple(tuple(int(v) for v in region)  # type: ignore[misc]
                              for region in entry["regions"]),
                modality=entry.get("modality"), manufacturer=entry.get("manufacturer"),
                model=entry.get("model"), rows=entry.get("rows"), columns=entry.get("columns"),
                sop_class=entry.get("sop_class")))
        except (KeyError, TypeError, ValueError) as exc:
            raise TableError(f"pixels.yaml: clean rule {entry!r}: {exc}") from None
        if any(len(region) != 4 for region in rules[-1].regions):
            raise TableError(f"pixels.yaml: {rules[-1].name}: a region is [x, y, width, height]")
    devices = tuple((str(d["manufacturer"]), d.get("model"))
                    for d in table.get("suspect_devices") or [])
    return PixelRules(suspect_sop_classes=frozenset(str(k) for k in
                                                    table.get("suspect_sop_classes") or {}),
                      suspect_devices=devices, clean_rules=tuple(rules))
