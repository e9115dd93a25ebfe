"""Hostile configs: every value is coerced to its field's type or refused in one line naming key and value."""

import itertools
from pathlib import Path

import pytest

from cxrkit.cli import main
from cxrkit.config import (
    RunConfig,
    ServeConfig,
    TrainConfig,
    build_run_config,
    load_yaml,
    parse_overrides,
)

PHANTOM = "data: {source: phantom, n: 40, size: 32}\n"


def _build(tmp_path: Path, text: str) -> RunConfig:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return build_run_config(load_yaml(path), source=str(path))


def _train_cli(tmp_path: Path, capsys, text: str, *overrides: str) -> tuple[int, str]:
    """``cxr train --config`` on ``text``: the exit status and stderr; nothing must get trained."""
    path = tmp_path / "run.yaml"
    path.write_text(text)
    rc = main(["train", "--config", str(path), "--out", str(tmp_path / "runs"), *overrides])
    assert not (tmp_path / "runs").exists(), "a refused config must not start a run"
    return rc, capsys.readouterr().err


def test_yaml_quirks_are_coerced_to_the_field_types(tmp_path):
    """YAML 1.1 reads 1e-3 (no dot) as a string and "32" stays a string: both become numbers."""
    text = PHANTOM + (
        'train: {lr: 1e-3, batch_size: "32", epochs: 3, rotate: 0, hflip: "no", amp: "On", labels: "A, B"}\n'
        "partition: {train: 1, val: 0, test: 0, method: official}\n"
        'model: {dropout: "0.25", hidden: null}\nname: 2024\n'
    )
    cfg = _build(tmp_path, text)
    t = cfg.train
    assert t.lr == 0.001 and isinstance(t.lr, float)
    assert t.batch_size == 32 and isinstance(t.batch_size, int)
    assert t.rotate == 0.0 and isinstance(t.rotate, float)
    assert t.hflip is False and t.amp is True and t.labels == ("A", "B")
    assert cfg.partition.train == 1.0 and cfg.model.dropout == 0.25 and cfg.model.hidden is None
    assert cfg.name == "2024"


@pytest.mark.parametrize("word", ["no", "No", "OFF", "false", "0", 0, False])
def test_a_quoted_no_is_false_never_true(tmp_path, word):
    value = f'"{word}"' if isinstance(word, str) else str(word).lower()
    assert _build(tmp_path, PHANTOM + f"train: {{hflip: {value}}}\n").train.hflip is False


@pytest.mark.parametrize("word", ["yes", "True", "on", "1"])
def test_a_quoted_yes_is_true(tmp_path, word):
    assert _build(tmp_path, PHANTOM + f'train: {{hflip: "{word}"}}\n').train.hflip is True


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("train: {epochs: ten}", "train.epochs: 'ten' is not an integer (expected int, e.g. epochs: 10)"),
        ("train: {epochs: 1.5}", "train.epochs: 1.5 is not an integer (expected int"),
        ("train: {epochs: 2.0}", "train.epochs: 2.0 is not an integer"),
        ("train: {epochs: true}", "train.epochs: True is not an integer"),
        ("train: {batch_size: '1e3'}", "train.batch_size: '1e3' is not an integer"),
        ("train: {epochs: }", "train.epochs: empty value (expected int"),
        ("train: {lr: fast}", "train.lr: 'fast' is not a finite number (expected float"),
        ("train: {lr: .nan}", "train.lr: nan is not a finite number"),
        ("train: {lr: true}", "train.lr: True is not a finite number"),
        ("train: {lr: 1e400}", "train.lr: '1e400' is not a finite number"),
        ("train: {hflip: maybe}", "train.hflip: 'maybe' is not true or false (expected bool"),
        ("train: {hflip: 2}", "train.hflip: 2 is not true or false"),
        ("train: {labels: 5}", "train.labels: 5 is not a list"),
        ("train: {labels: [a, {b: 1}]}", "train.labels[1]: {'b': 1} is not a string"),
        (
            "model: {name: no}",
            "model.name: False is not a string (expected str, e.g. name: cnn3_32_64_128_bn; YAML",
        ),
        ("model: {dropout: 1.5}", "model.dropout 1.5: expected a value in [0, 1)"),
        ("train: 5", "train: 5 is not a section (expected a mapping of train keys"),
        ("train: [1, 2]", "train: [1, 2] is not a section"),
        ("train: {epoch: 3}", "unknown TrainConfig key(s) ['epoch']"),
        ("train: {patience: -1}", "train.patience -1: expected >= 0"),
        ("partition: {train: 0.9, val: 0.1, test: 0.2}", "sum to 1.2: expected train + val + test = 1"),
        ("partition: {train: 1.5, val: -0.5, test: 0}", "expected values in [0, 1]"),
        ("name: [a]", "name: ['a'] is not a string"),
    ],
)
def test_wrong_types_and_ranges_are_refused_in_one_line(tmp_path, line, expected):
    with pytest.raises(ValueError) as err:
        _build(tmp_path, PHANTOM + line + "\n")
    message = str(err.value)
    assert expected in message and "\n" not in message
    assert message.startswith(str(tmp_path / "run.yaml")), "the error must name the file"


def test_cli_refuses_a_bad_value_with_one_line_and_exit_2(tmp_path, capsys):
    rc, err = _train_cli(tmp_path, capsys, PHANTOM + "train: {epochs: ten}\n")
    assert rc == 2 and "Traceback" not in err and err.count("\n") == 1
    assert err.startswith("cxr train: error: ") and "train.epochs: 'ten' is not an integer" in err


def test_cli_overrides_are_typed_and_named_as_overrides(tmp_path, capsys):
    rc, err = _train_cli(tmp_path, capsys, PHANTOM, "train.epochs=1.5")
    assert rc == 2 and "override train.epochs: 1.5 is not an integer (expected int" in err
    rc, err = _train_cli(tmp_path, capsys, PHANTOM, "train.hflip=perhaps")
    assert rc == 2 and "override train.hflip: 'perhaps' is not true or false" in err
    rc, err = _train_cli(tmp_path, capsys, PHANTOM, "train.lr=[1")
    assert rc == 2 and "override train.lr: YAML syntax error" in err
    over = parse_overrides(["train.lr=1e-3", "train.hflip=no", "train.batch_size=32"])
    t = build_run_config({"data": {"source": "phantom"}}, over).train
    assert (t.lr, t.hflip, t.batch_size) == (0.001, False, 32)


def test_yaml_syntax_error_names_file_line_and_column(tmp_path, capsys):
    rc, err = _train_cli(tmp_path, capsys, PHANTOM + "train:\n  epochs: [1\n")
    path = tmp_path / "run.yaml"
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"{path}:4:1: YAML syntax error: " in err


def test_unsafe_yaml_tag_is_refused_and_never_run(tmp_path, capsys):
    marker = tmp_path / "pwned"
    text = PHANTOM + f'train: !!python/object/apply:os.system ["touch {marker}"]\n'
    rc, err = _train_cli(tmp_path, capsys, text)
    assert rc == 2 and not marker.exists()
    assert f"{tmp_path / 'run.yaml'}:2: unsupported YAML tag !!python/object/apply:os.system" in err


def test_duplicate_keys_are_refused_not_silently_last_wins(tmp_path):
    with pytest.raises(ValueError, match=r"run\.yaml:3:1: .*duplicate key 'train' \(first on line 2\)"):
        _build(tmp_path, PHANTOM + "train: {epochs: 50}\ntrain: {epochs: 1}\n")


@pytest.mark.parametrize(
    "text",
    ["", "# nothing here\n", "train: {epochs: 1}\n", "data:\n", "data: {}\nmodel: {name: resnet18}\n"],
    ids=["empty", "comment", "no-data", "null-data", "empty-data"],
)
def test_a_config_without_data_is_refused_not_trained_on_phantoms(tmp_path, capsys, text):
    rc, err = _train_cli(tmp_path, capsys, text)
    assert rc == 2 and "no data section" in err and err.count("\n") == 1


def test_no_config_at_all_is_refused_too(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "runs"), "train.epochs=1"]) == 2
    assert "no data section" in capsys.readouterr().err and not (tmp_path / "runs").exists()


def test_a_data_path_without_source_is_refused(tmp_path, capsys):
    """``data: {path: ...}`` alone would silently train on the default (phantom) source."""
    rc, err = _train_cli(tmp_path, capsys, f"data: {{path: {tmp_path}}}\n")
    assert rc == 2 and "data.source missing: data.path given" in err


def test_odd_files_are_one_line_errors(tmp_path):
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00data")
    with pytest.raises(ValueError, match=r"bin\.yaml: not a UTF-8 text file"):
        load_yaml(tmp_path / "bin.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match=r"list\.yaml: expected a YAML mapping at the top level, got list"):
        load_yaml(tmp_path / "list.yaml")
    with pytest.raises(ValueError, match="is a folder"):
        load_yaml(tmp_path)
    (tmp_path / "date.yaml").write_text("name: 2024-13-45\n")
    with pytest.raises(ValueError, match=r"date\.yaml: YAML value error"):
        load_yaml(tmp_path / "date.yaml")


def test_a_saved_config_loads_back_equal(tmp_path):
    """A run folder's config.yaml must rebuild the very same RunConfig (resume, package, evaluate)."""
    cfg = build_run_config(
        {
            "data": {"source": "nih", "path": "/data/nih", "views": ["PA", "AP"], "size": 128},
            "partition": {"train": 0.6, "val": 0.2, "test": 0.2},
            "model": {"name": "resnet18", "dropout": 0.3, "hidden": 0},
            "train": {"lr": "3e-5", "rotate": 0, "labels": ["Effusion", "no"], "focal_alpha": 0.25},
            "name": "no",
            "out": "1e-3",
        }
    )
    (tmp_path / "config.yaml").write_text(cfg.to_yaml())
    again = build_run_config(load_yaml(tmp_path / "config.yaml"))
    assert again == cfg and again.name == "no" and again.out == "1e-3" and again.train.lr == 3e-5


def test_dataclasses_made_in_code_are_checked_too():
    assert TrainConfig(epochs="3").epochs == 3
    with pytest.raises(ValueError, match=r"serve\.port: '80x' is not an integer"):
        ServeConfig(port="80x")
    with pytest.raises(ValueError, match=r"train\.epochs: empty value"):
        TrainConfig(epochs=None)


def test_the_demo_config_still_builds(tmp_path):
    from cxrkit.workflows.demo import demo_config

    cfg = demo_config(tmp_path, {"train.epochs": 2, "data.n": 100})
    assert cfg.data.source == "phantom" and cfg.train.epochs == 2 and cfg.data.n == 100


def _bomb(levels: int) -> str:
    """A "billion laughs" YAML: each level a list of 9 aliases of the previous one (about 300 bytes)."""
    names = "abcdefghijklmnop"[:levels]
    lines = [f"{names[0]}: &{names[0]} [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]" for p, c in itertools.pairwise(names)]
    return "\n".join(lines) + f"\nname: *{names[-1]}\n"


@pytest.mark.parametrize("levels", [8, 13], ids=["expands-too-far", "too-many-aliases"])
def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path, capsys, levels):
    import time

    text = _bomb(levels)
    assert len(text) < 600
    start = time.monotonic()
    rc, err = _train_cli(tmp_path, capsys, text)
    assert time.monotonic() - start < 2, "an alias bomb must be refused, not expanded"
    assert rc == 2 and err.count("\n") == 1 and f"{tmp_path / 'run.yaml'}: " in err
    assert ("too many YAML aliases (109, at most 100)" if levels == 13 else "YAML aliases expand to") in err
    with pytest.raises(ValueError, match="too many YAML aliases"):
        parse_overrides(["train.labels=[&a x, " + ", ".join(["*a"] * 101) + "]"])


def test_a_few_aliases_still_load(tmp_path):
    cfg = _build(tmp_path, "data: &d {source: phantom, n: 40, size: 32}\ntrain: {labels: [&x A, *x]}\n")
    assert cfg.data.n == 40 and cfg.train.labels == ("A", "A")


def test_error_messages_never_walk_a_huge_value():
    import time

    from cxrkit.config_check import short_repr

    value: list = ["lol"] * 9
    for _ in range(9):
        value = [value] * 9  # 9**10 leaves, shared
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"name: \[\[\[.*is not a string") as err:
        RunConfig(name=value)
    assert time.monotonic() - start < 1 and len(str(err.value)) < 200
    assert short_repr("x" * 1000).endswith("...") and len(short_repr("x" * 1000)) == 60


def test_unquoted_numbers_and_dates_in_text_fields_are_kept_as_written(tmp_path):
    """YAML 1.1 would read 1.10 as 1.1, 010 as 8 and 1:30 as 90: a text field keeps the characters."""
    cfg = _build(
        tmp_path,
        PHANTOM
        + "name: 1.10\nout: '010'\ncache_dir: 1:30\n"
        + "train: {labels: [010, 1.50, 0x1F, 1_000, 2024-1-5], lr: 1.0e-3, epochs: 010}\n"
        + "model: {name: 2024-01-05}\n",
    )
    assert (cfg.name, cfg.out, cfg.cache_dir, cfg.model.name) == ("1.10", "010", "1:30", "2024-01-05")
    assert cfg.train.labels == ("010", "1.50", "0x1F", "1_000", "2024-1-5")
    assert cfg.train.lr == 0.001 and type(cfg.train.lr) is float, "numeric fields still get numbers"
    assert cfg.train.epochs == 8 and type(cfg.train.epochs) is int
    (tmp_path / "config.yaml").write_text(cfg.to_yaml())
    assert build_run_config(load_yaml(tmp_path / "config.yaml")) == cfg, "saved configs load back equal"
    over = parse_overrides(["name=1.10", "model.name=010"])
    again = build_run_config({"data": {"source": "phantom"}}, over)
    assert again.name == "1.10" and again.model.name == "010"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("a/b", "is a path"),
        ("../x", "is a path"),
        ("/tmp/x", "is a path"),
        ("a\\b", "is a path"),
        ("C:\\runs\\x", "is a path"),
        ("..", "names the output folder itself or its parent"),
        (".", "names the output folder itself"),
        ("   ", "is blank"),
        ("a\nb", "has a control character"),
    ],
)
def test_a_run_name_must_be_a_plain_folder_name(tmp_path, name, why):
    with pytest.raises(ValueError, match=f"name: .* {why}.*expected a plain folder name"):
        RunConfig(name=name)
    with pytest.raises(ValueError, match=f"^override name: .* {why}"):
        build_run_config({"data": {"source": "phantom"}}, {"name": name})
    assert RunConfig(name="").name == "" and RunConfig(name="run-1.2 (final)").name == "run-1.2 (final)"


def test_a_path_as_run_name_is_refused_by_the_cli_before_training(tmp_path, capsys):
    rc, err = _train_cli(tmp_path, capsys, PHANTOM + "name: ../escape\n")
    assert rc == 2 and err.count("\n") == 1 and f"{tmp_path / 'run.yaml'}: name: '../escape' is a path" in err
    assert not (tmp_path / "escape").exists()
    rc, err = _train_cli(tmp_path, capsys, PHANTOM, "--name", "..")
    assert rc == 2 and "override name: '..' names the output folder itself or its parent" in err


def test_the_old_section_name_split_still_loads():
    """Runs saved before the rename wrote ``split:``; it and ``split.KEY=`` overrides mean ``partition``."""
    old = {
        "data": {"source": "phantom"},
        "split": {"method": "patient", "train": 0.6, "val": 0.2, "test": 0.2},
    }
    cfg = build_run_config(old, {"split.seed": 3})
    assert cfg.partition.train == 0.6 and cfg.partition.seed == 3
    assert "partition:" in cfg.to_yaml() and "\nsplit:" not in cfg.to_yaml()
    with pytest.raises(ValueError, match="'split' and 'partition' both given"):
        build_run_config({**old, "partition": {"seed": 1}})
    with pytest.raises(ValueError, match=r"override 'split.seed' and 'partition.seed' both given"):
        build_run_config(old, {"split.seed": 3, "partition.seed": 4})
