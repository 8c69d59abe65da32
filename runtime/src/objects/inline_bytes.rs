//! Serde for the bytes an `ObjectRef` carries inline: written as one byte string (length and raw
//! bytes), not element by element.

use bytes::Bytes;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Serializer;

pub fn serialize<S: Serializer>(value: &Option<Bytes>, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(bytes) => serializer.serialize_some(&ByteString(bytes)),
        None => serializer.serialize_none(),
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Bytes>, D::Error> {
    deserializer.deserialize_option(OptionVisitor)
}

struct ByteString<'a>(&'a [u8]);

impl serde::Serialize for ByteString<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

struct OptionVisitor;

impl<'de> Visitor<'de> for OptionVisitor {
    type Value = Option<Bytes>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("optional bytes")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor).map(Some)
    }
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Bytes;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("bytes")
    }

    fn visit_bytes<E: serde::de::Error>(self, value: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes::copy_from_slice(value))
    }

    fn visit_byte_buf<E: serde::de::Error>(self, value: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes::from(value))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        while let Some(byte) = seq.next_element::<u8>()? {
            out.push(byte);
        }
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Carrier {
        #[serde(with = "super")]
        inline: Option<Bytes>,
        after: u32,
    }

    #[test]
    fn round_trips_through_the_codec_as_one_byte_string() {
        for inline in [
            None,
            Some(Bytes::new()),
            Some(Bytes::from_static(&[1, 2, 255])),
        ] {
            let value = Carrier { inline, after: 7 };
            let encoded = crate::codec::encode(&value).expect("encode");
            let back: Carrier = crate::codec::decode(&encoded).expect("decode");
            assert_eq!(back, value);
        }
        let big = Carrier {
            inline: Some(Bytes::from(vec![9u8; 1000])),
            after: 1,
        };
        let encoded = crate::codec::encode(&big).expect("encode");
        assert!(encoded.len() < 1010, "{} bytes for 1000", encoded.len());
    }
}
