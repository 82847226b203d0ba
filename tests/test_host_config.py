"""Host config loading: defaults, env overrides, and errors that name the key and the bad value."""

from pathlib import Path

import pytest

from llmlab.config import ConfigError, load_config


def test_a_missing_default_config_means_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("LLMLAB_CONFIG", raising=False)
    monkeypatch.delenv("LLMLAB_MODEL_STORE", raising=False)
    monkeypatch.setattr("llmlab.config.DEFAULT_CONFIG_PATH", tmp_path / "absent.yaml")
    config = load_config()
    assert config.model_store == Path("/models")
    assert config.lab_group == "llmlab"


def test_a_missing_explicit_config_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"absent\.yaml: file not found"):
        load_config(tmp_path / "absent.yaml")


def test_values_come_from_the_file_and_the_store_from_the_environment(monkeypatch, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("model_store: /data/models\nlab_group: ml\n")
    monkeypatch.setenv("LLMLAB_CONFIG", str(path))
    assert load_config().model_store == Path("/data/models")
    monkeypatch.setenv("LLMLAB_MODEL_STORE", "/nfs/models")
    config = load_config()
    assert config.model_store == Path("/nfs/models")
    assert config.lab_group == "ml"


def test_an_unknown_key_is_named(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("model_stor: /data/models\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == f"{path}: model_stor: unknown key (got '/data/models')"


def test_a_bad_value_is_named_with_what_is_valid(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("lab_group: [a, b]\n")
    with pytest.raises(ConfigError, match=r"lab_group: Input should be a valid string \(got \['a', 'b'\]\)"):
        load_config(path)


def test_a_file_that_is_not_a_mapping_is_rejected(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping of keys, got list"):
        load_config(path)


def test_contracts_in_config_d_merge_over_config_yaml_in_name_order(tmp_path):
    (tmp_path / "config.yaml").write_text(
        "lab_group: ml\nverify: {expect: {gpu_count: 8}, allowed_ports: [22, 2222]}\n"
    )
    fragments = tmp_path / "config.d"
    fragments.mkdir()
    (fragments / "docker.yaml").write_text("verify: {expect: {docker: true}}\n")
    (fragments / "jupyter.yaml").write_text(
        "listeners: {jupyter: {port: 8888, address: 0.0.0.0}}\nverify: {allowed_ports: [22]}\n"
    )
    config = load_config(tmp_path / "config.yaml")
    assert config.lab_group == "ml"
    assert config.verify == {"expect": {"gpu_count": 8, "docker": True}, "allowed_ports": [22]}
    assert config.listeners["jupyter"].port == 8888
    assert config.source_of(("verify", "expect", "docker")) == str(fragments / "docker.yaml")
    assert config.source_of(("verify", "expect", "gpu_count")) == str(tmp_path / "config.yaml")
    assert config.source_of(("verify", "allowed_ports")) == str(fragments / "jupyter.yaml")


def test_a_bad_contract_is_named_by_file_and_key(tmp_path):
    (tmp_path / "config.yaml").write_text("lab_group: ml\n")
    (tmp_path / "config.d").mkdir()
    bad = tmp_path / "config.d" / "mlflow.yaml"
    bad.write_text("listeners: {mlflow: {port: 99999}}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "config.yaml")
    assert str(exc.value).startswith(
        f"{bad}: listeners.mlflow.port: Input should be less than or equal to 65535"
    )


def test_contracts_apply_without_a_config_yaml(monkeypatch, tmp_path):
    monkeypatch.delenv("LLMLAB_CONFIG", raising=False)
    monkeypatch.setattr("llmlab.config.DEFAULT_CONFIG_PATH", tmp_path / "config.yaml")
    (tmp_path / "config.d").mkdir()
    (tmp_path / "config.d" / "base.yaml").write_text("lab_group: team\n")
    assert load_config().lab_group == "team"
