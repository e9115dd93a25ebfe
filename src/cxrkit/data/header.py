"""The few DICOM header fields that say whether a study is one a model was trained for, and that drift
monitoring watches: age, sex, view, body part, manufacturer and model, exposure. Never names.

Read from the header only (pixel data skipped); a file that is not DICOM, or a malformed header,
gives an empty dict, so a missing tag never blocks a prediction.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

TAGS = {
    "PatientAge": "age",
    "PatientSex": "sex",
    "ViewPosition": "view",
    "BodyPartExamined": "body_part",
    "Manufacturer": "manufacturer",
    "ManufacturerModelName": "model",
    "KVP": "kvp",
    "Exposure": "exposure",
}
_UNITS = {"Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}


def parse_age(text: str) -> float | None:
    """A DICOM Age String (``045Y``, ``006M``, ``003W``, ``010D``) in years; None when malformed."""
    m = re.fullmatch(r"\s*(\d{1,3})\s*([YMWD]?)\s*", str(text or "").upper())
    if not m:
        return None
    return int(m.group(1)) * _UNITS[m.group(2) or "Y"]


def header_fields(source: str | Path | bytes) -> dict:
    """The fields of ``TAGS`` present in a DICOM file (path or bytes), by their short names."""
    import pydicom

    try:
        fh = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
        with fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True, specific_tags=list(TAGS), force=True)
    except Exception:  # not DICOM, unreadable, malformed: no header facts, never an error here
        return {}
    out: dict = {}
    for tag, name in TAGS.items():
        value = ds.get(tag)
        if value is None or str(value).strip() == "":
            continue
        if name == "age":
            age = parse_age(str(value))
            if age is not None:
                out[name] = age
        elif name in ("kvp", "exposure"):
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(number):  # "NaN" in a tag must not reach a JSON log or answer
                out[name] = number
        else:
            out[name] = str(value).strip().upper() if name in ("view", "body_part", "sex") else str(value)
    return out


READING = {  # what a reader looks at beside the film (never the name unless asked)
    "Modality": "modality",
    "StudyDate": "study_date",
    "StudyDescription": "study_description",
    **{tag: name for tag, name in TAGS.items() if name not in ("kvp", "exposure")},
}
IDENTITY = {"PatientName": "patient_name", "PatientID": "patient_id"}


def reading_header(data: bytes, show_patient: bool = False) -> dict:
    """The header facts of a reading view (modality, study date, age, sex, view, manufacturer...);
    the patient's name and ID only with ``show_patient``. {} for a file that is not DICOM."""
    import pydicom

    tags = {**READING, **(IDENTITY if show_patient else {})}
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=list(tags), force=True)
    except Exception:  # not DICOM, malformed: nothing to show, never an error here
        return {}
    out: dict = {}
    for tag, name in tags.items():
        value = ds.get(tag)
        text = "" if value is None else str(value).strip()
        if not text:
            continue
        if name == "study_date" and len(text) == 8 and text.isdigit():
            text = f"{text[:4]}-{text[4:6]}-{text[6:]}"
        out[name] = text[:64]
    return out
