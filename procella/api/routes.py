"""Every URL the server answers, one line each, in the order of the protocol note.

Werkzeug ranks static segments above variables, so ``.../import`` wins over
``.../<kind>``, and ``kind`` only matches the four update kinds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from quart import Blueprint, Response

from procella.api import audit, oidc, secrets, stacks, teams, tokens, updates, user

STACK = "/api/stacks/<org>/<project>/<stack>"
KIND = "<any(update, preview, refresh, destroy):kind>"
UPDATE = f"{STACK}/{KIND}/<update_id>"

Handler = Callable[..., Awaitable[Response]]

ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("GET", "/healthz", user.healthz),
    ("GET", "/readyz", user.readyz),
    ("GET", "/api/capabilities", user.capabilities),
    ("GET", "/api/user", user.get_user),
    ("GET", "/api/user/organizations/default", user.default_org),
    ("GET", "/api/user/stacks", stacks.list_user_stacks),
    ("GET", "/api/registry/templates", user.registry_templates),
    ("GET", "/api/registry/packages", user.registry_packages),
    ("GET", "/api/orgs/<org>/templates", user.org_templates),
    # API tokens, teams and the audit log (org admins)
    ("GET", "/api/orgs/<org>/tokens", tokens.list_tokens),
    ("POST", "/api/orgs/<org>/tokens", tokens.create_token),
    ("DELETE", "/api/orgs/<org>/tokens/<token_id>", tokens.revoke_token),
    ("GET", "/api/orgs/<org>/teams", teams.list_teams),
    ("POST", "/api/orgs/<org>/teams", teams.create_team),
    ("POST", "/api/orgs/<org>/teams/pulumi", teams.create_team),
    ("GET", "/api/orgs/<org>/teams/<team>", teams.get_team),
    ("PATCH", "/api/orgs/<org>/teams/<team>", teams.update_team),
    ("DELETE", "/api/orgs/<org>/teams/<team>", teams.delete_team),
    ("GET", "/api/orgs/<org>/teams/<team>/tokens", teams.list_team_tokens),
    ("POST", "/api/orgs/<org>/teams/<team>/tokens", teams.create_team_token),
    ("DELETE", "/api/orgs/<org>/teams/<team>/tokens/<token_id>", teams.revoke_team_token),
    # OIDC: the token exchange, and issuers with their policies (org admins)
    ("POST", "/api/oauth/token", oidc.exchange_token),
    ("GET", "/api/orgs/<org>/oidc/issuers", oidc.list_issuers),
    ("POST", "/api/orgs/<org>/oidc/issuers", oidc.register_issuer),
    ("GET", "/api/orgs/<org>/oidc/issuers/<issuer_id>", oidc.get_issuer),
    ("DELETE", "/api/orgs/<org>/oidc/issuers/<issuer_id>", oidc.delete_issuer),
    ("GET", "/api/orgs/<org>/auth/policies/oidcissuers/<issuer_id>", oidc.get_policies),
    ("PATCH", "/api/orgs/<org>/auth/policies/oidcissuers/<issuer_id>", oidc.set_policies),
    ("GET", "/api/orgs/<org>/auditlogs", audit.list_entries_v1),
    ("GET", "/api/orgs/<org>/auditlogs/v2", audit.list_entries),
    ("GET", "/api/orgs/<org>/auditlogs/export", audit.export_entries_v1),
    ("GET", "/api/orgs/<org>/auditlogs/v2/export", audit.export_entries),
    # Stacks
    ("HEAD", "/api/stacks/<org>/<project>", stacks.project_exists),
    ("POST", "/api/stacks/<org>/<project>", stacks.create_stack),
    ("GET", STACK, stacks.get_stack),
    ("DELETE", STACK, stacks.delete_stack),
    ("PATCH", f"{STACK}/tags", stacks.update_tags),
    ("POST", f"{STACK}/rename", stacks.rename_stack),
    ("GET", f"{STACK}/export", stacks.export_stack),
    ("GET", f"{STACK}/export/<int:version>", stacks.export_stack),
    ("POST", f"{STACK}/import", stacks.import_stack),
    ("GET", f"{STACK}/updates", stacks.stack_history),
    ("GET", f"{STACK}/updates/latest", stacks.latest_update),
    # Secrets
    ("POST", f"{STACK}/encrypt", secrets.encrypt),
    ("POST", f"{STACK}/decrypt", secrets.decrypt),
    ("POST", f"{STACK}/batch-encrypt", secrets.batch_encrypt),
    ("POST", f"{STACK}/batch-decrypt", secrets.batch_decrypt),
    ("POST", f"{STACK}/decrypt/log-decryption", secrets.log_decryption),
    ("POST", f"{STACK}/decrypt/log-batch-decryption", secrets.log_decryption),
    # Updates, user token
    ("POST", f"{STACK}/{KIND}", updates.create_update),
    ("POST", UPDATE, updates.start_update),
    ("GET", UPDATE, updates.update_status),
    ("POST", f"{UPDATE}/cancel", updates.cancel_update),
    ("GET", f"{UPDATE}/events", updates.list_events),
    # Updates, update token
    ("POST", f"{UPDATE}/renew_lease", updates.renew_lease),
    ("PATCH", f"{UPDATE}/checkpoint", updates.patch_checkpoint),
    ("PATCH", f"{UPDATE}/checkpointverbatim", updates.patch_checkpoint_verbatim),
    ("PATCH", f"{UPDATE}/checkpointdelta", updates.patch_checkpoint_delta),
    ("PATCH", f"{UPDATE}/journalentries", updates.journal_entries),
    ("POST", f"{UPDATE}/events/batch", updates.record_events),
    ("POST", f"{UPDATE}/complete", updates.complete_update),
)


def blueprint() -> Blueprint:
    bp = Blueprint("pulumi", __name__)
    for method, rule, handler in ROUTES:
        endpoint = f"{handler.__module__.rsplit('.', 1)[-1]}_{handler.__name__}_{method}"
        bp.add_url_rule(rule, endpoint, handler, methods=[method], provide_automatic_options=False)
    return bp
