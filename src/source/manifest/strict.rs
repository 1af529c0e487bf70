//! A deserializer wrapper that reads YAML no more leniently than `serde_yaml_ng::Value` does,
//! so that a manifest read straight into its typed object means what it meant when it was
//! read through a `Value` first.
//!
//! `serde_yaml_ng` read straight into a type is lenient where a `Value` is not: `port: 80`
//! fills a `String` field with `"80"`, `!custom x` is taken as `"x"`, and a repeated key
//! overwrites the first. Through [`Strict`], every scalar is read as `Value` reads it (its
//! resolved type: a string field takes only a string; an integer beyond 64 bits, which
//! `Value` cannot hold, is refused even where nothing reads it), a tagged value is refused,
//! and a mapping that repeats a key, or has a key that is not a string, is an error, at
//! every depth, fields the target ignores included. Refusing more than `Value` is allowed: the
//! caller reads a refused text the `Value` way again, for its exact error.

use std::borrow::Cow;
use std::collections::HashSet;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// `D`, read no more leniently than `serde_yaml_ng::Value` reads it.
pub struct Strict<D>(pub D);

/// Every primitive is read as its resolved type (what `Value` is built from).
macro_rules! as_any {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.0.deserialize_any(Wrap(visitor))
        }
    )*};
}

/// Text can come only from a string.
macro_rules! as_string {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.0.deserialize_any(Wrap(StringOnly(visitor)))
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Strict<D> {
    type Error = D::Error;

    as_any! {
        deserialize_any deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32
        deserialize_i64 deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32
        deserialize_u64 deserialize_u128 deserialize_f32 deserialize_f64 deserialize_unit
        deserialize_seq deserialize_map deserialize_ignored_any deserialize_bytes
        deserialize_byte_buf
    }
    as_string! { deserialize_char deserialize_str deserialize_string deserialize_identifier }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_option(Wrap(visitor))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(Wrap(visitor))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        // As `Value` reads a newtype: the visitor gets the value itself.
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(Wrap(visitor))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(Wrap(visitor))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(Wrap(visitor))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, D::Error> {
        // No Kubernetes field read here is an enum; a caller reads such a text the slow way.
        Err(de::Error::custom("an enum is not read strictly"))
    }
}

/// A visitor whose nested values are read strictly too.
struct Wrap<V>(V);

/// Forwards a visit of a value that holds nothing nested.
macro_rules! forward_visits {
    ($($method:ident($ty:ty))*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.0.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.expecting(f)
    }

    forward_visits! {
        visit_bool(bool) visit_i64(i64) visit_u64(u64) visit_f64(f64) visit_str(&str)
        visit_borrowed_str(&'de str) visit_string(String)
        visit_bytes(&[u8]) visit_borrowed_bytes(&'de [u8]) visit_byte_buf(Vec<u8>)
    }

    // An integer beyond 64 bits: `Value` has no place for it and refuses the text.
    fn visit_i128<E: de::Error>(self, _v: i128) -> Result<V::Value, E> {
        Err(E::custom("an integer beyond 64 bits is not read strictly"))
    }

    fn visit_u128<E: de::Error>(self, _v: u128) -> Result<V::Value, E> {
        Err(E::custom("an integer beyond 64 bits is not read strictly"))
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.0.visit_some(Strict(d))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.0.visit_newtype_struct(Strict(d))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.0.visit_seq(StrictSeq(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(StrictMap {
            map,
            keys: Keys::Few(Vec::new()),
        })
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _data: A) -> Result<V::Value, A::Error> {
        // A tagged value (`!custom x`): `Value` keeps the tag, which no string field takes.
        Err(de::Error::custom("a tagged value is not read strictly"))
    }
}

/// A visitor that takes only a string.
struct StringOnly<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for StringOnly<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        self.0.visit_str(v)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<V::Value, E> {
        self.0.visit_borrowed_str(v)
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<V::Value, E> {
        self.0.visit_string(v)
    }
}

/// A value deserialized strictly.
struct StrictSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for StrictSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(Strict(d))
    }
}

struct StrictSeq<A>(A);

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for StrictSeq<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.0.next_element_seed(StrictSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

/// A mapping read strictly: string keys only, each once.
struct StrictMap<'de, A> {
    map: A,
    /// The keys so far, borrowed from the text where they are written plainly there.
    keys: Keys<'de>,
}

/// Keys seen in one mapping: a short list while the mapping is small (a Kubernetes object's
/// are), a set past that, so a hostile mapping of a million keys stays linear.
enum Keys<'de> {
    Few(Vec<Cow<'de, str>>),
    Many(HashSet<Cow<'de, str>>),
}

/// Past this many keys a mapping's keys are hashed.
const FEW_KEYS: usize = 16;

impl<'de> Keys<'de> {
    /// Notes `key`; gives it back when it was seen already.
    fn insert(&mut self, key: Cow<'de, str>) -> Result<(), Cow<'de, str>> {
        match self {
            Keys::Few(keys) if keys.contains(&key) => return Err(key),
            Keys::Few(keys) if keys.len() < FEW_KEYS => keys.push(key),
            Keys::Few(keys) => {
                let mut set: HashSet<_> = keys.drain(..).collect();
                set.insert(key);
                *self = Keys::Many(set);
            }
            Keys::Many(set) if set.contains(&key) => return Err(key),
            Keys::Many(set) => {
                set.insert(key);
            }
        }
        Ok(())
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for StrictMap<'de, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let mut key = None;
        let value = self.map.next_key_seed(KeySeed {
            seed,
            key: &mut key,
        })?;
        if let Some(key) = key {
            if let Err(key) = self.keys.insert(key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
        }
        Ok(value)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.map.next_value_seed(StrictSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}

/// A mapping key: a string, whatever the seed asks for, noted for the duplicate check.
struct KeySeed<'k, 'de, S> {
    seed: S,
    key: &'k mut Option<Cow<'de, str>>,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySeed<'_, 'de, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        let key = Strict(d).deserialize_str(KeyVisitor)?;
        let value = self
            .seed
            .deserialize(de::value::StrDeserializer::<D::Error>::new(&key));
        *self.key = Some(key);
        value
    }
}

/// A key's text, borrowed when the text has it as it is.
struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}
