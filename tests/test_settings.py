"""The trainer's settings: one set of defaults, presets, params files and flags in their order."""
import dataclasses
import json
import subprocess
import sys

import pytest

from walsmf import settings
from walsmf.errors import DataError

REQUIRED = ["--input_path", "d", "--output_dir", "o"]


def test_flags_default_to_the_dataclass_defaults():
    parsed = settings.parse(REQUIRED)
    for field in dataclasses.fields(settings.Settings):
        if field.name not in ("input_path", "output_dir"):
            assert getattr(parsed, field.name) == field.default, field.name
    # the lab's values
    assert (parsed.num_epochs, parsed.batch_size, parsed.n_embeds, parsed.topk) == (5, 512, 10, 3)


def test_preset_then_params_file_then_flags(tmp_path):
    params = tmp_path / "best_params.json"
    params.write_text(json.dumps({"n_embeds": 20.0, "regularization": 3, "target": "rating"}))
    parsed = settings.parse(REQUIRED + ["--preset", "tuned", "--params_file", str(params), "--regularization", "5"])
    assert parsed.n_embeds == 20 and isinstance(parsed.n_embeds, int)   # params file over the preset
    assert parsed.target == "rating"                                      # params file over the preset
    assert parsed.regularization == 5.0                                   # flag over the params file
    assert parsed.batch_size == settings.PRESETS["tuned"]["batch_size"]   # preset over the default


def test_make_is_the_same_object_as_the_flags():
    assert settings.make(input_path="d", output_dir="o", preset="tuned", seed=3) == settings.parse(
        REQUIRED + ["--preset", "tuned", "--seed", "3"])
    with pytest.raises(TypeError, match="n_embed"):
        settings.make(n_embed=3)


@pytest.mark.parametrize("value, expected", [("20", 20), ("20.0", 20), ("2e1", 20)])
def test_integer_flags_accept_integral_floats(value, expected):
    assert settings.parse(REQUIRED + ["--n_embeds", value]).n_embeds == expected


@pytest.mark.parametrize("value", ["20.5", "nan", "inf", "x"])
def test_integer_flags_refuse_other_values(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        settings.parse(REQUIRED + ["--n_embeds", value])
    assert exit_info.value.code == 1 and "invalid integer value" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    ('{"n_embed": 3}', "'n_embed' is not a walsmf.task setting"),
    ('{"target": "clicks"}', "target must be one of"),
    ('{"batch_size": "big"}', "batch_size = 'big' is not a valid value"),
    ('[1, 2]', "expected a JSON object"),
    ('{"n_embeds": ', "is not JSON"),
    ('{"exclude_seen": "false"}', "exclude_seen = 'false' is not a boolean: give true or false"),
    ('{"exclude_seen": 1}', "is not a boolean"),
    ('{"n_embeds": null}', "n_embeds is null: give a value \\(its default is 10\\)"),
    ('{"n_embeds": 30, "regularization": 1, "n_embeds": 5}', "the key 'n_embeds' appears twice in one object"),
])
def test_bad_params_files_are_named(tmp_path, content, message):
    params = tmp_path / "p.json"
    params.write_text(content)
    with pytest.raises(DataError, match=message):
        settings.parse(REQUIRED + ["--params_file", str(params)])


@pytest.mark.subprocess
def test_help_answers_without_tensorflow():
    code = ("import sys\nsys.modules['tensorflow'] = None\nfrom walsmf import task\n"
            "try:\n    task.main(['--help'])\nexcept SystemExit as e:\n    sys.exit(e.code)\n")
    result = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)
    assert result.returncode == 0, result.stderr
    assert "--num_row_shards" in result.stdout and "--params_file" in result.stdout


def test_params_file_booleans_and_nulls_where_the_setting_takes_them(tmp_path):
    params = tmp_path / "p.json"
    params.write_text('{"exclude_seen": false, "regularization": null, "seed": null}')
    parsed = settings.parse(REQUIRED + ["--params_file", str(params)])
    assert parsed.exclude_seen is False and parsed.regularization is None and parsed.seed is None
    params.write_text('{"exclude_seen": true}')
    assert settings.parse(REQUIRED + ["--params_file", str(params)]).exclude_seen is True


@pytest.mark.parametrize("changes, message", [
    ({"n_embeds": 0}, "--n_embeds must be a positive integer"),
    ({"num_row_shards": 9}, "--num_row_shards 9 is more shards than the 8 users ids"),
    ({"num_epochs": 0.1}, "less than one training step"),
    ({"col_weight": 0.0}, r"--col_weight 0 is outside \(0, 1e\+06\]"),
    ({"regularization": -1.0}, r"--regularization -1 is outside \[0, 1e\+06\]"),
    ({"col_weight_exp": float("nan")}, r"--col_weight_exp nan is outside \[-4, 4\]"),
    ({"popularity_rate": True}, r"--popularity_rate scales the reads of --popularity_days' window, and none is given"),
])
def test_validate_refuses_what_wals_cannot_train(changes, message):
    good = settings.make(input_path="d", output_dir="o", nusers=8, nitems=4, batch_size=4)
    settings.validate(good)
    with pytest.raises(DataError, match=message):
        settings.validate(good.replace(**changes))
