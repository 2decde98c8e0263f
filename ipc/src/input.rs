//! [`InputBytes`]: the bytes of one console-input message, kept so that a
//! [`crate::Message`] is `Copy`.

use serde::de::{Error as _, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::msg::MAX_INPUT_BYTES;

/// Up to [`MAX_INPUT_BYTES`] console input bytes, in order.
///
/// A fixed array and a length rather than a `heapless::Vec`: this is the
/// only field of a request that is not `Copy`, and with it every request
/// was copied field by field (a `clone` of an enum) wherever the monitor
/// hands one on: into a server's inbox, its replay log and the router's
/// queue, on every trap. As a `Copy` type, a request is copied as a block
/// of words. On the wire it is what a `heapless::Vec<u8, 16>` is (a
/// sequence of bytes), so the wire format did not change with it.
#[derive(Clone, Copy)]
pub struct InputBytes {
    len: u8,
    bytes: [u8; MAX_INPUT_BYTES],
}

/// More bytes than an [`InputBytes`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputFull;

impl InputBytes {
    /// No bytes.
    pub const fn new() -> Self {
        InputBytes { len: 0, bytes: [0; MAX_INPUT_BYTES] }
    }

    /// These bytes, if they fit.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, InputFull> {
        let mut input = Self::new();
        input.extend_from_slice(bytes)?;
        Ok(input)
    }

    /// Append bytes, all of them or none if they do not fit.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) -> Result<(), InputFull> {
        let start = usize::from(self.len);
        let end = start + bytes.len();
        let room = self.bytes.get_mut(start..end).ok_or(InputFull)?;
        room.copy_from_slice(bytes);
        // Cannot truncate: at most MAX_INPUT_BYTES.
        self.len = end as u8;
        Ok(())
    }

    /// Append a byte.
    pub fn push(&mut self, byte: u8) -> Result<(), InputFull> {
        self.extend_from_slice(&[byte])
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }
}

impl Default for InputBytes {
    fn default() -> Self {
        Self::new()
    }
}

impl core::ops::Deref for InputBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

// Equal when the bytes are (whatever lies past the length).
impl PartialEq for InputBytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for InputBytes {}

impl core::fmt::Debug for InputBytes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.as_slice().fmt(f)
    }
}

impl Serialize for InputBytes {
    /// A sequence of bytes, as `heapless::Vec<u8, N>` serializes.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.as_slice())
    }
}

impl<'de> Deserialize<'de> for InputBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl<'de> Visitor<'de> for Bytes {
            type Value = InputBytes;

            fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, "at most {MAX_INPUT_BYTES} console input bytes")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<InputBytes, A::Error> {
                let mut input = InputBytes::new();
                while let Some(byte) = seq.next_element::<u8>()? {
                    input.push(byte).map_err(|_| A::Error::invalid_length(MAX_INPUT_BYTES + 1, &self))?;
                }
                Ok(input)
            }
        }
        deserializer.deserialize_seq(Bytes)
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for InputBytes {
    /// As many bytes as the input offers, cut at the capacity.
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let bytes: heapless::Vec<u8, MAX_INPUT_BYTES> = crate::fuzzing::heapless_vec(u)?;
        Ok(InputBytes::from_slice(&bytes).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_kept_in_order_up_to_the_capacity() {
        let mut input = InputBytes::from_slice(b"abc").unwrap();
        input.push(b'd').unwrap();
        assert_eq!(&*input, b"abcd");
        assert_eq!(input.extend_from_slice(&[0; MAX_INPUT_BYTES]), Err(InputFull));
        // A failed append leaves the bytes as they were.
        assert_eq!(&*input, b"abcd");
        let full = InputBytes::from_slice(&[7; MAX_INPUT_BYTES]).unwrap();
        assert_eq!(full.len(), MAX_INPUT_BYTES);
        assert_eq!({ full }.push(1), Err(InputFull));
        assert!(InputBytes::new().is_empty());
    }

    #[test]
    fn equal_bytes_are_equal_whatever_lies_past_them() {
        let mut a = InputBytes::from_slice(b"xyz").unwrap();
        a.bytes[5] = 9;
        assert_eq!(a, InputBytes::from_slice(b"xyz").unwrap());
        assert_ne!(a, InputBytes::from_slice(b"xy").unwrap());
    }

    #[test]
    fn on_the_wire_it_is_a_heapless_vec() {
        let input = InputBytes::from_slice(b"hello").unwrap();
        let vec: heapless::Vec<u8, MAX_INPUT_BYTES> = heapless::Vec::from_slice(b"hello").unwrap();
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        let a = postcard::to_slice(&input, &mut a).unwrap();
        let b = postcard::to_slice(&vec, &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(postcard::from_bytes::<InputBytes>(a).unwrap(), input);
        // One byte too many is refused, not cut.
        let long: heapless::Vec<u8, 32> = heapless::Vec::from_slice(&[1; MAX_INPUT_BYTES + 1]).unwrap();
        let mut c = [0u8; 40];
        let c = postcard::to_slice(&long, &mut c).unwrap();
        assert!(postcard::from_bytes::<InputBytes>(c).is_err());
    }
}
