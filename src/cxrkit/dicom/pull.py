"""``--pull``: ask the PACS for new CR/DX studies (C-FIND) and have it send them (C-MOVE) to the node.

Many PACS offer no C-GET, so the node asks for a C-MOVE to its own AE title: the PACS must know the
node as a modality (AE title, host, port), and the images arrive on the node's listener like any push.
A study is moved once (remembered in the worklist database).
"""

from __future__ import annotations

import datetime as dt

from cxrkit.dicom.net import Peer
from cxrkit.dicom.store import Store
from cxrkit.run.data import Log

FIND_MODEL = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve - FIND
MOVE_MODEL = "1.2.840.10008.5.1.4.1.2.2.2"  # Study Root Query/Retrieve - MOVE


class Puller:
    """Polls one PACS; ``poll`` is called by the node every ``--pull-interval`` seconds."""

    def __init__(self, pacs: Peer, ae_title: str, store: Store, log: Log, days: int = 1) -> None:
        self.pacs, self.ae_title, self.store, self.log, self.days = pacs, ae_title, store, log, days

    def _ae(self):
        from pynetdicom import AE

        ae = AE(ae_title=self.ae_title)
        ae.add_requested_context(FIND_MODEL)
        ae.add_requested_context(MOVE_MODEL)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
        ae.connection_timeout = 10
        return ae

    def find(self) -> list[str]:
        """StudyInstanceUIDs of CR/DX studies from the last ``days`` days the PACS holds."""
        from pydicom.dataset import Dataset
        from pydicom.multival import MultiValue

        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        since = (dt.date.today() - dt.timedelta(days=self.days)).strftime("%Y%m%d")
        query.StudyDate = f"{since}-"
        query.StudyInstanceUID = ""
        query.ModalitiesInStudy = ""
        assoc = self._ae().associate(self.pacs.host, self.pacs.port, ae_title=self.pacs.ae_title)
        if not assoc.is_established:
            raise ConnectionError(f"no association with {self.pacs} for C-FIND")
        found = []
        try:
            for status, ident in assoc.send_c_find(query, FIND_MODEL):
                if status and status.Status in (0xFF00, 0xFF01) and ident is not None:
                    value = ident.get("ModalitiesInStudy", "")
                    many = isinstance(value, MultiValue | list | tuple)
                    modalities = {
                        str(m).strip().upper() for m in (value if many else [value]) if str(m).strip()
                    }
                    if modalities & {"CR", "DX"} or not modalities:  # not answered: the node screens
                        found.append(str(ident.StudyInstanceUID))
        finally:
            assoc.release()
        return found

    def move(self, study_uid: str) -> bool:
        """C-MOVE one study to the node; True when the PACS reports success."""
        from pydicom.dataset import Dataset

        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_uid
        assoc = self._ae().associate(self.pacs.host, self.pacs.port, ae_title=self.pacs.ae_title)
        if not assoc.is_established:
            raise ConnectionError(f"no association with {self.pacs} for C-MOVE")
        ok = False
        try:
            for status, _ident in assoc.send_c_move(query, self.ae_title, MOVE_MODEL):
                if status:
                    ok = int(status.Status) in (0x0000, 0xB000)
        finally:
            assoc.release()
        return ok

    def poll(self) -> int:
        """Move every new CR/DX study; the number of studies requested."""
        moved = 0
        for uid in self.find():
            if self.store.was_pulled(uid):
                continue
            if self.move(uid):
                self.store.mark_pulled(uid)
                moved += 1
            else:
                self.log(f"dicom-node: C-MOVE of a study from {self.pacs} did not succeed; retried next poll")
        return moved
