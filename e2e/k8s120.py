"""The one transformation that makes `config/default` installable on the tests' Kubernetes 1.20 node.

Kubernetes 1.20 refuses two things our CRDs hold, both limits of that release and not defects of ours
(../shared/KUBERNETES-NODE.md):
  - `x-kubernetes-validations` (CEL rules, Kubernetes 1.25+): every such key is removed from the CRDs'
    schemas. The rules stay covered by the local CEL tests (crds/src/validation.rs, `cargo test`).
  - a literal `null` member of an `enum` (accepted from 1.21, kubernetes PR #104969): removed from the enum.
Nothing else changes: every other object and field is passed through as `kubectl kustomize` rendered it.
"""

import os

import yaml


def strip_schema(node):
    """Remove CEL rules and `null` enum members from an OpenAPI schema, in place; count what went."""
    removed = 0
    if isinstance(node, dict):
        if node.pop("x-kubernetes-validations", None) is not None:
            removed += 1
        if isinstance(node.get("enum"), list) and None in node["enum"]:
            node["enum"] = [v for v in node["enum"] if v is not None]
            removed += 1
        for value in node.values():
            removed += strip_schema(value)
    elif isinstance(node, list):
        for value in node:
            removed += strip_schema(value)
    return removed


def for_kubernetes_1_20(objects):
    """The objects of `kubectl kustomize config/default`, with the CRDs' schemas made acceptable to 1.20.
    Returns (objects, number of rules and enum members removed)."""
    removed = 0
    for obj in objects:
        if obj.get("kind") == "CustomResourceDefinition":
            for version in obj["spec"]["versions"]:
                removed += strip_schema(version.get("schema", {}))
    return objects, removed


def write_kustomization(rendered_yaml, directory):
    """Write the transformed objects and a kustomization.yaml naming them into `directory`, ready for
    `kubectl apply -k directory`. Returns how many rules and enum members were removed."""
    objects = [o for o in yaml.safe_load_all(rendered_yaml) if o]
    objects, removed = for_kubernetes_1_20(objects)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "install.yaml"), "w") as f:
        yaml.safe_dump_all(objects, f, sort_keys=False)
    with open(os.path.join(directory, "kustomization.yaml"), "w") as f:
        f.write("# config/default for Kubernetes 1.20 (e2e/k8s120.py)\nresources:\n  - install.yaml\n")
    return removed
