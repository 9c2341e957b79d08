"""The metadata flows and exchange helpers as pure code: requests planned, replies checked."""

from __future__ import annotations

import pytest

from coder_agent.auth.flows import (
    AWS,
    AZURE,
    GOOGLE,
    MetadataReply,
    aws_flow,
    azure_flow,
    base_url,
    exchange_body,
    google_flow,
    session_token_from,
)
from coder_agent.errors import MetadataError, ProtocolError
from coder_agent.retry import Decision, classify

GOOGLE_HDR = {"metadata-flavor": "Google"}


def test_aws_flow_requests_and_result() -> None:
    f = aws_flow("http://imds")
    put = next(f)
    assert (put.method, put.url) == ("PUT", "http://imds/latest/api/token")
    assert put.headers == {"X-aws-ec2-metadata-token-ttl-seconds": "21600"}
    sig = f.send(MetadataReply(200, "tok-123\n"))
    assert (sig.method, sig.url) == ("GET", "http://imds/latest/dynamic/instance-identity/signature")
    assert sig.headers == {"X-aws-ec2-metadata-token": "tok-123"}
    doc = f.send(MetadataReply(200, "SIG=="))
    assert doc.url == "http://imds/latest/dynamic/instance-identity/document"
    assert doc.headers == {"X-aws-ec2-metadata-token": "tok-123"}
    with pytest.raises(StopIteration) as stop:
        f.send(MetadataReply(200, '{"instanceId": "i-1"}'))
    assert stop.value.value == {"signature": "SIG==", "document": '{"instanceId": "i-1"}'}


@pytest.mark.parametrize("status", [401, 404, 500])
def test_aws_imds_status_is_an_error_with_its_text(status: int) -> None:
    f = aws_flow("http://imds")
    next(f)
    f.send(MetadataReply(200, "tok"))
    with pytest.raises(MetadataError) as e:
        f.send(MetadataReply(status, "<html>Unauthorized</html>"))
    assert e.value.url == "http://imds/latest/dynamic/instance-identity/signature"
    assert e.value.stage == f"HTTP {status}"
    assert "instance identity signature refused: <html>Unauthorized</html>" in str(e.value)
    assert classify(e.value) is Decision.RETRY


def test_aws_empty_token_is_an_error() -> None:
    f = aws_flow("http://imds")
    next(f)
    with pytest.raises(MetadataError, match="empty token"):
        f.send(MetadataReply(200, "  "))


def test_azure_flow_forwards_signature_and_encoding() -> None:
    f = azure_flow("http://az")
    req = next(f)
    assert req.url == "http://az/metadata/attested/document?api-version=2020-09-01"
    assert req.headers == {"Metadata": "true"}
    with pytest.raises(StopIteration) as stop:
        f.send(MetadataReply(200, '{"encoding":"pkcs7","signature":"MIIx","nonce":"1"}'))
    assert stop.value.value == {"signature": "MIIx", "encoding": "pkcs7"}


@pytest.mark.parametrize("text", ["not json", "[]", '{"encoding": "pkcs7"}'])
def test_azure_bad_document_is_a_parse_error(text: str) -> None:
    f = azure_flow("http://az")
    next(f)
    with pytest.raises(MetadataError) as e:
        f.send(MetadataReply(200, text))
    assert e.value.stage == "parse"


def test_google_flow_and_flavor_diagnosis() -> None:
    f = google_flow("http://gce:80")
    req = next(f)
    assert req.url == ("http://gce:80/computeMetadata/v1/instance/service-accounts/default/identity"
                       "?audience=coder&format=full")
    assert req.headers == {"Metadata-Flavor": "Google"}
    with pytest.raises(StopIteration) as stop:
        f.send(MetadataReply(200, "a.b.c\n", GOOGLE_HDR))
    assert stop.value.value == {"json_web_token": "a.b.c"}
    f = google_flow("http://gce")
    next(f)
    with pytest.raises(MetadataError, match="not a Google metadata server"):
        f.send(MetadataReply(404, "Not Found"))
    f = google_flow("http://gce")
    next(f)
    with pytest.raises(MetadataError) as e:
        f.send(MetadataReply(403, "Missing Metadata-Flavor:Google header.", GOOGLE_HDR))
    assert "not a Google" not in str(e.value)


def test_base_url_conventions() -> None:
    assert base_url(AWS, "http://169.254.169.254/") == "http://169.254.169.254"
    assert base_url(GOOGLE, "metadata.google.internal") == "http://metadata.google.internal"
    assert base_url(GOOGLE, "127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert base_url(AZURE, "http://10.0.0.1:81") == "http://10.0.0.1:81"


def test_agent_name_only_when_set() -> None:
    ident = {"json_web_token": "t"}
    assert exchange_body(ident, None) == {"json_web_token": "t"}
    assert "agent_name" not in exchange_body(ident, "  ")
    assert exchange_body(ident, " dev ") == {"json_web_token": "t", "agent_name": "dev"}


def test_session_token_from() -> None:
    assert session_token_from({"session_token": "abc"}) == "abc"
    for bad in (None, {}, {"session_token": ""}, {"session_token": 3}, []):
        with pytest.raises(ProtocolError):
            session_token_from(bad)
