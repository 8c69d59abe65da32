//! The one place that decides how values are encoded on the wire: serde with bincode 2.0
//! (standard configuration). bincode 3.0 is an empty tombstone release, so the version is pinned
//! in the workspace manifest; swapping the format means changing only this file.

use bytes::Bytes;

/// A value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encode failed: {0}")]
    Encode(String),
    #[error("decode failed: {0}")]
    Decode(String),
    #[error("decode failed: {trailing} trailing bytes after the value")]
    TrailingBytes { trailing: usize },
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `value` into a fresh buffer.
pub fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Result<Bytes, CodecError> {
    bincode::serde::encode_to_vec(value, config())
        .map(Bytes::from)
        .map_err(|err| CodecError::Encode(err.to_string()))
}

/// Decodes a value that must fill `bytes` exactly.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, read) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|err| CodecError::Decode(err.to_string()))?;
    if read != bytes.len() {
        return Err(CodecError::TrailingBytes {
            trailing: bytes.len() - read,
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_tuples_and_strings() {
        let value = (7_i64, String::from("troupe"), vec![1.5_f32, -2.0]);
        let bytes = encode(&value).expect("encode");
        let back: (i64, String, Vec<f32>) = decode(&bytes).expect("decode");
        assert_eq!(back, value);
    }

    #[test]
    fn rejects_truncated_and_trailing_input() {
        let bytes = encode(&(1_u64, String::from("abc"))).expect("encode");
        let truncated = decode::<(u64, String)>(&bytes[..bytes.len() - 1]);
        assert!(matches!(truncated, Err(CodecError::Decode(_))));
        let mut longer = bytes.to_vec();
        longer.push(0);
        let trailing = decode::<(u64, String)>(&longer);
        assert!(matches!(
            trailing,
            Err(CodecError::TrailingBytes { trailing: 1 })
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let garbage = [0xff_u8; 16];
        assert!(decode::<(String, Vec<u64>)>(&garbage).is_err());
    }
}
