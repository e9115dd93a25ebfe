"""The OpenVINO engine: model.xml agrees with PyTorch (float32, checked on a bare OpenVINO model), the
NNCF int8 copy's AUC change is measured on the test split and bounded, a stale export is refused, and
predict / the service / the API take ``--engine openvino``."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import shared_path
from sklearn.metrics import roc_auc_score

ov = pytest.importorskip("openvino", reason="the OpenVINO engine is the optional extra .[openvino]")
pytest.importorskip("nncf", reason="OpenVINO int8 needs nncf (the optional extra .[openvino])")

from cxrkit.cli import main  # noqa: E402
from cxrkit.run import files  # noqa: E402
from cxrkit.run.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from cxrkit.run.data import load_run_data  # noqa: E402
from cxrkit.run.model import RunModel  # noqa: E402
from cxrkit.workflows import export as export_mod  # noqa: E402


@pytest.fixture(scope="module")
def ov_run(phantom_run, tmp_path_factory):
    """A copy of the phantom run exported with ``--openvino --int8`` (any AUC drop kept: measured below)."""
    run = tmp_path_factory.mktemp("openvino") / "phantom"
    shutil.copytree(
        phantom_run, run, ignore=shutil.ignore_patterns("eval-*", "triage-*", "explain", "local*")
    )
    export_mod.export_run(run, int8=True, openvino=True, max_auc_drop=1.0, log=lambda m: None)
    return run


def test_openvino_float32_matches_pytorch_on_a_bare_model(ov_run):
    run = RunModel.load(ov_run, "cpu")
    prepared = run.prepare([shared_path("data", "samples")])
    x = prepared.images[:, None].astype(np.float32) / 255.0
    core = ov.Core()  # independent of cxrkit's engine: the IR as OpenVINO reads it, strict float32
    compiled = core.compile_model(
        core.read_model(str(ov_run / files.OPENVINO)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    got = compiled(x)[compiled.output("logits")]
    with torch.no_grad():
        ref = run.model(torch.from_numpy(x)).numpy()
    assert np.abs(run.package.probs(got) - run.package.probs(ref)).max() <= 1e-4
    via_engine = run.predict([shared_path("data", "samples")], engine="openvino")
    via_torch = run.predict([shared_path("data", "samples")])
    cols = [*run.labels, "triage_score", "ood_score"]
    assert np.abs(via_engine[cols].to_numpy() - via_torch[cols].to_numpy()).max() <= 1e-4
    assert (via_engine["triage_flag"] == via_torch["triage_flag"]).all()


def test_export_report_holds_openvino_parity_and_the_int8_auc_change(ov_run):
    report = json.loads((ov_run / files.EXPORT).read_text())
    (parity,) = report["openvino"]["parity"]
    assert parity["images"] == "test split" and parity["max_abs_prob_diff"] <= 1e-4
    assert report["openvino"]["precision"] == "f32" and "openvino" in report["versions"]
    q = report["openvino_int8"]
    assert q["file"] == files.OPENVINO_INT8 and q["split"] == "test" and q["calibration"]["split"] == "val"
    # recomputed from the int8 model's own outputs with scikit-learn
    run = RunModel.load(ov_run, "cpu", engine="openvino-int8")
    data = load_run_data(ov_run)
    idx = np.sort(data.partition["test"])
    y, probs = data.targets[idx], run.probs(np.asarray(data.cache.images[idx]))
    ref = RunModel.load(ov_run, "cpu").probs(np.asarray(data.cache.images[idx]))
    findings = [j for j, lab in enumerate(run.labels) if lab != "No Finding"]
    auc = np.mean([roc_auc_score(y[:, j], probs[:, j]) for j in findings])
    auc_ref = np.mean([roc_auc_score(y[:, j], ref[:, j]) for j in findings])
    assert q["int8"]["macro_auc"] == pytest.approx(auc, abs=1e-9)
    assert q["macro_auc_change"] == pytest.approx(auc - auc_ref, abs=1e-9)
    assert q["kept"] and np.abs(probs - ref).max() > 1e-6  # it is int8: not the float32 model again
    assert q["macro_auc_change"] >= -0.005  # the bound, met on the phantoms


def test_an_int8_copy_that_loses_auc_is_not_kept(ov_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(ov_run, run_dir)
    # a bound no int8 model meets unless it gains AUC: both copies are measured, reported, then deleted
    code = main(["export", str(run_dir), "--openvino", "--int8", "--check", "100", "--max-auc-drop", "-1"])
    out = capsys.readouterr().out
    assert code == 1 and "NOT kept" in out
    report = json.loads((run_dir / files.EXPORT).read_text())
    assert not report["int8"]["kept"] and not report["openvino_int8"]["kept"]
    assert not (run_dir / files.ONNX_INT8).exists() and not (run_dir / files.OPENVINO_INT8).exists()
    assert not (run_dir / "model.int8.bin").exists()
    # the float32 exports stay usable
    assert RunModel.load(run_dir, "cpu", engine="openvino").engine == "openvino"
    with pytest.raises(FileNotFoundError, match=r"no model\.int8\.xml.*--openvino --int8"):
        RunModel.load(run_dir, "cpu", engine="openvino-int8")


def test_a_stale_or_partial_openvino_export_is_refused(ov_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(ov_run, run_dir)
    # an export without --openvino removes the earlier IR: nothing left describes another export
    export_mod.export_run(run_dir, check=50, log=lambda m: None)
    assert not (run_dir / files.OPENVINO).exists() and not (run_dir / "model.bin").exists()
    with pytest.raises(FileNotFoundError, match=r"cxr export .* --openvino"):
        RunModel.load(run_dir, "cpu", engine="openvino")
    # an IR copied back in, not recorded in export.json, is not trusted
    shutil.copy(ov_run / files.OPENVINO, run_dir / files.OPENVINO)
    shutil.copy(ov_run / "model.bin", run_dir / "model.bin")
    with pytest.raises(FileNotFoundError, match="re-run `cxr export"):
        RunModel.load(run_dir, "cpu", engine="openvino")
    # weights changed after the export
    run_dir2 = tmp_path / "run2"
    shutil.copytree(ov_run, run_dir2)
    ckpt = load_checkpoint(run_dir2 / files.BEST)
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in ckpt.pop("model_state").items()}
    save_checkpoint(run_dir2 / files.BEST, model_state=state, **ckpt)
    for engine in ("openvino", "openvino-int8"):
        with pytest.raises(FileNotFoundError, match=r"not exported from the current best\.pt"):
            RunModel.load(run_dir2, "cpu", engine=engine)


def test_a_corrupt_ir_is_one_clear_error(ov_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(ov_run, run_dir)
    (run_dir / "model.bin").write_bytes(b"\0" * 10)
    with pytest.raises(ValueError, match=r"model\.xml: not a loadable OpenVINO model"):
        RunModel.load(run_dir, "cpu", engine="openvino")


def test_cli_predict_and_the_service_with_openvino(ov_run, tmp_path):
    from fastapi.testclient import TestClient

    from cxrkit.config import ServeConfig
    from cxrkit.serve.app import create_app

    samples = shared_path("data", "samples")
    for engine in ("openvino", "openvino-int8", "torch"):
        out = tmp_path / f"{engine}.csv"
        assert (
            main(["predict", str(ov_run), str(samples), "--engine", engine, "--quiet", "--out", str(out)])
            == 0
        )
    a, b = pd.read_csv(tmp_path / "openvino.csv"), pd.read_csv(tmp_path / "torch.csv")
    assert np.abs(a.select_dtypes("number") - b.select_dtypes("number")).max().max() <= 1e-4
    q = pd.read_csv(tmp_path / "openvino-int8.csv")
    assert list(q["source"]) == list(b["source"]) and q["error"].isna().all()
    run = RunModel.load(ov_run, "cpu", engine="openvino")
    with TestClient(create_app(run, ServeConfig())) as client:
        sample = shared_path("data", "samples", "00000001_000.png")
        got = client.post("/v1/predict", files={"file": ("x.png", sample.read_bytes(), "image/png")}).json()
        assert client.get("/v1/model").json()["engine"] == "openvino"
    expected = run.predict([sample], engine="torch").iloc[0]
    for label, p in got["probabilities"].items():
        assert p == pytest.approx(expected[label], abs=1e-4)
