"""Webhook URLs may point only at public addresses, unless configuration allows a host or network.

Host names are resolved with the system resolver only: `localhost` and numeric forms such as `127.1`.
"""
import ipaddress
import socket

import pytest

from genq.webhooks.errors import WebhookValidationError
from genq.webhooks.urls import AllowList, WebhookURLError, is_forbidden_address, validate_webhook_url

NOTHING = AllowList()

FORBIDDEN_URLS = [
    "http://127.0.0.1/hook",
    "http://127.9.9.9:8080/hook",
    "http://10.1.2.3/",
    "http://172.16.0.1/",
    "http://172.31.255.254/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata service
    "http://100.64.0.1/",  # shared address space (carrier-grade NAT)
    "http://0.0.0.0/",
    "http://224.0.0.1/",
    "http://240.0.0.1/",
    "http://255.255.255.255/",
    "http://[::1]/",
    "http://[::]/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[ff02::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:10.0.0.1]/",
    "http://[64:ff9b::7f00:1]/",  # NAT64 form of 127.0.0.1
    "http://[2002:7f00:1::]/",  # 6to4 form of 127.0.0.1
    "http://localhost:8000/",
    "http://LOCALHOST./",
    "http://127.1/",  # the resolver reads this as 127.0.0.1
    "http://2130706433/",  # and this
    "https://localhost/secure",
]


@pytest.mark.parametrize("url", FORBIDDEN_URLS)
def test_non_public_destination_is_forbidden(url):
    with pytest.raises(WebhookURLError) as e:
        validate_webhook_url(url, NOTHING)
    assert e.value.code == "webhook_url_forbidden"
    assert e.value.field == "webhook"


@pytest.mark.parametrize(
    "url", ["https://93.184.216.34/hook", "http://8.8.8.8:8080/x?y=1", "https://[2606:4700::1111]/"]
)
def test_public_address_is_accepted(url):
    validate_webhook_url(url, NOTHING)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://93.184.216.34/x",
        "file:///etc/passwd",
        "gopher://93.184.216.34/",
        "javascript:alert(1)",
        "93.184.216.34/hook",
        "http://user:pass@93.184.216.34/",
        "http://user@93.184.216.34/",
        "http:///hook",
        "http://93.184.216.34:0/",
        "http://93.184.216.34:99999/",
        "http://93.184.216.34:port/",
        "http://93.184.216.34/a b",
        "http://93.184.216.34/\n",
        "http://exa_mple.com/",
        "http://-bad.example/",
        "http://exämple.com/",
        "",
        "https://example.com/" + "a" * 2048,
        None,
    ],
)
def test_malformed_or_unsafe_url_is_invalid(url):
    with pytest.raises(WebhookURLError) as e:
        validate_webhook_url(url, NOTHING)
    assert e.value.code == "webhook_url_invalid"


def test_url_error_is_a_field_level_value_error():
    with pytest.raises(ValueError) as e:
        validate_webhook_url("ftp://x/", NOTHING)
    assert isinstance(e.value, WebhookValidationError)
    assert (e.value.field, e.value.code) == ("webhook", "webhook_url_invalid")


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000/hook", "http://127.1/", "http://localhost/", "http://[::ffff:127.0.0.1]/"],
)
def test_loopback_is_accepted_when_127_0_0_1_is_allowed(url):
    validate_webhook_url(url, AllowList.from_config("127.0.0.1"))


def test_allowed_network_admits_its_addresses_only():
    allow = AllowList.from_config("10.0.0.0/8")
    validate_webhook_url("http://10.20.30.40/", allow)
    with pytest.raises(WebhookURLError, match="192.168.0.1"):
        validate_webhook_url("http://192.168.0.1/", allow)


def test_allowed_host_name_is_trusted_whatever_it_resolves_to():
    validate_webhook_url("http://localhost:9000/", AllowList.from_config("localhost"))
    with pytest.raises(WebhookURLError):
        validate_webhook_url("http://127.0.0.1:9000/", AllowList.from_config("localhost"))


def test_allow_list_from_config_reads_addresses_networks_and_names():
    allow = AllowList.from_config(" 127.0.0.1, 10.0.0.0/8 ,[::1], fd00::/8, Example.Internal., ")
    assert allow.hosts == frozenset({"example.internal"})
    assert allow.networks == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("fd00::/8"),
    )
    assert allow.allows_host("EXAMPLE.internal")
    assert allow.allows_address(ipaddress.ip_address("::ffff:10.1.1.1"))
    assert not allow.allows_address(ipaddress.ip_address("11.0.0.1"))


def test_empty_allow_list_config_allows_nothing():
    assert AllowList.from_config(None) == AllowList.from_config("") == AllowList()


@pytest.mark.parametrize("entry", ["10.0.0.1/8", "10.0.0.0/33", "::zz", "not a host!", "exa_mple"])
def test_allow_list_refuses_malformed_entries(entry):
    with pytest.raises(ValueError, match="allow-list entry"):
        AllowList.from_config(f"127.0.0.1,{entry}")


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"])
def test_public_addresses_are_not_forbidden(address):
    assert not is_forbidden_address(ipaddress.ip_address(address))


def test_unresolvable_host_is_reported_as_such(monkeypatch):
    # A stand-in resolver: a real lookup of a missing name would need the network.
    def no_such_name(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    with pytest.raises(WebhookURLError) as e:
        validate_webhook_url("https://hooks.example.com/x", NOTHING)
    assert e.value.code == "webhook_url_unresolvable"


def test_name_is_refused_if_any_of_its_addresses_is_forbidden(monkeypatch):
    real = socket.getaddrinfo

    def public_and_private(host, port, *args, **kwargs):
        if host != "mixed.example":
            return real(host, port, *args, **kwargs)
        return real("93.184.216.34", port, *args, **kwargs) + real("10.0.0.7", port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", public_and_private)
    with pytest.raises(WebhookURLError, match="10.0.0.7"):
        validate_webhook_url("https://mixed.example/x", NOTHING)
