"""The node's answers as DICOM objects a PACS files with the study: an SR following TID 1500
(Measurement Report) and a Secondary Capture of the X-ray with its Grad-CAM overlay (highdicom).

The SR holds one measurement group per label (calibrated probability, the label's threshold, above
it or not), a triage group (score, threshold, target sensitivity, the result) and an assessment group
(assessable, in distribution, the OOD score and the reasons), each naming the algorithm as IHE AI
Results asks (name, version, run digest). Codes the standard lacks use the local scheme ``99CXRKIT``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cxrkit.dicom.checks import MANUFACTURER

SCHEME = "99CXRKIT"
INTENDED_USE = "Research tool output, not a diagnostic device: a radiologist reads every study."
SERIES_SR, SERIES_SC = 9901, 9902
# the triage result as a coded value: (code, meaning) per flag of ``evaluate.triage.flag_names``
RESULT_CODES = {
    "abnormal": ("FLAGGED", "Flagged abnormal: read first"),
    "normal": ("NOTFLAGGED", "Not flagged at the operating point"),
    "out of distribution": ("OOD", "Out of distribution: read manually"),
    "not assessable": ("NOTASSESSED", "Not assessable: read manually"),
}


@dataclass(frozen=True)
class Algorithm:
    """What produced a result: the model's name, cxrkit's version and the run's digest."""

    name: str
    version: str
    digest: str
    run: str = ""


@dataclass
class InstanceResult:
    """One scored (or not assessable) instance: what the SR says of it."""

    labels: list[str]
    probs: np.ndarray | None  # (L,) calibrated; None when not assessable
    thresholds: np.ndarray  # (L,) per label, by ``threshold_rule``
    threshold_rule: str
    flag: str  # a key of RESULT_CODES
    score: float | None
    threshold: float
    target_sensitivity: float
    in_distribution: bool | None = None
    ood_score: float | None = None
    reasons: list[str] = field(default_factory=list)  # why not assessable / out of distribution
    top_finding: str = ""


def concept(value: str, meaning: str):
    """A code of the local scheme (a value too long for a short code goes in as a long code value)."""
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=SCHEME, meaning=meaning[:64])


def _unitless():
    from highdicom.sr import CodedConcept

    return CodedConcept(value="1", scheme_designator="UCUM", meaning="no units")


def _yes_no(value: bool):
    from pydicom.sr.codedict import codes

    return codes.SCT.Yes if value else codes.SCT.No


def _text_item(name: str, meaning: str, text: str):
    from highdicom.sr import RelationshipTypeValues, TextContentItem

    return TextContentItem(
        name=concept(name, meaning), value=text[:1024], relationship_type=RelationshipTypeValues.CONTAINS
    )


def _algorithm_id(algo: Algorithm):
    from highdicom.sr import AlgorithmIdentification

    return AlgorithmIdentification(
        name=f"cxrkit {algo.name}"[:64], version=algo.version[:64], parameters=[f"run digest {algo.digest}"]
    )


def _group(identifier: str, finding, source, algo_id, measurements=(), evaluations=(), texts=()):
    from highdicom.sr import MeasurementsAndQualitativeEvaluations, TrackingIdentifier
    from pydicom.uid import generate_uid

    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=generate_uid(), identifier=identifier[:64]),
        finding_type=finding,
        algorithm_id=algo_id,
        measurements=list(measurements) or None,
        qualitative_evaluations=list(evaluations) or None,
        source_images=[source],
    )
    for item in texts:  # TID 1501 allows TEXT qualitative evaluations beside the coded ones
        group[0].ContentSequence.append(item)
    return group


def _number(name: str, meaning: str, value: float):
    """A unitless measurement; the algorithm is identified once, on its group (TID 1501), not per value."""
    from highdicom.sr import Measurement

    return Measurement(name=concept(name, meaning), value=float(value), unit=_unitless())


def _evaluation(name: str, meaning: str, value):
    from highdicom.sr import QualitativeEvaluation

    return QualitativeEvaluation(name=concept(name, meaning), value=value)


def quietly(build):
    """``build()`` with highdicom's warnings silenced: they quote header values such as the patient's
    name, which must never reach a log."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build()


def build_sr(source, result: InstanceResult, algo: Algorithm, instance_number: int = 1):
    """A TID 1500 Comprehensive 3D SR of ``result`` in ``source``'s study (patient module copied,
    new series, the source instance referenced by every group)."""
    return quietly(lambda: _build_sr(source, result, algo, instance_number))


def _build_sr(source, result: InstanceResult, algo: Algorithm, instance_number: int):
    import highdicom as hd
    from highdicom.sr import (
        CodedConcept,
        DeviceObserverIdentifyingAttributes,
        MeasurementReport,
        ObservationContext,
        ObserverContext,
        SourceImageForMeasurementGroup,
    )
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    algo_id = _algorithm_id(algo)
    src = SourceImageForMeasurementGroup(str(source.SOPClassUID), str(source.SOPInstanceUID))
    groups = []
    if result.probs is not None:
        for j, label in enumerate(result.labels):
            p, t = float(result.probs[j]), float(result.thresholds[j])
            groups.append(
                _group(
                    f"finding {label}",
                    concept(label, label),
                    src,
                    algo_id,
                    measurements=[
                        _number("PROB", "Calibrated probability", p),
                        _number("THRESH", f"Threshold ({result.threshold_rule})", t),
                    ],
                    evaluations=[_evaluation("ABOVE", "At or above the label's threshold", _yes_no(p >= t))],
                )
            )
    code, meaning = RESULT_CODES[result.flag]
    triage_numbers = [
        _number("TRIAGETHR", "Triage threshold", result.threshold),
        _number("TARGETSENS", "Target sensitivity", result.target_sensitivity),
    ]
    if result.score is not None:
        triage_numbers.insert(0, _number("TRIAGESCORE", "Triage score", result.score))
    groups.append(
        _group(
            "triage",
            concept("TRIAGE", "Abnormality triage"),
            src,
            algo_id,
            measurements=triage_numbers,
            evaluations=[_evaluation("TRIAGERES", "Triage result", concept(code, meaning))],
            texts=[_text_item("USE", "Intended use", INTENDED_USE)],
        )
    )
    assessed = [_evaluation("ASSESSABLE", "Assessable by the model", _yes_no(result.probs is not None))]
    if result.in_distribution is not None:
        assessed.append(_evaluation("INDIST", "Like the training images", _yes_no(result.in_distribution)))
    ood = (
        [_number("OODSCORE", "OOD score (1 = threshold)", result.ood_score)]
        if result.ood_score is not None and np.isfinite(result.ood_score)
        else []
    )
    groups.append(
        _group(
            "assessment",
            concept("ASSESS", "Input assessment"),
            src,
            algo_id,
            measurements=ood,
            evaluations=assessed,
            texts=[_text_item("REASON", "Reason", r) for r in result.reasons],
        )
    )
    device = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[algo.digest]),
            name=MANUFACTURER,
            manufacturer_name=MANUFACTURER,
            model_name=algo.name[:64],
        ),
    )
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=device),
        procedure_reported=CodedConcept(
            value="399208008", scheme_designator="SCT", meaning="Plain chest X-ray"
        ),
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[source],
        content=report,
        series_instance_uid=generate_uid(),
        series_number=SERIES_SR,
        sop_instance_uid=generate_uid(),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,  # never verified by a person
        series_description="cxrkit AI result (research use only)",
    )
    return sr


def build_sc(source, rgb: np.ndarray, instance_number: int = 1):
    """A Secondary Capture (RGB) of the X-ray with its overlay and caption, in ``source``'s study."""
    return quietly(lambda: _build_sc(source, rgb, instance_number))


def _build_sc(source, rgb: np.ndarray, instance_number: int):
    import highdicom as hd
    from pydicom.uid import generate_uid

    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=np.ascontiguousarray(rgb, dtype=np.uint8),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=generate_uid(),
        series_number=SERIES_SC,
        sop_instance_uid=generate_uid(),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        patient_orientation=("L", "F"),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        series_description="cxrkit heatmap (research use only, not a segmentation)",
    )
    from pydicom.dataset import Dataset

    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = source.SOPClassUID, source.SOPInstanceUID
    sc.SourceImageSequence = [ref]  # the film this capture was derived from
    sc.DerivationDescription = "Grad-CAM heatmap of the top finding over the source radiograph"
    sc.BurnedInAnnotation = "YES"
    sc.Laterality = ""  # type 2C: a chest is no paired organ, so present and empty (dciodvfy checks it)
    return sc


def _algorithm_of(items) -> dict:
    """Algorithm name (DCM 111001), version (111003) and parameters (111002) among a group's items."""
    keys = {"111001": "name", "111003": "version", "111002": "parameters"}
    found: dict = {}
    for item in items:
        code = item.ConceptNameCodeSequence[0].CodeValue if "ConceptNameCodeSequence" in item else ""
        if code in keys and item.ValueType == "TEXT":
            found.setdefault(keys[code], []).append(str(item.TextValue))
    return {k: v if k == "parameters" else v[0] for k, v in found.items()}


def read_sr(source) -> dict:
    """What an SR written by ``build_sr`` says, parsed back with highdicom (a path or a dataset).

    Returns the study and referenced instance UIDs, ``probabilities`` and ``thresholds`` by label,
    ``triage`` (score, threshold, target_sensitivity, result code), ``assessment`` (assessable,
    in_distribution, ood_score, reasons) and the algorithm identification.
    """
    import highdicom as hd

    sr = (
        hd.sr.srread(source)
        if not hasattr(source, "SOPClassUID")
        else hd.sr.Comprehensive3DSR.from_dataset(source)
    )
    out: dict = {
        "study": str(sr.StudyInstanceUID),
        "probabilities": {},
        "thresholds": {},
        "triage": {},
        "assessment": {"reasons": []},
    }
    yes = "373066001"
    for g in sr.content.get_image_measurement_groups():
        numbers = {m.name.value: float(m.value) for m in g.get_measurements()}
        coded = {q.name.value: q.value.value for q in g.get_qualitative_evaluations()}
        texts = [
            str(i.TextValue)
            for i in g[0].ContentSequence
            if i.ValueType == "TEXT" and i.ConceptNameCodeSequence[0].CodingSchemeDesignator == SCHEME
        ]
        out["source"] = str(g.source_images[0].referenced_sop_instance_uid)
        out["algorithm"] = out.get("algorithm") or _algorithm_of(g[0].ContentSequence)
        if g.tracking_identifier == "triage":
            out["triage"] = {
                "score": numbers.get("TRIAGESCORE"),
                "threshold": numbers["TRIAGETHR"],
                "target_sensitivity": numbers["TARGETSENS"],
                "result": coded["TRIAGERES"],
                "intended_use": texts[0] if texts else "",
            }
        elif g.tracking_identifier == "assessment":
            out["assessment"] = {
                "assessable": coded["ASSESSABLE"] == yes,
                "in_distribution": None if "INDIST" not in coded else coded["INDIST"] == yes,
                "ood_score": numbers.get("OODSCORE"),
                "reasons": texts,
            }
        else:
            label = g.finding_type.meaning
            out["probabilities"][label] = numbers["PROB"]
            out["thresholds"][label] = numbers["THRESH"]
    return out
