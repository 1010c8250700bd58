"""The "service" secrets provider: per-stack encryption behind stack permissions."""

from __future__ import annotations

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
        return [self.crypto.encrypt(stack.id, p) for p in plaintexts]

    async def decrypt(
        self, principal: Principal, ref: StackRef, ciphertexts: list[bytes]
    ) -> list[bytes]:
        stack = await self.stacks.resolve(principal, ref, Role.MEMBER)
        return [self.crypto.decrypt(stack.id, c) for c in ciphertexts]
