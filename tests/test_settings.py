"""Settings: validation messages, presets, and the settings file."""

from __future__ import annotations

import json
import stat

import pytest

from app.errors import SettingsError
from app.settings import (
    AppPaths,
    AppSettings,
    EngineSettings,
    SamplingSettings,
    apply_preset,
    load_settings,
    save_settings,
)


def test_defaults_are_valid() -> None:
    AppSettings().validate()


@pytest.mark.parametrize(
    ("values", "word_en", "word_zh"),
    [
        ({"temperature": -1}, "temperature", "temperature"),
        ({"top_p": 0}, "top_p", "top_p"),
        ({"max_tokens": 0}, "max_tokens", "不能小于"),
        ({"frequency_penalty": 9}, "frequency_penalty", "之间"),
    ],
)
def test_bad_sampling_values_name_the_setting_in_both_languages(values, word_en, word_zh) -> None:
    with pytest.raises(SettingsError) as info:
        SamplingSettings(**values).validate()
    assert word_en in info.value.message("en")
    assert word_zh in info.value.message("zh-CN")


def test_loose_form_values_are_coerced_or_explained() -> None:
    s = SamplingSettings.from_dict({"temperature": "0.5", "max_tokens": 256.0, "seed": "", "stop": "###\nUser:"})
    assert (s.temperature, s.max_tokens, s.seed, s.stop) == (0.5, 256, None, ["###", "User:"])
    with pytest.raises(SettingsError) as info:
        SamplingSettings.from_dict({"max_tokens": "many"})
    assert "max_tokens" in info.value.message("en")


def test_engine_settings_validation() -> None:
    with pytest.raises(SettingsError):
        EngineSettings(gpu_memory_utilization=1.5).validate()
    with pytest.raises(SettingsError) as info:
        EngineSettings(dtype="int3").validate()
    assert "bfloat16" in info.value.message("en")


def test_random_weights_are_for_this_run_only(app_home) -> None:
    with pytest.raises(SettingsError) as info:
        EngineSettings(load_format="pt").validate()
    assert "load_format" in info.value.message("en") and "dummy" in info.value.message("zh-CN")
    # A benchmark run with random weights must not leave the next start answering with noise.
    paths = AppPaths.default()
    save_settings(AppSettings(model="m", engine=EngineSettings(load_format="dummy", max_model_len=256)), paths)
    loaded = load_settings(paths)
    assert loaded.engine.load_format == "auto" and loaded.engine.max_model_len == 256


def test_presets() -> None:
    assert apply_preset("low_latency").max_num_seqs == 1
    saver = apply_preset("memory_saver")
    assert saver.dtype == "float16" and saver.gpu_memory_utilization < 0.9 and saver.max_model_len == 4096
    throughput = apply_preset("high_throughput")
    assert throughput.enable_chunked_prefill and throughput.max_num_seqs > 64
    # Switching back to balanced undoes what the previous preset set, but keeps other choices.
    back = apply_preset("balanced", EngineSettings(**{**saver.__dict__, "trust_remote_code": True}))
    assert back.dtype == "auto" and back.max_model_len is None and back.trust_remote_code
    with pytest.raises(SettingsError):
        apply_preset("warp-speed")


def test_settings_round_trip_and_damaged_file_is_set_aside(app_home) -> None:
    paths = AppPaths.default()
    assert str(paths.config_dir).startswith(str(app_home))
    settings = AppSettings(
        model="Qwen/Qwen2.5-0.5B-Instruct",
        system_prompt="你是一个助手",
        sampling=SamplingSettings(temperature=0.3, stop=["</s>"]),
    )
    save_settings(settings, paths)
    assert load_settings(paths) == settings
    assert not stat.S_IMODE(paths.settings_file.stat().st_mode) & stat.S_IWOTH

    paths.settings_file.write_text("{ not json")
    assert load_settings(paths) == AppSettings()
    assert paths.settings_file.with_suffix(".json.bad").read_text() == "{ not json"

    paths.settings_file.write_text(json.dumps({"sampling": {"temperature": 99}}))
    assert load_settings(paths) == AppSettings()
