//! Support for the `arbitrary` feature: structure-aware fuzzing of the
//! message catalogue (the targets live in `tests/fuzz`).
//!
//! Every catalogue type derives `arbitrary::Arbitrary` when the feature is
//! on; `heapless::Vec` does not implement it, so its fields use
//! [`heapless_vec`].

use arbitrary::{Arbitrary, Result, Unstructured};

/// An arbitrary `heapless::Vec` of up to `N` elements: as many as the input
/// offers, cut at the capacity.
pub fn heapless_vec<'a, T: Arbitrary<'a>, const N: usize>(u: &mut Unstructured<'a>) -> Result<heapless::Vec<T, N>> {
    let mut out = heapless::Vec::new();
    for item in u.arbitrary_iter::<T>()? {
        if out.push(item?).is_err() {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heapless_vec_stops_at_capacity() {
        // Each element is preceded by a "continue" byte (odd: go on).
        let bytes = [1u8, 10, 1, 11, 1, 12, 1, 13, 0];
        let mut u = Unstructured::new(&bytes);
        let v: heapless::Vec<u8, 2> = heapless_vec(&mut u).expect("arbitrary");
        assert_eq!(v.as_slice(), &[10, 11]);
        let mut u = Unstructured::new(&[]);
        let v: heapless::Vec<u8, 2> = heapless_vec(&mut u).expect("arbitrary");
        assert!(v.is_empty());
    }
}
