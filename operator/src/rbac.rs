//! The API permissions the code uses, declared next to it. `config/rbac/role.yaml` (operator) and
//! `config/rbac/worker_role.yaml` (worker) must grant exactly these: a test reads both, and the mocked-API
//! tests check that every request the reconciler makes is covered here.
//!
//! Server-side apply is authorized as `patch`, and also as `create` when it creates the object.

/// One rule: API group, resource (with `/subresource`), verbs.
pub type Permission = (&'static str, &'static str, &'static [&'static str]);

/// What the operator does: watch configs, nodes and worker reports (reflectors and the controller), apply
/// ConfigMaps and DaemonSets, write config status, delete stale reports, record events, hold its Lease
/// (granted by a Role in the operator's namespace only).
pub const OPERATOR: &[Permission] = &[
    ("interceptor.dev", "interceptorconfigs", &["list", "watch"]),
    ("interceptor.dev", "interceptorconfigs/status", &["patch"]),
    (
        "interceptor.dev",
        "interceptorstatuses",
        &["list", "watch", "delete"],
    ),
    ("", "configmaps", &["list", "watch", "create", "patch"]),
    (
        "apps",
        "daemonsets",
        &["get", "list", "watch", "create", "patch"],
    ),
    ("", "nodes", &["list", "watch"]),
    ("events.k8s.io", "events", &["create", "patch"]),
    (
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
    ),
];

/// What the worker does (`node-worker run`): read and watch its ConfigMap, map pod IPs to pods, and
/// create and apply its InterceptorStatus and that object's status.
pub const WORKER: &[Permission] = &[
    ("", "configmaps", &["get", "list", "watch"]),
    ("", "pods", &["get", "list", "watch"]),
    (
        "interceptor.dev",
        "interceptorstatuses",
        &["get", "create", "patch"],
    ),
    (
        "interceptor.dev",
        "interceptorstatuses/status",
        &["get", "create", "patch"],
    ),
];

/// Whether `permissions` allow `verb` on `group`/`resource`.
pub fn allows(permissions: &[Permission], group: &str, resource: &str, verb: &str) -> bool {
    permissions
        .iter()
        .any(|(g, r, verbs)| *g == group && *r == resource && verbs.contains(&verb))
}
