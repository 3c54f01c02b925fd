"""The request-schema refusal names the datasource cleanly (it once read ``'thumbs''s``)."""

from __future__ import annotations

from tests.web.conftest import Api


async def test_schema_refusal_sentence(api: Api) -> None:
    schema = {"type": "object", "properties": {"size": {"type": "integer"}}}
    await api.declare("thumbs", request_schema=schema)
    body = {"job": "j1", "request": {"size": "big"}}
    reply = await api.call("POST", "/thumbs/job/", api.token(), body, expect=400)
    assert reply == {
        "error": "The request does not match the request_schema of datasource 'thumbs' at size: "
        "'big' is not of type 'integer'.",
        "code": "bad_request",
    }
