//! One manifest file's bytes to catalog objects: the parser behind the directory source.
//!
//! Pure and synchronous: no file system, no clock, no logging of input. The directory source
//! calls it off the async runtime, once per new content of a file; the fuzz target calls it
//! with arbitrary bytes.

mod strict;
mod typed;

use serde::Deserialize;

use super::{convert, yaml};
use crate::catalog::Object;

/// Namespace given to namespaced objects whose manifest names none (as `kubectl` does).
pub const DEFAULT_NAMESPACE: &str = "default";

/// One problem found in a manifest: the document it is in (0-based, when known) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError {
    /// Index of the YAML document in the file.
    pub document: Option<usize>,
    /// What is wrong and, where it helps, what to do.
    pub reason: String,
}

/// Parses one manifest file: bytes in, every object revplane serves from it out (Services,
/// EndpointSlices, Namespaces, and the ConfigMap named `mesh_config_map` as the mesh
/// config; other kinds are skipped), or every problem found, per document.
///
/// Any input is safe: text that is not UTF-8, not YAML, or nested more than
/// [`yaml::MAX_DEPTH`] deep is an error, found in time linear in its length, and this
/// function never panics. Size is bounded by the caller (the directory source refuses files
/// over `--max-manifest-bytes` unread).
pub fn parse(bytes: &[u8], mesh_config_map: &str) -> Result<Vec<Object>, Vec<DocumentError>> {
    let text = checked_text(bytes)?;
    // Straight into typed objects where that is certain to mean the same; anything else
    // (every text with a problem among them) is read through `Value`s, which also words
    // the errors.
    if let Some(objects) = typed::parse(text, mesh_config_map) {
        return Ok(objects);
    }
    parse_values(text, mesh_config_map)
}

/// [`parse`] reading every document through a `serde_yaml_ng::Value` first: the reference
/// `parse` must agree with, whatever the input (the fuzz target checks it).
pub fn parse_through_values(
    bytes: &[u8],
    mesh_config_map: &str,
) -> Result<Vec<Object>, Vec<DocumentError>> {
    parse_values(checked_text(bytes)?, mesh_config_map)
}

/// `bytes` as text, if it is UTF-8 nested at most [`yaml::MAX_DEPTH`] deep.
fn checked_text(bytes: &[u8]) -> Result<&str, Vec<DocumentError>> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        vec![DocumentError {
            document: None,
            reason: format!("not UTF-8 text ({e}); save the file as UTF-8"),
        }]
    })?;
    // Only a text that might be too deep is walked first (a small manifest cannot be).
    let checked = match yaml::may_nest_too_deep(text) {
        true => yaml::check(text),
        false => Ok(()),
    };
    checked.map_err(|r| {
        vec![DocumentError {
            document: Some(r.document),
            reason: r.reason,
        }]
    })?;
    Ok(text)
}

/// Each document to a `serde_yaml_ng::Value`, then to its typed object.
fn parse_values(text: &str, mesh_config_map: &str) -> Result<Vec<Object>, Vec<DocumentError>> {
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = match serde_yaml_ng::Value::deserialize(document) {
            Ok(v) => v,
            Err(e) => {
                errors.push(DocumentError {
                    document: Some(index),
                    reason: format!("not valid YAML: {e}"),
                });
                break; // the parser cannot resynchronise after a syntax error
            }
        };
        match read_object(value, mesh_config_map) {
            Ok(Some(object)) => objects.push(object),
            Ok(None) => {}
            Err(reason) => errors.push(DocumentError {
                document: Some(index),
                reason,
            }),
        }
    }
    if errors.is_empty() {
        Ok(objects)
    } else {
        Err(errors)
    }
}

/// One YAML document to an object; `None` for empty documents and kinds we do not use.
/// The ConfigMap named `mesh_config_map` (any namespace) is the revision's mesh config.
fn read_object(
    value: serde_yaml_ng::Value,
    mesh_config_map: &str,
) -> Result<Option<Object>, String> {
    if value.is_null() {
        return Ok(None);
    }
    let field = |k: &str| value.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let (Some(api_version), Some(kind)) = (field("apiVersion"), field("kind")) else {
        return Err("not a Kubernetes object: apiVersion and kind are required".to_string());
    };
    let object = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => Object::Namespace(
            convert::namespace(&decode(value, &kind)?).map_err(|e| invalid(&kind, e))?,
        ),
        ("v1", "Service") => Object::Service(
            convert::service(&decode(value, &kind)?, DEFAULT_NAMESPACE)
                .map_err(|e| invalid(&kind, e))?,
        ),
        ("discovery.k8s.io/v1", "EndpointSlice") => Object::EndpointSlice(
            convert::endpoint_slice(&decode(value, &kind)?, DEFAULT_NAMESPACE)
                .map_err(|e| invalid(&kind, e))?,
        ),
        ("v1", "ConfigMap")
            if value
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(|n| n.as_str())
                == Some(mesh_config_map) =>
        {
            Object::Mesh(
                convert::mesh_config(&decode(value, &kind)?).map_err(|e| invalid(&kind, e))?,
            )
        }
        _ => {
            tracing::debug!(%api_version, %kind, "ignoring a kind revplane does not use");
            return Ok(None);
        }
    };
    Ok(Some(object))
}

fn decode<T: serde::de::DeserializeOwned>(
    value: serde_yaml_ng::Value,
    kind: &str,
) -> Result<T, String> {
    serde_yaml_ng::from_value(value).map_err(|e| format!("invalid {kind}: {e}"))
}

fn invalid(kind: &str, e: convert::ObjectError) -> String {
    format!("invalid {kind}: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESH: &str = "revplane-canary";

    #[test]
    fn objects_of_every_served_kind_and_nothing_else() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n\
            apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n---\n\
            apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n---\n";
        let objects = parse(text.as_bytes(), MESH).unwrap();
        assert_eq!(objects.len(), 2);
        assert!(matches!(&objects[1], Object::Service(s) if s.key.namespace == DEFAULT_NAMESPACE));
    }

    #[test]
    fn bad_input_is_an_error_per_document_never_a_panic() {
        let errors = parse(b"\xff\xfe", MESH).unwrap_err();
        assert!(errors[0].reason.contains("not UTF-8"), "{errors:?}");
        let deep = format!("kind: x\n---\n{}", "[".repeat(200_000));
        let errors = parse(deep.as_bytes(), MESH).unwrap_err();
        assert_eq!(errors[0].document, Some(1));
        assert!(errors[0].reason.contains("nested more than"), "{errors:?}");
        // Too few openers to be walked first: serde_yaml_ng finds the syntax error.
        let broken = b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n---\nb: [\n";
        let errors = parse(broken, MESH).unwrap_err();
        assert_eq!(errors[0].document, Some(1), "{errors:?}");
        assert!(errors[0].reason.starts_with("not valid YAML"), "{errors:?}");
        let errors = parse(b"apiVersion: v1\nkind: Service\nspec: {}\n", MESH).unwrap_err();
        assert!(errors[0].reason.contains("metadata.name"), "{errors:?}");
        for junk in [
            &b""[..],
            b"---",
            b"- [",
            b"{a: *x}",
            b"!!binary x",
            b"a: &a [*a]",
        ] {
            let _ = parse(junk, MESH);
        }
    }
}
