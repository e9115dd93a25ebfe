"""Test helpers for the DICOM node: a real Orthanc PACS on loopback ports, the node as a process,
and DX/CR DICOM files written with full patient and study modules."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
PACS_AET, NODE_AET = "ORTHANC", "CXRKIT"
DX_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def need(binary: str) -> str:
    """The path of a Debian tool the test needs; skip saying how to get it when absent."""
    path = shutil.which(binary) or (ORTHANC if binary == "Orthanc" and Path(ORTHANC).exists() else None)
    if path is None:
        pytest.skip(f"{binary} is not installed (.ci/run installs Debian's orthanc and dcmtk)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, seconds: float, what: str, step: float = 0.2):
    """Poll ``check`` until it returns a truthy value; fail naming ``what`` after ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = check()
        if (not value.empty) if hasattr(value, "empty") else value:  # a DataFrame: ready when not empty
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")


class Orthanc:
    """An Orthanc PACS in a temporary folder: HTTP and DICOM on 127.0.0.1, knowing the node as a modality."""

    def __init__(self, root: Path, node_port: int) -> None:
        self.root, self.http, self.dicom = root, free_port(), free_port()
        self.proc: subprocess.Popen | None = None
        cfg = {
            "Name": "cxrkit-test",
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "storage"),
            "HttpPort": self.http,
            "DicomPort": self.dicom,
            "DicomAet": PACS_AET,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomModalities": {"cxrkit": [NODE_AET, "127.0.0.1", node_port]},
            "Plugins": [str(DICOMWEB_PLUGIN)] if DICOMWEB_PLUGIN.exists() else [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "StableAge": 1,
        }
        root.mkdir(parents=True, exist_ok=True)
        self.config = root / "orthanc.json"
        self.config.write_text(json.dumps(cfg))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    @property
    def peer(self) -> str:
        return f"{PACS_AET}@127.0.0.1:{self.dicom}"

    def start(self) -> Orthanc:
        log = open(self.root / "orthanc.log", "ab")  # noqa: SIM115 (the process owns it)
        self.proc = subprocess.Popen([need("Orthanc"), str(self.config)], stdout=log, stderr=log)
        wait_for(self._up, 30, "Orthanc to answer on HTTP")
        return self

    def _up(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"Orthanc exited: {(self.root / 'orthanc.log').read_text()[-2000:]}")
        try:
            self.get("/system")
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            data = r.read()
        return json.loads(data) if r.headers.get_content_type() == "application/json" else data

    def post(
        self, path: str, body: bytes | dict | list, ctype: str = "application/json", timeout: float = 60
    ):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": ctype})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"null")

    def upload(self, path: Path) -> str:
        """Store a file in Orthanc through its REST API; its Orthanc instance ID."""
        return self.post("/instances", Path(path).read_bytes(), "application/dicom")["ID"]

    def find(self, **query) -> list[str]:
        """Orthanc IDs of the instances matching a DICOM-tag query (e.g. Modality="SR")."""
        return self.post("/tools/find", {"Level": "Instance", "Query": query})

    def file(self, instance_id: str) -> bytes:
        return self.get(f"/instances/{instance_id}/file")


def write_study_image(
    path: Path,
    image: np.ndarray,
    *,
    modality: str = "DX",
    view: str | None = "PA",
    pixels: bool = True,
    study_uid: str | None = None,
    patient: str = "Doe^Jane",
    patient_id: str = "PID-0001",
    sop_class: str = DX_CLASS,
) -> Path:
    """A radiograph as a DICOM file with the patient, study and series modules a PACS files it by."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient, patient_id, "19600101", "F"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyDate = ds.SeriesDate = dt.date.today().strftime("%Y%m%d")
    ds.StudyTime = "101010"
    ds.AccessionNumber, ds.StudyID, ds.ReferringPhysicianName = "ACC" + ds.SOPInstanceUID[-6:], "1", ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, 1, 1
    ds.BodyPartExamined = "CHEST"
    if view:
        ds.ViewPosition = view
    if pixels:
        ds.Rows, ds.Columns = image.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        ds.PixelData = np.ascontiguousarray(image, dtype=np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


class NodeProcess:
    """``cxr dicom-node`` as a child process (so a test can kill -9 it), listening on 127.0.0.1."""

    def __init__(self, run: Path, state: Path, port: int, *extra: str) -> None:
        self.args = [
            sys.executable,
            "-m",
            "cxrkit.cli",
            "dicom-node",
            str(run),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--ae-title",
            NODE_AET,
            "--state",
            str(state),
            *extra,
        ]
        self.port, self.state = port, state
        self.log = state.parent / f"{state.name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> NodeProcess:
        from cxrkit.dicom.net import Peer, echo

        self.state.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab")  # noqa: SIM115 (the process owns it)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(self.args, stdout=out, stderr=out, env=env)

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"the node exited: {self.log.read_text()[-3000:]}")
            return echo(Peer(NODE_AET, "127.0.0.1", self.port))

        wait_for(up, 60, "the node to answer C-ECHO", step=0.5)
        return self

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def storescu(port: int, *files: Path) -> subprocess.CompletedProcess:
    """dcmtk's storescu sending ``files`` to the node (as a modality or another PACS would)."""
    args = [need("storescu"), "-aec", NODE_AET, "-aet", "MODALITY", "127.0.0.1", str(port), *map(str, files)]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)
