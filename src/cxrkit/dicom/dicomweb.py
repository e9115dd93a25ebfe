"""Results by STOW-RS (DICOMweb) for sites without classic DICOM networking (dicomweb-client)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def stow(paths: Sequence[str | Path], url: str) -> list[str]:
    """Store each file at the DICOMweb service ``url`` (e.g. http://pacs:8042/dicom-web); the error of
    each ("" = stored). One request per file, so one refused object does not hold back the others."""
    import pydicom

    try:
        from dicomweb_client.api import DICOMwebClient
    except ImportError:
        return ['dicomweb-client is not installed: pip install -e ".[node]"'] * len(paths)
    client = DICOMwebClient(url=url)
    errors = []
    for p in paths:
        try:
            client.store_instances(datasets=[pydicom.dcmread(p)])
            errors.append("")
        except Exception as err:  # connection refused, HTTP 4xx/5xx: retried with back-off
            errors.append(f"STOW-RS to {url} failed ({type(err).__name__}: {str(err)[:200]})")
    return errors
