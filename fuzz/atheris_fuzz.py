"""Coverage-guided fuzzing of one parser target with atheris (libFuzzer for Python).

Run (atheris is not a project dependency; install it next to the project's packages)::

    .venv/bin/pip install atheris                 # a wheel exists for CPython 3.11 on x86_64
    .venv/bin/python fuzz/atheris_fuzz.py TARGET [libFuzzer options, e.g. -max_total_time=60]
    .venv/bin/python fuzz/atheris_fuzz.py --list

TARGET is a name from ``fuzz.targets.TARGETS`` (the same oracles as the hypothesis suite: accepted
with its round trip, or refused with the package's own error). The seeds of the target are written
to ``fuzz/corpus/TARGET/`` (git-ignored) on first use and libFuzzer grows that corpus. A finding
stops the run, prints the traceback and writes ``crash-*`` with the input; known, reported bugs
(``fuzz.targets.KNOWN_BUGS``) are skipped so the run keeps looking for new ones.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


LAZY_MODULES = (
    "gatekeeper.agent.config",
    "gatekeeper.client.config",
    "gatekeeper.execgate.protocol",
    "gatekeeper.execgate.sshinfo",
    "gatekeeper.monitor.rules",
    "gatekeeper.verify.policy",
    "personality.client",
    "personality.config",
)


def main() -> int:
    import atheris

    with atheris.instrument_imports(include=["personality", "gatekeeper"]):
        import importlib

        from fuzz import targets as T

        # The targets import some modules lazily: import them here, under instrumentation, or
        # libFuzzer gets no coverage from them and mutates blindly.
        for module in LAZY_MODULES:
            importlib.import_module(module)
        T.material()

    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help", "--list"):
        print("targets: " + " ".join(sorted(T.TARGETS)))
        return 0 if args else 2
    name, rest = args[0], args[1:]
    target = T.TARGETS[name]
    corpus = HERE / "corpus" / name
    if not corpus.exists():
        corpus.mkdir(parents=True)
        for seed in T.seeds(name):
            data = seed if isinstance(seed, bytes) else seed.encode("utf-8", "surrogateescape")
            (corpus / hashlib.sha256(data).hexdigest()[:16]).write_bytes(data)

    def one(data: bytes) -> None:
        arg = data if target.kind == "bytes" else data.decode("utf-8", "surrogateescape")
        try:
            T.check(name, arg)
        except Exception as exc:
            if T.known_bug(name, exc) is None:
                raise

    atheris.Setup([sys.argv[0], *rest, str(corpus)], one)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
