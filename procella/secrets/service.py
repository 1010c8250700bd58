"""The "service" secrets provider: per-stack encryption behind stack permissions.

While an update holds the stack, its secrets encrypt deterministically within that update
(crypto.py: synthetic nonces scoped by the update id); otherwise with random nonces.

Why: without journaling the CLI (pkg/backend/httpstate/backend.go, FinalizeUpdateFunc) keeps a
shadow journal next to the checkpoints it sends and, at the end of the update, compares the
two snapshots (snapshot.AssertEqual) and reports any difference as an ``errorEvent``
"snapshot mismatch". Both serialize secrets through one cache keyed by the secret's address
(pkg/resource/stack/secrets.go, cachingBatchEncrypter.sendNextBatch), and that cache is all or
nothing: when one secret of a checkpoint is new, every secret of it is sent to
``batch-encrypt`` again and gets a new ciphertext, while the journal entry written earlier for
a resource keeps the old one. With random nonces the final checkpoint then differs from the
journal in every older secret. Within one update the same plaintext now gets the same
ciphertext, so re-encrypting changes nothing. What this reveals is which secrets of the
stack's state written during one update are equal; nothing links values across stacks (keys
are per stack) or across updates (the update id is in the nonce), and outside updates
(``config set --secret``) encryption stays randomized.
"""

from __future__ import annotations

from procella import audit
from procella.auth.models import Principal, Role
from procella.secrets.crypto import StackCrypto
from procella.stacks.models import StackRef
from procella.stacks.service import StackService


class SecretsService:
    def __init__(self, stacks: StackService, crypto: StackCrypto) -> None:
        self.stacks = stacks
        self.crypto = crypto

    async def encrypt(
        self, principal: Principal, ref: StackRef, plaintexts: list[bytes]
    ) -> list[bytes]:
        stack = await self.stacks.resolve(principal, ref, Role.MEMBER)
        scope = stack.active_update_id  # set from the start of a non-preview update to its end
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
