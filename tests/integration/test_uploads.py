"""Corpus uploads: formats accepted, bad files rejected with a clear 4xx, and nothing stored when rejected."""

from __future__ import annotations

import gzip
import json

import pytest

from tests.integration.helpers import error_code, external_spec

TEXT = "First document about football.\nSecond line.\n\nSecond document about tennis.\n"
JSONL = "\n".join(json.dumps({"text": t}) for t in ["def f():\n    return 1", "class A: pass"]) + "\n"


@pytest.fixture
def draft(api, auth):  # type: ignore[no-untyped-def]
    spec = external_spec(executor="worker", fidelities=[{"preset": "xs"}])
    spec["domains"] = [{"name": "sport"}, {"name": "code"}]
    spec["target"] = None
    exp = api.post("/api/v1/experiments", json=spec, headers=auth).json()
    return f"/api/v1/experiments/{exp['id']}"


def _put(api, auth, base, domain, body, filename):  # type: ignore[no-untyped-def]
    return api.put(
        f"{base}/domains/{domain}/corpus", params={"filename": filename}, content=body, headers=auth
    )


def _stored_files(settings_env) -> list[str]:  # type: ignore[no-untyped-def]
    from pathlib import Path

    root = Path(settings_env["MIXLAB_STORAGE_DIR"]) / "corpora"
    return sorted(p.name for p in root.glob("*")) if root.exists() else []


def test_txt_jsonl_and_gzip_are_accepted(api, auth, draft) -> None:  # type: ignore[no-untyped-def]
    sport = _put(api, auth, draft, "sport", TEXT.encode(), "sport.txt").json()
    assert sport["documents"] == 2 and len(sport["sha256"]) == 64
    code = _put(api, auth, draft, "code", gzip.compress(JSONL.encode()), "code.jsonl.gz").json()
    assert code["documents"] == 2
    again = _put(api, auth, draft, "sport", gzip.compress(TEXT.encode()), "s.txt.gz").json()
    assert again["sha256"] == sport["sha256"]  # same text, same content address


BAD_UPLOADS = [
    (b"", "x.txt", 422, "empty_corpus"),
    (b"\n\n   \n", "x.txt", 422, "empty_corpus"),
    ("caf\xe9".encode("latin-1"), "x.txt", 422, "not_utf8"),
    (b'{"text": "ok"}\n{"text": broken\n', "x.jsonl", 422, "bad_jsonl"),
    (b'{"body": "no text field"}\n', "x.jsonl", 422, "bad_jsonl"),
    (b"not gzip at all", "x.txt.gz", 422, "bad_gzip"),
    (b"hello", "x.pdf", 422, "invalid_input"),  # the filename query parameter names the format
]


@pytest.mark.parametrize(("body", "filename", "status", "code"), BAD_UPLOADS)
def test_bad_uploads_are_rejected_and_nothing_stored(
    api, auth, draft, settings_env, body, filename, status, code
):  # type: ignore[no-untyped-def]
    resp = _put(api, auth, draft, "sport", body, filename)
    assert (resp.status_code, error_code(resp)) == (status, code), resp.text
    assert api.get(draft, headers=auth).json()["domains"][0]["sha256"] is None
    assert _stored_files(settings_env) == []


def test_oversized_upload_is_413(api, auth, draft, settings_env, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from app.core.config import get_settings

    monkeypatch.setenv("MIXLAB_MAX_UPLOAD_BYTES", "1000")
    get_settings.cache_clear()
    resp = _put(api, auth, draft, "sport", b"word " * 1000, "big.txt")
    assert resp.status_code == 413 and error_code(resp) == "upload_too_large"
    assert _stored_files(settings_env) == []


def test_unknown_domain_and_wrong_status(api, auth, draft) -> None:  # type: ignore[no-untyped-def]
    resp = _put(api, auth, draft, "books", TEXT.encode(), "b.txt")
    assert resp.status_code == 404 and error_code(resp) == "unknown_domain"
    _put(api, auth, draft, "sport", TEXT.encode(), "s.txt")
    _put(api, auth, draft, "code", JSONL.encode(), "c.jsonl")
    api.post(f"{draft}/cancel", headers=auth)
    late = _put(api, auth, draft, "sport", TEXT.encode(), "s.txt")
    assert late.status_code == 409 and error_code(late) == "bad_status"
