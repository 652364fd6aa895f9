from __future__ import annotations

import json

import pytest
from vhelpers import at, chat, check, codes, jsonl, padded

from shared.run.privacy import iban_ok, luhn_ok, scan

SECRETS = {
    "AKIAIOSFODNN7EXAMPLQ": "AWS access key",
    "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTIzNA==;"
    "EndpointSuffix=core.windows.net": "Azure storage account key",
    "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=root;"
    "SharedAccessKey=QmFzZTY0U2VjcmV0S2V5VmFsdWVIZXJlMTIzNDU2Nzg=": "Azure shared access key",
    "https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sp=r&sig=AbCdEfGhIjKlMnOpQrStUvWxYz0123456789%2B": "SAS token",
    "Server=tcp:db.example.net;Database=x;User Id=sa;Password=Hunter2Secret!;": "connection string password",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\n-----END RSA PRIVATE KEY-----": "private key block",
    "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8": "GitHub token",
    "sk-proj-" + "abcDEF123456ghiJKL789012mnoPQR345678stu": "OpenAI API key",
    "xoxb-" + "123456789012-abcdefghijKLMN": "Slack token",
    "AIza" + "SyA1234567890abcdefghijklmnopqrstuv": "Google API key",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U": "JSON web token",
}


@pytest.mark.parametrize("secret, kind", SECRETS.items())
def test_secrets_are_errors_and_never_printed_in_full(secret: str, kind: str) -> None:
    report = check(jsonl(padded([chat(user=f"here you go: {secret} thanks")])))
    found = [f for f in report.errors if f.code == "secret"]
    assert [f.line for f in found] == [1]
    assert kind.split()[0] in found[0].message
    dumped = json.dumps([f.message for f in report.errors + report.warnings])
    core = secret.split("=")[-1] if "=" in secret[:40] else secret
    assert core[:12] not in dumped or len(core) < 12
    assert secret not in dumped


@pytest.mark.parametrize("text, code, shown", [
    ("mail me at jane.doe@contoso.com please", "pii_email", "j***@c***.com"),
    ("call +1 (425) 555-0100 today", "pii_phone", "**00"),
    ("or 425-555-0199 after five", "pii_phone", "**99"),
    ("my card is 4111 1111 1111 1111 ok", "pii_card", "**** **** **** 1111"),
    ("card 5500-0000-0000-0004", "pii_card", "0004"),
    ("ssn 123-45-6789 on file", "pii_national_id", "***-**-**89"),
    ("iban DE89 3704 0044 0532 0130 00 thanks", "pii_iban", "DE**"),
    ("iban GB82WEST12345698765432 thanks", "pii_iban", "GB**"),
])
def test_personal_data_is_found_and_masked(text: str, code: str, shown: str) -> None:
    report = check(jsonl(padded([chat(user=text)])))
    found = [f for f in report.errors if f.code == code]
    assert [f.line for f in found] == [1]
    assert shown in found[0].message
    digits = "".join(c for c in text if c.isdigit())
    if len(digits) >= 8:
        assert digits not in "".join(c for c in found[0].message if c.isdigit())


@pytest.mark.parametrize("text", [
    "order #1234567 shipped on 2025-01-15 for $19.99",
    "version 1.2.3.4 of build 20240115123456 (sha 4111111111111112)",
    "write to user@example.com or admin@mail.test",
    "the logo@2x.png asset",
    "invoice 4111 1111 1111 1112 fails Luhn",
    "ssn-like 000-12-3456 and 666-12-3456 are never issued",
    "DE00 3704 0044 0532 0130 00 has a bad checksum",
    "call extension 5550100 or room 101",
])
def test_ordinary_numbers_and_placeholders_are_not_personal_data(text: str) -> None:
    report = check(jsonl(padded([chat(user=text)])))
    assert not [c for c in codes(report) if c.startswith("pii_") or c == "secret"], report.errors


def test_personal_data_can_be_a_warning_but_secrets_stay_errors() -> None:
    lines = padded([chat(user="jane@contoso.com"), chat(user="key AKIAIOSFODNN7EXAMPLQ")])
    report = check(jsonl(lines), pii="warn")
    assert at(report, "pii_email") == [1]
    assert "pii_email" in codes(report, "warnings")
    assert codes(report, "errors") == ["secret"]


def test_escaped_newline_before_a_number_does_not_hide_it() -> None:
    report = check(jsonl(padded([chat(user="line one\n555-123-4567")])))
    assert at(report, "pii_phone") == [1]


def test_inline_base64_images_are_not_scanned() -> None:
    noise = "QUtJQUlPU0ZPRE5ON0VYQU1QTFE0MTExMTExMTExMTExMTEx" * 50 + "AKIAIOSFODNN7EXAMPLQ"
    ex = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "data:image/png;base64," + noise}}]}, {"role": "assistant", "content": "A cat on a mat."}]}
    report = check(jsonl(padded([ex])), model="gpt-4o")
    assert report.valid, report.errors


def test_finding_offsets_map_to_the_right_line() -> None:
    block = b'{"a": "x"}\n{"a": "jane@contoso.com"}'
    assert [(off, code) for off, code, _ in scan(block)] == [(18, "pii_email")]


def test_checksums() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("DE89370400440532013000") and not iban_ok("DE89370400440532013001")


@pytest.mark.parametrize("written", [
    r"mail alice\u0040contoso.com today",       # "@" escaped
    r"call \u0035\u0035\u0035-867-5309 now",  # digits escaped
    r"key AccountKey\u003dc2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0",
])
def test_personal_data_written_with_json_escapes_is_found_as_the_service_reads_it(written: str) -> None:
    line = json.dumps(chat(user="placeholder"), ensure_ascii=True).replace("placeholder", written)
    report = check(jsonl(padded([line])))
    assert [(f.line, f.code) for f in report.errors][:1] in ([(1, "pii_email")], [(1, "pii_phone")], [(1, "secret")])


def test_non_ascii_escapes_alone_are_not_findings_and_raw_findings_are_not_doubled() -> None:
    line = json.dumps(chat(user="Grüße an bob@contoso.com"), ensure_ascii=True)
    assert "\\u00fc" in line
    report = check(jsonl(padded([line])))
    assert [(f.line, f.code) for f in report.errors] == [(1, "pii_email")]
