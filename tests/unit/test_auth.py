"""Tokens: the root key ring (keys.py) and macaroon minting, verification, caching and request
authorization (auth.py), against docs/protocol.md ("Authentication") and the token pitfalls."""

from __future__ import annotations

import base64
import logging
import os
import random
import secrets
import stat
from pathlib import Path

import pytest
from pymacaroons import Macaroon

from jobqueue_store.auth import Principal, TokenAuthority, extract_token, format_time, parse_time
from jobqueue_store.errors import Forbidden, Unauthorized
from jobqueue_store.keys import KEY_FILE, KeyRing
from jobqueue_store.models import Role

NAME = "store-a"
T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


class Clock:
    """A settable clock for the authority."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def hexkey(n: int = 32) -> str:
    return secrets.token_hex(n)


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing({"k-one": secrets.token_bytes(32)}, "k-one")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def authority(ring: KeyRing, clock: Clock) -> TokenAuthority:
    return TokenAuthority(ring, NAME, clock=clock)


def raw(ring: KeyRing, caveats: list[str], key_id: str | None = None) -> str:
    """A token made by hand from ``ring``'s key with exactly ``caveats``."""
    key_id = key_id or ring.current
    secret = ring.get(key_id)
    assert secret is not None
    m = Macaroon(location=NAME, identifier=key_id, key=secret)
    for c in caveats:
        m.add_first_party_caveat(c)
    token: str = m.serialize()
    return token


def attenuate(token: str, *caveats: str) -> str:
    """What a holder does: add first-party caveats to a token it has."""
    m = Macaroon.deserialize(token)
    for c in caveats:
        m.add_first_party_caveat(c)
    out: str = m.serialize()
    return out


FUTURE = f"time < {format_time(T0 + 3600)}"
BASE = [f"target = {NAME}", "role = driver", FUTURE]


# -- mint / verify -------------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
def test_round_trip_each_role(authority: TokenAuthority, role: Role) -> None:
    client = "app-1" if role is Role.CLIENT else None
    token = authority.mint(role, client=client, ttl=600)
    p = authority.verify(token)
    assert p.role is role
    assert p.client == client
    assert p.key_id == "k-one"
    assert p.expires_at == T0 + 600
    assert p.dsid_sets == () and p.paths == () and p.method_sets == ()
    assert p.allows_dsid("anything") and p.allows_method("GET") and p.allows_path("/x")


def test_mint_caveats_and_identifier(authority: TokenAuthority) -> None:
    token = authority.mint(Role.CLIENT, client="app-1", dsids=["ds1", "ds2"], ttl=60)
    m = Macaroon.deserialize(token)
    assert m.identifier == "k-one"
    assert [c.caveat_id for c in m.caveats] == [
        f"target = {NAME}",
        "role = client",
        "client = app-1",
        "dsid = ds1,ds2",
        "time < 2027-01-15T08:01:00Z",
    ]
    p = authority.verify(token)
    assert p.dsid_sets == (frozenset({"ds1", "ds2"}),)
    assert p.dsid_filter(["ds0", "ds1", "ds2", "ds3"]) == ["ds1", "ds2"]


def test_mint_refuses_bad_arguments(authority: TokenAuthority) -> None:
    with pytest.raises(ValueError, match="client id"):
        authority.mint(Role.CLIENT)
    with pytest.raises(ValueError):
        authority.mint(Role.CLIENT, client="bad client")
    with pytest.raises(ValueError):
        authority.mint(Role.DRIVER, dsids=["ok", "not ok"])
    with pytest.raises(ValueError):
        authority.mint(Role.DRIVER, ttl=0)
    with pytest.raises(ValueError, match="Unknown caveat"):
        authority.mint(Role.DRIVER, extra_caveats=["colour = red"])
    with pytest.raises(ValueError):
        authority.mint(Role.DRIVER, extra_caveats=["time < tomorrow"])


def test_mint_extra_caveats(authority: TokenAuthority) -> None:
    token = authority.mint(Role.DRIVER, extra_caveats=["method = GET,post", "path = /jobs/*"])
    p = authority.verify(token)
    assert p.method_sets == (frozenset({"GET", "POST"}),)
    assert p.paths == ("/jobs/*",)


# -- the caveats of the protocol's table -----------------------------------------------------------


def test_wrong_target(authority: TokenAuthority, ring: KeyRing, clock: Clock) -> None:
    other = TokenAuthority(ring, "store-b", clock=clock)
    with pytest.raises(Unauthorized, match="another store"):
        authority.verify(other.mint(Role.ADMIN))


def test_missing_target(authority: TokenAuthority, ring: KeyRing) -> None:
    with pytest.raises(Unauthorized, match="target"):
        authority.verify(raw(ring, ["role = admin", FUTURE]))


def test_role_missing_unknown_conflicting(authority: TokenAuthority, ring: KeyRing) -> None:
    with pytest.raises(Unauthorized, match="no 'role'"):
        authority.verify(raw(ring, [f"target = {NAME}", FUTURE]))
    with pytest.raises(Unauthorized, match="unknown role"):
        authority.verify(raw(ring, [f"target = {NAME}", "role = root", FUTURE]))
    with pytest.raises(Unauthorized, match="different roles"):
        authority.verify(raw(ring, [*BASE, "role = admin"]))
    # The same role twice is one role.
    assert authority.verify(raw(ring, [*BASE, "role = driver"])).role is Role.DRIVER


def test_role_cannot_be_widened_by_holder(authority: TokenAuthority) -> None:
    token = attenuate(authority.mint(Role.DRIVER), "role = admin")
    with pytest.raises(Unauthorized, match="different roles"):
        authority.verify(token)


def test_client_caveat(authority: TokenAuthority, ring: KeyRing) -> None:
    with pytest.raises(Unauthorized, match="'client' caveat"):
        authority.verify(raw(ring, [f"target = {NAME}", "role = client", FUTURE]))
    token = authority.mint(Role.CLIENT, client="alice")
    with pytest.raises(Unauthorized, match="different clients"):
        authority.verify(attenuate(token, "client = mallory"))
    assert authority.verify(attenuate(token, "client = alice")).client == "alice"
    with pytest.raises(Unauthorized, match="refused"):
        authority.verify(attenuate(token, "client = has space"))


def test_dsid_list_and_several_caveats(authority: TokenAuthority) -> None:
    token = attenuate(authority.mint(Role.DRIVER, dsids=["a", "b", "c"]), "dsid = b,c,d")
    p = authority.verify(token)
    assert [p.allows_dsid(d) for d in "abcd"] == [False, True, True, False]
    assert p.dsid_filter(["d", "c", "b", "a"]) == ["c", "b"]
    authority.authorize(p, method="GET", path="/jobs/b/latest", dsid="b")
    with pytest.raises(Forbidden, match="dsid"):
        authority.authorize(p, method="GET", path="/jobs/a/latest", dsid="a")
    # Requests naming no datasource are not refused by dsid caveats.
    authority.authorize(p, method="GET", path="/cat", dsid=None)


@pytest.mark.parametrize("bad", ["dsid = ", "dsid = a,,b", "dsid = a b", "dsid =a"])
def test_dsid_malformed(authority: TokenAuthority, bad: str) -> None:
    with pytest.raises(Unauthorized):
        authority.verify(attenuate(authority.mint(Role.DRIVER), bad))


def test_path_caveat(authority: TokenAuthority) -> None:
    p = authority.verify(attenuate(authority.mint(Role.CLIENT, client="c1"), "path = /ds1/job/*"))
    assert p.allows_path("/ds1/job/j1/")
    assert not p.allows_path("/ds2/job/j1/")
    assert not p.allows_path("/x/ds1/job/j1")  # full match only
    for ok in ("/ds1/job/j1/", "/ds1/job/j1", "/ds1/job", "/ds1/job/", "/ds1/job/a/cancel"):
        authority.authorize(p, method="POST", path=ok, dsid="ds1")
    with pytest.raises(Forbidden, match="path"):
        authority.authorize(p, method="GET", path="/ds2/job/j1/", dsid="ds2")
    exact = authority.verify(attenuate(authority.mint(Role.ADMIN), "path = /metrics"))
    authority.authorize(exact, method="GET", path="/metrics/", dsid=None)
    with pytest.raises(Forbidden):
        authority.authorize(exact, method="GET", path="/metricsx", dsid=None)


def test_several_path_caveats_all_hold(authority: TokenAuthority) -> None:
    token = attenuate(authority.mint(Role.DRIVER), "path = /jobs/*", "path = */latest")
    p = authority.verify(token)
    authority.authorize(p, method="GET", path="/jobs/ds1/latest", dsid="ds1")
    with pytest.raises(Forbidden):
        authority.authorize(p, method="GET", path="/jobs/ds1/since/0", dsid="ds1")


@pytest.mark.parametrize(
    "path",
    [
        "/ds1/job/../../jobs/x",
        "/ds1/job/%2e%2e/x",
        "/ds1/job/a%2Fb",
        "/ds1/job/a%2fb",
        "/ds1/./job",
    ],
)
def test_path_traversal_refused(authority: TokenAuthority, path: str) -> None:
    p = authority.verify(attenuate(authority.mint(Role.DRIVER), "path = /ds1/*"))
    with pytest.raises(Forbidden):
        authority.authorize(p, method="GET", path=path, dsid="ds1")


def test_path_is_decoded_before_matching(authority: TokenAuthority) -> None:
    p = authority.verify(attenuate(authority.mint(Role.DRIVER), "path = /ds1/job/a:b"))
    authority.authorize(p, method="GET", path="/ds1/job/a%3Ab", dsid="ds1")
    authority.authorize(p, method="GET", path="/ds1/job/a%3Ab?wait=1", dsid="ds1")
    with pytest.raises(Forbidden):
        authority.authorize(p, method="GET", path="/ds1/job/%ff", dsid="ds1")


def test_method_caveat(authority: TokenAuthority) -> None:
    token = attenuate(authority.mint(Role.DRIVER), "method = GET,PUT", "method = GET,POST")
    p = authority.verify(token)
    assert p.allows_method("get") and not p.allows_method("PUT") and not p.allows_method("POST")
    authority.authorize(p, method="GET", path="/jobs/ds1/latest", dsid="ds1")
    with pytest.raises(Forbidden, match="method"):
        authority.authorize(p, method="POST", path="/jobs/ds1/job/j/", dsid="ds1")
    with pytest.raises(Unauthorized):
        authority.verify(attenuate(authority.mint(Role.DRIVER), "method = GET POST"))


def test_time_expired(authority: TokenAuthority, clock: Clock) -> None:
    token = authority.mint(Role.ADMIN, ttl=10)
    assert authority.verify(token).expires_at == T0 + 10
    clock.now = T0 + 10  # expired exactly at the instant
    with pytest.raises(Unauthorized, match="expired"):
        authority.verify(token)


def test_time_in_the_past(authority: TokenAuthority, ring: KeyRing) -> None:
    past = [f"target = {NAME}", "role = admin", "time < 2020-01-01T00:00:00Z"]
    with pytest.raises(Unauthorized, match="expired"):
        authority.verify(raw(ring, past))


def test_clock_skew(ring: KeyRing, clock: Clock) -> None:
    lenient = TokenAuthority(ring, NAME, clock=clock, clock_skew=5.0)
    token = lenient.mint(Role.ADMIN, ttl=10)
    clock.now = T0 + 14
    assert lenient.verify(token).role is Role.ADMIN
    lenient.clear_cache()
    clock.now = T0 + 15
    with pytest.raises(Unauthorized, match="expired"):
        lenient.verify(token)


@pytest.mark.parametrize(
    "value",
    [
        "2027-01-15T09:00:00",  # no zone
        "2027-01-15 09:00:00Z",  # space
        "2027-01-15",
        "1800003600",
        "2027-13-15T09:00:00Z",
        "2027-01-15T09:00:00+25:00",
        "tomorrow",
        "",
    ],
)
def test_time_malformed(authority: TokenAuthority, ring: KeyRing, value: str) -> None:
    token = raw(ring, [f"target = {NAME}", "role = admin", f"time < {value}"])
    with pytest.raises(Unauthorized):
        authority.verify(token)


def test_time_with_offset(authority: TokenAuthority, ring: KeyRing) -> None:
    token = raw(ring, [f"target = {NAME}", "role = admin", "time < 2027-01-15T10:00:00.5+02:00"])
    assert authority.verify(token).expires_at == T0 + 0.5
    assert parse_time("2027-01-15T08:00:00+00:00") == T0
    assert parse_time("2027-01-15t07:00:00-01:00") == T0


def test_no_time_caveat_is_valid_forever(authority: TokenAuthority, ring: KeyRing) -> None:
    assert authority.verify(raw(ring, [f"target = {NAME}", "role = admin"])).expires_at is None


def test_unknown_caveat(authority: TokenAuthority) -> None:
    for caveat in ["colour = red", "time > 2020-01-01T00:00:00Z", "target=store-a", "ROLE = admin"]:
        with pytest.raises(Unauthorized, match="does not understand"):
            authority.verify(attenuate(authority.mint(Role.ADMIN), caveat))


def test_third_party_caveat(authority: TokenAuthority) -> None:
    m = Macaroon.deserialize(authority.mint(Role.ADMIN))
    m.add_third_party_caveat("https://auth.example", secrets.token_bytes(32), "tp-id")
    with pytest.raises(Unauthorized, match="third-party"):
        authority.verify(m.serialize())


# -- attenuation by the holder -------------------------------------------------------------------


def test_attenuation_narrows(authority: TokenAuthority, clock: Clock) -> None:
    token = authority.mint(Role.CLIENT, client="c1", dsids=["a", "b"], ttl=3600)
    narrow = attenuate(
        token, "dsid = b", "method = GET", f"time < {format_time(T0 + 60)}", "path = /b/*"
    )
    p = authority.verify(narrow)
    assert p.client == "c1" and p.role is Role.CLIENT
    assert p.allows_dsid("b") and not p.allows_dsid("a")
    assert p.expires_at == T0 + 60
    authority.authorize(p, method="GET", path="/b/job/j/", dsid="b")
    with pytest.raises(Forbidden):
        authority.authorize(p, method="POST", path="/b/job/", dsid="b")
    clock.now = T0 + 61
    with pytest.raises(Unauthorized, match="expired"):
        authority.verify(narrow)
    assert authority.verify(token).expires_at == T0 + 3600


def test_attenuation_cannot_widen_time(authority: TokenAuthority, clock: Clock) -> None:
    token = attenuate(authority.mint(Role.ADMIN, ttl=10), f"time < {format_time(T0 + 10**6)}")
    assert authority.verify(token).expires_at == T0 + 10
    clock.now = T0 + 20
    with pytest.raises(Unauthorized, match="expired"):
        authority.verify(token)


def test_caveat_removal_breaks_signature(authority: TokenAuthority) -> None:
    m = Macaroon.deserialize(authority.mint(Role.CLIENT, client="c1", dsids=["a"]))
    m.caveats = [c for c in m.caveats if not c.caveat_id.startswith("dsid")]
    with pytest.raises(Unauthorized, match="signature"):
        authority.verify(m.serialize())


def test_forged_signature(authority: TokenAuthority, ring: KeyRing) -> None:
    forged = KeyRing({"k-one": secrets.token_bytes(32)}, "k-one")
    with pytest.raises(Unauthorized, match="signature"):
        authority.verify(raw(forged, BASE))


# -- junk ----------------------------------------------------------------------------------------


def junk_tokens(good: str) -> list[object]:
    return [
        "",
        "!!!",
        " ",
        "a",
        "====",
        base64.urlsafe_b64encode(secrets.token_bytes(64)).decode(),
        base64.urlsafe_b64encode(b"\x02" + secrets.token_bytes(40)).decode(),
        base64.urlsafe_b64encode(b"0004zz").decode(),
        good[: len(good) // 2],
        good[:-3],
        good[1:],
        good + "A",
        good.replace("A", "B", 1),
        "x" * 20000,
        "\u00e9\u0000\ud800",
        None,
        12,
    ]


def test_junk_is_unauthorized(authority: TokenAuthority) -> None:
    good = authority.mint(Role.ADMIN)
    for junk in junk_tokens(good):
        with pytest.raises(Unauthorized):
            authority.verify(junk)  # type: ignore[arg-type]


def test_mutated_tokens_are_unauthorized(authority: TokenAuthority) -> None:
    rnd = random.Random(20261124)
    good = authority.mint(Role.CLIENT, client="c1", dsids=["a", "b"])
    expected = authority.verify(good)
    data = base64.urlsafe_b64decode(good + "=" * (-len(good) % 4))
    for _ in range(500):
        b = bytearray(data)
        for _ in range(rnd.randint(1, 4)):
            op = rnd.random()
            if op < 0.5:
                b[rnd.randrange(len(b))] = rnd.randrange(256)
            elif op < 0.75 and len(b) > 1:
                del b[rnd.randrange(len(b))]
            else:
                b.insert(rnd.randrange(len(b) + 1), rnd.randrange(256))
        try:
            p = authority.verify(base64.urlsafe_b64encode(bytes(b)).decode().rstrip("="))
        except Unauthorized:
            continue
        # Only unsigned bytes (the location) may change without breaking the token.
        assert p == expected


def test_non_utf8_caveat_and_identifier(authority: TokenAuthority, ring: KeyRing) -> None:
    m = Macaroon(location=NAME, identifier=b"k-one", key=ring.current_secret, version=2)
    m.caveats.append(
        type(Macaroon.deserialize(authority.mint(Role.ADMIN)).caveats[0])(
            caveat_id=b"\xff\xfe", version=2
        )
    )
    with pytest.raises(Unauthorized):
        authority.verify(m.serialize())
    m2 = Macaroon(location=NAME, identifier=b"\xff", key=ring.current_secret, version=2)
    with pytest.raises(Unauthorized):
        authority.verify(m2.serialize())


def test_v2_serialization_accepted(authority: TokenAuthority, ring: KeyRing) -> None:
    m = Macaroon(location=NAME, identifier="k-one", key=ring.current_secret, version=2)
    for c in BASE:
        m.add_first_party_caveat(c)
    assert authority.verify(m.serialize()).role is Role.DRIVER


# -- keys: rotation, removal, cache ----------------------------------------------------------------


def test_rotation_and_removal(tmp_path: Path, clock: Clock) -> None:
    ring = KeyRing.load_or_create(tmp_path)
    authority = TokenAuthority(ring, NAME, clock=clock)
    old_id = ring.current
    old_token = authority.mint(Role.ADMIN)

    new_id = KeyRing.rotate(tmp_path)
    assert new_id != old_id
    ring.reload(tmp_path)
    assert ring.current == new_id and set(ring.key_ids) == {old_id, new_id}
    new_token = authority.mint(Role.ADMIN)
    assert Macaroon.deserialize(new_token).identifier == new_id
    authority.clear_cache()
    assert authority.verify(old_token).key_id == old_id  # old but still listed: valid
    assert authority.verify(new_token).key_id == new_id

    with pytest.raises(ValueError, match="current"):
        KeyRing.remove(tmp_path, new_id)
    with pytest.raises(ValueError, match="no root key"):
        KeyRing.remove(tmp_path, "k-nothere")
    KeyRing.remove(tmp_path, old_id)
    ring.reload(tmp_path)
    assert ring.key_ids == (new_id,)
    # The old token is cached, yet removal revokes it at once.
    with pytest.raises(Unauthorized, match="does not hold"):
        authority.verify(old_token)
    assert authority.verify(new_token).key_id == new_id
    assert KeyRing.load(tmp_path).key_ids == (new_id,)


def test_token_from_unknown_key(authority: TokenAuthority) -> None:
    other = KeyRing({"k-other": secrets.token_bytes(32)}, "k-other")
    with pytest.raises(Unauthorized, match="does not hold"):
        authority.verify(raw(other, BASE))


def test_cache_respects_expiry(authority: TokenAuthority, clock: Clock) -> None:
    token = authority.mint(Role.ADMIN, ttl=5)
    first = authority.verify(token)
    assert authority.verify(token) is first  # served from the cache
    clock.now = T0 + 4.999
    assert authority.verify(token) is first
    clock.now = T0 + 5
    with pytest.raises(Unauthorized, match="expired"):
        authority.verify(token)


def test_cache_is_bounded(ring: KeyRing, clock: Clock) -> None:
    authority = TokenAuthority(ring, NAME, cache_size=2, clock=clock)
    tokens = [authority.mint(Role.ADMIN, ttl=10 + i) for i in range(3)]
    principals = [authority.verify(t) for t in tokens]
    assert authority.verify(tokens[2]) is principals[2]
    assert authority.verify(tokens[0]) is not principals[0]  # evicted, verified anew
    assert authority.verify(tokens[0]) == principals[0]


def test_cache_disabled(ring: KeyRing, clock: Clock) -> None:
    authority = TokenAuthority(ring, NAME, cache_size=0, clock=clock)
    token = authority.mint(Role.ADMIN)
    assert authority.verify(token) is not authority.verify(token)


def test_principal_is_frozen(authority: TokenAuthority) -> None:
    p = authority.verify(authority.mint(Role.ADMIN))
    with pytest.raises(AttributeError):
        p.role = Role.CLIENT  # type: ignore[misc]
    assert isinstance(p, Principal)


# -- key ring: file and environment --------------------------------------------------------------


def test_key_file_created_0600_in_new_dir_0700(tmp_path: Path) -> None:
    data_dir = tmp_path / "a" / "data"
    ring = KeyRing.load_or_create(data_dir)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    path = data_dir / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(ring) == 1 and ring.current.startswith("k-") and len(ring.current) == 10
    assert len(ring.current_secret) == 32
    again = KeyRing.load_or_create(data_dir)
    assert again.current == ring.current and again.current_secret == ring.current_secret
    assert [p.name for p in data_dir.iterdir()] == [KEY_FILE]  # no temp file left behind


def test_key_file_mode_tightened(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ring = KeyRing.load_or_create(tmp_path)
    path = tmp_path / KEY_FILE
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="jobqueue_store.keys"):
        loaded = KeyRing.load_or_create(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert loaded.current_secret == ring.current_secret
    assert "tightened" in caplog.text
    assert ring.current_secret.hex() not in caplog.text


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[]",
        b'{"current": "k-1"}',
        b'{"current": "k-1", "keys": {}}',
        b'{"current": "k-2", "keys": {"k-1": "%s"}}' % hexkey().encode(),
        b'{"current": "k-1", "keys": {"k-1": "%s"}}' % hexkey(16).encode(),
        b'{"current": "k-1", "keys": {"k-1": "xyz"}}',
        b'{"current": "k-1", "keys": {"k-1": 5}}',
        b'{"current": "k 1", "keys": {"k 1": "%s"}}' % hexkey().encode(),
        b"\xff\xfe",
    ],
)
def test_malformed_key_file_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / KEY_FILE
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(ValueError, match="root key"):
        KeyRing.load_or_create(tmp_path)


def test_from_env() -> None:
    a, b = hexkey(), hexkey(48)
    ring = KeyRing.from_env(f"k-a:{a}, k-b:{b}")
    assert ring.current == "k-a" and ring.key_ids == ("k-a", "k-b")
    assert ring.get("k-a") == bytes.fromhex(a) and ring.get("k-b") == bytes.fromhex(b)
    assert "k-b" in ring and "k-c" not in ring and ring.get("k-c") is None


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("", "No root key"),
        (" , ", "No root key"),
        (f"k-a{hexkey()}", "expected"),
        (f"k-a:{hexkey(31)}", "at least 32 bytes"),
        ("k-a:abc", "hex"),
        (f"k-a:{hexkey()},k-a:{hexkey()}", "twice"),
        (f"bad id:{hexkey()}", "Invalid root key id"),
        (f":{hexkey()}", "Invalid root key id"),
    ],
)
def test_from_env_refused(value: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        KeyRing.from_env(value)


def test_shared_ring_across_authorities(clock: Clock) -> None:
    value = f"k-s:{hexkey()}"
    one = TokenAuthority(KeyRing.from_env(value), NAME, clock=clock)
    two = TokenAuthority(KeyRing.from_env(value), NAME, clock=clock)
    assert two.verify(one.mint(Role.DRIVER, dsids=["x"])).dsid_sets == (frozenset({"x"}),)


def test_secrets_never_shown() -> None:
    secret = secrets.token_bytes(32)
    ring = KeyRing({"k-x": secret}, "k-x")
    shown = repr(ring) + str(ring)
    assert "k-x" in shown
    assert secret.hex() not in shown and repr(secret) not in shown


def test_weak_key_refused_in_constructor() -> None:
    with pytest.raises(ValueError):
        KeyRing({"k-x": b"short"}, "k-x")
    with pytest.raises(ValueError):
        KeyRing({}, "k-x")


# -- token extraction ----------------------------------------------------------------------------


def test_extract_token() -> None:
    assert extract_token({"Authorization": "Bearer abc"}, {}, False) == "abc"
    assert extract_token({"authorization": "bearer  abc "}, {}, False) == "abc"
    assert extract_token({"X-Api-Key": "k1"}, {}, False) == "k1"
    assert extract_token({"x-api-key": "k1"}, {}, False) == "k1"
    assert extract_token({"Authorization": "Basic Zm9v", "X-Api-Key": "k1"}, {}, False) == "k1"
    assert extract_token({"Authorization": "Bearer a", "X-Api-Key": "b"}, {}, False) == "a"
    assert extract_token({}, {"token": "q"}, False) is None
    assert extract_token({}, {"token": "q"}, True) == "q"
    assert extract_token({"Authorization": "Bearer "}, {}, True) is None
    assert extract_token({}, {}, True) is None
