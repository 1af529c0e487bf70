//! The fast way through a manifest: each document read straight into the k8s-openapi type
//! its `apiVersion` and `kind` name, without building a `serde_yaml_ng::Value` first (that
//! step was a third of a large directory's parse time).
//!
//! Only a text this reads completely is taken from here; on anything it does not take (an
//! error, a tagged value, an enum) the caller reads the text through `Value`s as before, so
//! the result and the error messages stay the ones that way gives. What makes that safe is
//! [`Strict`]: a text read here is read no more leniently than through a `Value`.

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use serde::de::value::{MapAccessDeserializer, StrDeserializer};
use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::strict::Strict;
use super::{convert, DEFAULT_NAMESPACE};
use crate::catalog::Object;

/// Every object of `text` (one YAML stream), or `None` where the text must be read through
/// `Value`s instead.
pub(super) fn parse(text: &str, mesh_config_map: &str) -> Option<Vec<Object>> {
    let mut objects = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let object = match Strict(document).deserialize_any(DocumentVisitor).ok()? {
            Document::Empty | Document::Other => continue,
            Document::Namespace(ns) => Object::Namespace(convert::namespace(&ns).ok()?),
            Document::Service(svc) => {
                Object::Service(convert::service(&svc, DEFAULT_NAMESPACE).ok()?)
            }
            Document::EndpointSlice(slice) => {
                Object::EndpointSlice(convert::endpoint_slice(&slice, DEFAULT_NAMESPACE).ok()?)
            }
            Document::ConfigMap(cm) if cm.metadata.name.as_deref() == Some(mesh_config_map) => {
                Object::Mesh(convert::mesh_config(&cm).ok()?)
            }
            Document::ConfigMap(_) => continue,
        };
        objects.push(object);
    }
    Some(objects)
}

/// One document, read as the kind it names.
enum Document {
    Empty,
    Namespace(Box<core::Namespace>),
    Service(Box<core::Service>),
    EndpointSlice(Box<discovery::EndpointSlice>),
    ConfigMap(Box<core::ConfigMap>),
    /// A kind revplane does not use (read to its end, for the strict checks).
    Other,
}

struct DocumentVisitor;

impl<'de> Visitor<'de> for DocumentVisitor {
    type Value = Document;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a Kubernetes object")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Document, E> {
        Ok(Document::Empty)
    }

    fn visit_none<E: de::Error>(self) -> Result<Document, E> {
        Ok(Document::Empty)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        // `apiVersion` and `kind` usually come first; whatever comes before them is kept (as
        // `Value`s, as the other way reads them) and given to the typed object after them.
        let (mut api_version, mut kind) = (None::<String>, None::<String>);
        let mut before = Vec::new();
        while api_version.is_none() || kind.is_none() {
            let Some(key) = map.next_key::<String>()? else {
                return Err(de::Error::custom("no apiVersion or kind"));
            };
            match key.as_str() {
                "apiVersion" => api_version = Some(map.next_value()?),
                "kind" => kind = Some(map.next_value()?),
                _ => before.push((key, map.next_value::<serde_yaml_ng::Value>()?)),
            }
        }
        let (api_version, kind) = (api_version.unwrap_or_default(), kind.unwrap_or_default());
        let rest = Replayed {
            head: [("apiVersion", api_version.clone()), ("kind", kind.clone())],
            before,
            next: 0,
            map,
        };
        Ok(match (api_version.as_str(), kind.as_str()) {
            ("v1", "Namespace") => Document::Namespace(typed(rest)?),
            ("v1", "Service") => Document::Service(typed(rest)?),
            ("discovery.k8s.io/v1", "EndpointSlice") => Document::EndpointSlice(typed(rest)?),
            ("v1", "ConfigMap") => Document::ConfigMap(typed(rest)?),
            _ => {
                IgnoredAny::deserialize(MapAccessDeserializer::new(rest))?;
                Document::Other
            }
        })
    }
}

fn typed<'de, T: DeserializeOwned, A: MapAccess<'de>>(
    rest: Replayed<A>,
) -> Result<Box<T>, A::Error> {
    T::deserialize(MapAccessDeserializer::new(rest)).map(Box::new)
}

/// A mapping whose first entries were read already: `apiVersion` and `kind`, then what came
/// before them, then the rest of the mapping.
struct Replayed<A> {
    head: [(&'static str, String); 2],
    before: Vec<(String, serde_yaml_ng::Value)>,
    /// Entries given so far from `head` and `before`.
    next: usize,
    map: A,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Replayed<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let key = match self.next {
            0 | 1 => self.head[self.next].0,
            i if i - 2 < self.before.len() => self.before[i - 2].0.as_str(),
            _ => return self.map.next_key_seed(seed),
        };
        seed.deserialize(StrDeserializer::new(key)).map(Some)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        let i = self.next;
        self.next += 1;
        match i {
            0 | 1 => seed.deserialize(StrDeserializer::new(&self.head[i].1)),
            i if i - 2 < self.before.len() => {
                let value = std::mem::take(&mut self.before[i - 2].1);
                seed.deserialize(value).map_err(de::Error::custom)
            }
            _ => {
                self.next = i; // past the replayed entries: stays there
                self.map.next_value_seed(seed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_values;
    use super::*;

    const MESH: &str = "revplane-canary";

    /// What the `Value` way gives, and whether this way took the text (then with the same).
    fn both(text: &str) -> bool {
        let fast = parse(text, MESH);
        if let Some(objects) = &fast {
            assert_eq!(Ok(objects.clone()), parse_values(text, MESH), "{text}");
        }
        fast.is_some()
    }

    const SERVICE: &str = "apiVersion: v1\nkind: Service\n\
        metadata: {name: web, namespace: shop, labels: {app: web}}\n\
        spec: {ports: [{name: http, port: 80, targetPort: 8080}], clusterIP: 10.96.0.1}\n";
    const SLICE: &str = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints:\n- addresses: [10.0.0.1]\n  conditions: {ready: true}\n";

    #[test]
    fn ordinary_manifests_are_read_straight_into_the_same_objects() {
        let namespace = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio.io/rev: canary}}\n";
        let mesh = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: revplane-canary}\ndata:\n  mesh: 'lbPolicy: RANDOM'\n";
        let other_map = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\ndata: {a: b}\n";
        let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 2, template: {spec: {containers: [{name: a, image: b}]}}}\n";
        // kubectl's output sorts keys: an EndpointSlice's `addressType` comes before `kind`.
        let sorted = "addressType: IPv4\napiVersion: discovery.k8s.io/v1\nendpoints: [{addresses: [10.0.0.2]}]\nkind: EndpointSlice\nmetadata: {name: s, labels: {kubernetes.io/service-name: web}}\n";
        let stream = format!("{SERVICE}---\n{SLICE}---\n{namespace}---\n{mesh}---\n{other_map}---\n{deployment}---\n---\n{sorted}");
        assert!(both(&stream));
        assert_eq!(parse(&stream, MESH).unwrap().len(), 5);
        for text in [
            SERVICE, SLICE, namespace, mesh, other_map, deployment, sorted, "", "---\n", "~\n",
        ] {
            assert!(both(text), "{text}");
        }
    }

    #[test]
    fn what_the_value_way_refuses_or_reads_otherwise_is_left_to_it() {
        let cases = [
            // A number where Kubernetes wants a string: `Value` keeps it a number.
            SERVICE.replace("app: web", "version: 1"),
            SERVICE.replace("name: web,", "name: 80,"),
            // Repeated keys, at the top, nested, and inside a field nothing reads.
            format!("{SERVICE}kind: Service\n"),
            SERVICE.replace("name: web,", "name: web, name: web2,"),
            format!("{SERVICE}status: {{x: {{a: 1, a: 2}}}}\n"),
            "apiVersion: apps/v1\nkind: Deployment\nspec: {a: 1, a: 2}\n".to_string(),
            // Integers beyond 64 bits, which `Value` cannot hold, where nothing reads them.
            format!("{SERVICE}x: 18446744073709551616\n"),
            format!("{SERVICE}status: {{extra: -9223372036854775809}}\n"),
            "apiVersion: apps/v1\nkind: Deployment\nspec: {replicas: 0x10000000000000000}\n"
                .to_string(),
            // Tags, non-string keys, no kind, not a mapping.
            SERVICE.replace("name: web,", "name: !custom web,"),
            SERVICE.replace("app: web", "1: web"),
            "apiVersion: v1\nmetadata: {name: x}\n".to_string(),
            "- a\n- b\n".to_string(),
            "just text\n".to_string(),
            // Invalid objects and syntax errors.
            SERVICE.replace("port: 80", "port: 70000"),
            SERVICE.replace("port: 80", "port: eighty"),
            format!("{SERVICE}---\nb: [\n"),
        ];
        for text in &cases {
            assert!(!both(text), "taken the fast way: {text}");
        }
        // A hostile mapping: 200,000 keys, the last repeating the first. Checking each key
        // against a list would take minutes; it must stay linear.
        let mut wide = String::from("apiVersion: apps/v1\nkind: Deployment\nspec:\n");
        for i in 0..200_000 {
            wide.push_str(&format!("  k{i}: 1\n"));
        }
        assert!(both(&wide));
        wide.push_str("  k0: 2\n");
        let started = std::time::Instant::now();
        assert!(!both(&wide));
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        // The answer is the `Value` way's, errors and all.
        let text = SERVICE.replace("app: web", "version: 1");
        assert!(super::super::parse(text.as_bytes(), MESH).is_err());
    }
}
