"""The dataset validator, rule by rule, and the validate_dataset command."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from together_dash.together import datasets
from together_dash.together.datasets import MAX_FILE_BYTES, DatasetReport, validate_dataset

PNG = "data:image/png;base64,iVBORw0KGgo="
USER = {"role": "user", "content": "Hi"}
ASSISTANT = {"role": "assistant", "content": "Hello"}
CHAT = {"messages": [USER, ASSISTANT]}


def write(tmp_path: Path, *lines: Any, name: str = "data.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(
        b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines)
    )
    return path


def errors_of(report: DatasetReport) -> list[tuple[int | None, str]]:
    return [(issue.line, issue.message) for issue in report.errors]


def the_only_error(report: DatasetReport) -> tuple[int | None, str]:
    assert len(report.errors) == 1, errors_of(report)
    return errors_of(report)[0]


# ---- accepted files ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "expected_format"),
    [
        ({"text": "Hello"}, "text"),
        (CHAT, "conversation"),
        ({"prompt": "2+2?", "completion": "4"}, "instruction"),
        (
            {
                "input": {"messages": [USER]},
                "preferred_output": [ASSISTANT],
                "non_preferred_output": [ASSISTANT],
            },
            "preference",
        ),
    ],
)
def test_it_accepts_each_format_and_names_it(
    tmp_path: Path, sample: dict[str, Any], expected_format: str
) -> None:
    report = validate_dataset(write(tmp_path, sample, sample))
    assert (report.ok, report.format, report.samples, report.errors) == (True, expected_format, 2, [])


def test_it_accepts_multimodal_conversations(tmp_path: Path) -> None:
    sample = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What?"},
                    {"type": "image_url", "image_url": {"url": PNG}},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "A dot."}]},
        ]
    }
    assert validate_dataset(write(tmp_path, sample)).ok


# ---- one rule at a time, with its line ----------------------------------------------------------


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        (b'{"text": ', "invalid JSON"),
        ([CHAT], "must be a JSON object, found a list"),
        ({"question": "q"}, "no dataset format has the keys `question`"),
        ({**CHAT, "id": 1}, "unexpected key `id`"),
        ({"messages": []}, "messages: is empty"),
        ({"messages": "hi"}, "messages: must be a list"),
        ({"messages": [{"content": "x"}, ASSISTANT]}, "messages[0]: missing `role`"),
        ({"messages": [USER, {"role": "bot", "content": "x"}]}, 'messages[1]: role "bot" is not one of'),
        ({**CHAT, "tools": {"name": "f"}}, "tools: must be a list of tool definitions, found an object"),
        ({"text": "a", "tools": []}, "unexpected key `tools`: a text sample has only `text`"),
        ({"messages": [USER, USER, ASSISTANT]}, "messages[1]: a second `user` message in a row"),
        ({"messages": [USER]}, "messages: no assistant message"),
        ({"messages": [USER, {**ASSISTANT, "weight": 2}]}, "messages[1]: weight must be the integer 0 or 1"),
        (
            {"messages": [USER, {**ASSISTANT, "content": None}]},
            "messages[1].content: must be a string or a list",
        ),
        (
            {"prompt": "Draw", "completion": [{"type": "image_url", "image_url": {"url": PNG}}]},
            "completion[0]: images are allowed only in user messages",
        ),
        (
            {"text": [{"type": "image_url", "image_url": {"url": "https://x/cat.png"}}]},
            "text[0]: an image must be",
        ),
        ({"text": [{"type": "audio"}]}, "text[0]: type must be `text` or `image_url`"),
        (
            {
                "input": {"messages": [USER, ASSISTANT]},
                "preferred_output": [ASSISTANT],
                "non_preferred_output": [ASSISTANT],
            },
            "input.messages: the last message must not be the assistant's",
        ),
        (
            {"input": {"messages": [USER]}, "preferred_output": [], "non_preferred_output": [ASSISTANT]},
            "preferred_output: must be a list of exactly one assistant message, found 0 items",
        ),
    ],
)
def test_each_rule_reports_its_line(tmp_path: Path, bad_line: Any, expected: str) -> None:
    report = validate_dataset(write(tmp_path, CHAT, CHAT, bad_line, CHAT))
    assert not report.ok
    assert {line for line, _ in errors_of(report)} == {3}
    assert any(expected in message for _, message in errors_of(report)), errors_of(report)


def test_formats_mixed_in_one_file_are_reported_where_they_change(tmp_path: Path) -> None:
    report = validate_dataset(write(tmp_path, {"text": "a"}, {"text": "b"}, CHAT, {"text": "c"}))
    assert the_only_error(report) == (
        3,
        "in the conversation format, but line 1 is in the text format; all samples must use one format",
    )
    assert report.format == "text"


def test_images_count_across_the_messages_of_a_sample(tmp_path: Path) -> None:
    images = [{"type": "image_url", "image_url": {"url": PNG}}] * 6
    sample = {
        "messages": [
            {"role": "user", "content": images},
            {"role": "assistant", "content": []},
            {"role": "user", "content": images},
            {"role": "assistant", "content": []},
        ]
    }
    assert the_only_error(validate_dataset(write(tmp_path, sample))) == (
        1,
        "messages: 12 images; at most 10 are allowed",
    )


def test_a_sample_cannot_mix_string_and_list_contents(tmp_path: Path) -> None:
    sample = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}, ASSISTANT]}
    assert the_only_error(validate_dataset(write(tmp_path, sample))) == (
        1,
        "messages[1].content: a sample's contents must be all strings or all lists, not both",
    )


def test_an_image_message_cannot_have_weight_one(tmp_path: Path) -> None:
    image = {"type": "image_url", "image_url": {"url": PNG}}
    sample = {
        "messages": [{"role": "user", "content": [image], "weight": 1}, {"role": "assistant", "content": []}]
    }
    assert the_only_error(validate_dataset(write(tmp_path, sample))) == (
        1,
        "messages[0]: a message with images must have weight 0, found 1",
    )


def test_blank_lines_are_skipped_like_in_the_3x_sdk(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(json.dumps(CHAT).encode() + b"\n\n  \n" + json.dumps(CHAT).encode() + b"\n\n")

    report = validate_dataset(path)

    assert (report.ok, report.samples, report.errors) == (True, 2, [])


def test_a_tool_calling_conversation_passes(tmp_path: Path) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    sample = {
        "messages": [
            USER,
            {"role": "assistant", "tool_calls": [call]},  # no content: 3.x requires only the role
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
            ASSISTANT,
        ],
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }

    report = validate_dataset(write(tmp_path, sample))

    assert (report.ok, report.format, report.errors) == (True, "conversation", [])


def test_weight_true_passes_like_in_the_sdk(tmp_path: Path) -> None:
    assert validate_dataset(write(tmp_path, {"messages": [USER, {**ASSISTANT, "weight": True}]})).ok


# ---- every problem, not only the first ----------------------------------------------------------


def test_every_problem_is_reported_with_its_line(tmp_path: Path) -> None:
    report = validate_dataset(
        write(
            tmp_path,
            CHAT,
            {"messages": [USER, USER]},
            b"not json",
            CHAT,
            {"messages": [{"role": "bot", "content": 1}, ASSISTANT]},
        )
    )
    assert errors_of(report) == [
        (2, "messages[1]: a second `user` message in a row; roles must alternate"),
        (2, "messages: no assistant message; at least one is required"),
        (3, "invalid JSON: Expecting value at character 1"),
        (5, 'messages[0]: role "bot" is not one of system, user, assistant, tool'),
        (5, "messages[0].content: must be a string or a list of content parts, found a number"),
    ]
    assert (report.ok, report.samples, report.error_count) == (False, 5, 5)


def test_past_max_errors_the_rest_are_counted_not_listed(tmp_path: Path) -> None:
    report = validate_dataset(write(tmp_path, *[b"[]"] * 10), max_errors=3)
    assert [line for line, _ in errors_of(report)] == [1, 2, 3, None]
    assert report.errors[-1].message == "7 more errors not listed"
    assert report.error_count == 10


# ---- bytes, lines and the file --------------------------------------------------------------------


def test_a_bad_utf8_byte_is_reported_on_its_line_and_refuses_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, CHAT, b'{"text": "caf\xe9"}', CHAT)
    line, message = the_only_error(validate_dataset(path))
    assert line == 2
    assert message.startswith("not valid UTF-8 (invalid continuation byte at byte 14 of the line)")


def test_lines_end_at_cr_lf_and_crlf_like_in_text_mode(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"text": "a"}\r\n{"text": "b"}\r{"text": "c"}\n[]\r\n')
    report = validate_dataset(path)
    assert report.samples == 4
    assert [line for line, _ in errors_of(report)] == [4]


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_bytes(b"")
    assert the_only_error(validate_dataset(tmp_path / "empty.jsonl")) == (None, "The file is empty.")


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    line, message = the_only_error(validate_dataset(tmp_path / "nope.jsonl"))
    assert (line, message.startswith("File not found")) == (None, True)


def test_a_file_over_50_1_gb_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    with path.open("wb") as sparse:
        sparse.truncate(MAX_FILE_BYTES + 1)  # sparse: takes no disk space
    report = validate_dataset(path)
    assert the_only_error(report) == (None, "The file is 50.1 GB; Together accepts at most 50.1 GB.")
    assert report.bytes_read == 0


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("data.json", "Unsupported file extension '.json'"),
        ("data.JSONL", "extensions are case-sensitive"),
        ("data.csv", "CSV files are not accepted for fine-tune"),
        ("data.parquet", "Parquet (pre-tokenised) files are not checked here"),
    ],
)
def test_only_the_jsonl_extension_is_checked_for_fine_tuning(
    tmp_path: Path, name: str, expected: str
) -> None:
    line, message = the_only_error(validate_dataset(write(tmp_path, CHAT, name=name)))
    assert line is None
    assert expected in message


def test_a_line_longer_than_the_cap_is_reported_not_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datasets, "MAX_LINE_BYTES", 100)
    report = validate_dataset(write(tmp_path, CHAT, {"text": "x" * 500}, CHAT))
    assert errors_of(report) == [(2, "longer than 0 MiB; not checked")]
    assert report.samples == 3


def test_a_binary_stream_is_validated_with_the_name_given(tmp_path: Path) -> None:
    stream = io.BytesIO(b'{"text": "a"}\n[]\n')
    report = validate_dataset(stream, filename="upload.jsonl")
    assert (report.samples, [line for line, _ in errors_of(report)]) == (2, [2])


def test_an_unseekable_stream_is_validated_too() -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b'{"text": "a"}\n')
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = validate_dataset(pipe, filename="piped.jsonl")
    assert (report.ok, report.samples) == (True, 1)


def test_progress_is_reported_as_the_file_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, *[{"text": "x" * 1000}] * 3000)
    seen: list[int] = []
    validate_dataset(path, progress=seen.append)
    assert len(seen) >= 3
    assert seen == sorted(seen)
    assert seen[-1] == path.stat().st_size


# ---- eval files ----------------------------------------------------------------------------------


def test_eval_jsonl_needs_objects_but_no_format(tmp_path: Path) -> None:
    report = validate_dataset(write(tmp_path, {"q": 1}, [1]), purpose="eval")
    assert (report.format, errors_of(report)) == (None, [(2, "must be a JSON object, found a list")])


def test_eval_csv_rows_need_as_many_fields_as_the_header(tmp_path: Path) -> None:
    path = tmp_path / "eval.csv"
    path.write_bytes(b"question,answer\nq1,a1\nq2\nq3,a3,extra\n")
    report = validate_dataset(path, purpose="eval")
    assert [line for line, _ in errors_of(report)] == [3, 4]
    assert report.samples == 3


# ---- length warnings -----------------------------------------------------------------------------


def test_samples_longer_than_the_context_length_are_warned_about_by_line(tmp_path: Path) -> None:
    long_chat = {"messages": [USER, {"role": "assistant", "content": "y" * 300}]}
    report = validate_dataset(write(tmp_path, CHAT, long_chat), context_length=100)
    assert report.ok
    assert [(issue.line, issue.message) for issue in report.warnings] == [
        (2, "about 101 tokens, over the model's context length of 100")
    ]


def test_the_token_counter_can_be_replaced(tmp_path: Path) -> None:
    report = validate_dataset(
        write(tmp_path, {"text": "one two three"}),
        context_length=2,
        token_counter=lambda text: len(text.split()),
    )
    assert [issue.line for issue in report.warnings] == [1]


def test_a_preference_sample_is_measured_with_its_longer_output(tmp_path: Path) -> None:
    sample = {
        "input": {"messages": [{"role": "user", "content": "aaa"}]},
        "preferred_output": [{"role": "assistant", "content": "b" * 30}],
        "non_preferred_output": [{"role": "assistant", "content": "c"}],
    }
    counted: list[str] = []
    validate_dataset(
        write(tmp_path, sample), context_length=1000, token_counter=lambda t: counted.append(t) or 0
    )
    assert counted == ["aaa\n" + "b" * 30]


def test_without_a_context_length_nothing_is_measured(tmp_path: Path) -> None:
    assert validate_dataset(write(tmp_path, {"text": "x" * 10_000})).warnings == []


# ---- the JSON shape ------------------------------------------------------------------------------


def test_the_json_report_has_exactly_the_documented_shape(tmp_path: Path) -> None:
    report = validate_dataset(write(tmp_path, CHAT, []), context_length=1)
    assert report.to_json() == {
        "ok": False,
        "format": "conversation",
        "samples": 2,
        "errors": [{"line": 2, "message": "must be a JSON object, found a list"}],
        "warnings": [{"line": 1, "message": "about 3 tokens, over the model's context length of 1"}],
    }


# ---- the command ---------------------------------------------------------------------------------


def run_command(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("validate_dataset", *args, stdout=out)
    except SystemExit as exit_:
        return int(exit_.code or 0), out.getvalue()
    return 0, out.getvalue()


@pytest.mark.django_db
def test_the_command_exits_0_for_an_accepted_file(tmp_path: Path) -> None:
    path = write(tmp_path, CHAT, CHAT)
    assert run_command(str(path)) == (0, f"{path}: accepted (conversation format, 2 samples).\n")


@pytest.mark.django_db
def test_the_command_exits_1_and_lists_every_error_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, CHAT, [], CHAT, {"text": "a"})
    code, output = run_command(str(path))
    assert code == 1
    assert output.splitlines() == [
        f"{path}: refused, 2 error(s) (conversation format, 4 samples).",
        "  line 2: must be a JSON object, found a list",
        "  line 4: in the text format, but line 1 is in the conversation format;"
        " all samples must use one format",
    ]


@pytest.mark.django_db
def test_the_command_prints_json(tmp_path: Path) -> None:
    code, output = run_command(str(write(tmp_path, CHAT, b"{")), "--json")
    assert code == 1
    assert json.loads(output) == {
        "ok": False,
        "format": "conversation",
        "samples": 2,
        "errors": [
            {
                "line": 2,
                "message": (
                    "invalid JSON: Expecting property name enclosed in double quotes at the end of the line"
                ),
            }
        ],
        "warnings": [],
    }


@pytest.mark.django_db
def test_the_command_takes_the_context_length_from_the_catalog(tmp_path: Path) -> None:
    from together_dash.catalog.models import ModelInfo

    ModelInfo.objects.create(model_id="meta-llama/Tiny", context_length=10)
    path = write(tmp_path, CHAT, {"messages": [USER, {"role": "assistant", "content": "z" * 100}]})
    code, output = run_command(str(path), "--json", "--model", "meta-llama/Tiny")
    assert (code, json.loads(output)["warnings"]) == (
        0,
        [{"line": 2, "message": "about 35 tokens, over the model's context length of 10"}],
    )


@pytest.mark.django_db
def test_the_command_warns_when_the_catalog_does_not_know_the_model(tmp_path: Path) -> None:
    code, output = run_command(str(write(tmp_path, CHAT)), "--json", "--model", "no/such-model")
    assert (code, json.loads(output)["warnings"]) == (
        0,
        [
            {
                "line": None,
                "message": (
                    "Model 'no/such-model' has no context length in the catalog: sample lengths not checked."
                ),
            }
        ],
    )


@pytest.mark.django_db
def test_the_command_checks_eval_files_with_purpose_eval(tmp_path: Path) -> None:
    path = tmp_path / "eval.csv"
    path.write_bytes(b"q,a\n1,2\n")
    assert run_command(str(path), "--purpose", "eval")[0] == 0
    assert run_command(str(path))[0] == 1
