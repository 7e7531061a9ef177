"""Settings: validation messages, presets, and the settings file."""

from __future__ import annotations

import dataclasses
import json
import stat
import threading

import pytest

from app.config.file import load_settings, read_settings, save_settings
from app.config.settings import (
    AppPaths,
    AppSettings,
    EngineSettings,
    SamplingSettings,
    apply_preset,
)
from app.errors import SettingsError
from app.ui.settings import chosen_after_save


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


def test_settings_round_trip(app_home) -> None:
    paths = AppPaths.default()
    assert str(paths.config_dir).startswith(str(app_home))
    settings = AppSettings(
        model="Qwen/Qwen2.5-0.5B-Instruct",
        system_prompt="你是一个助手",
        sampling=SamplingSettings(temperature=0.3, stop=["</s>"]),
        trusted_models=["org/custom-model"],
    )
    save_settings(settings, paths)
    loaded = read_settings(paths)
    assert loaded.settings == settings and loaded.bad_fields == () and loaded.message("en") is None
    assert stat.S_IMODE(paths.settings_file.stat().st_mode) == 0o600
    # Only what the user set is in the file: the rest follows the model.
    assert json.loads(paths.settings_file.read_text())["sampling"] == {"temperature": 0.3, "stop": ["</s>"]}


@pytest.mark.parametrize(
    ("content", "bad"),
    [
        ("{ not json", ("*",)),
        ("[]", ("*",)),
        ('"["' * 50_000, ("*",)),
        (json.dumps({"send_token_to_mirror": "false", "model": "kept/model"}), ("send_token_to_mirror",)),
        (json.dumps({"sampling": {"temperature": 99, "top_p": 0.5}, "model": "kept/model"}), ("sampling.temperature",)),
        (json.dumps({"engine": {"gpu_memory_utilization": "high", "max_model_len": 4096},
                     "mirror_endpoint": "ftp://files", "model": "kept/model"}),
         ("engine.gpu_memory_utilization", "mirror_endpoint")),
        (json.dumps({"engine": [], "preset": "warp", "trusted_models": "all", "model": "kept/model"}),
         ("engine", "preset", "trusted_models")),
    ],
)
def test_a_bad_settings_file_is_repaired_field_by_field(app_home, content: str, bad: tuple[str, ...]) -> None:
    paths = AppPaths.default()
    paths.create()
    paths.settings_file.write_text(content)
    loaded = read_settings(paths)
    assert sorted(loaded.bad_fields) == sorted(bad)
    # The wrong fields are back at their defaults; the good ones are kept.
    assert loaded.settings.send_token_to_mirror is False
    if bad != ("*",):
        assert loaded.settings.model == "kept/model"
    if "sampling.temperature" in bad:
        assert loaded.settings.sampling == SamplingSettings(top_p=0.5)
    if "mirror_endpoint" in bad:
        assert loaded.settings.engine.max_model_len == 4096
        assert loaded.settings.mirror_endpoint == AppSettings().mirror_endpoint
    # One sentence in each language names the fields and the copy kept of the file as it was.
    aside = loaded.set_aside
    assert aside is not None and aside.read_text() == content
    assert stat.S_IMODE(aside.stat().st_mode) == 0o600
    for lang in ("en", "zh-CN"):
        message = loaded.message(lang)
        assert str(aside) in message and all(field in message for field in bad if field != "*")
    # The file on disk is now clean, and loads without complaint.
    assert read_settings(paths).bad_fields == ()


def test_each_bad_file_keeps_its_own_copy(app_home) -> None:
    paths = AppPaths.default()
    paths.create()
    copies = set()
    for text in ("[1]", "[2]", "[3]"):
        paths.settings_file.write_text(text)
        copies.add(read_settings(paths).set_aside)
    assert len(copies) == 3 and sorted(p.read_text() for p in copies) == ["[1]", "[2]", "[3]"]


def test_an_old_file_keeps_what_the_user_changed_and_loses_its_secrets(app_home) -> None:
    """Version 1 saved the host, the key and every sampling field; it sent only fields that
    differed from the app's defaults."""
    paths = AppPaths.default()
    paths.create()
    old = {"model": "m", "host": "0.0.0.0", "port": 8000, "api_key": "sekret", "engine": {"trust_remote_code": True},
           "sampling": {"temperature": 0.7, "top_p": 0.8, "max_tokens": 1024, "stop": [], "seed": None}}
    paths.settings_file.write_text(json.dumps(old))
    loaded = read_settings(paths)
    assert loaded.bad_fields == ()
    assert loaded.settings.sampling == SamplingSettings(top_p=0.8)
    assert not loaded.settings.engine.trust_remote_code
    text = paths.settings_file.read_text()
    assert "sekret" not in text and "0.0.0.0" not in text and "trust_remote_code" not in text


def test_a_value_equal_to_a_default_is_still_the_users(app_home) -> None:
    """Set on a model whose generation_config says temperature 0.9: 0.7 is sent, unset top_k
    follows the model."""
    model = {"temperature": 0.9, "top_k": 40}
    shown = SamplingSettings().filled(model)
    submitted = SamplingSettings(**{**shown.chosen(), "temperature": 0.7})
    chosen = chosen_after_save(SamplingSettings(), submitted, shown)
    assert chosen == SamplingSettings(temperature=0.7)
    assert chosen.filled(model).temperature == 0.7 and chosen.filled(model).top_k == 40
    # Saved again unchanged, it stays set even though it now equals what is shown.
    again = chosen_after_save(chosen, chosen.filled(model), chosen.filled(model))
    assert again.temperature == 0.7


def test_concurrent_saves_both_last(app_home, make_app) -> None:
    from app.engine import Engine

    app = make_app(Engine())
    errors: list[BaseException] = []

    def save(i: int) -> None:
        try:
            if i % 2:
                app.update_settings(lambda s: dataclasses.replace(s, trusted_models=[*s.trusted_models, f"m{i}"]))
            else:
                app.update_settings(lambda s: dataclasses.replace(
                    s, sampling=dataclasses.replace(s.sampling, seed=(s.sampling.seed or 0) + 1)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    saved = load_settings(AppPaths.default())
    assert sorted(saved.trusted_models) == sorted(f"m{i}" for i in range(1, 40, 2))
    assert saved.sampling.seed == 20


def test_run_flags_stay_with_their_run(app_home, make_app) -> None:
    """A LAN run with a key, a login and trusted code, then a plain start the next day."""
    from app.__main__ import access_from_args, serve_parser, settings_from_args
    from app.engine import Engine

    paths = AppPaths.default()
    lan = serve_parser().parse_args(["--host", "0.0.0.0", "--api-key", "K", "--auth", "u:pw", "--trust-remote-code",
                                     "--allowed-origins", "http://x.example", "--max-model-len", "2048"])
    access = access_from_args(lan)
    access.check_exposure()
    app = make_app(Engine(), settings_from_args(lan, read_settings(paths).settings), access=access)
    assert app.settings.engine.trust_remote_code
    app.update_settings(model="some/model")  # what a model load saves
    text = paths.settings_file.read_text()
    assert all(word not in text for word in ("0.0.0.0", "\"K\"", "u:pw", "x.example", "trust_remote_code"))

    plain = serve_parser().parse_args([])
    next_day = settings_from_args(plain, read_settings(paths).settings)
    access = access_from_args(plain)
    access.check_exposure()  # no longer refused
    assert (access.host, access.api_key, access.ui_auth) == ("127.0.0.1", None, None)
    assert not next_day.engine.trust_remote_code and not next_day.trusts("some/model")
    # What the user chose to keep is kept.
    assert next_day.model == "some/model" and next_day.engine.max_model_len == 2048


@pytest.mark.engine
def test_parsers_are_chosen_as_for_vllm_serve_and_a_wrong_name_is_one_sentence(engine_loop, tiny_model) -> None:
    from app.__main__ import serve_parser, settings_from_args
    from app.engine import Engine, EngineState

    args = serve_parser().parse_args(["--tool-call-parser", "llama3_json", "--reasoning-parser", "none"])
    chosen = settings_from_args(args, AppSettings()).engine
    assert (chosen.tool_call_parser, chosen.reasoning_parser) == ("llama3_json", "")
    assert (AppSettings().engine.tool_call_parser, AppSettings().engine.reasoning_parser) == ("auto", "auto")

    # Refused before any engine starts, with the names vLLM has.
    typo = dataclasses.replace(EngineSettings(), reasoning_parser="deepseek-r1")
    fresh = Engine()
    with pytest.raises(SettingsError) as refused:
        engine_loop.run(fresh.load(str(tiny_model), typo))
    assert "deepseek-r1" in refused.value.message("en") and "deepseek_r1" in refused.value.message("en")
    assert "deepseek-r1" in refused.value.message("zh-CN")
    assert fresh.status.state == EngineState.FAILED and fresh.vllm is None


@pytest.mark.parametrize(
    ("settings", "en", "zh"),
    [
        (SamplingSettings(repetition_penalty=0), "more than 0 and at most 2", "必须大于 0 且不超过 2"),
        (EngineSettings(cpu_kv_cache_gib=0), "cpu_kv_cache_gib must be more than 0", "必须大于 0"),
        (SamplingSettings(temperature=float("nan")), "between 0.0 and 2.0", "之间"),
        (EngineSettings(quantization="int3"), "none, awq, gptq", "可选值"),
        (AppSettings(mirror_endpoint="ftp://mirror"), "http:// or https://", "网址"),
        (AppSettings(sampling=SamplingSettings(stop=["###", ""])), "one per line", "每行"),
        (AppSettings(engine=EngineSettings(max_num_seqs=0)), "max_num_seqs must be at least 1", "不能小于 1"),
    ],
)
def test_each_bound_is_one_sentence_read_from_the_field(settings, en: str, zh: str) -> None:
    """The bounds live on the fields (pydantic); nested sections are named by their own field."""
    with pytest.raises(SettingsError) as info:
        settings.validate()
    assert en in info.value.message("en") and zh in info.value.message("zh-CN")


def test_every_engine_flag_is_named_as_vllm_serve_names_it() -> None:
    """The engine flags come from one table; each is one of `vllm serve`'s own, same spelling."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    from app.__main__ import serve_parser, settings_from_args
    from app.engine.fields import ENGINE_FIELDS

    ours = {f.option for f in ENGINE_FIELDS if f.flag}
    theirs = set(make_arg_parser(FlexibleArgumentParser())._option_string_actions)
    assert ours and ours <= theirs, ours - theirs
    args = serve_parser().parse_args(
        ["--max-num-batched-tokens", "2048", "--no-enable-chunked-prefill", "--quantization", "awq"]
    )
    engine = settings_from_args(args, AppSettings()).engine
    assert (engine.max_num_batched_tokens, engine.enable_chunked_prefill, engine.quantization) == (2048, False, "awq")
    with pytest.raises(SystemExit):
        serve_parser().parse_args(["--dtype", "int3"])
