import json

import pytest

from shared.run.settings import RunSettingsError, parse_run_settings


def test_defaults_fill_what_run_json_leaves_out():
    s = parse_run_settings(b'{"suffix": "support", "hyperparameters": {"n_epochs": 2}}',
                           defaults={"base_model": "gpt-4o-mini"})
    assert (s.base_model, s.suffix, s.hyperparameters.n_epochs, s.method) == ("gpt-4o-mini", "support", 2, "supervised")
    assert s.effective_deployment_name("ignored") == "support"


def test_each_problem_names_the_setting():
    with pytest.raises(RunSettingsError) as err:
        parse_run_settings(b'{"hyperparameters": {"n_epochs": 0}, "colour": "blue", "suffix": "this-suffix-is-too-long"}')
    text = str(err.value)
    assert "hyperparameters.n_epochs" in text and "colour" in text and "suffix" in text


@pytest.mark.parametrize("raw, needle", [
    (b'{"method": "reinforcement"}', "grader"),
    (b'{"method": "supervised", "hyperparameters": {"beta": 0.5}}', "beta"),
    (b'not json', "not valid JSON"),
    (b'[]', "JSON object"),
])
def test_method_specific_rules(raw, needle):
    with pytest.raises(RunSettingsError, match=needle):
        parse_run_settings(raw)


def test_hostile_run_json_is_refused_with_a_short_masked_reason():
    with pytest.raises(RunSettingsError, match="nested too deeply"):
        parse_run_settings(b'{"seed": ' + b"[" * 20_000 + b"]" * 20_000 + b"}")
    key = "password=hunter2hunter2 " + "k" * 50_000
    with pytest.raises(RunSettingsError) as err:
        parse_run_settings(json.dumps({key: 1}).encode())
    text = str(err.value)
    assert "hunter2" not in text and len(text) < 300 and "50,024 chars" in text
