"""The "service" secrets provider: per-stack encryption behind stack permissions.

While an update holds the stack, its secrets encrypt deterministically (crypto.py: synthetic
nonces), by default for the stack's whole history and with
``PROCELLA_SECRETS_STABLE_ACROSS_UPDATES=false`` within that update only; outside updates
with random nonces.

Why: without journaling the CLI (pkg/backend/httpstate/backend.go, FinalizeUpdateFunc) keeps a
shadow journal next to the checkpoints it sends and, at the end of the update, compares the
two snapshots (snapshot.AssertEqual) and reports any difference as an ``errorEvent``
"snapshot mismatch". Both serialize secrets through one cache keyed by the secret's address
(pkg/resource/stack/secrets.go, cachingBatchEncrypter.sendNextBatch), and that cache is all or
nothing: when one secret of a checkpoint is new, every secret of it is sent to
``batch-encrypt`` again and gets a new ciphertext, while the journal entry written earlier for
a resource keeps the old one. With random nonces the final checkpoint then differs from the
journal in every older secret. Within one update the same plaintext now gets the same
ciphertext, so re-encrypting changes nothing.

Why across updates, by default: the CLI keeps the ciphertext of a secret it read from the base
state (the same cache), but a secret the program makes again at every run gets a new one.
The Python SDK's dynamic provider is such a secret, in every dynamic resource: with
ciphertexts per update, every such resource's state changed at every update, so a 10-resource
change of a 1000-resource stack stored all 1000 again (e2e/README.md). What the default reveals,
to a reader of the state who cannot decrypt it, is which secrets of the stack's states written
during updates are equal, also across updates (a value kept, or set back to an old one). With
the setting off, only equality within one update shows. Either way nothing links values
across stacks (keys are per stack), and outside updates (``config set --secret``) encryption
stays randomized.
"""

from __future__ import annotations

from procella import audit
from procella.auth.models import Principal, Role
from procella.secrets.crypto import StackCrypto
from procella.stacks.models import StackRef
from procella.stacks.service import StackService

# The scope of a stack's whole history: no update id (a UUID) is this.
STACK_SCOPE = "stack"


class SecretsService:
    def __init__(
        self, stacks: StackService, crypto: StackCrypto, *, stable_across_updates: bool = True
    ) -> None:
        self.stacks = stacks
        self.crypto = crypto
        self.stable_across_updates = stable_across_updates

    async def encrypt(
        self, principal: Principal, ref: StackRef, plaintexts: list[bytes]
    ) -> list[bytes]:
        stack = await self.stacks.resolve(principal, ref, Role.MEMBER)
        scope = stack.active_update_id  # set from the start of a non-preview update to its end
        if scope is not None and self.stable_across_updates:
            scope = STACK_SCOPE
        return [self.crypto.encrypt(stack.id, p, scope=scope) for p in plaintexts]

    async def decrypt(
        self, principal: Principal, ref: StackRef, ciphertexts: list[bytes]
    ) -> list[bytes]:
        stack = await self.stacks.resolve(principal, ref, Role.MEMBER)
        plaintexts = [self.crypto.decrypt(stack.id, c) for c in ciphertexts]
        count = f"{len(plaintexts)} value" + ("" if len(plaintexts) == 1 else "s")
        await self.stacks.record(principal, stack, audit.SECRETS_DECRYPT, f"decrypted {count}")
        return plaintexts

    async def log_decryption(self, principal: Principal, ref: StackRef, what: str) -> None:
        """The CLI decrypted secrets of the stack itself (a passphrase or cloud KMS
        provider) to show them: ``what`` names the secret or the command."""
        stack = await self.stacks.resolve(principal, ref, Role.VIEWER)
        await self.stacks.record(
            principal, stack, audit.SECRETS_DECRYPT, f"showed secrets in plaintext: {what}"
        )
