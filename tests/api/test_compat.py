"""Forward compatibility: newer CLIs add fields; the server must ignore what it does not
know (the TypeScript peer's strict schemas turned new CLI fields into 400s)."""

from __future__ import annotations

import gzip
import json

from tests.helpers import (
    DEFAULT_ORG,
    Api,
    assert_ok,
    b64,
    body_json,
    delta_between,
    sha256_hex,
    stdout_event,
    untyped,
)

S = f"{DEFAULT_ORG}/proj/dev"
EXTRA = {"someFutureField": {"nested": [1, "x", None]}, "anotherOne": True}


async def test_unknown_fields_are_ignored_everywhere(api: Api) -> None:
    body = {"stackName": "dev", "tags": {"a": "b"}, "teams": ["t1"], **EXTRA}
    await assert_ok(await api.call("POST", f"/api/stacks/{DEFAULT_ORG}/proj", body), 200)
    response = await api.call(
        "PATCH", f"/api/stacks/{S}/tags", {"a": "c"}
    )  # tags are the whole body: no room for extras
    await assert_ok(response, 204)
    ciphertext = (
        await body_json(
            await api.call("POST", f"/api/stacks/{S}/encrypt", {"plaintext": b64(b"x"), **EXTRA})
        )
    )["ciphertext"]
    response = await api.call(
        "POST", f"/api/stacks/{S}/decrypt", {"ciphertext": ciphertext, **EXTRA}
    )
    assert (await body_json(response))["plaintext"] == b64(b"x")
    response = await api.call(
        "POST",
        f"/api/stacks/{S}/batch-encrypt",
        {"plaintexts": [b64(b"y")], **EXTRA},
        gzip_body=True,
    )
    [c2] = (await body_json(response))["ciphertexts"]
    response = await api.call(
        "POST", f"/api/stacks/{S}/batch-decrypt", {"ciphertexts": [c2], **EXTRA}, gzip_body=True
    )
    assert (await body_json(response))["plaintexts"] == {c2: b64(b"y")}

    create = {
        "name": "proj",
        "runtime": "python",
        "options": {"dryRun": False, "futureOption": 3, "color": "raw"},
        "config": {"proj:k": {"string": "v", "secret": False, "object": False, "future": 1}},
        "metadata": {"message": "m", "environment": {"git.head": "x"}, **EXTRA},
        **EXTRA,
    }
    response = await api.call("POST", f"/api/stacks/{S}/update", create)
    update_id = (await body_json(response))["updateID"]
    path = f"/api/stacks/{S}/update/{update_id}"
    # Without journalVersion: this update sends checkpoints (journaling has its own tests).
    response = await api.call("POST", path, {"tags": {"a": "d"}, **EXTRA})
    token = (await body_json(response))["token"]
    response = await api.call(
        "POST", f"{path}/renew_lease", {"token": "", "duration": 300, **EXTRA}, lease=token
    )
    assert response.status_code == 200
    event = {**stdout_event(0), "futureEventField": 1}
    event["stdoutEvent"]["futureInner"] = "x"
    response = await api.call(
        "POST", f"{path}/events/batch", {"events": [event], **EXTRA}, gzip_body=True, lease=token
    )
    await assert_ok(response, 204)
    checkpoint = {"isInvalid": False, "version": 3, "deployment": untyped(1)["deployment"], **EXTRA}
    checkpoint["deployment"]["futureSection"] = {"x": 1}
    response = await api.call(
        "PATCH", f"{path}/checkpoint", checkpoint, gzip_body=True, lease=token
    )
    await assert_ok(response, 204)
    one = json.dumps({"version": 3, "deployment": {"manifest": {}, "futureKey": 1}}).encode()
    raw = b'{"version":3,"untypedDeployment":' + one + b',"sequenceNumber":2,"future":[1,2]}'
    response = await api.call(
        "PATCH", f"{path}/checkpointverbatim", raw=raw, gzip_body=True, lease=token
    )
    await assert_ok(response, 204)
    two = json.dumps({"version": 3, "deployment": {"manifest": {}, "futureKey": 2}}).encode()
    edits = delta_between(one, two)
    edits[0]["futureEditField"] = True
    delta = {
        "version": 3,
        "checkpointHash": sha256_hex(two),
        "sequenceNumber": 3,
        "deploymentDelta": edits,
        **EXTRA,
    }
    response = await api.call(
        "PATCH", f"{path}/checkpointdelta", delta, gzip_body=True, lease=token
    )
    await assert_ok(response, 204)
    response = await api.call(
        "POST", f"{path}/complete", {"status": "succeeded", **EXTRA}, lease=token
    )
    await assert_ok(response, 204)
    assert await api.export_bytes(S) == two
    response = await api.call(
        "POST", f"/api/stacks/{S}/rename", {"newName": "dev2", "newProject": "proj", **EXTRA}
    )
    await assert_ok(response, 204)
    state = {**untyped(1), **EXTRA}
    await assert_ok(await api.import_state(f"{DEFAULT_ORG}/proj/dev2", state), 200)


async def test_x_gzip_and_accept_header_variants(api: Api) -> None:
    await api.new_stack(S)
    raw = gzip.compress(json.dumps(untyped(1)).encode())
    for encoding in ("x-gzip", "GZIP", " gzip "):
        response = await api.call(
            "POST", f"/api/stacks/{S}/import", raw=raw, headers={"Content-Encoding": encoding}
        )
        assert response.status_code == 200, encoding
    for accept in ("application/vnd.pulumi+8", "application/json", "*/*"):
        response = await api.call("GET", f"/api/stacks/{S}", headers={"Accept": accept})
        assert response.status_code == 200, accept
    # The CLI sends Content-Type: application/json even on GET; the server must not care.
    response = await api.call("GET", "/api/user", headers={"Content-Type": "text/plain"})
    assert response.status_code == 200
