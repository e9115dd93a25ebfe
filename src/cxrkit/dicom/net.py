"""DICOM networking with pynetdicom: the listening node's contexts, and C-STORE/C-ECHO to a peer."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# what the node accepts: the common uncompressed and JPEG syntaxes (baseline, extended, lossless),
# JPEG-LS, JPEG 2000 and RLE; compressed pixel data is decoded by pydicom's plugins (extra: dicom)
TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old modalities)
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (8 bit)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (12 bit)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
]
SEND_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image
_PEER = re.compile(r"^([^@\s\\]{1,16})@([A-Za-z0-9.\-:\[\]]+):(\d{1,5})$")


@dataclass(frozen=True)
class Peer:
    """A DICOM node to talk to: AE title, host and port (``AET@HOST:PORT``)."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_peer(text: str) -> Peer:
    """``AET@HOST:PORT`` -> Peer; a ValueError saying the expected form otherwise."""
    m = _PEER.match(str(text).strip())
    if not m or not 0 < int(m.group(3)) < 65536:
        raise ValueError(
            f"{text!r}: expected AET@HOST:PORT, e.g. ORTHANC@127.0.0.1:4242 (AE title <= 16 chars)"
        )
    return Peer(m.group(1), m.group(2).strip("[]"), int(m.group(3)))


def node_ae(ae_title: str):
    """A pynetdicom AE that accepts C-ECHO and C-STORE of every storage class in ``TRANSFER_SYNTAXES``
    (what is not a frontal CR/DX is recorded and skipped by the node, never refused at the door)."""
    from pynetdicom import AE, AllStoragePresentationContexts
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=ae_title)
    ae.add_supported_context(Verification)
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, TRANSFER_SYNTAXES)
    ae.maximum_pdu_size = 0  # unlimited: fewer PDUs for 10 MB radiographs
    ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = 60
    return ae


def _scu(ae_title: str, classes: Sequence[str]):
    from pynetdicom import AE

    ae = AE(ae_title=ae_title)
    for sop in dict.fromkeys(classes):
        ae.add_requested_context(sop, SEND_SYNTAXES)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.connection_timeout = 10
    return ae


def send_files(paths: Sequence[str | Path], peer: Peer, ae_title: str) -> list[str]:
    """C-STORE each file to ``peer`` over one association; the error of each ("" = stored)."""
    import pydicom

    return send_datasets([pydicom.dcmread(p) for p in paths], peer, ae_title)


def send_datasets(datasets: Sequence, peer: Peer, ae_title: str) -> list[str]:
    """C-STORE each pydicom dataset to ``peer`` over one association; the error of each ("" = stored)."""
    ae = _scu(ae_title, [str(ds.SOPClassUID) for ds in datasets])
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
    if not assoc.is_established:
        return [f"no association with {peer} (down, or it refused {ae_title})"] * len(datasets)
    errors = []
    try:
        for ds in datasets:
            try:
                status = assoc.send_c_store(ds)
            except Exception as err:  # a dropped connection mid-transfer: this one and the rest retry
                errors.append(f"{type(err).__name__}: {err}")
                continue
            code = int(getattr(status, "Status", -1)) if status else -1
            # 0x0000 success; 0xB000/0xB007/0xB006 warnings: stored (coerced or elements discarded)
            errors.append(
                "" if code in (0x0000, 0xB000, 0xB006, 0xB007) else f"C-STORE status 0x{code & 0xFFFF:04X}"
            )
    finally:
        assoc.release()
    return errors


def echo(peer: Peer, ae_title: str = "ECHOSCU") -> bool:
    """C-ECHO ``peer``: True when it answers with success."""
    from pynetdicom.sop_class import Verification

    ae = _scu(ae_title, [Verification])
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and int(status.Status) == 0
    finally:
        assoc.release()
