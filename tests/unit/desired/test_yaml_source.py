"""YAML loading: positions, duplicate keys, aliases, encodings."""

from __future__ import annotations

from pathlib import Path

from billing_reconciler.desired.yaml_source import (
    MAX_EXPANDED_NODES,
    Position,
    load_yaml_file,
    parse_yaml_text,
)


def test_positions_of_values_and_keys() -> None:
    [document], problems = parse_yaml_text("a:\n  b: [1, 2]\n  c: x\n", "f.yaml")
    assert problems == []
    assert document.data == {"a": {"b": [1, 2], "c": "x"}}
    assert document.position(("a", "b", 1)) == Position(2, 10)
    assert document.position(("a", "c")) == Position(3, 6)
    assert document.position(("a", "c"), key=True) == Position(3, 3)
    # An unknown path falls back to its nearest known parent.
    assert document.position(("a", "missing", 0)) == Position(2, 3)


def test_duplicate_keys_are_refused_not_last_wins() -> None:
    documents, [problem] = parse_yaml_text("a: 1\nb: 2\na: 3\n", "f.yaml")
    assert documents == []
    assert (problem.line, problem.column) == (3, 1)
    assert "duplicate key 'a' (first written at line 1)" in problem.message


def test_keys_keep_their_source_text() -> None:
    [document], _ = parse_yaml_text("on: 1\n2: x\n", "f.yaml")
    assert document.data == {"on": 1, "2": "x"}


def test_small_aliases_are_fine() -> None:
    [document], problems = parse_yaml_text("a: &x {k: 1}\nb: *x\n", "f.yaml")
    assert problems == []
    assert document.data == {"a": {"k": 1}, "b": {"k": 1}}


def test_alias_bomb_is_refused_before_expansion() -> None:
    # 9 levels of 9 aliases = 387 million nodes once expanded. The check counts each distinct
    # node once, so refusing it costs a few dozen node visits, never the expansion.
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    documents, [problem] = parse_yaml_text("\n".join(lines) + "\n", "bomb.yaml")
    assert documents == []
    assert "alias bomb" in problem.message
    assert f"{MAX_EXPANDED_NODES:,}" in problem.message
    assert problem.line == 7  # a6 is the first node expanding past the limit


def test_recursive_alias_is_refused() -> None:
    documents, [problem] = parse_yaml_text("a: &a [*a]\n", "f.yaml")
    assert documents == []
    assert "recursive" in problem.message


def test_merge_keys_are_refused_with_a_clear_message() -> None:
    _, [problem] = parse_yaml_text("a: &a {k: 1}\nb:\n  <<: *a\n", "f.yaml")
    assert "merge keys" in problem.message
    assert problem.line == 3


def test_multiple_documents() -> None:
    documents, problems = parse_yaml_text("a: 1\n---\nb: 2\n", "f.yaml")
    assert problems == []
    assert [d.data for d in documents] == [{"a": 1}, {"b": 2}]
    assert documents[1].position(("b",)) == Position(3, 4)


def test_tabs_get_a_dedicated_message() -> None:
    _, [problem] = parse_yaml_text("a:\n\tb: 1\n", "f.yaml")
    assert "tab" in problem.message
    assert problem.line == 2


def test_non_utf8_file_points_at_the_byte(tmp_path: Path) -> None:
    file = tmp_path / "f.yaml"
    file.write_bytes(b"a: 1\nb: caf\xe9\n")
    documents, [problem] = load_yaml_file(file, "f.yaml")
    assert documents == []
    assert (problem.line, problem.column) == (2, 7)
    assert "0xe9" in problem.message


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    file = tmp_path / "f.yaml"
    file.write_bytes(b"\xef\xbb\xbfa: 1\n")
    [document], problems = load_yaml_file(file, "f.yaml")
    assert problems == []
    assert document.data == {"a": 1}


def test_oversized_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    file = tmp_path / "big.yaml"
    file.write_bytes(b"#" * (5 * 1024 * 1024))
    documents, [problem] = load_yaml_file(file, "big.yaml")
    assert documents == []
    assert "5.0 MiB" in problem.message
