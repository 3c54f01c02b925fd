"""The root key ring: the secrets that tokens (macaroons) are minted from and verified with.

A ring maps key ids to secrets and names one ``current`` key, the one new tokens are minted from.
A token's identifier names its key, so older keys keep verifying the tokens they minted for as long
as they stay in the ring; removing a key revokes every token made from it.

The ring comes from one of two places:

- the file ``<data_dir>/root_keys.json`` (``{"current": "<id>", "keys": {"<id>": "<hex>"}}``),
  created with mode 0600 on first start (the data directory with 0700). A file found readable by
  group or others is tightened to 0600 with a warning, not refused: the secret may already have
  been read, so rotate the key if that matters;
- the environment variable ``JOBQUEUE_STORE_ROOT_KEY`` (``<id>:<hex>[,<id>:<hex>...]``, the first
  is current), so that several store processes share keys.

A missing, short (under 32 bytes) or malformed key is refused with ``ValueError``: the store never
derives or guesses a key. Secrets never appear in ``repr`` or in logs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

__all__ = ["ENV_VAR", "KEY_FILE", "MIN_KEY_BYTES", "KeyRing", "NoKeyFile"]

log = logging.getLogger(__name__)

KEY_FILE = "root_keys.json"
"""The name of the key file inside the data directory."""
ENV_VAR = "JOBQUEUE_STORE_ROOT_KEY"
"""The environment variable that may hold the ring instead of the key file."""
MIN_KEY_BYTES = 32
"""The shortest secret accepted."""
KEY_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HEX_RE = re.compile(r"(?:[0-9a-fA-F]{2})+")


class NoKeyFile(ValueError):
    """The data directory holds no root key file (``path``: where it was looked for)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"The root key file {path} does not exist.")


def _new_key_id() -> str:
    return f"k-{secrets.token_hex(4)}"


def _check_key_id(key_id: object, where: str) -> str:
    if not isinstance(key_id, str) or not KEY_ID_RE.fullmatch(key_id):
        raise ValueError(
            f"Invalid root key id {key_id!r} in {where}: use 1 to 64 characters of "
            "A-Z a-z 0-9 . _ -."
        )
    return key_id


def _decode_secret(key_id: str, value: object, where: str) -> bytes:
    if not isinstance(value, str) or not _HEX_RE.fullmatch(value):
        raise ValueError(f"The root key {key_id!r} in {where} is not a hex string of whole bytes.")
    secret = bytes.fromhex(value)
    if len(secret) < MIN_KEY_BYTES:
        raise ValueError(
            f"The root key {key_id!r} in {where} is {len(secret)} bytes long; at least "
            f"{MIN_KEY_BYTES} bytes ({2 * MIN_KEY_BYTES} hex digits) are required."
        )
    return secret


class KeyRing:
    """Root keys by id, with the ``current`` one used for minting. Never shows a secret."""

    __slots__ = ("_current", "_keys")

    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        """A ring of ``keys`` (id -> secret of at least 32 bytes) minting with ``current``."""
        self._keys: dict[str, bytes] = {}
        self._current = ""
        self._replace(keys, current, "the key ring")

    def _replace(self, keys: Mapping[str, bytes], current: str, where: str) -> None:
        if not keys:
            raise ValueError(f"No root key in {where}: the store needs at least one.")
        checked: dict[str, bytes] = {}
        for key_id, secret in keys.items():
            _check_key_id(key_id, where)
            if not isinstance(secret, bytes) or len(secret) < MIN_KEY_BYTES:
                raise ValueError(
                    f"The root key {key_id!r} in {where} is shorter than {MIN_KEY_BYTES} bytes."
                )
            checked[key_id] = secret
        if current not in checked:
            raise ValueError(f"The current root key {current!r} is not among the keys in {where}.")
        self._keys = checked
        self._current = current

    @property
    def current(self) -> str:
        """The id of the key new tokens are minted from."""
        return self._current

    @property
    def current_secret(self) -> bytes:
        """The secret of the current key."""
        return self._keys[self._current]

    def get(self, key_id: str) -> bytes | None:
        """The secret of ``key_id``, or None if the ring does not hold it."""
        return self._keys.get(key_id)

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The ids of every key in the ring."""
        return tuple(self._keys)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"KeyRing(current={self._current!r}, keys={list(self._keys)!r})"

    # -- sources ------------------------------------------------------------------------------

    @classmethod
    def generate(cls) -> KeyRing:
        """A ring of one fresh random key (not stored anywhere)."""
        key_id = _new_key_id()
        return cls({key_id: secrets.token_bytes(MIN_KEY_BYTES)}, key_id)

    @classmethod
    def from_env(cls, value: str) -> KeyRing:
        """Parse ``<id>:<hex>[,<id>:<hex>...]`` (the first key is current)."""
        where = f"${ENV_VAR}"
        keys: dict[str, bytes] = {}
        current: str | None = None
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            key_id, sep, hex_value = item.partition(":")
            if not sep:
                raise ValueError(f"Malformed entry in {where}: expected '<id>:<hex>', got no ':'.")
            key_id = _check_key_id(key_id.strip(), where)
            if key_id in keys:
                raise ValueError(f"The root key id {key_id!r} appears twice in {where}.")
            keys[key_id] = _decode_secret(key_id, hex_value.strip(), where)
            if current is None:
                current = key_id
        if current is None:
            raise ValueError(f"No root key in {where}: give '<id>:<hex>[,<id>:<hex>...]'.")
        return cls(keys, current)

    @classmethod
    def load(cls, data_dir: Path) -> KeyRing:
        """Read the ring from ``<data_dir>/root_keys.json``, which must exist (else
        :class:`NoKeyFile`). Never creates a key: only the store (``serve``) and ``rotate`` do,
        so that a token is never minted from a key the running store does not hold."""
        ring = cls.__new__(cls)
        ring._load_into(Path(data_dir) / KEY_FILE)
        return ring

    @classmethod
    def load_or_create(cls, data_dir: Path) -> KeyRing:
        """Read ``<data_dir>/root_keys.json``, creating the directory (0700) and a fresh key
        (file 0600) on first start. For the store itself (and ``rotate``): a command that only
        mints or lists tokens uses :meth:`load`."""
        data_dir = Path(data_dir)
        if not data_dir.exists():
            data_dir.mkdir(parents=True, mode=0o700)
            os.chmod(data_dir, 0o700)  # mkdir's mode is masked by the umask
        path = data_dir / KEY_FILE
        if not path.exists():
            ring = cls.generate()
            # Never overwrite: if another process created the file meanwhile, use its key.
            if ring._write(data_dir, overwrite=False):
                log.info("Created root key %s in %s", ring.current, path)
                return ring
        return cls.load(data_dir)

    def reload(self, data_dir: Path) -> None:
        """Replace this ring's keys, in place, with those now in ``<data_dir>/root_keys.json``
        (after ``rotate`` or ``remove``, e.g. by the command line). Tokens of removed keys stop
        verifying at once, cached or not. On error the ring is left unchanged."""
        self._load_into(Path(data_dir) / KEY_FILE)

    def _load_into(self, path: Path) -> None:
        where = str(path)
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            raise NoKeyFile(path.absolute()) from None
        if mode & 0o077:
            log.warning(
                "Root key file %s had mode %o, readable by others: tightened to 600. "
                "Rotate the key if others may have read it.",
                where,
                mode,
            )
            os.chmod(path, 0o600)
        try:
            data = json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError):
            raise ValueError(f"The root key file {where} is not valid JSON.") from None
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("current"), str)
            or not isinstance(data.get("keys"), dict)
        ):
            raise ValueError(
                f'The root key file {where} is malformed: expected {{"current": "<id>", '
                '"keys": {"<id>": "<hex>"}}.'
            )
        keys = {
            _check_key_id(key_id, where): _decode_secret(key_id, value, where)
            for key_id, value in data["keys"].items()
        }
        self._replace(keys, data["current"], where)

    # -- changes ------------------------------------------------------------------------------

    @classmethod
    def rotate(cls, data_dir: Path) -> str:
        """Add a fresh key to the ring in ``<data_dir>/root_keys.json`` (created if missing) and
        make it current, keeping the old ones: their tokens still verify. Returns the new id.

        A running store sees the change after ``reload`` (or a restart).
        """
        if not (Path(data_dir) / KEY_FILE).exists():
            return cls.load_or_create(data_dir).current  # the first key is the rotation
        ring = cls.load(data_dir)
        key_id = _new_key_id()
        while key_id in ring._keys:
            key_id = _new_key_id()
        keys = dict(ring._keys)
        keys[key_id] = secrets.token_bytes(MIN_KEY_BYTES)
        ring._replace(keys, key_id, "the key ring")
        ring._write(Path(data_dir), overwrite=True)
        return key_id

    @classmethod
    def remove(cls, data_dir: Path, key_id: str) -> None:
        """Revoke ``key_id`` in ``<data_dir>/root_keys.json``: every token made from it stops
        verifying (in a running store, after ``reload``). The current key cannot be removed:
        rotate first."""
        ring = cls.load(data_dir)
        if key_id not in ring._keys:
            raise ValueError(f"The key ring holds no root key {key_id!r}.")
        if key_id == ring._current:
            raise ValueError(
                f"The root key {key_id!r} is the current one: rotate first, then remove it."
            )
        keys = {k: v for k, v in ring._keys.items() if k != key_id}
        ring._replace(keys, ring._current, "the key ring")
        ring._write(Path(data_dir), overwrite=True)

    def _write(self, data_dir: Path, *, overwrite: bool) -> bool:
        """Write the ring to the key file atomically with mode 0600. Without ``overwrite``,
        return False (writing nothing) if the file already exists."""
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = data_dir / KEY_FILE
        body = json.dumps(
            {"current": self._current, "keys": {k: v.hex() for k, v in self._keys.items()}},
            indent=2,
        ).encode()
        tmp = data_dir / f".{KEY_FILE}.{secrets.token_hex(6)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                os.fchmod(fd, 0o600)
                os.write(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)
            if overwrite:
                os.replace(tmp, path)
            else:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        dir_fd = os.open(data_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return True
