//! Helpers shared by the operator's integration tests.

use std::path::PathBuf;

use interceptor_crds::InterceptorConfig;
use operator::input::parse_config;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Compare `text` with `tests/snapshots/<name>`; `UPDATE_SNAPSHOTS=1` rewrites the file instead.
pub fn assert_snapshot(name: &str, text: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_SNAPSHOTS=1 writes it)", path.display()));
    if want != text {
        let first = want
            .lines()
            .zip(text.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(want.lines().count().min(text.lines().count()));
        panic!(
            "{} differs from the snapshot at line {}:\n  snapshot: {:?}\n  now:      {:?}\n(UPDATE_SNAPSHOTS=1 rewrites it after review)",
            path.display(),
            first + 1,
            want.lines().nth(first),
            text.lines().nth(first)
        );
    }
}

/// Server-side apply turns an empty string or an empty object into `null`, which the schema then refuses
/// (seen on a real API server: `status.conditions.message: Invalid value: "null"`). Nothing the operator
/// applies may hold one: this walks `value` and names every such field.
pub fn assert_appliable(what: &str, value: &serde_json::Value) {
    fn walk(path: String, value: &serde_json::Value, found: &mut Vec<String>) {
        match value {
            serde_json::Value::String(s) if s.is_empty() => found.push(format!("{path}: \"\"")),
            serde_json::Value::Object(map) if map.is_empty() => found.push(format!("{path}: {{}}")),
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    walk(format!("{path}.{k}"), v, found);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(format!("{path}[{i}]"), v, found);
                }
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    walk(String::new(), value, &mut found);
    assert!(
        found.is_empty(),
        "{what} holds empty values that server-side apply would turn into null: {found:?}"
    );
}

/// A sample from `config/samples`, admitted, with the uid a cluster would give it.
pub fn sample(file: &str) -> InterceptorConfig {
    let text = std::fs::read_to_string(repo().join("config/samples").join(file)).unwrap();
    let mut icfg = parse_config(&text).unwrap();
    icfg.metadata.uid = Some(format!("uid-{}", icfg.metadata.name.clone().unwrap()));
    icfg.metadata.generation = Some(1);
    icfg
}
