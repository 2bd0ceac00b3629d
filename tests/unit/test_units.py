"""Sizes and durations as people type them, and as the CLI prints them."""

from __future__ import annotations

import pytest

from tms_core.units import format_duration, format_size, parse_duration, parse_size, rfc3339


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2GiB", 2 * 1024**3),
        ("2gib", 2 * 1024**3),
        ("2Gi", 2 * 1024**3),
        ("512MiB", 512 * 1024**2),
        ("1.5GiB", 3 * 1024**3 // 2),
        ("1KiB", 1024),
        ("1TiB", 1024**4),
        ("2GB", 2 * 1000**3),
        ("2G", 2 * 1000**3),
        ("10kb", 10_000),
        ("100", 100),
        ("100B", 100),
        ("0", 0),
        (" 512 MiB ", 512 * 1024**2),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["-1", "abc", "10x", "", "GiB", "2 GiBs", "1e3", "1.2.3GiB"])
def test_parse_size_rejects_with_the_text_and_the_expected_form(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_size(text)
    message = str(info.value)
    assert repr(text) in message
    assert "is not a size" in message
    assert "2GiB" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90", 90.0),
        ("1.5", 1.5),
        ("45s", 45.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("500ms", 0.5),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("1h0m5s", 3605.0),
        ("2m500ms", 120.5),
        ("1.5h", 5400.0),
        ("  10m  ", 600.0),
    ],
)
def test_parse_duration(text: str, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["abc", "10x", "", "   ", "1h 30m", "h", "10mm", "s10", "1h30"])
def test_parse_duration_rejects_with_the_text_and_the_expected_form(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    message = str(info.value)
    assert repr(text) in message
    assert "is not a duration" in message
    assert "1h30m" in message


@pytest.mark.parametrize("text", ["0", "-1", "0s", "0ms", "0h0m", "-5.5"])
def test_parse_duration_rejects_zero_and_negative(text: str) -> None:
    with pytest.raises(ValueError, match="is not a positive duration") as info:
        parse_duration(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("text", ["nan", "inf"])
def test_parse_duration_rejects_non_finite(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "0 B"),
        (512, "512 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (512 * 1024**2, "512.0 MiB"),
        (2 * 1024**3, "2.0 GiB"),
        (5 * 1024**4, "5.0 TiB"),
        (3000 * 1024**4, "3000.0 TiB"),
    ],
)
def test_format_size(n: int, expected: str) -> None:
    assert format_size(n) == expected


@pytest.mark.parametrize("text", ["2GiB", "512MiB", "1KiB", "3TiB"])
def test_format_size_round_trips_binary_units(text: str) -> None:
    number, unit = format_size(parse_size(text)).split()
    assert parse_size(number + unit) == parse_size(text)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (-5, "0s"),
        (0, "0s"),
        (59, "59s"),
        (60, "1m00s"),
        (90, "1m30s"),
        (3599, "59m59s"),
        (3600, "1h00m"),
        (5400, "1h30m"),
        (2 * 86400, "48h00m"),
    ],
)
def test_format_duration(seconds: float, expected: str) -> None:
    assert format_duration(seconds) == expected


@pytest.mark.parametrize("text", ["45s", "10m", "1h30m", "59m59s"])
def test_format_duration_round_trips(text: str) -> None:
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


def test_rfc3339_is_utc_with_milliseconds() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(1_700_000_000.25) == "2023-11-14T22:13:20.250Z"
