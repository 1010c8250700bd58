"""What the test trees share: tests/, e2e/ and loadtest/ import it (the ``test`` extra
installs it, from a checkout: several modules use the repository's files, e.g. the
Caddyfile, e2e/'s programs and Go modules, tests/standins/). ``procella`` never imports it
(an import-linter contract in pyproject.toml).

* ``servers``: external servers for a run: PostgreSQL from the machine's binaries, moto's
  S3 server; databases and buckets in them.
* ``processes``: child processes in sessions of their own; polling, free ports.
* ``procella_server``: ``procella serve`` as a child process; raw API calls.
* ``cluster``: three replicas on PostgreSQL + S3 behind Caddy with the repository's Caddyfile.
* ``wire``: the Pulumi CLI's headers and request bodies, written once.
* ``pulumi_toolchain``, ``pulumi_cli``: the pinned real CLI, built once per machine, and
  driven with an isolated PULUMI_HOME.
* ``images``: the local container images (the project's, stand-ins for third parties).
* ``oidc_issuer``: an OIDC issuer on 127.0.0.1; ``metrics_text``: /metrics text, parsed;
  ``cpu``: CPU time per process tree, from /proc.

Nothing is imported here: the toolchain builder, ``wire`` and ``cpu`` run where only the
standard library is installed (CI before its venvs exist, locust's own venv).
"""
