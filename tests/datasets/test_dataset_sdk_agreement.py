"""Our verdict agrees with the together SDKs' check_file on every file of a generated corpus.

Two oracles: together 1.5.34, the last SDK to check each line's content, lives in its own virtualenv,
.venv-sdk1 (`make .venv-sdk1/.stamp`, a prerequisite of `make test`); together 3.x is the project's own
SDK. Each checks the whole corpus in one subprocess through tests/datasets/sdk_check_driver.py.

Where the two disagree we follow 3.x, and the case says what 1.5.34 said (`sdk1`). 3.x's check stops
at the file level and leaves a line's content to Together's server, so every content rule we keep
from 1.5.34 is one 3.x passes: CONTENT_CASES are refused by us and 1.5.34 but passed by 3.x, unless
the case says otherwise (`sdk3`).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from together_dash.together.datasets import MAX_IMAGE_URL_CHARS, DatasetReport, validate_dataset

SDK_PYTHON = Path(settings.BASE_DIR) / ".venv-sdk1" / "bin" / "python"
SDK3_PYTHON = Path(sys.executable)  # the project's venv, with together 3.x
DRIVER = Path(__file__).with_name("sdk_check_driver.py")

PNG = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
JPEG = "data:image/jpeg;base64,/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAEBAQ=="
WEBP = "data:image/webp;base64,UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA=="


@dataclass(frozen=True)
class Case:
    """One corpus file: whether Together should accept it, its bytes (None: no file), name and purpose.

    `sdk1` and `sdk3` are those SDKs' verdicts where they differ from `valid` (None: the same).
    """

    valid: bool
    content: bytes | None
    suffix: str = ".jsonl"
    purpose: str = "fine-tune"
    sdk1: bool | None = None
    sdk3: bool | None = None


def jsonl(*lines: Any, end: bytes = b"\n") -> bytes:
    """JSON lines: objects are dumped (as raw UTF-8), str and bytes are written as they are."""
    encoded = [
        line
        if isinstance(line, bytes)
        else (line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)).encode()
        for line in lines
    ]
    return end.join(encoded) + end


def user(content: Any = "Hi", **extra: Any) -> dict[str, Any]:
    return {"role": "user", "content": content, **extra}


def assistant(content: Any = "Hello!", **extra: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content, **extra}


def system(content: Any = "Be brief.") -> dict[str, Any]:
    return {"role": "system", "content": content}


def chat(*messages: Any) -> dict[str, Any]:
    return {"messages": list(messages)}


def text_part(text: Any = "Look:") -> dict[str, Any]:
    return {"type": "text", "text": text}


def image(url: Any = PNG) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def preference(messages: Any = None, preferred: Any = None, non_preferred: Any = None) -> dict[str, Any]:
    return {
        "input": {"messages": [user("Pick one")] if messages is None else messages},
        "preferred_output": [assistant("A")] if preferred is None else preferred,
        "non_preferred_output": [assistant("B")] if non_preferred is None else non_preferred,
    }


GOOD_CHAT = chat(user(), assistant())
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
TOOL_CHAT = {
    "messages": [
        user("Weather in Paris?"),
        {"role": "assistant", "tool_calls": [TOOL_CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        assistant("Sunny."),
    ],
    "tools": [WEATHER_TOOL],
}

# Files decided at the file level: type, size, encoding, one JSON object per line.
FILE_CASES: dict[str, Case] = {
    # ---- accepted
    "text_one_line": Case(True, jsonl({"text": "Hello world"})),
    "text_many_lines": Case(True, jsonl(*({"text": f"sample {n}"} for n in range(200)))),
    "text_empty_string": Case(True, jsonl({"text": ""})),
    "text_unicode": Case(True, jsonl({"text": "héllo 你好 🙂"}, {"text": "e\u0301 \x00 \U0010ffff"})),
    # Text mode ends lines at \r and \n only: these separators stay inside the line (and the string).
    "unicode_line_separators_in_strings": Case(True, jsonl({"text": "a\u2028b\u2029c\x85d\x1ce"})),
    "duplicate_keys_last_wins": Case(True, b'{"text": 1, "text": "a"}\n'),
    "text_multimodal_with_image": Case(True, jsonl({"text": [text_part(), image()]})),
    "text_empty_list": Case(True, jsonl({"text": []})),
    "chat_simple": Case(True, jsonl(GOOD_CHAT, GOOD_CHAT)),
    "chat_with_system": Case(
        True, jsonl(chat(system(), user(), assistant(), user("More"), assistant("Sure")))
    ),
    "chat_assistant_first": Case(True, jsonl(chat(assistant(), user(), assistant()))),
    "chat_system_between_users": Case(True, jsonl(chat(user(), system(), user(), assistant()))),
    "chat_weights": Case(True, jsonl(chat(user(weight=0), assistant(weight=1), user(), assistant(weight=0)))),
    "chat_boolean_weight": Case(True, jsonl(chat(user(), assistant(weight=True)))),
    "chat_extra_message_keys": Case(True, jsonl(chat(user(name="bob"), assistant(reasoning="because")))),
    "chat_multimodal": Case(True, jsonl(chat(user([text_part(), image()]), assistant([text_part("A cat")])))),
    "chat_jpeg_and_webp": Case(True, jsonl(chat(user([image(JPEG), image(WEBP)]), assistant([])))),
    "chat_ten_images": Case(
        True, jsonl(chat(user([image()] * 6), assistant([]), user([image()] * 4), assistant([])))
    ),
    "chat_image_weight_zero": Case(True, jsonl(chat(user([image()], weight=0), assistant([text_part()])))),
    "chat_crlf": Case(True, jsonl(GOOD_CHAT, GOOD_CHAT, end=b"\r\n")),
    "chat_cr_only": Case(True, jsonl(GOOD_CHAT, GOOD_CHAT, end=b"\r")),
    "chat_no_final_newline": Case(True, jsonl(GOOD_CHAT, GOOD_CHAT)[:-1]),
    "two_samples_split_by_a_lone_cr": Case(True, b'{"text": "a"}\r{"text": "b"}\n'),
    "chat_long_text": Case(True, jsonl(chat(user("x" * 1_000_000), assistant()))),
    "instruction": Case(
        True, jsonl({"prompt": "2+2?", "completion": "4"}, {"prompt": "3+3?", "completion": "6"})
    ),
    "instruction_image_in_prompt": Case(
        True, jsonl({"prompt": [image()], "completion": [text_part("A dot")]})
    ),
    "preference": Case(True, jsonl(preference(), preference())),
    "preference_multi_turn_input": Case(True, jsonl(preference([system(), user(), assistant(), user()]))),
    "preference_extra_keys_inside": Case(True, jsonl(preference(preferred=[assistant("A", weight=5)]))),
    "preference_with_images_and_parts": Case(
        True,
        jsonl(preference([user([text_part(), image()])], [assistant([text_part("A")])], [assistant([])])),
    ),
    "preference_input_extra_key": Case(
        True, jsonl({**preference(), "input": {"messages": [user()], "x": 1}})
    ),
    "eval_jsonl_any_object": Case(
        True, jsonl({"anything": 1}, {"question": "q", "answer": "a"}), purpose="eval"
    ),
    "eval_csv": Case(True, b"question,answer\nq1,a1\nq2,a2\n", ".csv", "eval"),
    # ---- file level
    "missing_file": Case(False, None),
    "empty_file": Case(False, b""),
    "json_extension": Case(False, jsonl(GOOD_CHAT), ".json"),
    "uppercase_extension": Case(False, jsonl(GOOD_CHAT), ".JSONL"),
    "no_extension": Case(False, jsonl(GOOD_CHAT), ""),
    "csv_for_fine_tune": Case(False, b"text\nhello\n", ".csv"),
    "parquet": Case(False, b"PAR1 not really parquet PAR1", ".parquet"),
    "eval_csv_ragged_row": Case(False, b"question,answer\nq1,a1\nq2\n", ".csv", "eval"),
    "eval_csv_header_only": Case(False, b"question,answer\n", ".csv", "eval"),
    "eval_jsonl_list_line": Case(False, jsonl({"a": 1}, [1, 2]), purpose="eval"),
    # ---- encoding and JSON
    "latin1_byte": Case(False, jsonl(GOOD_CHAT, GOOD_CHAT) + '{"text": "café"}\n'.encode("latin-1")),
    "truncated_utf8_at_end": Case(False, jsonl({"text": "ok"}) + b'{"text": "\xe4\xbd'),
    "utf8_bom": Case(False, b"\xef\xbb\xbf" + jsonl(GOOD_CHAT)),
    "invalid_json_line_2": Case(False, jsonl(GOOD_CHAT, '{"messages": [', GOOD_CHAT)),
    # 3.x skips blank lines (1.5.34 refused them); a file of nothing else has no samples.
    "blank_line_in_the_middle": Case(True, jsonl(GOOD_CHAT, "", GOOD_CHAT), sdk1=False),
    "trailing_blank_line": Case(True, jsonl(GOOD_CHAT, GOOD_CHAT) + b"\n", sdk1=False),
    "whitespace_only_line": Case(True, jsonl(GOOD_CHAT, " \t", GOOD_CHAT), sdk1=False),
    "only_blank_lines": Case(False, b"\n \n\r\n"),
    "cr_inside_an_object": Case(False, b'{"text":\r"a"}\n'),
    "huge_integer": Case(False, jsonl({"text": "a"}, '{"text": ' + "9" * 5000 + "}")),
    "nan_content": Case(False, jsonl('{"text": NaN}'), sdk3=True),  # JSON to Python; not content
    "form_feed_between_tokens": Case(False, b'{"text":\x0c"a"}\n'),
    "raw_tab_inside_a_string": Case(False, b'{"text": "a\tb"}\n'),
    "duplicate_keys_last_is_invalid": Case(False, b'{"text": "a", "text": 1}\n', sdk3=True),
    "nesting_too_deep": Case(False, jsonl({"text": "a"}, "[" * 100_000 + "]" * 100_000)),
    "line_is_a_list": Case(False, jsonl(GOOD_CHAT, [GOOD_CHAT])),
    "line_is_a_string": Case(False, jsonl('"just text"')),
    "line_is_null": Case(False, jsonl(GOOD_CHAT, "null")),
}

# Rules on what a line holds: 1.5.34 checked them in the client, 3.x leaves them to the server.
CONTENT_CASES: dict[str, Case] = {
    # ---- together 3.x: tools, the tool role, and messages without a content
    "chat_with_tools_and_tool_messages": Case(True, jsonl(TOOL_CHAT, TOOL_CHAT), sdk1=False),
    "role_tool": Case(True, jsonl(chat(user(), {"role": "tool", "content": "{}"}, assistant())), sdk1=False),
    "missing_content": Case(True, jsonl(chat(user(), {"role": "assistant"})), sdk1=False),
    "tools_not_a_list": Case(False, jsonl({**GOOD_CHAT, "tools": "get_weather"})),
    "tools_not_objects": Case(False, jsonl({**GOOD_CHAT, "tools": ["get_weather"]}), sdk1=False),
    "tools_on_a_text_sample": Case(False, jsonl({"text": "a", "tools": [WEATHER_TOOL]})),
    # ---- format detection
    "no_known_keys": Case(False, jsonl({"question": "q", "answer": "a"})),
    "prompt_without_completion": Case(False, jsonl({"prompt": "q"})),
    "extra_top_level_key": Case(False, jsonl(GOOD_CHAT, {**GOOD_CHAT, "id": 7})),
    "top_level_weight": Case(False, jsonl({**GOOD_CHAT, "weight": 0.5})),
    "two_formats_in_one_line": Case(False, jsonl({"text": "a", **GOOD_CHAT})),
    "formats_mixed": Case(False, jsonl({"text": "a"}, {"text": "b"}, GOOD_CHAT)),
    "formats_mixed_instruction_then_text": Case(
        False, jsonl({"prompt": "q", "completion": "a"}, {"text": "t"})
    ),
    # ---- conversations
    "messages_not_a_list": Case(False, jsonl({"messages": "hi"})),
    "messages_empty": Case(False, jsonl(GOOD_CHAT, {"messages": []})),
    "message_not_an_object": Case(False, jsonl(chat("hi", assistant()))),
    "missing_role": Case(False, jsonl(chat({"content": "hi"}, assistant()))),
    "role_not_a_string": Case(False, jsonl(chat({"role": 1, "content": "hi"}, assistant()))),
    "role_uppercase": Case(False, jsonl(chat({"role": "User", "content": "hi"}, assistant()))),
    "two_users_in_a_row": Case(False, jsonl(GOOD_CHAT, chat(user(), user(), assistant()))),
    "two_systems_in_a_row": Case(False, jsonl(chat(system(), system(), user(), assistant()))),
    "two_assistants_in_a_row": Case(False, jsonl(chat(user(), assistant(), assistant()))),
    "no_assistant": Case(False, jsonl(chat(system(), user()))),
    "weight_two": Case(False, jsonl(chat(user(), assistant(weight=2)))),
    "weight_float": Case(False, jsonl(chat(user(), assistant(weight=1.0)))),
    "weight_string": Case(False, jsonl(chat(user(weight="0"), assistant()))),
    "content_null": Case(False, jsonl(chat(user(None), assistant()))),
    "content_number": Case(False, jsonl(chat(user(), assistant(42)))),
    "content_object": Case(False, jsonl(chat(user({"text": "hi"}), assistant()))),
    # ---- multimodal
    "part_not_an_object": Case(False, jsonl(chat(user(["hi"]), assistant([])))),
    "part_without_type": Case(False, jsonl(chat(user([{"text": "hi"}]), assistant([])))),
    "part_type_audio": Case(False, jsonl(chat(user([{"type": "audio", "audio": "x"}]), assistant([])))),
    "text_part_without_text": Case(False, jsonl(chat(user([{"type": "text"}]), assistant([])))),
    "text_part_with_number": Case(False, jsonl(chat(user([text_part(3)]), assistant([])))),
    "image_in_assistant_message": Case(False, jsonl(chat(user([text_part()]), assistant([image()])))),
    "image_in_system_message": Case(
        False, jsonl(chat({"role": "system", "content": [image()]}, user([]), assistant([])))
    ),
    "image_url_a_string": Case(
        False, jsonl(chat(user([{"type": "image_url", "image_url": PNG}]), assistant([])))
    ),
    "image_url_without_url": Case(
        False, jsonl(chat(user([{"type": "image_url", "image_url": {}}]), assistant([])))
    ),
    "image_url_empty": Case(False, jsonl(chat(user([image("")]), assistant([])))),
    "image_http_url": Case(False, jsonl(chat(user([image("https://example.com/cat.png")]), assistant([])))),
    "image_gif": Case(False, jsonl(chat(user([image("data:image/gif;base64,R0lGOD==")]), assistant([])))),
    "image_too_large": Case(
        False, jsonl(chat(user([image(PNG[:22] + "A" * (MAX_IMAGE_URL_CHARS - 21))]), assistant([])))
    ),
    "eleven_images_in_one_message": Case(False, jsonl(chat(user([image()] * 11), assistant([])))),
    "eleven_images_across_messages": Case(
        False, jsonl(chat(user([image()] * 6), assistant([]), user([image()] * 5), assistant([])))
    ),
    "string_and_list_contents_mixed": Case(
        False, jsonl(chat(user([text_part(), image()]), assistant("A cat")))
    ),
    "image_with_weight_one": Case(False, jsonl(chat(user([image()], weight=1), assistant([])))),
    "text_with_eleven_images": Case(False, jsonl({"text": [image()] * 11})),
    "text_value_null": Case(False, jsonl({"text": None})),
    "instruction_prompt_number": Case(False, jsonl({"prompt": 1, "completion": "a"})),
    "instruction_image_in_completion": Case(False, jsonl({"prompt": "Draw", "completion": [image()]})),
    # ---- preference
    "preference_input_not_an_object": Case(False, jsonl({**preference(), "input": [user()]})),
    "preference_input_without_messages": Case(False, jsonl({**preference(), "input": {"prompt": "x"}})),
    "preference_input_messages_empty": Case(False, jsonl(preference([]))),
    "preference_input_ends_with_assistant": Case(False, jsonl(preference([user(), assistant()]))),
    "preference_input_bad_role": Case(False, jsonl(preference([{"role": "human", "content": "x"}]))),
    "preference_output_not_a_list": Case(False, jsonl(preference(preferred=assistant("A")))),
    "preference_output_empty": Case(False, jsonl(preference(non_preferred=[]))),
    "preference_output_two_messages": Case(
        False, jsonl(preference(preferred=[assistant("A"), assistant("B")]))
    ),
    "preference_output_not_an_object": Case(False, jsonl(preference(preferred=["A"]))),
    "preference_output_without_role": Case(False, jsonl(preference(preferred=[{"content": "A"}]))),
    "preference_output_user_role": Case(False, jsonl(preference(non_preferred=[user("B")]))),
    "preference_output_without_content": Case(False, jsonl(preference(preferred=[{"role": "assistant"}]))),
    "preference_output_content_number": Case(False, jsonl(preference(preferred=[assistant(5)]))),
    "preference_output_image": Case(False, jsonl(preference(preferred=[assistant([image()])]))),
    # ---- many problems in one file: the SDK names the first, we name them all
    "errors_on_many_lines": Case(
        False,
        jsonl(GOOD_CHAT, chat(user()), GOOD_CHAT, "{", chat(user(), user()), GOOD_CHAT, {"text": "x"}),
        sdk3=False,  # line 4 is not JSON
    ),
}

CASES: dict[str, Case] = {**FILE_CASES, **CONTENT_CASES}


def sdk1_expects(name: str) -> bool:
    case = CASES[name]
    return case.valid if case.sdk1 is None else case.sdk1


def sdk3_expects(name: str) -> bool:
    case = CASES[name]
    if case.sdk3 is not None:
        return case.sdk3
    return case.valid or name in CONTENT_CASES


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every case written to its own file (or, for missing_file, not written)."""
    folder = tmp_path_factory.mktemp("dataset-corpus")
    paths = {name: folder / f"{name}{case.suffix}" for name, case in CASES.items()}
    for name, case in CASES.items():
        if case.content is not None:
            paths[name].write_bytes(case.content)
    return paths


def run_driver(python: Path, corpus: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """One SDK's check_file verdict on every corpus file, from one subprocess."""
    cases = [{"path": str(corpus[name]), "purpose": case.purpose} for name, case in CASES.items()]
    env = {**os.environ, "TOGETHER_NO_BANNER": "1", "PYTHONUTF8": "1"}
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [str(python), str(DRIVER)],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    verdicts = {verdict["path"]: verdict for verdict in json.loads(done.stdout)}
    return {name: verdicts[str(path)] for name, path in corpus.items()}


@pytest.fixture(scope="module")
def sdk_verdicts(corpus: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """together 1.5.34's verdicts."""
    if not SDK_PYTHON.exists():
        pytest.fail(
            f"{SDK_PYTHON} is missing: run `make .venv-sdk1/.stamp` (make test does it) "
            "to install together==1.5.34 there"
        )
    return run_driver(SDK_PYTHON, corpus)


@pytest.fixture(scope="module")
def sdk3_verdicts(corpus: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """together 3.x's verdicts (the project's own SDK)."""
    return run_driver(SDK3_PYTHON, corpus)


def ours(name: str, corpus: dict[str, Path]) -> DatasetReport:
    return validate_dataset(corpus[name], purpose=CASES[name].purpose)


def test_the_corpus_has_dozens_of_valid_and_invalid_files() -> None:
    valid = [name for name, case in CASES.items() if case.valid]
    assert len(valid) >= 25
    assert len(CASES) - len(valid) >= 80


@pytest.mark.parametrize("name", list(CASES))
def test_the_sdk_judges_each_corpus_file_as_labelled(
    name: str, sdk_verdicts: dict[str, dict[str, Any]]
) -> None:
    verdict = sdk_verdicts[name]
    assert verdict["is_check_passed"] is sdk1_expects(name), verdict


@pytest.mark.parametrize("name", list(CASES))
def test_the_3x_sdk_judges_each_corpus_file_as_labelled(
    name: str, sdk3_verdicts: dict[str, dict[str, Any]]
) -> None:
    verdict = sdk3_verdicts[name]
    assert verdict["is_check_passed"] is sdk3_expects(name), verdict


@pytest.mark.parametrize("name", list(CASES))
def test_our_verdict_agrees_with_the_sdks(
    name: str,
    corpus: dict[str, Path],
    sdk_verdicts: dict[str, dict[str, Any]],
    sdk3_verdicts: dict[str, dict[str, Any]],
) -> None:
    report = ours(name, corpus)
    sdk1, sdk3 = sdk_verdicts[name]["is_check_passed"], sdk3_verdicts[name]["is_check_passed"]
    assert report.ok is CASES[name].valid, report.to_json()
    if sdk1 == sdk3:  # both SDKs agree: so do we
        assert report.ok is sdk1, (sdk_verdicts[name], report.to_json())
    if not sdk3:  # what 3.x refuses, we refuse
        assert not report.ok, (sdk3_verdicts[name], report.to_json())
    if sdk3 and not report.ok:  # stricter than 3.x only on a line's content, which its server checks
        assert name in CONTENT_CASES or CASES[name].sdk3 is True


# 1.5.34 names the first blank line; 3.x skips blank lines, so we report the missing samples instead.
BLANK_LINES_ONLY = {"only_blank_lines"}


def test_we_report_every_line_the_sdk_reports(
    corpus: dict[str, Path], sdk_verdicts: dict[str, dict[str, Any]]
) -> None:
    # CSV is left out: the SDK numbers CSV data rows from 1 after the header, we give the file line.
    with_lines = [
        name
        for name, case in CASES.items()
        if case.suffix == ".jsonl"
        and sdk_verdicts[name]["line_number"]
        and not case.valid
        and name not in BLANK_LINES_ONLY
    ]
    missed = {
        name: (sdk_verdicts[name]["line_number"], sdk_verdicts[name]["message"])
        for name in with_lines
        if sdk_verdicts[name]["line_number"] not in {issue.line for issue in ours(name, corpus).errors}
    }
    assert missed == {}
    assert len(with_lines) >= 60


def test_where_the_sdk_stops_at_the_first_problem_we_report_them_all(
    corpus: dict[str, Path], sdk_verdicts: dict[str, dict[str, Any]]
) -> None:
    assert sdk_verdicts["errors_on_many_lines"]["line_number"] == 2
    assert sorted({issue.line for issue in ours("errors_on_many_lines", corpus).errors}) == [2, 4, 5, 7]
