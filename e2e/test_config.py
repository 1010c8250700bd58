"""Stack config secrets through the service secrets provider (`/encrypt`, `/batch-decrypt`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from names import Names

from procella_testing.processes import expect_fail
from procella_testing.pulumi_cli import PulumiCLI, Stack

# The subject is stack config and its secrets, not how the CLI sends the state: one mode (conftest).
pytestmark = pytest.mark.any_mode

PLAINTEXT = "correct-horse-battery-staple"


def secure_value(config_text: str, key: str) -> str:
    """The ciphertext the CLI stored for ``key`` in a Pulumi.<stack>.yaml."""
    match = re.search(rf"(?m)^  {re.escape(key)}:\n    secure: (\S+)$", config_text)
    assert match, f"no secure value for {key} in:\n{config_text}"
    return match.group(1)


def test_secret_config_round_trip(pulumi: PulumiCLI, names: Names, project_dir: Path) -> None:
    stack = Stack(pulumi, names.stack("dev"), project_dir).init()
    stack.ok("config", "set", "--secret", "dbPassword", PLAINTEXT)
    stack.ok("config", "set", "region", "moon-1")

    text = (project_dir / "Pulumi.dev.yaml").read_text()
    assert PLAINTEXT not in text
    ciphertext = secure_value(text, f"{names.project}:dbPassword")
    assert PLAINTEXT not in ciphertext
    # The service provider keeps no key material in the stack file (unlike passphrase).
    assert "encryptionsalt" not in text and "secretsprovider" not in text

    assert stack.ok("config", "get", "dbPassword").stdout.strip() == PLAINTEXT
    hidden = stack.ok("config", "--json").json()
    assert hidden[f"{names.project}:dbPassword"]["secret"] is True
    assert PLAINTEXT not in str(hidden)
    assert hidden[f"{names.project}:region"]["value"] == "moon-1"
    shown = stack.ok("config", "--json", "--show-secrets").json()
    assert shown[f"{names.project}:dbPassword"]["value"] == PLAINTEXT

    # The same plaintext encrypts to a different ciphertext each time (random nonce).
    stack.ok("config", "set", "--secret", "again", PLAINTEXT)
    text = (project_dir / "Pulumi.dev.yaml").read_text()
    assert secure_value(text, f"{names.project}:again") != ciphertext


def test_ciphertext_is_bound_to_its_stack(
    pulumi: PulumiCLI, names: Names, project_dir: Path
) -> None:
    dev = Stack(pulumi, names.stack("dev"), project_dir).init()
    dev.ok("config", "set", "--secret", "token", PLAINTEXT)
    key = f"{names.project}:token"
    ciphertext = secure_value((project_dir / "Pulumi.dev.yaml").read_text(), key)

    other = Stack(pulumi, names.stack("other"), project_dir).init()
    (project_dir / "Pulumi.other.yaml").write_text(f"config:\n  {key}:\n    secure: {ciphertext}\n")
    # A client error (4xx), not a crash: the server recognised a foreign ciphertext.
    result = expect_fail(other.run("config", "get", "token"), "could not decrypt")
    assert re.search(r"\[4\d\d\]", result.output), result.describe()
    assert PLAINTEXT not in result.output


def test_renamed_stack_still_decrypts(pulumi: PulumiCLI, names: Names, project_dir: Path) -> None:
    dev = Stack(pulumi, names.stack("dev"), project_dir).init()
    dev.ok("config", "set", "--secret", "token", PLAINTEXT)

    renamed = names.stack("renamed")
    dev.ok("stack", "rename", renamed)
    # The CLI moved Pulumi.dev.yaml to Pulumi.renamed.yaml; its ciphertext was made before.
    assert (project_dir / "Pulumi.renamed.yaml").exists()
    moved = Stack(pulumi, renamed, project_dir)
    assert moved.ok("config", "get", "token").stdout.strip() == PLAINTEXT
    moved.ok("config", "set", "--secret", "later", "after-rename")
    assert moved.ok("config", "get", "later").stdout.strip() == "after-rename"


def test_recreated_stack_cannot_read_old_secrets(
    pulumi: PulumiCLI, names: Names, project_dir: Path
) -> None:
    dev = Stack(pulumi, names.stack("dev"), project_dir).init()
    dev.ok("config", "set", "--secret", "token", PLAINTEXT)
    assert dev.ok("config", "get", "token").stdout.strip() == PLAINTEXT

    # Same name, new stack: keys follow the stack's identity, not its name.
    dev.ok("stack", "rm", "--yes", "--preserve-config")
    dev.init()
    result = expect_fail(dev.run("config", "get", "token"), "could not decrypt")
    assert PLAINTEXT not in result.output
