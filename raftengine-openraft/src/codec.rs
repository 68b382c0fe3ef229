//! The one binary encoding this backend uses for openraft's serde types, on
//! the wire and in the log: bincode with varint integers, a size limit, and
//! no trailing bytes, so garbage is refused instead of half-read.

use bincode::Options;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest encoded value accepted: a proposal at the configured maximum
/// plus framing always fits, a hostile length prefix never allocates more.
pub(crate) const MAX_ENCODED: u64 = 256 * 1024 * 1024;

fn options() -> impl Options {
    bincode::DefaultOptions::new().with_limit(MAX_ENCODED)
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::Error> {
    options().serialize(value)
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    options().deserialize(bytes)
}

/// `decode` as an `io::Error` of kind `InvalidData`, for storage paths.
pub(crate) fn decode_io<T: DeserializeOwned>(bytes: &[u8], what: &str) -> std::io::Result<T> {
    decode(bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("corrupt {what}: {e}"),
        )
    })
}

pub(crate) fn encode_io<T: Serialize>(value: &T, what: &str) -> std::io::Result<Vec<u8>> {
    encode(value).map_err(|e| std::io::Error::other(format!("encode {what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let v: (u64, String) = (7, "x".into());
        let bytes = encode(&v).unwrap();
        assert_eq!(decode::<(u64, String)>(&bytes).unwrap(), v);
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(
            decode::<(u64, String)>(&longer).is_err(),
            "trailing bytes refused"
        );
        // A length prefix claiming ~2^63 bytes must fail, not allocate.
        let hostile = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 1];
        assert!(decode::<(u64, String)>(&hostile).is_err());
        assert!(decode::<Vec<u8>>(&[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]).is_err());
    }
}
