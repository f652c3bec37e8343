"""Every parser that reads untrusted input, as a fuzz target with its property.

A :class:`Target` takes one input (``bytes`` or ``str``), runs the parser and, when the input
parses, checks the round trip (``format(parse(x)) == x`` where the format has one encoding, or a
weaker stated property otherwise). The oracle is :func:`check`:

- the parser accepts the input and the property holds, or
- the parser raises one of the target's ``errors`` (the package's own error classes), or
- anything else -- ``ValueError``, ``IndexError``, ``RecursionError``, an ``AssertionError`` from
  a broken round trip -- is a bug and propagates.

``seeds(name)`` gives valid inputs (made with real keys, plus the upstream Tessera log from
``../shared/testvectors``) for mutation-based fuzzing. Known, reported bugs are listed in
:data:`KNOWN_BUGS` so that the generic fuzz tests keep searching for new ones; each has a strict
xfail test that turns red when the owner fixes it (then delete its entry here).

Used by ``tests/test_hostile_*.py`` (hypothesis) and ``fuzz/atheris_fuzz.py`` (coverage-guided).
"""

from __future__ import annotations

import atexit
import base64
import functools
import json
import os
import shutil
import tempfile
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatekeeper import action as act
from gatekeeper import sshsig
from gatekeeper.allowed_signers import AllowedSigners
from gatekeeper.bundle import Bundle, encode_bundle, parse_bundle
from gatekeeper.errors import ActionFormatError, ConfigError, GatekeeperError, SignatureInvalid
from personality.errors import FormatError, PersonalityError, SignatureError, VerificationError
from personality.tlog import merkle
from personality.tlog.checkpoint import (
    Checkpoint,
    format_checkpoint_body,
    open_checkpoint,
    parse_checkpoint_body,
    parse_signed_checkpoint,
    sign_checkpoint,
)
from personality.tlog.cosig import cosignature_timestamp, generate_cosigner, parse_cosignature_vkey
from personality.tlog.note import (
    Note,
    format_note,
    generate_signer,
    open_note,
    parse_note,
    parse_vkey,
    signer_from_skey,
)
from personality.tlog.proof import TlogProof, format_tlog_proof, parse_tlog_proof
from personality.tlog.tiles import (
    TilePath,
    format_tile_path,
    pack_entry_bundle,
    parse_entry_bundle,
    parse_hash_tile,
    parse_tile_path,
)

__all__ = ["Target", "TARGETS", "KNOWN_BUGS", "check", "seeds", "known_bug", "TESTVECTORS", "REPO"]

REPO = Path(__file__).resolve().parents[1]
TESTVECTORS = REPO.parent / "shared" / "testvectors"
ORIGIN = "fuzz.example/log"


@dataclass(frozen=True)
class Target:
    """``run(input)`` parses and checks the property; ``errors`` are the acceptable refusals."""

    name: str
    kind: str  # "bytes" or "str"
    run: Callable[[Any], None]
    errors: tuple[type[BaseException], ...]
    owner: str  # the module under test, for bug reports


@dataclass(frozen=True)
class KnownBug:
    """A reported bug: inputs of ``target`` raising ``exc_type`` with ``message`` in the text."""

    target: str
    exc_type: type[BaseException]
    message: str
    report: str


#: Reported, still open bugs (none today; the fixed ones are regression tests in
#: tests/test_hostile_known_bugs.py).
KNOWN_BUGS: tuple[KnownBug, ...] = ()


def known_bug(name: str, exc: BaseException) -> KnownBug | None:
    for bug in KNOWN_BUGS:
        if bug.target == name and isinstance(exc, bug.exc_type) and bug.message in str(exc):
            return bug
    return None


def check(name: str, data: Any) -> bool:
    """Run target ``name`` on ``data``: True if it parsed, False if refused with an allowed error.

    Raises anything else (the finding)."""
    target = TARGETS[name]
    try:
        target.run(data)
    except target.errors:
        return False
    return True


# -- key material and valid inputs (seeds) ---------------------------------------------------------


_TMP: list[Path] = []


def _tmpdir() -> Path:
    if not _TMP:
        d = Path(tempfile.mkdtemp(prefix="gk-fuzz-"))
        atexit.register(shutil.rmtree, d, True)
        _TMP.append(d)
    return _TMP[0]


@dataclass(frozen=True)
class Material:
    signer: Any
    cosigner: Any
    checkpoint: bytes  # signed by the log key and a witness cosignature
    checkpoint_body: bytes
    public_keys: tuple[str, ...]  # OpenSSH "type base64 comment"
    entry: bytes
    entry_binary: bytes  # command-base64 form
    armored: bytes
    bundle: str
    tlog_proof: bytes


def _levels(leaves: Sequence[bytes]) -> Callable[[int, int], bytes]:
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        prev = levels[-1]
        levels.append([merkle.node_hash(prev[i], prev[i + 1]) for i in range(0, len(prev) - 1, 2)])
    return lambda level, index: levels[level][index]


@functools.cache
def material() -> Material:
    """Real keys and signed objects, made once per process (RSA generation takes a moment)."""
    import asyncssh

    signer = generate_signer(ORIGIN)
    cosigner = generate_cosigner("witness.example")
    keys = []
    key_file = None
    for alg in ("ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"):
        key = asyncssh.generate_private_key(alg, comment="fuzz@example")
        keys.append(key.export_public_key("openssh").decode().strip())
        if alg == "ssh-ed25519":
            key_file = _tmpdir() / "id_ed25519"
            key.write_private_key(str(key_file))
            os.chmod(key_file, 0o600)
    assert key_file is not None
    signer_pub = sshsig.parse_public_key(keys[0]).openssh()

    def signed_entry(command: bytes) -> tuple[bytes, bytes]:
        a = act.new_action(targets=["web-01", "db-02"], account="deploy", command=command, signer=signer_pub,
                           now=1_700_000_000, reason="TICKET-42 restart after config change",
                           nonce=bytes(range(16)))
        body = act.encode_action(a)
        armored = sshsig.sign_file(body, act.NAMESPACE, key_file)
        return act.encode_entry(body, armored), armored

    entry, armored = signed_entry(b"systemctl restart nginx")
    entry_binary, _ = signed_entry(b"printf '\\x00\\xff' | od -c\n")
    leaves = [merkle.leaf_hash(b"e%d" % i) for i in range(6)] + [merkle.leaf_hash(entry)]
    # A real 7-leaf tree with the entry at index 6.
    size, index = 7, 6
    full = _levels(leaves + [b"\x00" * 32])  # pad to 8; only complete subtrees of size 7 are read
    root = merkle.root_from_leaf_hashes(leaves)
    proof = merkle.inclusion_proof(index, size, full)
    merkle.verify_inclusion(index, size, leaves[index], proof, root)
    cp = Checkpoint(ORIGIN, size, root, ("fuzz extension line",))
    body = format_checkpoint_body(cp)
    note = Note(body, (signer.sign(body), cosigner.cosign(body, 1_700_000_000)))
    checkpoint = format_note(note)
    bundle = encode_bundle(Bundle(entry, index, tuple(proof), checkpoint))
    tproof = format_tlog_proof(TlogProof(index, tuple(proof), checkpoint, b"extra data"))
    return Material(signer, cosigner, checkpoint, body, tuple(keys), entry, entry_binary, armored, bundle,
                    tproof)


def _tessera_files(sub: str) -> list[Path]:
    root = TESTVECTORS / "tessera-log" / sub
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _seed_agent_toml(m: Material) -> str:
    vkey = m.signer.verifier().vkey()
    wkey = m.cosigner.verifier().vkey()
    return f"""[agent]
name = "web-01"
listen = "127.0.0.1:2222"
host_key = "host_key"
authorized_keys = "authorized_keys"
state_dir = "state"
journal = ""

[log]
url = "http://127.0.0.1:8080"
keys = ["{vkey}"]
origin = "{ORIGIN}"

[policy]
shell = "/bin/sh"
max_clock_skew = 60
max_window = 86400
allowed_accounts = ["deploy", "root"]

[policy.witnesses]
required = 1
keys = ["{wkey}"]

[timeouts]
log_request = 3.0
decision = 15.0

[alarm]
webhook = "https://hooks.example/gk"
"""


def _seed_client_toml(m: Material) -> str:
    return f"""log = "https://log.example.org"
log_key = "{m.signer.verifier().vkey()}"
origin = "{ORIGIN}"
key = "~/.ssh/id_ed25519"
agent = false
window = 300
state = "/var/tmp/gk-state"
timeout = 10
"""


def _seed_policy_toml(m: Material) -> str:
    return f"""host_name = "web-01"
host_key_fingerprint = "{sshsig.fingerprint(m.public_keys[0])}"
log_origin = "{ORIGIN}"
log_keys = ["{m.signer.verifier().vkey()}"]
max_clock_skew = 60
max_window = 3600
allowed_accounts = ["deploy"]
shell = "/bin/bash"
[witnesses]
required = 1
keys = ["{m.cosigner.verifier().vkey()}"]
"""


def _seed_allowed_signers(m: Material) -> str:
    ed, p256, rsa = m.public_keys
    return (
        "# team keys\n"
        f'alice@example.com namespaces="action@gatekeeper,git" {ed}\n'
        f'"bob smith,bob@example.com" valid-after="20240101Z",valid-before="20300101123000Z" {p256}\n'
        f"*@ops.example.com {rsa} comment here\n"
        "\n"
    )


def _seed_json_responses(m: Material) -> list[bytes]:
    proof = [base64.b64encode(bytes([i]) * 32).decode() for i in range(3)]
    lh = base64.b64encode(merkle.leaf_hash(b"entry")).decode()
    return [
        json.dumps({"index": 6, "leaf_hash": lh, "duplicate": False, "size": 7,
                    "checkpoint": m.checkpoint.decode(), "inclusion_proof": proof}).encode(),
        json.dumps({"index": 3, "size": 7, "leaf_hash": lh, "proof": proof}).encode(),
        json.dumps({"from": 3, "to": 7, "proof": proof}).encode(),
    ]


def _seed_execgate_payloads(m: Material) -> list[bytes]:
    from gatekeeper.execgate.protocol import Ack, DecideRequest, DecisionReply, ExitReport, Message, encode
    from gatekeeper.gate import Reason

    msgs: list[Message] = [
        DecideRequest("deploy", b"systemctl restart nginx",
                      sshsig.parse_public_key(m.public_keys[0]).openssh(), m.bundle, "127.0.0.1:5555"),
        DecisionReply(Reason.ALLOWED, "ok", 6, "SHA256:" + "A" * 43, "/bin/sh"),
        ExitReport(0, None),
        Ack(),
    ]
    return [encode(x)[4:] for x in msgs]


def _seed_log_toml() -> bytes:
    from personality.config import TEMPLATE

    return TEMPLATE.format(origin=json.dumps(ORIGIN)).encode()


def _seed_rules_toml() -> str:
    path = REPO / "examples" / "monitor-rules.toml"
    if path.exists():
        return path.read_text(encoding="utf-8")
    return '[[rule]]\nname = "x"\ncommand = "rm -rf"\nhours = "22:00-06:00"\ntimezone = "Europe/Berlin"\n'


@functools.cache
def seeds(name: str) -> tuple[Any, ...]:
    """Valid inputs of target ``name`` (``bytes`` or ``str`` per the target's kind)."""
    m = material()
    tessera_cps = [p.read_bytes() for p in (TESTVECTORS / "tessera-log").glob("checkpoint*")]
    tile_files = _tessera_files("tile")
    tile_paths = [str(p.relative_to(TESTVECTORS / "tessera-log")) for p in tile_files]
    entry_bundles = [p.read_bytes() for p in tile_files if "/entries/" in str(p)][:8]
    hash_tiles = [p.read_bytes() for p in tile_files if "/entries/" not in str(p)][:8]
    out: dict[str, list[Any]] = {
        "note": [m.checkpoint, *tessera_cps[:4]],
        "note_open": [m.checkpoint, *tessera_cps[:2]],
        "checkpoint_body": [m.checkpoint_body, *(parse_note(c).body for c in tessera_cps[:2])],
        "checkpoint_open": [m.checkpoint],
        "tile_path": ["tile/0/000", "tile/1/x001/x234/067.p/7", "tile/entries/x123/456.p/255",
                      "tile/63/x036/x028/x797/x018/x963/967", *tile_paths[:8]],
        "entry_bundle": [pack_entry_bundle([b"", b"a", b"\x00" * 300, m.entry]), *entry_bundles],
        "hash_tile": [bytes([w]) + os.urandom(32 * w) for w in (1, 2, 255)]
        + [bytes([len(t) // 32 % 256]) + t for t in hash_tiles if len(t) < 256 * 32],
        "tlog_proof": [m.tlog_proof, base64.b64decode(m.bundle)],
        "vkey": [m.signer.verifier().vkey(),
                 "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"],
        "skey": [m.signer.skey()],
        "cosig_vkey": [m.cosigner.verifier().vkey()],
        "cosig_timestamp": [sig.signature for sig in parse_note(m.checkpoint).signatures],
        "action": [act.parse_entry(m.entry).body, act.parse_entry(m.entry_binary).body],
        "entry": [m.entry, m.entry_binary],
        "verify_entry": [m.entry],
        "bundle": [m.bundle],
        "public_key": list(m.public_keys),
        "dearmor": [m.armored],
        "sshsig_blob": [sshsig.dearmor(m.armored)],
        "sshsig_blob_verify": [sshsig.dearmor(m.armored)],
        "sshsig_verify": [m.armored],
        "allowed_signers": [_seed_allowed_signers(m)],
        "action_time": ["2024-02-29T23:59:59Z", "1970-01-01T00:00:00Z"],
        "execgate_message": _seed_execgate_payloads(m),
        "auth_info": [f"publickey {sshsig.parse_public_key(k).openssh()}\n".encode() for k in m.public_keys]
        + [b"password\npublickey " + sshsig.parse_public_key(m.public_keys[0]).openssh().encode() + b"\n"],
        "agent_config": [_seed_agent_toml(m)],
        "client_config": [_seed_client_toml(m).encode()],
        "policy_toml": [_seed_policy_toml(m)],
        "log_config": [_seed_log_toml()],
        "monitor_rules": [_seed_rules_toml()],
        "log_client_json": _seed_json_responses(m),
    }
    return tuple(out[name])


# -- the targets -----------------------------------------------------------------------------------


def _note(data: bytes) -> None:
    n = parse_note(data)
    assert format_note(n) == data, "format_note(parse_note(x)) != x"


def _note_open(data: bytes) -> None:
    m = material()
    open_note(data, [m.signer.verifier(), m.cosigner.verifier()])


def _checkpoint_body(data: bytes) -> None:
    cp = parse_checkpoint_body(data)
    assert format_checkpoint_body(cp) == data, "format_checkpoint_body(parse(x)) != x"


def _checkpoint_open(data: bytes) -> None:
    m = material()
    parse_signed_checkpoint(data)
    sc = open_checkpoint(data, ORIGIN, [m.signer.verifier()])
    assert sc.raw == data
    assert sign_checkpoint(sc.checkpoint, [m.signer]).split(b"\n\n")[0] == data.split(b"\n\n")[0]


def _tile_path(text: str) -> None:
    tp = parse_tile_path(text)
    assert format_tile_path(tp) == text, "format_tile_path(parse(x)) != x"
    assert isinstance(tp, TilePath)


def _entry_bundle(data: bytes) -> None:
    entries = parse_entry_bundle(data)
    assert pack_entry_bundle(entries) == data, "pack(parse(x)) != x"


def _hash_tile(data: bytes) -> None:
    width, tile = (data[0], data[1:]) if data else (0, b"")
    hashes = parse_hash_tile(tile, width)
    assert len(hashes) == width and b"".join(hashes) == tile


def _tlog_proof(data: bytes) -> None:
    p = parse_tlog_proof(data)
    assert format_tlog_proof(p) == data, "format_tlog_proof(parse(x)) != x"


def _vkey(text: str) -> None:
    v = parse_vkey(text)
    assert v.vkey() == text


def _skey(text: str) -> None:
    s = signer_from_skey(text)
    assert s.skey() == text.strip()


def _cosig_vkey(text: str) -> None:
    v = parse_cosignature_vkey(text)
    assert v.vkey() == text


def _cosig_timestamp(data: bytes) -> None:
    ts = cosignature_timestamp(data)
    assert 0 <= ts < 1 << 63


def _action(data: bytes) -> None:
    a = act.parse_action(data)
    assert act.encode_action(a) == data, "encode_action(parse_action(x)) != x"


def _entry(data: bytes) -> None:
    sa = act.parse_entry(data)
    assert act.encode_entry(sa.body, sa.signature) == data, "encode_entry(parse_entry(x)) != x"


def _verify_entry(data: bytes) -> None:
    sa = act.verify_entry(data)
    assert sa.action.signer == sshsig.parse_public_key(sa.action.signer).openssh()


def _bundle(text: str) -> None:
    b = parse_bundle(text)
    assert encode_bundle(b) == text, "encode_bundle(parse_bundle(x)) != x"


def _public_key(text: str) -> None:
    pk = sshsig.parse_public_key(text)
    assert sshsig.parse_public_key(pk.openssh()) == pk
    assert pk.fingerprint().startswith("SHA256:")


def _dearmor(data: bytes) -> None:
    blob = sshsig.dearmor(data)
    assert sshsig.armor(blob) == data


def _sshsig_blob(data: bytes) -> None:
    sig = sshsig.parse_signature(data)
    assert sig.blob == data


def _sshsig_blob_verify(data: bytes) -> None:
    """A well-armored but arbitrary blob must be refused by verify with SignatureInvalid."""
    sshsig.verify(b"message", sshsig.armor(data), act.NAMESPACE)


def _sshsig_verify(data: bytes) -> None:
    m = material()
    body = act.parse_entry(m.entry).body
    key = sshsig.verify(body, data, act.NAMESPACE)
    assert key == sshsig.parse_public_key(m.public_keys[0]).openssh()


def _allowed_signers_t(text: str) -> None:
    a = AllowedSigners.parse(text)
    m = material()
    for k in m.public_keys:
        for ns in ("action@gatekeeper", "git"):
            a.principals_for(k, ns, 1_800_000_000)
            a.why_not(k, ns, 1_800_000_000)


def _action_time(text: str) -> None:
    t = act.parse_time(text)
    assert act.format_time(t) == text


def _execgate_message(data: bytes) -> None:
    from gatekeeper.execgate.protocol import encode, parse_message

    msg = parse_message(data)
    assert parse_message(encode(msg)[4:]) == msg


def _auth_info(data: bytes) -> None:
    from gatekeeper.execgate.sshinfo import parse_auth_info

    key = parse_auth_info(data)
    assert key.encode() in data


def _agent_config(text: str) -> None:
    from gatekeeper.agent.config import parse_config
    from gatekeeper.verify.policy import HostPolicy

    cfg = parse_config(text, base_dir=Path("/nonexistent/gk-fuzz"))
    assert cfg.host_key.is_absolute() and cfg.state_dir.is_absolute()
    HostPolicy.from_mapping(cfg.policy_table(None))


def _client_config(data: bytes) -> None:
    from gatekeeper.client.config import load_config

    path = _tmpdir() / f"client-{os.getpid()}.toml"
    path.write_bytes(data)
    load_config(path, env={})


def _log_config(data: bytes) -> None:
    from personality.config import CONFIG_NAME, load_config

    d = _tmpdir() / f"log-{os.getpid()}"
    d.mkdir(exist_ok=True)
    (d / CONFIG_NAME).write_bytes(data)
    cfg = load_config(d)
    assert cfg.origin and cfg.key_file.is_relative_to(d) or cfg.key_file.is_absolute()


def _policy_toml(text: str) -> None:
    from gatekeeper.verify.policy import HostPolicy

    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return
    HostPolicy.from_mapping(table)


def _monitor_rules(text: str) -> None:
    from gatekeeper.monitor.rules import parse_rules

    parse_rules(text)


class _OneAnswer:
    """A dynamic transport that answers every request with the same (hostile) bytes."""

    dynamic = True

    def __init__(self, data: bytes) -> None:
        self.data = data

    def get(self, path: str, params: Any = None) -> bytes:
        return self.data

    def post(self, path: str, body: bytes, params: Any = None) -> bytes:
        return self.data


def _log_client_json(data: bytes) -> None:
    """What a hostile log can answer to the JSON API: only PersonalityError may come out."""
    from personality.client import LogClient

    client = LogClient(_OneAnswer(data))
    for call in (
        lambda: client.add(b"entry"),
        lambda: client.add(b"entry", wait=False),
        lambda: client.inclusion_proof(3, 7),
        lambda: client.inclusion_proof_by_hash(merkle.leaf_hash(b"entry"), 7),
        lambda: client.consistency_proof(3, 7),
    ):
        try:
            call()
        except PersonalityError:
            pass


_P = (PersonalityError,)

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("note", "bytes", _note, (FormatError,), "personality/tlog/note.py"),
        Target("note_open", "bytes", _note_open, (FormatError, SignatureError), "personality/tlog/note.py"),
        Target("checkpoint_body", "bytes", _checkpoint_body, (FormatError,),
               "personality/tlog/checkpoint.py"),
        Target("checkpoint_open", "bytes", _checkpoint_open, (FormatError, SignatureError, VerificationError),
               "personality/tlog/checkpoint.py"),
        Target("tile_path", "str", _tile_path, (FormatError,), "personality/tlog/tiles.py"),
        Target("entry_bundle", "bytes", _entry_bundle, (FormatError,), "personality/tlog/tiles.py"),
        Target("hash_tile", "bytes", _hash_tile, (FormatError,), "personality/tlog/tiles.py"),
        Target("tlog_proof", "bytes", _tlog_proof, (FormatError,), "personality/tlog/proof.py"),
        Target("vkey", "str", _vkey, (FormatError,), "personality/tlog/note.py"),
        Target("skey", "str", _skey, (FormatError,), "personality/tlog/note.py"),
        Target("cosig_vkey", "str", _cosig_vkey, (FormatError,), "personality/tlog/cosig.py"),
        Target("cosig_timestamp", "bytes", _cosig_timestamp, (FormatError,), "personality/tlog/cosig.py"),
        Target("action", "bytes", _action, (ActionFormatError,), "gatekeeper/action.py"),
        Target("entry", "bytes", _entry, (ActionFormatError,), "gatekeeper/action.py"),
        Target("verify_entry", "bytes", _verify_entry, (ActionFormatError, SignatureInvalid),
               "gatekeeper/action.py"),
        Target("bundle", "str", _bundle, (ActionFormatError,), "gatekeeper/bundle.py"),
        Target("public_key", "str", _public_key, (ActionFormatError,),
               "gatekeeper/sshsig.py"),
        Target("dearmor", "bytes", _dearmor, (ActionFormatError,), "gatekeeper/sshsig.py"),
        Target("sshsig_blob", "bytes", _sshsig_blob, (ActionFormatError,), "gatekeeper/sshsig.py"),
        Target("sshsig_blob_verify", "bytes", _sshsig_blob_verify, (SignatureInvalid,),
               "gatekeeper/sshsig.py"),
        Target("sshsig_verify", "bytes", _sshsig_verify, (SignatureInvalid,), "gatekeeper/sshsig.py"),
        Target("allowed_signers", "str", _allowed_signers_t, (ConfigError,), "gatekeeper/allowed_signers.py"),
        Target("action_time", "str", _action_time, (ActionFormatError,), "gatekeeper/action.py"),
        Target("execgate_message", "bytes", _execgate_message, (GatekeeperError,),
               "gatekeeper/execgate/protocol.py"),
        Target("auth_info", "bytes", _auth_info, (GatekeeperError,), "gatekeeper/execgate/sshinfo.py"),
        Target("agent_config", "str", _agent_config, (ConfigError,), "gatekeeper/agent/config.py"),
        Target("client_config", "bytes", _client_config, (ConfigError,), "gatekeeper/client/config.py"),
        Target("log_config", "bytes", _log_config, (PersonalityError,), "personality/config.py"),
        Target("policy_toml", "str", _policy_toml, (ConfigError,), "gatekeeper/verify/policy.py"),
        Target("monitor_rules", "str", _monitor_rules, (ConfigError,), "gatekeeper/monitor/rules.py"),
        Target("log_client_json", "bytes", _log_client_json, _P, "personality/client.py"),
    )
}
