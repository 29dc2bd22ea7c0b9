"""Which experiments ran the same pipeline, read from their `dvc.lock`.

`make compare` pools experiments of several commits: a commit that only
changes the metrics tables or the README leaves earlier experiments
comparable, and a long comparison outlives many such commits. It must never
pool runs whose predictions came from different code or settings. An
experiment's signature is what its `dvc.lock` records for every stage up to
the predictions: the hash of each code dependency under `src/` and the value
of each parameter, apart from the parameters a variant or a seed sets
(`sampling`, the selection each model trains on under `train_on`,
`train.seed`; a model's `train_on.<model>.min_steps` is training length and
stays, under the key older locks gave it as `train.min_steps` of that
model's `train@<model>` stage). Two signatures agree when no key
that both record differs (a `full` run has no round stages, so it records
fewer keys, not other values).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

# parameters that make variants and seeds differ on purpose (make compare-queue sets them)
VARIANT_PARAMS = ("sampling", "train_on", "train.seed")
# ... but not these leaves of them: how long each model trains is a setting, the same for every variant
SETTING_LEAF = "min_steps"
# the key `train.min_steps` had before it moved into train_on (one floor for every model)
OLD_MIN_STEPS = "train.min_steps"
# stages that read predictions (their code changing leaves the predictions comparable)
METRIC_STAGES = ("evaluate", "report")
CODE_ROOT = "src/"

Signature = dict[str, str]


def _flat_params(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf: `train: {epochs: 20}` -> `train.epochs`."""
    if isinstance(value, Mapping) and value:
        for key, inner in value.items():
            yield from _flat_params(f"{prefix}.{key}" if prefix else str(key), inner)
    else:
        yield prefix, value


def _is_variant_param(key: str) -> bool:
    if key.startswith("train_on.") and key.endswith(f".{SETTING_LEAF}"):
        return False
    return any(key == name or key.startswith(f"{name}.") for name in VARIANT_PARAMS)


def _setting_key(stage: str, key: str) -> str:
    """Today's name of a parameter: an older lock's `train.min_steps` of stage `train@<model>` is `train_on.<model>.min_steps`."""
    name, _, model = stage.partition("@")
    return f"train_on.{model}.{SETTING_LEAF}" if key == OLD_MIN_STEPS and name == "train" and model else key


def pipeline_signature(lock: Mapping[str, Any]) -> Signature:
    """Code hashes and parameter values of every stage up to the predictions (keys: path, or `params:key`)."""
    signature: Signature = {}
    for stage, body in (lock.get("stages") or {}).items():
        if str(stage).split("@", 1)[0] in METRIC_STAGES or not isinstance(body, Mapping):
            continue
        for dependency in body.get("deps") or []:
            path = str(dependency.get("path", ""))
            if path.startswith(CODE_ROOT):
                signature[path] = str(dependency.get("md5"))
        for params in (body.get("params") or {}).values():
            for key, value in _flat_params("", params or {}):
                key = _setting_key(str(stage), key)
                if not _is_variant_param(key):
                    signature[f"params:{key}"] = json.dumps(value, sort_keys=True)
    return signature


def signature_differences(first: Signature, second: Signature) -> list[str]:
    """The keys both signatures record with different values (empty: the same pipeline)."""
    return sorted(key for key in first.keys() & second.keys() if first[key] != second[key])


def pipeline_groups(signatures: list[Signature | None]) -> list[int | None]:
    """A group number per signature, in listing order: each joins the first group it agrees with.

    Group 0 is the first signature's (the workspace's when it is listed
    first); None: the signature is unknown (no readable `dvc.lock`).
    """
    representatives: list[Signature] = []
    groups: list[int | None] = []
    for signature in signatures:
        if signature is None:
            groups.append(None)
            continue
        for number, representative in enumerate(representatives):
            if not signature_differences(representative, signature):
                groups.append(number)
                break
        else:
            representatives.append(signature)
            groups.append(len(representatives) - 1)
    return groups


def pipeline_label(workspace: Signature, members: list[Signature], shown: int = 2) -> str:
    """What a group of signatures sets apart from the workspace's: `train.epochs=40`, `src/reltune/models:1a2b3c4`.

    The union over the group's members (so it does not depend on which
    experiment is listed first): parameters, then code paths, each sorted;
    beyond `shown` keys a `+N` count.
    """
    differing: dict[str, str] = {}
    for member in members:
        for key in signature_differences(workspace, member):
            differing.setdefault(key, member[key])
    texts = [
        f"{key.removeprefix('params:')}={json.loads(value)}" if key.startswith("params:") else f"{key}:{value[:7]}"
        for key, value in sorted(differing.items(), key=lambda item: (not item[0].startswith("params:"), item[0]))
    ]
    return ",".join(texts[:shown]) + (f"+{len(texts) - shown}" if len(texts) > shown else "")
